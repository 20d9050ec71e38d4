"""Shared fixtures: task files written on the fly, envs that are always closed, oracle-step driving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig

from agentrl.agents import oracle_action
from agentrl.taskspec import OracleStep

REPO = Path(__file__).resolve().parents[1]


def write_task(
    directory: Path, milestones: list[dict[str, Any]], *, app: str = "playground", path: str = "/playground/",
    task_id: str = "t", max_steps: int = 10, **extra: Any,
) -> Path:
    data = {
        "id": task_id, "instruction": "test task", "start": {"app": app, "path": path},
        "max_steps": max_steps, "milestones": milestones, "oracle": [{"wait": True}], **extra,
    }
    f = directory / f"{task_id}.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Any]:
    envs: list[BrowserEnv] = []

    def make(task: Path | str, **config: Any) -> BrowserEnv:
        config.setdefault("root_dir", tmp_path / "episodes")
        env = BrowserEnv(task, BrowserEnvConfig(**config))
        envs.append(env)
        return env

    yield make
    for e in envs:
        e.close()


def act(env: BrowserEnv, obs: dict[str, Any], step: dict[str, Any] | str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
    """Take one step named like an oracle step ({click: {role, name}}) or a raw action string."""
    action = step if isinstance(step, str) else oracle_action(OracleStep.model_validate(step), parse_snapshot(obs["axtree"]))
    return env.step(action)


def fired_ids(info: dict[str, Any]) -> list[str]:
    return [m.id for m in info["milestones"]]


def assert_oracle_solves(env: BrowserEnv, task: Any, seeds: list[int]) -> None:
    """The task's oracle succeeds on every seed, fires every milestone (respecting `after`) for the full
    return, and fires them in the same order on every seed."""
    from agentrl.agents import ScriptedAgent
    from agentrl.evaluate import run_episode

    orders = []
    for seed in seeds:
        r = run_episode(env, ScriptedAgent(), seed)
        assert r.error is None, r.error
        assert r.success, f"{task.id} seed {seed}: oracle failed, milestones {r.milestones}, actions {r.actions}"
        assert set(r.milestones) == {m.id for m in task.milestones}, f"seed {seed}: {r.milestones}"
        pos = {m: i for i, m in enumerate(r.milestones)}
        for m in task.milestones:
            assert all(pos[a] < pos[m.id] for a in m.after), f"{m.id} fired before one of {m.after}"
        assert r.return_ == pytest.approx(sum(m.effective_weight() for m in task.milestones))
        orders.append(r.milestones)
    assert all(o == orders[0] for o in orders), f"milestone order differs across seeds: {orders}"


def play_near_miss(env: BrowserEnv, near: Any, seed: int, *, strict: bool = False) -> dict[str, Any]:
    """Play a task's near-miss (rendered for `seed`) to the end; returns the last info. `strict`: every
    step must be a valid action (a near-miss that errors out proves nothing)."""
    from agentrl.agents import ScriptedAgent

    obs, info = env.reset(seed=seed)
    rendered = next(n for n in env.variant.near_misses if n.name == near.name)
    agent = ScriptedAgent(rendered.steps)
    agent.reset(obs, info, env.variant)
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(agent.act(obs))
        if strict:
            assert not info["action_error"], f"near-miss {near.name!r} is broken: {info['action_error']}"
    return info


# ---------------------------------------------------------------- learner helpers (test_trainer, test_learner_device)
PAGE = '- main [ref=e1]:\n  - heading "Save" [level=2] [ref=e2]\n  - button "{b}" [ref=e3]\n  - link "Open" [ref=e4]'


def synthetic_batch(model: Any, tok: Any, groups: int = 3, size: int = 4, turns: int = 2, temperature: float = 1.0) -> list:
    """Recorded-looking trajectories (ids and log-probs from the model itself, the choice's log-prob under
    softmax(seq / temperature) as the rollout records it) with varied rewards."""
    from agentrl.learner.config import SHORT_SYSTEM_PROMPT
    from agentrl.learner.rollout import Trajectory, Turn
    from agentrl.policy.hf_backend import HFGenerator
    from agentrl.policy.prompt import PromptBuilder

    gen = HFGenerator(model, tok)
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT)
    cands = ["click(e2)", "click(e3)", "click(e4)"]
    out = []
    for g in range(groups):
        for i in range(size):
            tr = Trajectory("t", seed=g, group=g, sample=i)
            for k in range(1 + (i + g) % turns):
                prompt = builder.build("Click the button.", PAGE.format(b=f"B{g}{k}"), [t.action for t in tr.turns]).ids
                sc = gen.score_candidates([prompt], [cands])[0]
                c = (i + k) % 3
                tr.turns.append(Turn(
                    prompt_ids=prompt, completion_ids=list(sc.token_ids[c]), logprobs=list(sc.token_logprobs[c]),
                    action=cands[c], candidates=cands, candidate_ids=[list(x) for x in sc.token_ids], candidate_index=c,
                    candidate_entropy=sc.entropy(temperature), seq_logprob_restricted=float(sc.log_probs(temperature)[c]),
                    reward=float(c == 1) * (1 + g) / 2,
                ))
            out.append(tr)
    return out
