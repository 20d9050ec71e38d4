"""Shared fixtures: task files written on the fly, envs that are always closed, oracle-step driving. The
checks that prove a task (oracle, near-misses, no-op, determinism) are the package's: `agentrl.testing`."""

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

    def make(task: Path | str, sandbox: Any = None, **config: Any) -> BrowserEnv:
        config.setdefault("root_dir", tmp_path / "episodes")
        env = BrowserEnv(task, BrowserEnvConfig(**config), sandbox=sandbox)
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
