"""Gymnasium registration of the bundled tasks: ``gymnasium.make("agentrl/<task-id>")``.

Registering reads no task file: a bundled task's id is its file name (`tests/test_registration.py` holds
every bundled file to that), and each id's entry point is `agentrl.envs.factory.make_env`, which loads the
file at `make` time and builds the env its ``env:`` names (browser or desktop).
"""

from __future__ import annotations

import functools
from pathlib import Path

ENTRY_POINT = "agentrl.envs.factory:make_env"  # dispatches on the task's `env`


@functools.cache
def bundled_tasks() -> dict[str, Path]:
    """task id -> file, for every task of every bundled suite (the id is the file's name)."""
    from agentrl.suites import SUITES_DIR

    return {f.stem: f for f in sorted(SUITES_DIR.rglob("*.yaml")) if f.name != "suite.yaml"}


def register_bundled() -> None:
    import gymnasium as gym

    for task_id, path in bundled_tasks().items():
        env_id = f"agentrl/{task_id}"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"task": str(path)})
