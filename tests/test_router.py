"""The reward router on real env steps: the default is exactly the rule reward; the cascade's audit says which
layer decided (rules on instrumented tasks, the judge on `judge: true` tasks, over real HTTP); R_phi decides
when confident; failing layers are recorded and fallen through; blend weights; group mode; suite config."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from agentrl.rewards.judge import JudgeConfig
from agentrl.rewards.prefs import Pair, step_text
from agentrl.rewards.router import RewardRouter, RouterConfig, StepInput, TrajectoryInput
from conftest import REPO, act

from agentrl.judge_server import JudgeServer
from agentrl.taskspec import load_task
from agentrl.types import StepRecord


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # torch's intra-op threads spin against each other on a small shared machine; one is plenty here
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def report_judge(messages: list[dict[str, Any]]) -> str:
    """A rule-based judge over real HTTP: 0.9 when the fenced page shows the goal's report as its heading."""
    user = messages[1]["content"]
    if "### Trajectory" in user:
        ids = re.findall(r"### Trajectory (T\d+)", user)
        return json.dumps({"scores": [{"id": i, "score": 0.5} for i in ids]})
    title = re.search(r'Goal: Open the report "(.+?)"', user).group(1)
    return json.dumps({"score": 0.9 if f'heading "{title}"' in user else 0.1, "rationale": "read the heading"})


@pytest.fixture
def judged_task(tmp_path: Path) -> Path:
    """reports-open marked `judge: true` (as if its milestones did not cover it)."""
    f = tmp_path / "reports-open-judged.yaml"
    f.write_text((REPO / "tasks/core/reports-open.yaml").read_text().replace("id: reports-open", "id: reports-open-judged")
                 + "judge: true\n")
    return f


def run_routed(env: Any, router: RewardRouter, steps: list[dict[str, Any] | str], seed: int = 0) -> list[tuple[float, float, Any]]:
    """(env reward, routed reward, audit) per step of `steps` (oracle-style or raw actions)."""
    obs, _ = env.reset(seed=seed)
    out, history = [], []
    for s in steps:
        before = obs
        obs, reward, terminated, _, info = act(env, obs, s)
        x = StepInput.from_info(env.task, env.variant, str(s), before["text"], obs["text"], info,
                                history=history, terminated=terminated)
        history.append(str(s))
        routed, audit = router.step(x)
        out.append((reward, routed, audit))
    return out


def test_default_router_is_exactly_the_rule_reward(make_env: Any, judged_task: Path) -> None:
    router = RewardRouter.from_config()
    env = make_env(REPO / "tasks/core/reports-download.yaml")
    env.reset(seed=0)
    oracle = [s.model_dump(exclude_none=True) for s in env.variant.oracle]
    got = run_routed(env, router, [{"click": {"role": "link", "name": "Archived reports"}}, "back()", *oracle])
    assert [g[1] for g in got] == [g[0] for g in got] and any(g[0] > 0 for g in got)
    for _, _, audit in got:
        assert audit.decided_by == "rules" and [lay.layer for lay in audit.layers] == ["rules"] and audit.note == ""
    # a judge: true task with no judge configured keeps today's reward, and the audit says why
    (env_r, routed, audit), = run_routed(make_env(judged_task), router, [{"click": {"role": "link", "name_re": ".+ — .+"}}])
    assert routed == env_r and audit.decided_by == "rules" and "no reward model or judge" in audit.note
    # the audit rides along in the trajectory record and round-trips
    rec = StepRecord(t=1, action="a", parsed="a", error=None, observation="", url="", reward=routed, audit=audit)
    assert StepRecord.model_validate_json(rec.model_dump_json()).audit == audit


