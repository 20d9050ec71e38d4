"""Rollouts through Ray actors (a local Ray, real Chromium and sandbox servers inside the actors) against the
local pool: the same seeds give the same trajectories, and a worker killed mid-run loses no episode."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from agentrl.envs.host import browser_pids
from agentrl.envs.workers import PoolConfig

from agentrl.learner.config import SHORT_SYSTEM_PROMPT
from agentrl.learner.rollout import GroupJob, RolloutEngine
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.taskspec import load_task

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]
ROLES = ("button", "link", "heading")
MARK = f"AGENTRL_TEST_MARK={uuid.uuid4().hex}"  # in the environment of every process this module starts


def marked_chromium() -> set[int]:
    """Chromium processes started from this module (the mark in their environment), wherever they now hang."""
    out = set()
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and "chrom" in (d / "comm").read_text() and MARK.encode() in (d / "environ").read_bytes():
                out.add(int(d.name))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (start-up takes seconds), 2 CPUs whatever the machine has."""
    torch.set_num_threads(1)
    os.environ[MARK.split("=")[0]] = MARK.split("=")[1]  # the actors' processes (and their Chromium) inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("ray")
    model, tok = build_tiny_policy(tmp / "tiny", seed=0)
    data = yaml.safe_load((REPO / "tasks/train/click-button.yaml").read_text())
    data.update(id="click-button-3", max_steps=3)  # several turns per episode: the history matters
    (tmp / "t.yaml").write_text(yaml.safe_dump(data))
    specs = [load_task(REPO / "tasks/train/click-button.yaml"), load_task(tmp / "t.yaml")]
    return model, tok, specs


def engine(setup, pool: PoolConfig) -> RolloutEngine:
    model, tok, specs = setup
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT, max_prompt_tokens=1024)
    return RolloutEngine(specs, HFGenerator(model, tok), builder, click_roles=ROLES, pool=pool)


JOBS = [GroupJob("click-button", 3, 3, group=0), GroupJob("click-button-3", 7, 4, group=1),
        GroupJob("click-button-3", 8, 3, group=2)]


def fingerprint(trajs) -> dict:
    """What an episode did, keyed by (group, sample): actions, ids seen, rewards, milestones, the end."""
    return {(t.group, t.sample): (t.task_id, t.seed, [(x.action, tuple(x.prompt_ids), x.candidate_index, x.reward,
                                                       tuple(x.milestones)) for x in t.turns],
                                  t.success, t.terminated, t.truncation_reason) for t in trajs}


def collect(setup, pool: PoolConfig, writer: Path | None = None, during=None):
    eng = engine(setup, pool)
    try:
        if during is not None:
            threading.Thread(target=during, args=(eng,), daemon=True).start()
        return eng.collect(JOBS, temperature=1.0, seed=5, writer=writer)
    finally:
        eng.close()


def test_ray_same_seeds_same_trajectories_as_local_pool(ray_local, setup) -> None:
    local = collect(setup, PoolConfig(max_envs=4))
    remote = collect(setup, PoolConfig(backend="ray", workers=2, cpus_per_worker=0.5, max_envs=2))
    assert local.stats["episodes"] == remote.stats["episodes"] == 10
    assert local.stats["infra_failures"] == remote.stats["infra_failures"] == 0
    assert any(len(t.turns) > 1 for t in remote.trajectories), "multi-turn episodes are compared too"
    assert fingerprint(remote.trajectories) == fingerprint(local.trajectories)
    # sampled at temperature 1 (not greedy): different actions across a group show the sampling is compared
    assert len({tuple(x.action for x in t.turns) for t in local.trajectories if t.group == 1}) > 1
    for a, b in zip(sorted(local.trajectories, key=lambda t: (t.group, t.sample)),
                    sorted(remote.trajectories, key=lambda t: (t.group, t.sample)), strict=True):
        for x, y in zip(a.turns, b.turns, strict=True):
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)


