"""agentrl tasks as an OpenEnv environment: `create_server(specs)` is openenv-core's own FastAPI app (its
``/ws`` sessions, ``/reset``, ``/step``, ``/health``, ``/schema``) over agentrl's async envs, and
`AgentrlEnvClient` is openenv-core's own `EnvClient` for it.

* Many sessions per server, one Chromium: each WebSocket session is an `AgentrlEnvironment` whose env
  (`make_async_env`) runs on the server's own event loop (`BrowserHost.for_running_loop`), never in a worker
  thread, so Playwright's async API stays on the one loop it belongs to.
* ``reset(seed=, task=)`` picks the task (by id; default the suite's tasks in turn by seed); ``step`` takes
  an `AgentrlAction` (a line of the action language, and whether to take a screenshot).
* The observation: the page as text and as the accessibility tree, the goal, and ``info`` (also set as the
  observation's ``metadata``, which openenv-core's serializer leaves off the wire): the milestones completed
  at this step (events with their evidence), the reward audit, success, return, the action's error, and
  ``truncated`` / ``truncation_reason``.
* Screenshots never ride in a WebSocket message: the observation names one (``path``, ``bytes``,
  ``sha256``), the PNG is served by ``GET /screenshots/{token}`` on the same server and
  `AgentrlEnvClient.screenshot` fetches and checks it. ``"full"`` is the whole page, not the viewport.
* A session whose browser or page dies ends with ``done`` and ``truncated`` and the reason; the env's error
  stays in that session, the server goes on serving the others.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
import uuid
from collections import OrderedDict
from typing import Any, Literal

from fastapi import HTTPException, Response
from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient
from openenv.core.env_server import Action, Environment, Observation, State, create_app
from pydantic import Field

from agentrl.envs.browser import BrowserEnvConfig
from agentrl.envs.factory import make_async_env
from agentrl.envs.host import BrowserHost
from agentrl.taskspec import TaskSpec

SHOTS_KEPT = 512  # screenshots the server holds for clients to fetch (oldest dropped first)


class AgentrlAction(Action):
    action: str = Field(description='One action in agentrl\'s action language, e.g. click(e12), fill(e5, "alice"), '
                                    'click(120, 48), hover(e4) or drag(e3, e7)')
    screenshot: Literal["none", "viewport", "full"] = Field(default="none", description="Screenshot after the step")


class AgentrlObservation(Observation):
    task_id: str = ""
    seed: int = 0
    goal: str = ""
    text: str = ""  # the page as the agent reads it
    axtree: str = ""  # the accessibility tree (element refs for the actions)
    url: str = ""
    step: int = 0
    info: dict[str, Any] = Field(default_factory=dict)  # milestones, audit, success, return, truncation
    screenshot: dict[str, Any] | None = None  # {"path", "bytes", "sha256", "full_page"}: fetch with the client


class AgentrlState(State):
    task_id: str = ""
    seed: int = 0
    success: bool = False
    return_: float = Field(default=0.0, alias="return")
    done: bool = False


class ScreenshotStore:
    """PNGs by token, the newest `SHOTS_KEPT` (thread-safe: sessions write, the HTTP route reads)."""

    def __init__(self, keep: int = SHOTS_KEPT) -> None:
        self.keep, self._lock, self._shots = keep, threading.Lock(), OrderedDict[str, bytes]()

    def put(self, png: bytes) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._shots[token] = png
            while len(self._shots) > self.keep:
                self._shots.popitem(last=False)
        return token

    def get(self, token: str) -> bytes | None:
        with self._lock:
            return self._shots.get(token)


class Shared:
    """What every session of one server shares: the tasks, the env config, the screenshots, the sessions."""

    def __init__(self, specs: list[TaskSpec], config: BrowserEnvConfig | None = None) -> None:
        if not specs:
            raise ValueError("an OpenEnv server needs at least one task")
        self.specs = sorted(specs, key=lambda s: s.id)
        self.by_id = {s.id: s for s in self.specs}
        self.config = config or BrowserEnvConfig(record=False, keep_episode_dirs=False)
        self.shots = ScreenshotStore()
        self.sessions: dict[str, AgentrlEnvironment] = {}  # by the current episode's id


def _json(x: Any) -> Any:
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if isinstance(x, list | tuple):
        return [_json(v) for v in x]
    if isinstance(x, dict):
        return {k: _json(v) for k, v in x.items()}
    return x


class AgentrlEnvironment(Environment[AgentrlAction, AgentrlObservation, AgentrlState]):
    """One OpenEnv session: one agentrl async env at a time, on the server's event loop."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, shared: Shared) -> None:
        super().__init__()
        self.shared = shared
        self.env: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = AgentrlState()
        self._goal = ""

    # openenv calls the sync forms only when no async form exists; these are the async env's
    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> AgentrlObservation:
        raise NotImplementedError("an agentrl session is asynchronous: use reset_async")

    def step(self, action: AgentrlAction, timeout_s: float | None = None, **kwargs: Any) -> AgentrlObservation:
        raise NotImplementedError("an agentrl session is asynchronous: use step_async")

    async def reset_async(self, seed: int | None = None, episode_id: str | None = None,
                          task: str | None = None) -> AgentrlObservation:
        seed = int(seed or 0)
        if task is not None and task not in self.shared.by_id:
            raise ValueError(f"no task {task!r} on this server (tasks: {', '.join(self.shared.by_id)})")
        spec = self.shared.by_id[task] if task else self.shared.specs[seed % len(self.shared.specs)]
        self._loop = asyncio.get_running_loop()
        if self.env is None or self.env.spec.id != spec.id:
            await self._close_env()
            self.env = make_async_env(spec, self.shared.config, host=BrowserHost.for_running_loop())
        self.shared.sessions.pop(self._state.episode_id or "", None)
        obs, info = await self.env.reset(seed)
        eid = self.env.episode_id or episode_id
        self.shared.sessions[eid] = self
        self._state = AgentrlState(episode_id=eid, step_count=0, task_id=spec.id, seed=seed)
        self._goal = obs["goal"]
        return self._observation(obs, 0.0, False, {**info, "truncated": False, "truncation_reason": None}, None)

    async def step_async(self, action: AgentrlAction, timeout_s: float | None = None, **kwargs: Any) -> AgentrlObservation:
        if self.env is None:
            raise RuntimeError("call reset before step")
        try:
            obs, reward, terminated, truncated, info = await self.env.step(action.action)
        except RuntimeError:
            raise  # a step after the episode ended, or before reset: the client's error, the session lives
        except Exception as e:  # noqa: BLE001 - the session's env failed: the episode ends truncated, with why
            reason = f"session failed: {type(e).__name__}: {e}"
            self._state = self._state.model_copy(update={"done": True, "step_count": self._state.step_count + 1})
            info = {"truncated": True, "truncation_reason": reason, "success": False, "milestones": []}
            return self._observation({"goal": self._goal}, 0.0, True, info, None)
        shot = None
        if action.screenshot != "none" and not truncated:
            shot = await self._screenshot(full=action.screenshot == "full")
        done = bool(terminated or truncated)
        self._state = self._state.model_copy(update={
            "step_count": self._state.step_count + 1, "success": bool(info.get("success")),
            "return_": float(info.get("return", 0.0)), "done": done})
        return self._observation(obs, float(reward), done, {**info, "terminated": terminated, "truncated": truncated}, shot)

    async def _screenshot(self, *, full: bool) -> dict[str, Any] | None:
        page = getattr(getattr(self.env, "_ep", None), "page", None)  # the browser env's current page
        if page is None:  # a desktop task: the env's own (viewport) screenshot
            return None
        png = await page.screenshot(type="png", full_page=full)
        token = self.shared.shots.put(png)
        return {"path": f"/screenshots/{token}", "bytes": len(png), "sha256": hashlib.sha256(png).hexdigest(),
                "full_page": full}

    def _observation(self, obs: dict[str, Any], reward: float, done: bool, info: dict[str, Any],
                     shot: dict[str, Any] | None) -> AgentrlObservation:
        meta = _json({k: v for k, v in info.items() if k != "variables"})
        return AgentrlObservation(
            done=done, reward=reward, metadata=meta, info=meta, task_id=self._state.task_id, seed=self._state.seed,
            goal=obs.get("goal", self._goal), text=obs.get("text", ""), axtree=obs.get("axtree", ""),
            url=obs.get("url", ""), step=self._state.step_count, screenshot=shot)

    @property
    def state(self) -> AgentrlState:
        return self._state

    async def _close_env(self) -> None:
        if self.env is not None:
            env, self.env = self.env, None
            await env.close()

    def close(self) -> None:
        """Called by openenv-core from a worker thread when the session ends: the env closes on its loop."""
        self.shared.sessions.pop(self._state.episode_id or "", None)
        if self.env is not None and self._loop is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._close_env(), self._loop).result(timeout=60)


