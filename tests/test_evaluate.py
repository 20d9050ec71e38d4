"""Evaluation: statistics against known values, results written as episodes finish, worker processes, the
reward audit recorded when the env gives one, and the compare / replay commands on real runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.suites import SUITES_DIR

from agentrl.agents import AGENTS, ScriptedAgent, make_agent
from agentrl.evaluate import evaluate, load_results, load_tasks, run_episode
from agentrl.replay import replay
from agentrl.stats import (
    binomial_two_sided,
    bootstrap_mean_ci,
    compare_results,
    fisher_exact,
    mcnemar_exact,
    paired_permutation_test,
    permutation_test,
    two_proportion_z,
    wilson_ci,
)

CORE = SUITES_DIR / "core"


# ---------------------------------------------------------------- statistics (hand-computed reference values)
def test_wilson_interval_known_values() -> None:
    assert [round(x, 4) for x in wilson_ci(8, 10)] == [0.4902, 0.9433]
    assert [round(x, 4) for x in wilson_ci(0, 10)] == [0.0, 0.2775]
    assert [round(x, 4) for x in wilson_ci(10, 10)] == [0.7225, 1.0]
    assert wilson_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_ci(11, 10)


def test_tests_known_values() -> None:
    # [[9, 1], [3, 7]]: the tables no more likely than it are k = 2, 3, 9, 10 successes in A
    assert fisher_exact(9, 10, 3, 10) == pytest.approx((45 + 1200 + 1200 + 45) / 125970)
    assert fisher_exact(3, 5, 1, 5) == pytest.approx(110 / 210)
    assert fisher_exact(5, 5, 5, 5) == 1.0
    assert binomial_two_sided(0, 6) == 0.03125 and binomial_two_sided(3, 6) == 1.0
    assert mcnemar_exact(6, 0) == 0.03125 and mcnemar_exact(1, 1) == 1.0
    assert round(two_proportion_z(9, 10, 3, 10), 4) == 0.0062  # z = 0.6 / sqrt(0.6 * 0.4 * 0.2) = 2.739
    # sign-flip: 4 positive differences -> only the all-plus and all-minus of 16 patterns are as extreme
    assert paired_permutation_test([1.0, 2.0, 1.5, 0.5]) == 2 / 16
    assert paired_permutation_test([0.0, 0.0]) == 1.0
    assert permutation_test([1.0] * 8, [0.0] * 8) < 0.001
    assert permutation_test([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]) == 1.0
    lo, hi = bootstrap_mean_ci([0.0, 1.0] * 10)
    assert lo < 0.5 < hi and bootstrap_mean_ci([0.0, 1.0] * 10) == (lo, hi)  # seeded: same numbers


def test_compare_pairs_on_task_and_seed() -> None:
    from agentrl.evaluate import EpisodeResult

    def ep(task: str, seed: int, ok: bool) -> EpisodeResult:
        return EpisodeResult(task_id=task, seed=seed, success=ok, return_=float(ok), steps=1)

    a = [ep("t", s, True) for s in range(8)]
    b = [ep("t", s, s < 1) for s in range(8)]
    paired = compare_results(a, b)["per_task"]["t"]
    assert paired["paired"] and paired["success"]["test"] == "mcnemar-exact"
    assert paired["success"]["only_a"] == 7 and paired["success"]["p_value"] == pytest.approx(2 / 2**7)
    assert paired["success"]["diff"] == pytest.approx(-7 / 8)
    unpaired = compare_results(a, [ep("t", s + 100, s < 1) for s in range(8)])["per_task"]["t"]
    assert not unpaired["paired"] and unpaired["success"]["test"] == "fisher-exact"
    assert unpaired["success"]["p_value"] == pytest.approx(fisher_exact(8, 8, 1, 8))


# ---------------------------------------------------------------- runs
@AGENTS.register("test-results-probe")
class ResultsProbe(ScriptedAgent):
    """Scripted, and at every reset it notes how many lines results.jsonl already has."""

    name = "test-results-probe"
    seen: list[int] = []
    path: Path | None = None

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: Any) -> None:
        assert self.path is not None
        ResultsProbe.seen.append(len(self.path.read_text().splitlines()))
        super().reset(obs, info, variant)


class _Audited:
    """Puts a reward audit under info["audit"] the way the reward router does (the env under it is real)."""

    def __init__(self, env: BrowserEnv) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, action: str):
        obs, reward, term, trunc, info = self.env.step(action)
        info["audit"] = {"mode": "rules", "value": reward, "decided_by": "rules"}
        return obs, reward, term, trunc, info


def test_audit_recorded_when_present_and_a_failing_agent_is_a_recorded_failure(tmp_path: Path) -> None:
    env = BrowserEnv(CORE / "reports-open.yaml", BrowserEnvConfig(root_dir=tmp_path))
    try:
        r = run_episode(_Audited(env), ScriptedAgent(), 0)  # type: ignore[arg-type]
        assert r.success and r.audits == [{"mode": "rules", "value": r.rewards[0], "decided_by": "rules"}]
        agent = make_agent("openai:m", base_url="http://127.0.0.1:9/v1", retries=0, timeout_s=2)  # nothing listens
        r = run_episode(env, agent, 0)
    finally:
        env.close()
    assert not r.success and r.steps == 0 and "AgentError" in r.error and "gave up after 1 attempts" in r.error


def test_unknown_agent_names_suggest() -> None:
    with pytest.raises(KeyError, match="did you mean 'scripted'"):
        make_agent("scripte")
    with pytest.raises(KeyError, match="did you mean 'openai'"):
        make_agent("opena:x")
    with pytest.raises(ValueError, match="takes no options"):
        make_agent("random", temperature=0.5)


class GoalLinkAgent:
    """The user agent of docs/evaluation.md: clicks the link whose name is in the goal."""

    name = "goal-link"

    def __init__(self, seed: int = 0) -> None:
        self.goal = ""

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: Any) -> None:
        self.goal = obs["goal"]

    def act(self, obs: dict[str, Any]) -> str:
        for e in parse_snapshot(obs["axtree"]).elements:
            if e.role == "link" and e.ref and e.name and e.name in self.goal:
                return f"click({e.ref})"
        return 'done("")'


def test_worker_processes_run_a_user_agent(tmp_path: Path) -> None:
    out = tmp_path / "par"  # the spawned workers import this module by name to build the agent
    summary = evaluate(load_tasks(CORE, ["reports-open"]), "py:test_evaluate:GoalLinkAgent", [0, 1], out,
                       workers=2, progress=False, report=False)
    rows = load_results(out)
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0 and summary["workers"] == 2
    assert sorted(r.seed for r in rows) == [0, 1] and all(r.worker_pid != os.getpid() for r in rows)


# ---------------------------------------------------------------- compare and replay (CLI, as people run them)
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A: the scripted agent (as the results probe) on 2 tasks x 2 seeds, B: the random agent on the
    accounts-login episodes only (paired there; reports-search is in A only)."""
    root = tmp_path_factory.mktemp("runs")
    tasks = sorted(load_tasks(CORE, ["reports-search", "accounts-login"]), key=lambda t: t.id != "reports-search")
    ResultsProbe.path, ResultsProbe.seen = root / "a" / "results.jsonl", []
    evaluate(tasks, "test-results-probe", [0, 1], root / "a", progress=False, report=False,
             config=BrowserEnvConfig(screenshot=True))
    evaluate(tasks[1:], "random", [0, 1], root / "b", progress=False, report=False, config=BrowserEnvConfig(max_steps=3))
    return root / "a", root / "b"