def test_ray_killed_worker_loses_no_episode(ray_local, setup, tmp_path: Path) -> None:
    out = tmp_path / "traj.jsonl"
    killed: list[int] = []

    def kill_mid_run(eng: RolloutEngine) -> None:
        pool = eng.pool
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # once a few episodes are recorded and worker 0 runs one
            done = len(out.read_text().splitlines()) if out.exists() else 0
            if done >= 2 and pool.workers[0].load > 0:
                killed.append(pool.workers[0].pid)
                pool.kill_worker(0)
                return
            time.sleep(0.02)

    pool = PoolConfig(backend="ray", workers=2, cpus_per_worker=0.5, max_envs=2)
    res = collect(setup, pool, writer=out, during=kill_mid_run)
    assert killed, "the worker was not killed mid-run"
    assert res.stats["episodes"] == 10 and res.stats["infra_failures"] == 0 and res.stats["errors"] == 0
    assert res.stats["worker_reruns"] >= 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["group"], r["sample"]) for r in rows) == sorted((j.group, i) for j in JOBS for i in range(j.size))
    # the re-run episodes are those the dead worker would have played: same seeds, same sampling seeds
    local = collect(setup, PoolConfig(max_envs=4))
    assert fingerprint(res.trajectories) == fingerprint(local.trajectories)
    # no Chromium left behind: the killed actor's went with it, the others' at close; what is left with the
    # mark is this process's own browser (the local pool's)
    deadline = time.monotonic() + 30
    while (orphans := marked_chromium() - set(browser_pids())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not orphans, f"Chromium processes left behind by the Ray workers: {sorted(orphans)}"


def outcomes(results) -> dict:
    return {(r.task_id, r.seed): (r.success, r.return_, r.actions, r.milestones, r.error) for r in results}


def test_ray_evaluate_survives_a_killed_worker_and_matches_local(ray_local, tmp_path: Path) -> None:
    """`agentrl evaluate` on Ray actors: an actor process killed (SIGKILL) mid-run costs no episode, and every
    (task, seed) scores what the local run scores."""
    import signal

    from agentrl.evaluate import evaluate, load_results

    tasks = [load_task(REPO / "tasks/core/reports-open.yaml"), load_task(REPO / "tasks/core/accounts-login.yaml")]
    seeds = [0, 1, 2, 3]
    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = (out / "results.jsonl").read_text().splitlines() if (out / "results.jsonl").exists() else []
            if rows:  # a worker has finished an episode and is on its next one: kill its process
                pid = json.loads(rows[0])["worker_pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    threading.Thread(target=kill_first_worker, daemon=True).start()
    pool = PoolConfig(backend="ray", workers=2, cpus_per_worker=0.5)
    s = evaluate(tasks, "scripted", seeds, out, pool=pool, progress=False, report=False)
    assert killed and s["episodes"] == 8 and s["errors"] == 0 and s["success_rate"] == 1.0
    assert s["ray"]["reruns"] >= 1 and s["ray"]["lost_workers"] >= 1
    ray_results = load_results(out)
    assert sorted((r.task_id, r.seed) for r in ray_results) == sorted((t.id, x) for t in tasks for x in seeds)
    # every recorded episode dir is in the run (moved out of its worker's staging folder), none half-written
    assert all((out / r.episode_dir / "trajectory.jsonl").exists() for r in ray_results)
    assert not list((out / "episodes").glob(".worker-*"))
    evaluate(tasks, "scripted", seeds, tmp_path / "local", progress=False, report=False)
    assert outcomes(ray_results) == outcomes(load_results(tmp_path / "local"))


def test_ray_rm_collect_writes_what_the_local_collect_writes(ray_local, tmp_path: Path) -> None:
    from agentrl.collect import collect

    spec = load_task(REPO / "tasks/core/reports-open.yaml")
    rows = {}
    for name, pool in (("local", None), ("ray", PoolConfig(backend="ray", workers=2, cpus_per_worker=0.5))):
        out = collect([spec], [0, 1], tmp_path / name, random_episodes=1, prefixes=1, progress=False, pool=pool)
        lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
        assert all(r["error"] is None and (out / "episodes" / r["episode"] / "trajectory.jsonl").exists() for r in lines)
        rows[name] = sorted((r["task_id"], r["seed"], r["agent"], r["return"]) for r in lines)
    assert rows["ray"] == rows["local"] and len(rows["ray"]) >= 2 * 3


def test_ray_actor_replaced_after_episodes_loses_no_episode(ray_local, setup) -> None:
    """`replace_actor_after`: a worker actor that has run its episodes takes no new one, is closed once its
    envs are back and a fresh actor (a new process) takes its place; no episode is cut, re-run or failed,
    and the trajectories are those of the local pool."""
    pool = PoolConfig(backend="ray", workers=1, cpus_per_worker=0.5, max_envs=2, replace_actor_after=3)
    eng = engine(setup, pool)
    try:
        first = eng.pool.workers[0].pid
        res = eng.collect(JOBS, temperature=1.0, seed=5)
        rp = eng.pool
        assert rp.replaced >= 2 and len(rp.workers) == 1 + rp.replaced  # 10 episodes, 3-4 per actor (2 at once)
        assert [w.alive for w in rp.workers].count(True) == 1
        (now,) = eng.pool.stats()
        assert now["pid"] != first
    finally:
        eng.close()
    assert res.stats["episodes"] == 10 and res.stats["infra_failures"] == 0 and res.stats["worker_reruns"] == 0
    assert fingerprint(res.trajectories) == fingerprint(collect(setup, PoolConfig(max_envs=4)).trajectories)


def test_ray_evaluate_replaces_an_actor_above_its_memory_limit(ray_local, tmp_path: Path) -> None:
    """`agentrl evaluate --backend ray --replace-actor-above-mb`: an actor whose process passes the limit after
    an episode is replaced before the next (here every one: 1 MB); every episode is recorded, none failed."""
    from typer.testing import CliRunner

    from agentrl.cli import app
    from agentrl.evaluate import load_results

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["evaluate", "--suite", "core", "--task", "reports-open", "--seeds", "3",
                                 "--backend", "ray", "--workers", "1", "--cpus-per-worker", "0.5",
                                 "--replace-actor-above-mb", "1", "--no-report", "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["episodes"] == 3 and s["errors"] == 0 and s["success_rate"] == 1.0
    assert s["ray"]["replaced"] == 3 and s["ray"]["lost_workers"] == 0 and s["ray"]["reruns"] == 0
    assert len({r.worker_pid for r in load_results(out)}) == 3  # each episode on a fresh process


def test_ray_limits_refused_on_the_local_backend_by_the_cli(tmp_path: Path) -> None:
    """A Ray-only limit given to a local run is an error naming it, never a silent no-op."""
    from typer.testing import CliRunner

    from agentrl.cli import app

    for cmd in (["evaluate", "--suite", "core", "--task", "reports-open", "--seeds", "1", "--replace-actor-after", "2"],
                ["evaluate", "--suite", "core", "--task", "reports-open", "--seeds", "1", "--restart-browser-after", "2"],
                ["rm", "collect", "--suite", "core", "--task", "reports-open", "--replace-actor-above-mb", "500"]):
        r = CliRunner().invoke(app, [*cmd, "--out", str(tmp_path / "x")])
        assert r.exit_code != 0 and ("replace_actor" in r.output or "restart-browser-after" in r.output), r.output
        assert not (tmp_path / "x").exists()


def test_pool_config_refuses_bad_actor_limits() -> None:
    with pytest.raises(ValueError, match="replace_actor_after"):
        PoolConfig(backend="ray", replace_actor_after=-1)
    with pytest.raises(ValueError, match="need backend: ray"):
        PoolConfig.of({"replace_actor_above_mb": 900})  # the local pool has no actor to replace
    assert PoolConfig(backend="ray", replace_actor_after=2).actor_spent(2, 10.0)
    assert not PoolConfig(backend="ray", replace_actor_after=2, replace_actor_above_mb=100).actor_spent(1, 99.0)
    assert PoolConfig(backend="ray", replace_actor_above_mb=100).actor_spent(1, 101.0)
