"""Rollouts through the REAL browser env (Chromium, the sandbox `drill` app, milestone rewards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from agentrl.sandbox.apps.drill import DrillApp

from agentrl.learner.batch import make_batch, turn_key
from agentrl.learner.config import SHORT_SYSTEM_PROMPT
from agentrl.learner.forward import key_forward
from agentrl.learner.rollout import GroupJob, RolloutEngine, Trajectory, candidate_actions
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.taskspec import load_task

REPO = Path(__file__).resolve().parents[1]
ROLES = ("button", "link", "heading")


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_policy(tmp_path_factory.mktemp("tiny"), seed=0)


def engine_for(policy, tasks, **kw) -> RolloutEngine:
    model, tok = policy
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT, max_prompt_tokens=kw.pop("max_prompt_tokens", 1024))
    return RolloutEngine(tasks, HFGenerator(model, tok), builder, num_envs=8, click_roles=ROLES, **kw)


def test_drill_app_layouts() -> None:
    app = DrillApp()
    positions = []
    for seed in range(300):
        s = app.new_state(seed)
        kinds = [k for k, _ in s.one]
        assert kinds.count("button") == 1 and 4 <= len(kinds) <= 6
        assert set(kinds) <= {"button", "link", "heading"}
        assert 3 <= len(s.named) <= 6 and s.target in [x for _, x in s.named]
        assert len({x for _, x in s.named}) == len(s.named)
        positions.append(kinds.index("button"))
    assert app.new_state(5) == app.new_state(5)
    # the position-only baseline (always click the most frequent button position) is about 20%
    best = max(positions.count(p) for p in set(positions)) / len(positions)
    assert 0.15 < best < 0.3


def test_groups_rewards_records_and_jsonl(policy, tmp_path: Path) -> None:
    spec = load_task(REPO / "tasks/train/click-button.yaml")
    eng = engine_for(policy, [spec])
    out = tmp_path / "traj.jsonl"
    try:
        res = eng.collect([GroupJob(spec.id, 3, 4, group=0), GroupJob(spec.id, 4, 4, group=1)],
                          temperature=1.0, seed=0, writer=out, tag={"step": 1})
    finally:
        eng.close()
    trajs = res.trajectories
    assert len(trajs) == 8 and res.stats["episodes"] == 8 and res.stats["errors"] == 0
    # one prompt forward per group: the 4 samples of a group share their start state and prompt
    assert res.stats["prompt_forwards"] <= 4
    for tr in trajs:
        (turn,) = tr.turns  # max_steps 1: one decision
        assert turn.action in turn.candidates and turn.candidate_ids[turn.candidate_index] == turn.completion_ids
        assert len(turn.logprobs) == len(turn.completion_ids)
        assert tr.success == (turn.reward == 1.0) == ("button_clicked" in turn.milestones)
        # every episode either succeeds (terminated) or is cut by max_steps, and says so
        assert tr.terminated or (tr.truncated and tr.truncation_reason == "max_steps reached")
    g0 = [t for t in trajs if t.group == 0]
    assert len({tuple(t.turns[0].prompt_ids) for t in g0}) == 1
    assert res.stats["truncated_max_steps"] == sum(not t.success for t in trajs)
    # the recorded behaviour log-prob is what the learner computes from the recorded ids (nothing
    # re-tokenised): the choice's log-prob under softmax(seq_logprob / T) over the candidates
    model, _ = policy
    t = trajs[0].turns[0]
    with torch.no_grad():
        lp = key_forward(model, [turn_key(t)], temperature=1.0).outputs[0][t.candidate_index]
    assert float(lp) == pytest.approx(t.seq_logprob_restricted, abs=1e-4)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(r["step"] == 1 for r in rows)
    back = Trajectory.from_dict(rows[0])
    assert back.turns[0].prompt_ids == [x for x in rows[0]["turns"][0]["prompt_ids"]]
    assert make_batch(trajs).token_mask.shape[0] == 8


def test_multi_turn_history_and_truncation_counted(policy, tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "tasks/train/click-button.yaml").read_text())
    data.update(id="click-button-3", max_steps=3)
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(data))
    spec = load_task(f)
    # a prompt budget so small that the observation is cut: counted per turn, never silent
    eng = engine_for(policy, [spec], max_prompt_tokens=90)
    try:
        res = eng.collect([GroupJob(spec.id, 11, 6)], temperature=1.0, seed=1)
    finally:
        eng.close()
    multi = [t for t in res.trajectories if len(t.turns) > 1]
    assert multi, "with max_steps 3 some episodes must take several turns"
    tok = policy[1]
    assert "Previous actions" in tok.decode(multi[0].turns[1].prompt_ids)
    assert res.stats["prompt_cut_turns"] == res.stats["turns"] > 0
    assert all(t.turns[-1].prompt_truncated for t in res.trajectories)
    assert all(t.success or t.truncation_reason == "max_steps reached" for t in res.trajectories)
    assert res.stats["truncated_max_steps"] == sum(not t.success for t in res.trajectories)


def test_context_budget_too_small_truncates_episode(policy) -> None:
    spec = load_task(REPO / "tasks/train/click-button.yaml")
    eng = engine_for(policy, [spec], max_prompt_tokens=5)
    try:
        res = eng.collect([GroupJob(spec.id, 0, 2)], temperature=1.0, seed=0)
    finally:
        eng.close()
    assert res.stats["truncated_context"] == 2
    assert all(t.truncated and t.truncation_reason.startswith("context budget") and not t.turns for t in res.trajectories)


def test_candidate_actions_roles_and_extras() -> None:
    from agentrl.envs.axtree import parse_snapshot

    tree = parse_snapshot('- main [ref=e1]:\n  - heading "Save" [level=2] [ref=e2]\n  - button "Save" [ref=e3]\n'
                          '  - link "Open" [ref=e4] [cursor=pointer]:\n    - /url: "#"')
    assert candidate_actions(tree, ("button",)) == ["click(e3)"]
    assert candidate_actions(tree, ROLES, ["back()"]) == ["click(e2)", "click(e3)", "click(e4)", "back()"]


def test_pool_limits_restart_browser_and_episode_timeout(policy) -> None:
    """Per-worker limits on the local pool: the browser restarted every 3 episodes (between episodes, none
    lost), and an episode past its wall-clock bound ends truncated as an infrastructure failure."""
    from agentrl.envs.workers import PoolConfig

    spec = load_task(REPO / "tasks/train/click-button.yaml")
    eng = engine_for(policy, [spec], pool=PoolConfig(max_envs=2, restart_after=3))
    try:
        launches = eng.host.launches
        res = eng.collect([GroupJob(spec.id, s, 3, group=s) for s in range(3)], temperature=1.0, seed=0)
        assert res.stats["episodes"] == 9 and res.stats["infra_failures"] == 0
        assert eng.pool.recycler.restarts >= 2 and eng.host.launches >= launches + 2
    finally:
        eng.close()
    eng = engine_for(policy, [spec], pool=PoolConfig(max_envs=1, restart_above_mb=1))  # any browser is above 1 MB
    try:
        res = eng.collect([GroupJob(spec.id, 0, 3)], temperature=1.0, seed=0)
        assert res.stats["infra_failures"] == 0 and eng.pool.recycler.restarts == 2  # before episodes 2 and 3
    finally:
        eng.close()
    eng = engine_for(policy, [spec], pool=PoolConfig(max_envs=2, episode_timeout_s=0.001))
    try:
        res = eng.collect([GroupJob(spec.id, 0, 2)], temperature=1.0, seed=0)
    finally:
        eng.close()
    assert res.stats["infra_failures"] == 2
    assert all(t.truncation_reason == "episode timeout" and t.error.startswith("episode timeout") for t in res.trajectories)
