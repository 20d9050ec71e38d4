"""The browser env itself: `AsyncBrowserEnv` (reset, step, close on one event loop) and the Gymnasium
`BrowserEnv` over it. It acts and observes (`ActObserve`), records what happens (`EventRecorder`) in
contexts it keeps ready (`ContextPool`); the episode core (`agentrl.envs.episode`) scores and records."""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from agentrl.envs import wall
from agentrl.envs.actions import MAX_ACTION_CHARS, ActionError, parse_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser.act import ActObserve, png_to_array, short_error
from agentrl.envs.browser.contexts import ContextPool
from agentrl.envs.browser.recorder import EventRecorder, notes
from agentrl.envs.browser.scripts import CLEAR_CLIPBOARD_JS
from agentrl.envs.browser.state import BrowserEnvConfig, BrowserEpisode
from agentrl.envs.episode import EpisodeCore, EpisodeViews, answer_of
from agentrl.envs.host import BrowserHost
from agentrl.envs.sandboxes import default_sandbox
from agentrl.envs.spaces import AnyText
from agentrl.rewards.detectors import JsonFetchError, StepContext
from agentrl.sandbox.server import BLANK_PATH, EPISODE_HEADER
from agentrl.sandbox.sites import SiteBackend, get_json
from gymnasium import spaces
from playwright.async_api import Error as PlaywrightError

from agentrl.taskspec import TaskSpec, TaskVariant, load_task
from agentrl.types import EpisodeSummary, Event


