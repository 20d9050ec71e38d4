"""The one way to get the env a task runs in: `make_env(task, config)` reads the task's ``env:`` (browser
or desktop) and builds that env; every entry point (run, evaluate and its workers, tasks coverage, replay,
rm collect, the trainer, gym.make) goes through it, so a desktop task never runs in the browser.

    env = make_env("tasks/desktop/notes-save-as.yaml", BrowserEnvConfig(max_steps=20))   # -> DesktopEnv
    env = make_env(spec)                                                                   # by spec.env

`config` may be either env's config (or None): the run-time options both envs share (screenshot,
max_steps, root_dir, record, keep_episode_dirs, max_obs_chars, max_record_chars, router; the browser's viewport is the
desktop's screen size) carry over when they are set away from their defaults; the rest keep the target
env's defaults. `make_async_env` is the same for asyncio programs (the trainer): the browser's
`AsyncBrowserEnv`, or `AsyncDesktopEnv`, which runs the desktop env's calls in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from agentrl.taskspec import TaskSpec, load_task

ENV_KINDS = ("browser", "desktop")
_SHARED = ("screenshot", "max_steps", "root_dir", "record", "keep_episode_dirs", "max_obs_chars", "max_record_chars",
           "router")
_SIZE = {"browser": "viewport", "desktop": "size"}  # the screen: the page's viewport, the X display's size


def task_spec(task: TaskSpec | str | Path) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else load_task(task)


def env_config(kind: str, config: Any = None) -> Any:
    """`config` as the config of the `kind` env (`BrowserEnvConfig` or `DesktopEnvConfig`): itself when it
    is one already, else the shared options it sets (away from its class's defaults) over the target's
    defaults."""
    if kind == "desktop":
        from agentrl.envs.desktop import DesktopEnvConfig as target
    elif kind == "browser":
        from agentrl.envs.browser import BrowserEnvConfig as target
    else:
        raise ValueError(f"unknown env {kind!r} (expected one of: {', '.join(ENV_KINDS)})")
    if config is None:
        return target()
    if isinstance(config, target):
        return config
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"an env config is a BrowserEnvConfig or a DesktopEnvConfig, not {type(config).__name__}")
    default = type(config)()
    src = {**{k: k for k in _SHARED}, _SIZE["desktop" if kind == "browser" else "browser"]: _SIZE[kind]}
    carried = {dst: getattr(config, k) for k, dst in src.items()
               if hasattr(config, k) and getattr(config, k) != getattr(default, k)}
    return target(**carried)


def make_env(task: TaskSpec | str | Path, config: Any = None, **kwargs: Any) -> Any:
    """The Gymnasium env `task` runs in (its ``env:``): a `BrowserEnv` or a `DesktopEnv`. `kwargs` go to the
    env (``sandbox=`` for the browser, ``render_mode=``, or config fields)."""
    spec = task_spec(task)
    cfg = env_config(spec.env, config)
    if spec.env == "desktop":
        from agentrl.envs.desktop import DesktopEnv

        return DesktopEnv(spec, cfg, **kwargs)
    from agentrl.envs.browser import BrowserEnv

    return BrowserEnv(spec, cfg, **kwargs)


make_env.metadata = {"render_modes": ["rgb_array"]}  # both envs' (gym.make checks a render_mode against it)


def make_async_env(task: TaskSpec | str | Path, config: Any = None, *, host: Any = None) -> Any:
    """The asyncio twin of `make_env`: `AsyncBrowserEnv` on `host` (the loop's browser), or `AsyncDesktopEnv`.
    Both have ``await reset(seed)``, ``await step(action)``, ``await close()``, ``summary()``."""
    spec = task_spec(task)
    cfg = env_config(spec.env, config)
    if spec.env == "desktop":
        return AsyncDesktopEnv(spec, cfg)
    from agentrl.envs.browser import AsyncBrowserEnv

    return AsyncBrowserEnv(spec, cfg, host=host)


class AsyncDesktopEnv:
    """`DesktopEnv` for an event loop: each call runs in a worker thread (one at a time per env: the env is
    one desktop), so the loop goes on driving other envs while the desktop settles."""

    def __init__(self, task: TaskSpec | str | Path, config: Any = None) -> None:
        from agentrl.envs.desktop import DesktopEnv

        self.env = DesktopEnv(task_spec(task), env_config("desktop", config))
        self.spec = self.env.task
        self._lock = asyncio.Lock()

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def reset(self, seed: int, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        return await self._call(self.env.reset, seed=seed, options=options)

    async def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        return await self._call(self.env.step, action)

    async def close(self) -> None:
        await self._call(self.env.close)

    def summary(self) -> Any:
        return self.env.summary()

    @property
    def variant(self) -> Any:
        return self.env.variant

    @property
    def episode_id(self) -> str | None:
        return self.env.episode_id

    @property
    def episode_dir(self) -> Path | None:
        return self.env.episode_dir
