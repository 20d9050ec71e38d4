"""The sandboxed browser environment: Gymnasium API over Playwright + Chromium, with milestone rewards.

    env = gymnasium.make("agentrl/reports-total")          # or BrowserEnv("tasks/core/reports-total.yaml")
    obs, info = env.reset(seed=3)
    obs, reward, terminated, truncated, info = env.step('click(e12)')
    info["milestones"]   # MilestoneEvents fired this step, with evidence

`AsyncBrowserEnv` is the async twin (same methods, awaited) for asyncio programs; `BrowserEnv` runs the
same code on a private event-loop thread, so it is safe to use from inside a running loop as well.
Each episode gets a fresh browser context (cookies, storage, downloads dir) or, with
``isolation="storage"``, a context wiped of all client state, made ready while the previous episode runs
(for a task with ``start.preload``, with its start page already loaded); its own server-side sandbox
state, and its own directory; requests to any origin but the sandbox are refused by the context's proxy
and recorded, and no tab shows a document of another origin (data:, blob:, about:, ... `agentrl.envs.wall`):
such an attempt is an error observation and a recorded `blocked_request`.

The package, by seam: `state` (the config, an episode's context), `contexts` (the pool of contexts made
ready, wiped, handed on), `recorder` (the context's events), `scripts` (in-page JavaScript), `act` (acting,
settling, the wall, observing) and `env` (the envs); scoring and recording is `agentrl.envs.episode`'s.
"""

from agentrl.envs.browser.env import AsyncBrowserEnv, BrowserEnv
from agentrl.envs.browser.state import SPARES, BrowserEnvConfig
from agentrl.sandbox.server import EPISODE_HEADER

__all__ = ["EPISODE_HEADER", "SPARES", "AsyncBrowserEnv", "BrowserEnv", "BrowserEnvConfig"]
