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
