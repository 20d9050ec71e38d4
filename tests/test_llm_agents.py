"""LLM agents in the real env: `openai:` against a real HTTP chat-completions server on 127.0.0.1 (with
retries), `hf:` on a tiny local model (the project's prompt, greedy), `ckpt:` on a checkpoint written the
way the trainer writes it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.suites import SUITES_DIR

from agentrl.agents import make_agent
from agentrl.evaluate import evaluate, load_results, load_tasks, run_episode
from agentrl.judge_server import JudgeServer
from agentrl.trajectory import read_trajectory

OPEN = SUITES_DIR / "core" / "reports-open.yaml"


def oracle_reply(messages: list[dict[str, Any]]) -> str:
    """What a perfect model would answer for reports-open, read only from the prompt it was sent."""
    user = messages[-1]["content"]
    title = re.search(r'^Goal: Open the report "(.+)"\.$', user, re.M).group(1)
    ref = re.search(rf'link "{re.escape(title)}" \[ref=(\w+)\]', user).group(1)
    return f"The report is linked on this page.\nAction: click({ref})"


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from agentrl.policy.model import build_tiny_policy
    from agentrl.policy.tokenizer import default_corpus

    out = tmp_path_factory.mktemp("tiny")
    build_tiny_policy(out, seed=0, corpus=default_corpus(n_docs=300), vocab_size=1024, hidden=64, layers=1, heads=2)
    return out


def test_openai_agent_solves_through_a_real_endpoint(tmp_path: Path) -> None:
    with JudgeServer(oracle_reply, model_name="oracle") as server:
        summary = evaluate(load_tasks(SUITES_DIR / "core", ["reports-open"]), "openai:oracle", [0, 1], tmp_path / "run",
                           agent_options={"base_url": server.base_url, "api_key": "sk-test"}, progress=False, report=False)
    assert summary["success_rate"] == 1.0 and summary["errors"] == 0
    req = server.requests[0]
    assert req["model"] == "oracle" and req["temperature"] == 0.0
    assert [m["role"] for m in req["messages"]] == ["system", "user"] and "Previous actions: none" in req["messages"][1]["content"]
    _, steps, _ = read_trajectory(tmp_path / "run" / load_results(tmp_path / "run")[0].episode_dir / "trajectory.jsonl")
    assert steps[0].action.startswith("The report is linked") and re.fullmatch(r"click\(\w+\)", steps[0].parsed)


def test_openai_agent_retries_then_records_failure(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(messages: list[dict[str, Any]]) -> str:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("overloaded")  # the server answers 500
        return oracle_reply(messages)

    env = BrowserEnv(OPEN, BrowserEnvConfig(root_dir=tmp_path))
    try:
        with JudgeServer(flaky) as server:
            agent = make_agent("openai:m", base_url=server.base_url, backoff_s=0.01)
            r = run_episode(env, agent, 0)
            assert r.success and agent.retried == 2 and len(server.requests) == 3
            calls["n"] = -10  # now it keeps failing: the episode fails with the reason, the run goes on
            agent = make_agent("openai:m", base_url=server.base_url, backoff_s=0.01, retries=1)
            r = run_episode(env, agent, 1)
    finally:
        env.close()
    assert not r.success and r.steps == 0
    assert "gave up after 2 attempts" in r.error and "HTTP 500" in r.error and "overloaded" in r.error


def test_hf_agent_uses_the_project_prompt_greedily(tiny: Path, tmp_path: Path) -> None:
    from agentrl.policy.hf_backend import HFGenerator
    from agentrl.policy.model import load_policy
    from agentrl.policy.prompt import PromptBuilder
    from agentrl.policy.records import SamplingParams

    env = BrowserEnv(OPEN, BrowserEnvConfig(root_dir=tmp_path, max_steps=2))
    try:
        r1 = run_episode(env, make_agent(f"hf:{tiny}", max_new_tokens=8), 0)
        r2 = run_episode(env, make_agent(f"hf:{tiny}", max_new_tokens=8), 0)
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    assert r1.error is None and r1.steps >= 1 and r1.actions == r2.actions  # greedy: same actions
    model, tok = load_policy(tiny)
    prompt = PromptBuilder(tok, max_prompt_tokens=3072).build(obs["goal"], obs["text"], [])
    expected = HFGenerator(model, tok).generate([prompt.ids], SamplingParams(temperature=0, max_new_tokens=8))[0][0]
    assert r1.actions[0] == expected.action


def test_ckpt_agent_loads_the_checkpoint_and_acts_like_training(tiny: Path, tmp_path: Path) -> None:
    from agentrl.learner.algos import get_algorithm
    from agentrl.learner.checkpoint import TrainState, save_checkpoint
    from agentrl.learner.config import TrainConfig
    from agentrl.learner.update import Learner
    from agentrl.policy.model import load_policy

    run = tmp_path / "train-run"  # the layout `agentrl train` leaves (see learner/trainer.py)
    shutil.copytree(tiny, run / "base-model")
    TrainConfig(tasks=[str(OPEN)], model="tiny", observation="compact", click_roles=("link",)).save(run / "config.yaml")
    model, tok = load_policy(run / "base-model")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # stands in for training
    save_checkpoint(run / "checkpoints" / "last", model, tok, Learner(model, get_algorithm("drgrpo")), TrainState(step=1))
    agent = make_agent(f"ckpt:{run}")  # no `best` yet: the latest checkpoint
    assert agent.name.endswith("checkpoints/last") and agent.mode == "choose" and agent.space.click_roles == ("link",)
    loaded = agent.generator.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert not all(torch.equal(loaded[k], base[k]) for k in base)
    env = BrowserEnv(OPEN, BrowserEnvConfig(root_dir=tmp_path / "eps", max_steps=2))
    try:
        r = run_episode(env, agent, 0)
    finally:
        env.close()
    _, steps, _ = read_trajectory(Path(r.episode_dir) / "trajectory.jsonl")
    assert r.error is None and steps and all(re.fullmatch(r"click\(\w+\)", s.parsed or "") for s in steps)
    with pytest.raises(FileNotFoundError, match="not a training run dir"):
        make_agent(f"ckpt:{tmp_path}")
