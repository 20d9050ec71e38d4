"""Gymnasium registration of the bundled tasks: ``gymnasium.make("agentrl/<task-id>")``.

Importing `agentrl.envs.browser` is deferred to `make` time; registering only reads task ids.
"""

from __future__ import annotations

import functools
from pathlib import Path

from agentrl.yamlpos import TaskFileError, load_with_lines

ENTRY_POINT = "agentrl.envs.browser:BrowserEnv"
ENTRY_POINTS = {"browser": ENTRY_POINT, "desktop": "agentrl.envs.desktop:DesktopEnv"}  # by the task's `env`


@functools.cache
def task_envs() -> dict[str, str]:
    """task id -> the env that runs it (the task file's `env`: browser or desktop)."""
    out: dict[str, str] = {}
    for task_id, f in bundled_tasks().items():
        data, _ = load_with_lines(f)
        out[task_id] = data.get("env", "browser") if data.get("env") in ENTRY_POINTS else "browser"
    return out


@functools.cache
def bundled_tasks() -> dict[str, Path]:
    """task id -> file, for every task of every bundled suite."""
    from agentrl.suites import SUITES_DIR

    out: dict[str, Path] = {}
    for f in sorted(SUITES_DIR.rglob("*.yaml")):
        if f.name == "suite.yaml":
            continue
        try:
            data, _ = load_with_lines(f)
        except TaskFileError:
            continue  # `agentrl tasks validate` reports it with the line
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            out[data["id"]] = f
    return out


def register_bundled() -> None:
    import gymnasium as gym

    for task_id, path in bundled_tasks().items():
        env_id = f"agentrl/{task_id}"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINTS[task_envs()[task_id]], kwargs={"task": str(path)})