def create_server(specs: list[TaskSpec], *, config: BrowserEnvConfig | None = None, max_sessions: int = 64) -> Any:
    """openenv-core's FastAPI app serving `specs`, up to `max_sessions` concurrent WebSocket sessions; the
    sessions are reachable as ``app.state.agentrl.sessions`` (by episode id)."""
    shared = Shared(specs, config)
    app = create_app(functools.partial(AgentrlEnvironment, shared), AgentrlAction, AgentrlObservation,
                     env_name="agentrl", max_concurrent_envs=max_sessions)

    @app.get("/screenshots/{token}")
    def screenshot(token: str) -> Response:
        png = shared.shots.get(token)
        if png is None:
            raise HTTPException(404, f"no screenshot {token} (the server keeps the newest {shared.shots.keep})")
        return Response(png, media_type="image/png")

    app.state.agentrl = shared
    return app


class AgentrlEnvClient(EnvClient[AgentrlAction, AgentrlObservation, AgentrlState]):
    """openenv-core's client for an agentrl server; `screenshot` fetches an observation's PNG over HTTP."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        object.__setattr__(self, "_http_url", base_url.replace("ws://", "http://").rstrip("/"))

    def _step_payload(self, action: AgentrlAction) -> dict[str, Any]:
        return action.model_dump()

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[AgentrlObservation]:
        obs = AgentrlObservation(**payload.get("observation", {}), reward=payload.get("reward"),
                                 done=payload.get("done", False))
        obs.metadata = dict(obs.info)
        return StepResult(observation=obs, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> AgentrlState:
        return AgentrlState(**payload)

    async def screenshot(self, obs: AgentrlObservation) -> bytes:
        """The observation's screenshot, checked against its size and sha256."""
        import urllib.request

        if obs.screenshot is None:
            raise ValueError("this observation has no screenshot (step with screenshot='viewport' or 'full')")
        url = self._http_url + obs.screenshot["path"]
        png = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
        if len(png) != obs.screenshot["bytes"] or hashlib.sha256(png).hexdigest() != obs.screenshot["sha256"]:
            raise ValueError(f"screenshot {url}: {len(png)} bytes, not the {obs.screenshot['bytes']} announced")
        return png