def test_cascade_rules_decide_instrumented_tasks_and_the_judge_decides_judge_tasks(make_env: Any, judged_task: Path) -> None:
    with JudgeServer(report_judge) as server:
        router = RewardRouter.from_config(RouterConfig(judge=JudgeConfig(base_url=server.base_url, cache=None)))
        env = make_env(REPO / "tasks/core/reports-open.yaml")
        obs, _ = env.reset(seed=1)
        title = env.variant.instruction.split('"')[1]
        oracle = [{"click": {"role": "link", "name": title}}]
        (env_r, routed, audit), = run_routed(env, router, oracle, seed=1)
        assert audit.decided_by == "rules" and routed == env_r > 0 and len(server.requests) == 0

        judged = make_env(judged_task)
        (_, good, good_audit), = run_routed(judged, router, oracle, seed=1)
        (_, bad, bad_audit), = run_routed(judged, router, [{"click": {"role": "link", "name": "Archived reports"}}], seed=1)
    assert len(server.requests) == 2
    assert good_audit.decided_by == bad_audit.decided_by == "judge"
    assert (good, bad) == (0.9, 0.1)
    assert [lay.layer for lay in good_audit.layers] == ["rules", "judge"]
    assert good_audit.layers[1].rationale == "read the heading" and good_audit.layers[1].latency_ms > 0


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained R_phi on a tiny random BERT (MiniLM's tokenizer), saved to a directory."""
    from agentrl.rewards.reward_model import RewardModel, RMConfig, resolve_encoder
    from transformers import AutoTokenizer, BertConfig, BertModel

    enc = tmp_path_factory.mktemp("enc")
    tok = AutoTokenizer.from_pretrained(resolve_encoder("minilm"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256)).save_pretrained(enc)
    tok.save_pretrained(enc)
    pairs = [Pair(task_id="t", seed=i, level="step", chosen=step_text(f"Open report {i}", "click link", "- status: saved"),
                  rejected=step_text(f"Open report {i}", "click link", "- alert: error")) for i in range(8)]
    rm = RewardModel(RMConfig(encoder=str(enc), heads=3, epochs=100, hidden=32))
    rm.fit(pairs)
    return rm.save(tmp_path_factory.mktemp("rm"))


def test_reward_model_decides_when_confident_else_the_judge(tiny_rm: Path) -> None:
    spec = load_task(REPO / "tasks/core/reports-open.yaml").model_copy(update={"judge": True})
    x = StepInput(task=spec, action="click(e3)", obs_after="- status: saved")
    with JudgeServer(report_judge) as server:
        judge = JudgeConfig(base_url=server.base_url, cache=None)
        confident = RewardRouter.from_config(RouterConfig(reward_model=str(tiny_rm), rm_threshold=0.0, judge=judge))
        value, audit = confident.step(x)
        assert audit.decided_by == "reward_model" and value > 0.5 and len(server.requests) == 0
        strict = RewardRouter.from_config(RouterConfig(reward_model=str(tiny_rm), rm_threshold=1.0, judge=judge))
        value, audit = strict.step(x)
    assert audit.decided_by == "judge" and value == 0.1 and len(server.requests) == 1
    assert [lay.layer for lay in audit.layers] == ["rules", "reward_model", "judge"]
    assert "reward_model confidence" in audit.note and "< 1.0" in audit.note


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_failing_layer_is_recorded_and_the_router_falls_through(tiny_rm: Path) -> None:
    spec = load_task(REPO / "tasks/core/reports-open.yaml").model_copy(update={"judge": True})
    x = StepInput(task=spec, action="click(e3)", obs_after="- heading")
    dead = JudgeConfig(base_url=f"http://127.0.0.1:{_closed_port()}/v1", cache=None, timeout_s=2)
    value, audit = RewardRouter.from_config(RouterConfig(judge=dead)).step(x)
    assert audit.decided_by == "rules" and value == 0.0
    assert audit.layers[1].value is None and "unreachable" in audit.layers[1].error
    assert "judge failed" in audit.note
    with pytest.raises(FileNotFoundError, match="not a reward model directory"):
        RewardRouter.from_config(RouterConfig(reward_model=str(tiny_rm.parent)))


def test_blend_weights_and_renormalisation(tiny_rm: Path) -> None:
    with pytest.raises(ValueError, match=r"must sum to 1: rules 0.5 \+ reward_model 0.3 \+ judge 0.3 = 1.1"):
        RouterConfig(mode="blend", weights={"rules": 0.5, "reward_model": 0.3, "judge": 0.3})
    with pytest.raises(ValueError, match="needs weights"):
        RouterConfig(mode="blend")
    with pytest.raises(ValueError, match="no judge is configured"):
        RouterConfig(mode="blend", weights={"rules": 0.5, "judge": 0.5})
    spec = load_task(REPO / "tasks/core/reports-open.yaml")
    from agentrl.types import Evidence, MilestoneEvent

    fired = [MilestoneEvent(id="report_page", category="goal", weight=0.2, progress=1.0, reward=0.2, step=1,
                            evidence=Evidence(detail="navigated"))]
    x = StepInput(task=spec, action="click(e3)", obs_after='Goal: Open the report "Q3".\n- heading "Q3"', milestones=fired)
    weights = {"rules": 0.5, "reward_model": 0.25, "judge": 0.25}
    with JudgeServer(report_judge) as server:
        cfg = RouterConfig(mode="blend", weights=weights, reward_model=str(tiny_rm),
                           judge=JudgeConfig(base_url=server.base_url, cache=None))
        value, audit = RewardRouter.from_config(cfg).step(x)
    v = {lay.layer: lay.value for lay in audit.layers}
    assert audit.decided_by == "blend" and audit.weights == weights
    assert value == pytest.approx(0.5 * 0.2 + 0.25 * v["reward_model"] + 0.25 * v["judge"])
    dead = cfg.model_copy(update={"judge": JudgeConfig(base_url=f"http://127.0.0.1:{_closed_port()}/v1", cache=None)})
    value, audit = RewardRouter.from_config(dead).step(x)
    assert value == pytest.approx((0.5 * 0.2 + 0.25 * v["reward_model"]) / 0.75)
    assert "judge failed, left out of the blend" in audit.note


def test_group_of_trajectories_is_one_judge_call(judged_task: Path) -> None:
    spec = load_task(judged_task)
    group = [TrajectoryInput(task=spec, actions=[f"click link {i}"], final_observation="- heading", id=f"ep{i}")
             for i in range(4)]
    with JudgeServer(report_judge) as server:
        router = RewardRouter.from_config(RouterConfig(judge=JudgeConfig(base_url=server.base_url, cache=None)))
        routed = router.trajectories(group)
    assert len(server.requests) == 1
    assert [r for r, _ in routed] == [0.5] * 4 and all(a.decided_by == "judge" and a.level == "trajectory" for _, a in routed)


def test_router_config_from_suite_yaml(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text("name: s\nrouter:\n  mode: blend\n  weights: {rules: 0.7, judge: 0.2}\n"
                                         "  judge: {base_url: 'http://127.0.0.1:1/v1'}\n")
    with pytest.raises(ValueError, match=r"suite.yaml: router.weights: blend weights must sum to 1: rules 0.7 \+ reward_model 0.0 \+ judge 0.2 = 0.9$"):
        RouterConfig.from_suite(tmp_path)
    (tmp_path / "suite.yaml").write_text("name: s\nrouter: {mode: cascade, rm_threshold: 0.9}\n")
    assert RouterConfig.from_suite(tmp_path).rm_threshold == 0.9
    assert RouterConfig.from_suite(tmp_path / "nowhere") == RouterConfig()