class AsyncBrowserEnv(ContextPool, EventRecorder, ActObserve, EpisodeViews):
    """The env's implementation; all methods are coroutines on one event loop."""

    def __init__(
        self,
        task: TaskSpec | str | Path,
        config: BrowserEnvConfig | None = None,
        *,
        sandbox: Any | None = None,
        host: BrowserHost | None = None,
    ) -> None:
        self.spec = task if isinstance(task, TaskSpec) else load_task(task)
        self.config = config or BrowserEnvConfig()
        # agentrl's sandbox, or the task's own site (started if need be; `agentrl.sandbox.sites`)
        self.sandbox = sandbox or (SiteBackend(self.spec.site) if self.spec.site is not None else default_sandbox())
        self.origin = self.sandbox.origin.rstrip("/")
        #: what the wall lets through: the sandbox's origin, or the site's and the blank page's
        self.origins: tuple[str, ...] = tuple(o.rstrip("/") for o in getattr(self.sandbox, "origins", (self.origin,)))
        if self.spec.site is not None and self.spec.site.remote:
            BrowserHost.resolve_also(self.origin)
        self._host = host
        self._ep: BrowserEpisode | None = None
        #: contexts being made ready for the coming episodes (`_make_ready`), first made first taken
        self._ready: collections.deque[asyncio.Task[BrowserEpisode]] = collections.deque()
        self._closing: set[asyncio.Task] = set()
        self._own_root = self.config.root_dir is None
        self.root_dir = Path(self.config.root_dir or tempfile.mkdtemp(prefix="agentrl-episodes-"))
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.max_steps = self.config.max_steps or self.spec.max_steps
        self.core = EpisodeCore(self.spec, self.config.router, self.max_steps, record=self.config.record,
                                max_record_chars=self.config.max_record_chars)
        self.router = self.core.router
        # requests to these fail without being the proxy's doing (a data: image): not recorded as blocked
        self._allowed = re.compile(r"^(?:" + "|".join(re.escape(o) + r"(?:/|$)" for o in self.origins)
                                   + r"|data:|blob:|about:)")
        self._blank = getattr(self.sandbox, "blank_url", self.origin + BLANK_PATH)

    @property
    def host(self) -> BrowserHost:
        if self._host is None:
            self._host = BrowserHost.for_running_loop()
        return self._host


    # ------------------------------------------------------------------ gym API
    async def reset(self, seed: int, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        old = self._ep
        if old is not None:
            self.core.finish(old, "reset before the episode ended")
            if self.config.isolation == "storage":
                self.sandbox.close_episode(old.id)
                self._ready.append(asyncio.ensure_future(self._make_ready(old)))  # wiped while others run
            else:
                self._retire(old)
            if not self.config.keep_episode_dirs and old.dir is not None:
                shutil.rmtree(old.dir, ignore_errors=True)
        episode_id = f"{self.spec.id}-s{seed}-{uuid.uuid4().hex[:8]}"
        if isinstance(self.sandbox, SiteBackend):  # an HTTP call or a command: the loop's other envs go on
            facts = await asyncio.to_thread(self.sandbox.open_episode, episode_id, seed)
        else:
            facts = self.sandbox.open_episode(episode_id, seed)
        variant = self.spec.render(seed, facts)
        for attempt in (1, 2):
            ep = await self._take_context()
            self._keep_ready()  # the next episodes' contexts are made while this one runs
            ep.id, ep.variant, ep.dir = episode_id, variant, self.root_dir / episode_id
            try:
                obs = await asyncio.wait_for(self._open(ep), timeout=self.config.browser_timeout_ms / 1000)
                break
            except (PlaywrightError, TimeoutError) as e:
                broken = isinstance(e, TimeoutError) or not self.host.is_alive() or ep.page.is_closed()
                if attempt == 2:
                    raise
                if broken:  # Chromium died (or hung) between episodes or during this reset: relaunch
                    await self.host.restart()
                else:  # the start page failed to load or be observed (e.g. a crashed renderer): another
                    # context, the same sandbox episode (still open: the second attempt runs in it)
                    self._retire(ep, close_episode=False)
                # start over once
        self._ep = ep
        ep.dir.mkdir(parents=True, exist_ok=True)
        for name, text in variant.files.items():
            (ep.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (ep.dir / name).write_text(text)
        # the start page's own events (its load, blocked third-party requests) are reported, not scored
        return obs, self.core.begin(ep, seed, obs["text"])

    async def _open(self, ep: BrowserEpisode) -> dict[str, Any]:
        assert ep.variant is not None
        # the clipboard is the browser's, shared by every context: nothing copied before crosses into this
        # episode (under either isolation; still shared with the episodes running at the same time)
        await ep.page.evaluate(CLEAR_CLIPBOARD_JS)
        await ep.context.set_extra_http_headers({EPISODE_HEADER: ep.id})
        ep.events.clear()  # what happened while the context was made ready is not part of the episode
        if ep.preloaded:
            await ep.page.evaluate("seed => window.__agentrlStart(seed)", ep.variant.seed)
        else:
            await ep.page.goto(self.origin + self.spec.start.path, wait_until="load")
        await self._settle(ep)
        if wall.declared(self.origin, ep.page.url):  # a preloaded page committed before the episode began
            ep.last_declared = ep.page.url
        await self._enforce_wall(ep)
        return await self._observe(ep, last_action=None, error=None, notes=notes(ep.events))

    async def step(self, action_text: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        ep = self._ep
        if ep is None or ep.variant is None or ep.tracker is None:
            raise RuntimeError("call reset() before step()")
        if ep.ended:
            raise RuntimeError("the episode has ended (terminated or truncated); call reset()")
        t0 = time.perf_counter()
        ep.t += 1
        mark = len(ep.events)
        action = parse_action(action_text, max_chars=MAX_ACTION_CHARS)  # too long: an error, unparsed
        error: str | None = str(action) if isinstance(action, ActionError) else None
        timings: dict[str, float] = {}
        try:
            error, obs = await asyncio.wait_for(
                self._act_and_observe(ep, action, error, mark, timings), timeout=self.config.browser_timeout_ms / 1000
            )
        except (PlaywrightError, TimeoutError) as e:
            # A dead or stuck browser (or a page that cannot be observed any more) ends the episode, never
            # the run; a stuck one is killed so the next reset starts a fresh Chromium.
            if isinstance(e, TimeoutError):
                await self.host.restart()
                reason = f"browser stuck: no answer within {self.config.browser_timeout_ms} ms"
            else:
                dead = not self.host.is_alive() or ep.page.is_closed()
                what = "browser died" if dead else "renderer crashed" if ep.crashed else "page failed"
                reason = f"{what}: {short_error(e)}"
            return self.core.dead(ep, action_text, action, reason, self._blank_obs(ep, error=reason), t0=t0)
        step_events = ep.events[mark:]
        docs = await self._site_json(ep)
        reward, terminated, truncated, info = self.core.score(
            ep, action_text, action, error, obs, step_events, self._detector_context(ep, step_events, docs),
            t0=t0, timings=timings, withheld=ep.withheld,
        )
        return obs, reward, terminated, truncated, info

    def summary(self) -> EpisodeSummary:
        assert self._ep is not None
        return self.core.summary(self._ep)

    async def close(self) -> None:
        storage = self.config.isolation == "storage" and self.host.is_alive()
        if self._ep is not None:
            self.core.finish(self._ep, "env closed")
            if storage:
                await self._hand_back(self._ep)
            else:
                self._retire(self._ep)
            self._ep = None
        while self._ready:
            try:
                ep = await self._ready.popleft()
                if storage:
                    await self._hand_back(ep, clean=True)
                else:
                    await ep.context.close()
            except (PlaywrightError, ValueError):
                pass
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._own_root and not self.config.keep_episode_dirs:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    async def _site_json(self, ep: BrowserEpisode) -> dict[str, Any]:
        """The documents `http_json` milestones read: GETs of the task's origin with the episode's header,
        in worker threads (a failed one is kept as its error, which matches nothing)."""
        assert ep.tracker is not None
        urls = ep.tracker.json_urls() if "site_json" in ep.tracker.needs else []

        def fetch(path: str) -> Any:
            try:
                return get_json(self.origin + path, ep.id)
            except (OSError, ValueError) as e:
                return JsonFetchError(f"{type(e).__name__}: {e}")

        values = await asyncio.gather(*(asyncio.to_thread(fetch, u) for u in urls))
        return dict(zip(urls, values, strict=True))

    def _detector_context(self, ep: BrowserEpisode, step_events: list[Event],
                          docs: dict[str, Any] | None = None) -> StepContext:
        assert ep.tracker is not None and ep.dir is not None and ep.ax is not None
        page_ok = ep.withheld is None  # defence in depth: no evidence from a document of another origin
        return StepContext(
            step=ep.t, events=step_events, history=list(ep.events), url=ep.page.url if page_ok else "",
            title=ep.title if page_ok else "", ax=ep.ax if page_ok else parse_snapshot(""), episode_dir=ep.dir,
            answer=answer_of(ep, step_events),
            fields=ep.fields if page_ok else ([] if ep.fields is not None else None),
            js=ep.js if page_ok else dict.fromkeys(ep.js),
            server_state=self.sandbox.episode_state(ep.id) if "server_state" in ep.tracker.needs else None,
            site_json=docs or {},
        )


class BrowserEnv(gym.Env[dict, str]):
    """Gymnasium env over `AsyncBrowserEnv`; browser work runs on the process's browser-loop thread.

    Observation: dict with ``text`` (goal, URL, title, last action result, accessibility tree with element
    ids — what an LLM reads), ``goal``, ``url``, ``title``, ``axtree``, ``last_action_error``, and
    ``screenshot`` (H, W, 3 uint8) when `config.screenshot`. Action: a string in the action language.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: TaskSpec | str | Path,
        config: BrowserEnvConfig | None = None,
        *,
        sandbox: Any | None = None,
        render_mode: str | None = None,
        **config_kwargs: Any,
    ) -> None:
        if config_kwargs:
            config = BrowserEnvConfig(**{**(config.__dict__ if config else {}), **config_kwargs})
        self._host = BrowserHost.shared()
        self._env = AsyncBrowserEnv(task, config, sandbox=sandbox, host=self._host)
        self.spec_task = self._env.spec
        self.render_mode = render_mode
        cfg = self._env.config
        obs_spaces: dict[str, spaces.Space] = {
            k: AnyText() for k in ("text", "goal", "url", "title", "axtree", "last_action_error")
        }
        if cfg.screenshot:
            w, h = cfg.viewport
            obs_spaces["screenshot"] = spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = AnyText(max_length=MAX_ACTION_CHARS)
        self._last_obs: dict[str, Any] | None = None

    @property
    def task(self) -> TaskSpec:
        return self._env.spec

    @property
    def variant(self) -> TaskVariant | None:
        return self._env.variant

    @property
    def sandbox(self) -> Any:
        return self._env.sandbox

    @property
    def episode_id(self) -> str | None:
        return self._env.episode_id

    @property
    def episode_dir(self) -> Path | None:
        return self._env.episode_dir

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        obs, info = self._host.run(self._env.reset(seed, options))
        self._last_obs = obs
        return obs, info

    def step(self, action: str):
        obs, reward, terminated, truncated, info = self._host.run(self._env.step(action))
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._last_obs is not None and "screenshot" in self._last_obs:
            return self._last_obs["screenshot"]
        ep = self._env._ep
        if ep is None:
            return None
        png = self._host.run(ep.page.screenshot(type="png"))
        return png_to_array(png, self._env.config.viewport)

    def summary(self) -> EpisodeSummary:
        return self._env.summary()

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._host.run(self._env.close())
        super().close()