def test_results_written_as_episodes_finish(two_runs: tuple[Path, Path]) -> None:
    out, _ = two_runs
    assert ResultsProbe.seen == [0, 1, 2, 3]  # episode k starts after k lines were written
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    r = next(x for x in rows if x["task"] == "reports-search")
    assert r["task"] == "reports-search" and r["tier"] == 2 and r["success"] and r["steps"] == 3
    assert [m["id"] for m in r["milestone_steps"]] == r["milestones"] == ["query_typed", "searched", "report_page"]
    assert [m["step"] for m in r["milestone_steps"]] == [1, 2, 3] and len(r["rewards"]) == 3
    # the default router (rules only) audits every step: the rules decided, and the audit's value is the reward
    assert [a["decided_by"] for a in r["audit"]] == ["rules"] * 3
    assert [a["value"] for a in r["audit"]] == r["rewards"]
    assert r["timings"]["reset_ms"] > 0 and r["timings"]["step_ms_median"] > 0 and r["timings"]["total_s"] > 0
    ep_dir = out / r["episode_dir"]
    assert not Path(r["episode_dir"]).is_absolute() and (ep_dir / "trajectory.jsonl").exists()
    assert sorted(p.name for p in (ep_dir / "screenshots").iterdir()) == ["0000.png", "0001.png", "0002.png", "0003.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["success_rate"] == 1.0 and summary["success_ci"] == list(wilson_ci(4, 4))
    t = summary["per_task"]["reports-search"]
    assert t["milestone_funnel"] == {"query_typed": 1.0, "searched": 1.0, "report_page": 1.0}
    assert summary["per_tier"]["2"]["episodes"] == 2 and summary["seeds"] == [0, 1]
    assert json.loads((out / "run.json").read_text())["task_files"]["reports-search"].endswith("reports-search.yaml")


def cli(*args: str) -> Any:
    """The command in this process (typer's runner: same parsing and exit codes, no interpreter start-up)."""
    from typer.testing import CliRunner

    from agentrl.cli import app

    return CliRunner().invoke(app, list(args))


def test_compare_cli(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    r = cli("compare", str(a), str(b), "--out", str(tmp_path / "compare.json"))
    assert r.exit_code == 0, r.output
    cmp = json.loads((tmp_path / "compare.json").read_text())
    login = cmp["per_task"]["accounts-login"]
    assert login["paired"] and login["success"]["test"] == "mcnemar-exact" and login["success"]["a"] == 1.0
    rand = load_results(b)
    assert cmp["overall"]["success"]["b"] == sum(x.success for x in rand) / 2
    assert cmp["per_task"]["reports-search"]["n_a"] == 2 and cmp["per_task"]["reports-search"]["n_b"] == 0
    assert not cmp["overall"]["paired"] and cmp["overall"]["success"]["test"] == "fisher-exact"
    assert "accounts-login" in r.stdout and "mcnemar-exact" in r.stdout and "ALL" in r.stdout


def test_replay_cli_match_and_mismatch(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two_runs
    r = cli("replay", str(a), "accounts-login:1")
    assert r.exit_code == 0, r.output
    assert "match accounts-login:1: 3 actions replayed" in r.stdout
    # a recorded action that is not what was done: the replay must disagree at that step
    bad = tmp_path / "bad"
    shutil.copytree(a, bad)
    row = next(x for x in load_results(bad) if x.task_id == "accounts-login" and x.seed == 1)
    traj = bad / row.episode_dir / "trajectory.jsonl"
    lines = [json.loads(ln) for ln in traj.read_text().splitlines()]
    last = next(ln for ln in reversed(lines) if ln["type"] == "step")
    last["action"] = "wait()"
    traj.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    r = cli("replay", str(bad), "accounts-login:1")
    out = " ".join(r.stdout.split())  # the console wraps long lines
    assert r.exit_code == 1 and "mismatch accounts-login:1: step 3 ('wait()'): expected milestones [(" in out, r.output
    assert "('signed_in', 1.0)" in out and "replay fired []" in out
    with pytest.raises(KeyError, match="no episode 'no-such:9'"):
        replay(a, "no-such:9")


def test_worker_keeps_at_most_max_envs(tmp_path: Path) -> None:
    """A worker meeting many tasks keeps at most max_envs envs (each with a context made ready and its
    renderer): the least recently used one is closed, and Chromium's processes stop growing with tasks."""
    from agentrl.envs.workers import chromium_stats

    from agentrl.evaluate import _Job, _Runner

    tasks = load_tasks(SUITES_DIR / "core")[:4]
    runner = _Runner("scripted", {}, BrowserEnvConfig(root_dir=tmp_path, record=False, keep_episode_dirs=False),
                     max_envs=2)
    counts = []
    try:
        for i, task in enumerate(tasks * 2):
            r = runner.run(_Job(i, task, 0, "c"))
            assert r.success and r.error is None
            assert len(runner.envs.envs) == min(i + 1, 2) and list(runner.envs.envs)[-1] == task.id
            counts.append(chromium_stats()["chromium_processes"])
    finally:
        runner.close()
    assert max(counts[2:]) <= counts[1] + 1, counts  # after two tasks: no more envs, no more renderers kept


def test_evaluate_resume_runs_only_the_missing_episodes(tmp_path: Path) -> None:
    """A run killed midway keeps what it recorded: `resume` runs only the (task, seed) episodes missing from
    results.jsonl, and the summary counts every episode once."""
    tasks = load_tasks(SUITES_DIR / "core", ["reports-open", "accounts-login"])
    evaluate(tasks, "scripted", [0, 1], tmp_path, progress=False, report=False)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:3]) + "\n")  # as if killed after 3 episodes
    kept = [json.loads(x) for x in lines[:3]]
    s = evaluate(tasks, "scripted", [0, 1], tmp_path, progress=False, report=False, resume=True)
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert s["episodes"] == 4 and s["success_rate"] == 1.0 and len(rows) == 4
    assert rows[:3] == kept  # the recorded episodes untouched, one new one appended
    assert sorted((r["task"], r["seed"]) for r in rows) == sorted((t.id, x) for t in tasks for x in (0, 1))
