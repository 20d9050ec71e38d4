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
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import io
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urljoin

import gymnasium as gym
import numpy as np
from agentrl.envs import wall
from agentrl.envs.actions import Action, ActionError, parse_action
from agentrl.envs.axtree import AXTree, parse_snapshot, stable_refs
from agentrl.envs.host import BrowserHost
from agentrl.envs.sandboxes import default_sandbox
from agentrl.envs.spaces import AnyText
from agentrl.rewards.detectors import FieldState, StepContext
from agentrl.rewards.milestones import MilestoneTracker
from agentrl.rewards.router import RewardRouter, StepInput
from agentrl.sandbox.server import BLANK_PATH, EPISODE_HEADER, PRELOAD_HEADER
from gymnasium import spaces
from playwright.async_api import BrowserContext, Dialog, Download, Page, Request, Response
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from agentrl.taskspec import TaskSpec, TaskVariant, load_task
from agentrl.trajectory import TrajectoryWriter
from agentrl.types import (
    ActionEvent,
    BlockedRequestEvent,
    DialogEvent,
    DownloadEvent,
    EpisodeSummary,
    Event,
    MilestoneEvent,
    NavigationEvent,
    RequestEvent,
    StepRecord,
)

_FIELDS_JS = """() => {
  const out = [], seen = new Set();
  const text = el => (el ? el.innerText || el.textContent || '' : '').trim();
  for (const el of document.querySelectorAll('input, select, textarea')) {
    const type = (el.type || el.tagName).toLowerCase();
    if (['hidden', 'submit', 'button', 'reset', 'image'].includes(type)) continue;
    const label = el.labels && el.labels.length ? text(el.labels[0]) : (el.getAttribute('aria-label') || '');
    if (type === 'radio') {
      if (seen.has(el.name)) continue;
      seen.add(el.name);
      const group = [...document.querySelectorAll('input[type=radio]')].filter(r => r.name === el.name);
      const c = group.find(r => r.checked);
      const fs = el.closest('fieldset'), lg = fs && fs.querySelector('legend');
      out.push({id: '', name: el.name || '', label: lg ? text(lg) : '', type: 'radio',
                value: c ? ((c.labels && c.labels.length && text(c.labels[0])) || c.value) : '', checked: !!c});
      continue;
    }
    let value = el.value;
    if (el.tagName === 'SELECT') value = el.selectedOptions.length ? text(el.selectedOptions[0]) : '';
    out.push({id: el.id || '', name: el.name || '', label, type, value,
              checked: type === 'checkbox' ? el.checked : null});
  }
  return out;
}"""

# What Playwright's click waits for, checked in one round trip instead of over two animation frames: the
# element is attached, visible, enabled, nothing on it or its ancestors is animating (CSS animations and
# transitions, Web Animations, jQuery effects), and, after scrolling it into view, a point of it is on top:
# its center if that is, else the first point of a 5 x 5 grid over its box that is (where a person would
# click an element another one half covers). Returns that point relative to the element's padding box
# (Playwright's click `position`) and whether the click opens a new tab (a link with a target), or null.
_CLICK_POINT_JS = """el => {
  if (!el.isConnected || el.matches(':disabled')) return null;
  const style = getComputedStyle(el);
  if (style.visibility !== 'visible') return null;
  const doc = el.ownerDocument, win = doc.defaultView;
  if (doc.getAnimations().some(a => a.playState === 'running' && a.effect && a.effect.target
                                    && a.effect.target.contains(el))) return null;
  if (win.jQuery && win.jQuery.timers && win.jQuery.timers.length) return null;
  let box = el.getBoundingClientRect();
  if (box.width === 0 || box.height === 0) return null;
  if (box.top < 0 || box.left < 0 || box.bottom > win.innerHeight || box.right > win.innerWidth) {
    el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
    box = el.getBoundingClientRect();
  }
  const on = (x, y) => {
    let hit = doc.elementFromPoint(x, y);
    while (hit && hit.shadowRoot) {
      const inner = hit.shadowRoot.elementFromPoint(x, y);
      if (!inner || inner === hit) break;
      hit = inner;
    }
    return !!hit && (hit === el || el.contains(hit));
  };
  const points = [[0.5, 0.5]];
  for (const fy of [0.1, 0.3, 0.5, 0.7, 0.9]) for (const fx of [0.1, 0.3, 0.5, 0.7, 0.9]) points.push([fx, fy]);
  for (const [fx, fy] of points) {
    const x = box.left + box.width * fx, y = box.top + box.height * fy;
    if (x >= 0 && y >= 0 && x < win.innerWidth && y < win.innerHeight && on(x, y))
      return {x: x - box.left - parseFloat(style.borderLeftWidth), y: y - box.top - parseFloat(style.borderTopWidth),
              tab: !!el.closest('a[href][target]:not([target=""]):not([target="_self"]):not([target="_top"]):not([target="_parent"])')};
  }
  return null;
}"""


async def _click(loc: Any, timeout: int) -> None:
    """A real mouse click on the element. When one in-page check finds a point of it ready to click
    (`_CLICK_POINT_JS`), Playwright clicks there without its actionability waits (it watches the element
    over two animation frames: about half the time of a click). Otherwise Playwright's own click waits
    for the element and, if it never gets ready, says why (e.g. which element covers it)."""
    try:
        point = await loc.evaluate(_CLICK_POINT_JS, timeout=timeout)
    except PlaywrightError:
        point = None  # e.g. the element is gone: the full click below explains
    if point and point["tab"]:  # a new tab opens: the env adopts it (`_adopt_page`) once it exists
        try:
            async with loc.page.context.expect_page(timeout=timeout):
                await loc.click(force=True, position={"x": point["x"], "y": point["y"]}, timeout=timeout)
        except PlaywrightTimeoutError:
            pass  # the page kept it from opening
    elif point:  # still Playwright's click, for its wait on a navigation the click starts
        await loc.click(force=True, position={"x": point["x"], "y": point["y"]}, timeout=timeout)
    else:
        await loc.click(timeout=timeout)


_JS_BATCH = """exprs => exprs.map(e => { try { const v = (0, eval)(e); return v === undefined ? null : v; }
  catch (err) { return null; } })"""

# the page's title, and what the detectors need from it (form fields, their JS expressions): one round trip
_PAGE_STATE_JS = f"""([fields, exprs]) => [document.title, fields ? ({_FIELDS_JS})() : null, ({_JS_BATCH})(exprs)]"""


#: clean contexts a host keeps for coming envs, per origin and viewport (`AsyncBrowserEnv._hand_back`)
_SPARES = 4


@dataclass
class BrowserEnvConfig:
    """Run-time options of the browser env (the task file says what to do; this says how to run it)."""

    screenshot: bool = False  # add an RGB screenshot to every observation
    viewport: tuple[int, int] = (1024, 768)
    max_steps: int | None = None  # overrides the task's max_steps
    action_timeout_ms: int = 5000  # how long an action may wait for its element to be actionable
    settle_timeout_ms: int = 5000  # cap on waiting for load + in-flight requests after an action
    browser_timeout_ms: int = 20000  # a browser call slower than this means Chromium is stuck: relaunch it
    root_dir: Path | None = None  # episode directories go here (default: a temp dir per env)
    record: bool = True  # write trajectory.jsonl (+ screenshots) into each episode directory
    keep_episode_dirs: bool = True  # False: delete an episode's directory when the next reset starts
    max_obs_chars: int = 200_000
    #: how episodes are kept apart in the browser. "context": a fresh BrowserContext per episode (made ahead
    #: while the previous episode runs), so nothing client-side can survive; the default, because it relies
    #: on no list of what to wipe. "storage": `ahead` + 1 contexts take turns; between two episodes of one,
    #: its page leaves (for a blank page, or a preloaded start page) and all client state is wiped in the
    #: background (cookies, local/session storage, IndexedDB, Cache Storage, service workers, permissions,
    #: window.name, history, other tabs; the HTTP cache holds only immutable files); proved by
    #: tests/test_miniwob.py; several times faster (BENCHMARKS.md). At close the env hands its contexts,
    #: wiped, to its host, and the next env with the same origin and viewport starts in them.
    isolation: Literal["context", "storage"] = "context"
    #: how many contexts are made ready for the coming episodes while one runs (new or wiped, and with the
    #: task's start page loaded if it has ``start.preload``); more overlaps more of that work with acting
    ahead: int = 1
    #: how rewards are computed (`agentrl.rewards.router.RouterConfig`); None: the rules (milestone weights),
    #: still routed, so every step's reward has an audit
    router: Any = None


@dataclass
class _Episode:
    """One episode's browser context and everything observed in it."""

    context: BrowserContext
    page: Page
    events: list[Event] = field(default_factory=list)
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    #: clear while a page's navigation is requested but has neither committed nor turned into a download
    landed: asyncio.Event = field(default_factory=asyncio.Event)
    downloads: list[asyncio.Task] = field(default_factory=list)
    id: str = ""
    dir: Path | None = None
    variant: TaskVariant | None = None
    tracker: MilestoneTracker | None = None
    writer: TrajectoryWriter | None = None
    t: int = 0
    ax: AXTree | None = None
    refs: dict[str, str] = field(default_factory=dict)  # the observation's element ids -> Playwright's refs
    title: str = ""
    fields: list[FieldState] | None = None
    js: dict[str, Any] = field(default_factory=dict)
    ret: float = 0.0
    answer: str | None = None
    ended: bool = False
    cdp: Any = None  # CDP session of the page (isolation="storage": wipes client state between episodes)
    cdp_page: Page | None = None  # the page `cdp` is attached to (a popup the agent moved to replaces it)
    preloaded: bool = False  # the task's start page is loaded and waits for its seed (start.preload)
    last_text: str = ""  # the observation the agent acted on (the reward router's o_t)
    history: list[str] = field(default_factory=list)  # actions sent so far
    #: documents the wall refused since the step began (`agentrl.envs.wall`): the step's error says so
    refused: list[str] = field(default_factory=list)
    #: why the detectors got no page state this step (a frame showed an undeclared document), or None
    withheld: str | None = None
    #: set when an iframe commits a document (`_enforce_wall` waits for iframes added but not yet loaded)
    frame_landed: asyncio.Event = field(default_factory=asyncio.Event)
    #: the env's handlers on the context and its pages, as (emitter, event, handler): kept across wipes,
    #: removed when the context goes to another env (`AsyncBrowserEnv._unwire`)
    wired: list[tuple[Any, str, Any]] = field(default_factory=list)


class AsyncBrowserEnv:
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
        self.sandbox = sandbox or default_sandbox()
        self.router = RewardRouter.of(self.config.router)
        self.origin = self.sandbox.origin.rstrip("/")
        self._host = host
        self._ep: _Episode | None = None
        #: contexts being made ready for the coming episodes (`_make_ready`), first made first taken
        self._ready: collections.deque[asyncio.Task[_Episode]] = collections.deque()
        self._closing: set[asyncio.Task] = set()
        self._own_root = self.config.root_dir is None
        self.root_dir = Path(self.config.root_dir or tempfile.mkdtemp(prefix="agentrl-episodes-"))
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.max_steps = self.config.max_steps or self.spec.max_steps
        # requests to these fail without being the proxy's doing (a data: image): not recorded as blocked
        self._allowed = re.compile(r"^(?:" + re.escape(self.origin) + r"(?:/|$)|data:|blob:|about:)")
        self._blank = self.origin + BLANK_PATH

    @property
    def host(self) -> BrowserHost:
        if self._host is None:
            self._host = BrowserHost.for_running_loop()
        return self._host

    # ------------------------------------------------------------------ contexts
    async def _new_context(self) -> _Episode:
        browser = await self.host.browser()
        w, h = self.config.viewport
        # The wall: the context's proxy refuses every origin but the sandbox's (`BrowserHost.wall_proxy`).
        ctx = await browser.new_context(
            viewport={"width": w, "height": h}, accept_downloads=True, service_workers="block",
            proxy=self.host.wall_proxy(self.origin),
        )
        page = await ctx.new_page()
        ep = _Episode(context=ctx, page=page)
        # Visit an empty page of the sandbox origin now, so the renderer process for that site is up
        # before the episode starts: a first cross-site navigation spawns one and costs ~100-200 ms.
        await page.goto(self.origin + BLANK_PATH, wait_until="commit")
        ep.idle.set()
        ep.landed.set()
        self._wire(ep)
        return ep

    def _wire(self, ep: _Episode) -> None:
        """Connect the context's and the page's events to `ep` (what `_unwire` undoes)."""

        def on_request(req: Request) -> None:
            ep.inflight += 1
            ep.idle.clear()
            try:
                leaving = req.is_navigation_request() and req.frame.parent_frame is None
            except PlaywrightError:  # a worker's request has no frame
                leaving = False
            if leaving:
                ep.landed.clear()  # a page is leaving: set again when it commits or becomes a download

        def on_request_done(_: Request) -> None:
            ep.inflight = max(0, ep.inflight - 1)
            if ep.inflight == 0:
                ep.idle.set()

        def on_request_failed(req: Request) -> None:
            on_request_done(req)
            if not self._allowed.match(req.url):  # stopped by the wall
                ep.events.append(BlockedRequestEvent(method=req.method, url=req.url))

        def on_response(resp: Response) -> None:
            req = resp.request
            if resp.status in (204, 205) and req.is_navigation_request():
                ep.landed.set()  # "no content": the page stays
            if not req.url.startswith(self.origin):
                return
            ep.events.append(
                RequestEvent(method=req.method, url=req.url, status=resp.status, fields=_body_fields(req))
            )

        for event, fn in (
            ("request", on_request), ("requestfinished", on_request_done), ("requestfailed", on_request_failed),
            ("response", on_response), ("page", lambda p: self._adopt_page(ep, p)),
        ):
            ep.context.on(event, fn)
            ep.wired.append((ep.context, event, fn))
        self._wire_page(ep, ep.page)

    def _wire_page(self, ep: _Episode, page: Page) -> None:
        def on_nav(frame: Any) -> None:
            if frame == page.main_frame:
                ep.events.append(NavigationEvent(url=frame.url))
                ep.landed.set()
            else:
                ep.frame_landed.set()
                if not wall.frame_declared(self.origin, frame):  # removed by `_enforce_wall` after the action
                    self._refuse(ep, frame.url)

        async def on_dialog(d: Dialog) -> None:
            ep.events.append(DialogEvent(type=d.type, message=d.message, accepted=True))
            try:
                await d.accept()
            except PlaywrightError:
                pass

        def on_download(d: Download) -> None:
            ep.downloads.append(asyncio.ensure_future(self._save_download(ep, d)))
            ep.landed.set()

        def on_console(msg: Any) -> None:  # Chromium refused a navigation of the page by itself
            url = wall.refusal(msg.text) if msg.type == "error" else None
            if url is not None:
                self._refuse(ep, url)

        for event, fn in (
            ("framenavigated", on_nav), ("dialog", on_dialog), ("download", on_download), ("console", on_console),
        ):
            page.on(event, fn)
            ep.wired.append((page, event, fn))

    @staticmethod
    def _refuse(ep: _Episode, url: str) -> None:
        """Record a document the wall kept out (once per step)."""
        if url not in ep.refused:
            ep.refused.append(url)
            ep.events.append(BlockedRequestEvent(method="GET", url=url))

    @staticmethod
    def _unwire(ep: _Episode) -> None:
        for emitter, event, fn in ep.wired:
            emitter.remove_listener(event, fn)
        ep.wired.clear()

    def _adopt_page(self, ep: _Episode, page: Page) -> None:
        """A popup or target=_blank page becomes the page the agent works in."""
        if page is ep.page:
            return
        self._wire_page(ep, page)
        ep.page = page
        if page.url not in ("", "about:blank"):  # its navigation committed before it was wired
            ep.landed.set()

    async def _save_download(self, ep: _Episode, d: Download) -> None:
        assert ep.dir is not None
        name = Path(d.suggested_filename).name or "download"
        dest = ep.dir / "downloads" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{Path(name).stem} ({n}){Path(name).suffix}")
            n += 1
        await d.save_as(dest)
        ep.events.append(
            DownloadEvent(url=d.url, suggested_filename=d.suggested_filename, path=dest.relative_to(ep.dir).as_posix())
        )

    async def _make_ready(self, ep: _Episode | None) -> _Episode:
        """A context for a coming episode: `ep`'s, wiped (isolation="storage"), or a new one; for a task with
        ``start.preload``, with the start page loaded in it, waiting for its seed. Runs in the background."""
        start = self.spec.start.path if self.spec.start.preload else None
        if ep is None and self.config.isolation == "storage":
            ep = self._take_spare()
        if ep is not None:
            try:
                await self._wipe(ep, start)
            except PlaywrightError:  # a context that cannot be wiped is never reused: make a new one
                self._retire(ep)
                ep = None
        if ep is None:
            ep = await self._new_context()
            if start:
                await ep.context.set_extra_http_headers({PRELOAD_HEADER: "1"})
                await ep.page.goto(self.origin + start, wait_until="load")
        if start:
            if not await ep.page.evaluate("() => typeof window.__agentrlStart === 'function'"):
                self._retire(ep)
                raise ValueError(
                    f"task {self.spec.id}: start.preload is set, but its start page {start} defines no "
                    "window.__agentrlStart(seed) (only apps that start their episodes in the page support "
                    "preloading, e.g. miniwob); remove start.preload"
                )
            # Playwright's in-page helpers are compiled per document on first use (~20 ms): now, not at reset
            # (a snapshot of <head> in the default mode: an "ai" snapshot would number the elements, and the first
            # observation's ids would then differ from those of the same page loaded at reset)
            head = ep.page.locator("head")
            await asyncio.gather(head.aria_snapshot(), head.evaluate("() => 0"))  # its utility and main worlds
            ep.preloaded = True
        return ep

    @property
    def _spare_key(self) -> tuple:
        return (self.origin, tuple(self.config.viewport))

    def _take_spare(self) -> _Episode | None:
        """A context another env of this host handed back clean (`_hand_back`), wired to this env."""
        spare = self.host.spare.get(self._spare_key, [])
        while spare:
            ep = spare.pop()
            if ep.context.browser is not None and ep.context.browser.is_connected() and not ep.page.is_closed():
                self._wire(ep)
                return ep
        return None

    async def _hand_back(self, ep: _Episode, *, clean: bool = False) -> None:
        """isolation="storage", at close: wipe the context (its page left for the blank page; not again if
        it is `clean`, i.e. made ready for an episode that never came) and leave it to the host for the
        next env with the same origin and viewport, which wipes it again for its own start page. It keeps
        its HTTP cache of immutable files, its warm renderer and V8's code cache: a new env's first reset
        then costs a wipe instead of a new context (BENCHMARKS.md). Beyond `_SPARES` kept per key, or if
        the wipe fails, the context is closed."""
        spare = self.host.spare.setdefault(self._spare_key, [])
        if len(spare) < _SPARES:
            self.sandbox.close_episode(ep.id)
            try:
                if not clean:
                    await self._wipe(ep)
            except PlaywrightError:
                pass
            else:
                self._unwire(ep)
                spare.append(ep)
                return
        self._retire(ep)

    def _keep_ready(self) -> None:
        """Start making contexts ready until `ahead` are on their way."""
        while len(self._ready) < max(1, self.config.ahead):
            self._ready.append(asyncio.ensure_future(self._make_ready(None)))

    async def _take_context(self) -> _Episode:
        """The first context made ready, or a new one. Never hangs: a browser that stops answering (e.g.
        killed while a context was being made) is killed and relaunched."""
        limit = self.config.browser_timeout_ms / 1000
        while self._ready:
            task = self._ready.popleft()
            if not self.host.is_alive():
                task.cancel()  # made on a browser that has since died: it may never finish
                continue
            try:
                ep = await asyncio.wait_for(task, timeout=limit)
            except (PlaywrightError, TimeoutError):
                continue  # the browser died while it was made: the next one, or a new one below
            if self.host.is_alive() and not ep.page.is_closed():
                return ep
            self._retire(ep)
        try:
            return await asyncio.wait_for(self._make_ready(None), timeout=limit)
        except (PlaywrightError, TimeoutError):
            await self.host.restart()
            return await asyncio.wait_for(self._make_ready(None), timeout=limit)

    async def _wipe(self, ep: _Episode, start: str | None = None) -> _Episode:
        """isolation="storage": the same context and page, with no trace of the previous episode client-side.

        The page first leaves for the sandbox's blank page (the old page's scripts stop, so nothing can write
        after the wipe), or with `start`, straight for that preloadable start page (``start.preload``: its
        load reads no client state, so one navigation does; the preload header makes it no episode's). Then
        one overlapped batch clears what a page or the server could have left: cookies, permissions, every
        storage type of the sandbox origin (local storage, IndexedDB, Cache Storage, service workers, file
        systems, ...), session storage and window.name (per tab, so cleared in the page), and the tab's
        back/forward history. Other tabs are closed. The HTTP cache stays: the sandbox lets the browser
        cache only `Response.immutable` files (the same bytes for every episode), so it holds no episode's
        state, and a page's scripts load from it (and V8's code cache) instead of being fetched and compiled
        again."""
        for p in ep.context.pages:
            if p is not ep.page:
                await p.close()
        ep.wired[:] = [w for w in ep.wired if not isinstance(w[0], Page) or w[0] is ep.page]  # closed tabs'
        if ep.downloads:  # finish the previous episode's downloads into its own directory first
            await asyncio.wait(ep.downloads, timeout=self.config.settle_timeout_ms / 1000)
        if start:
            await ep.context.set_extra_http_headers({PRELOAD_HEADER: "1"})
        # "load", not "commit": right after the commit, Page.resetNavigationHistory can still fail with "Not
        # attached to an active page" (seen about once in 40 resets under load)
        await ep.page.goto(self.origin + (start or BLANK_PATH), wait_until="load")
        if ep.cdp is None or ep.cdp_page is not ep.page:
            ep.cdp, ep.cdp_page = await ep.context.new_cdp_session(ep.page), ep.page
        await asyncio.gather(
            ep.context.clear_cookies(),
            ep.context.clear_permissions(),
            ep.cdp.send("Storage.clearDataForOrigin", {"origin": self.origin, "storageTypes": "all"}),
            ep.cdp.send("Page.resetNavigationHistory"),
            ep.page.evaluate("() => { sessionStorage.clear(); window.name = ''; }"),
        )
        fresh = _Episode(context=ep.context, page=ep.page, cdp=ep.cdp, cdp_page=ep.cdp_page, wired=ep.wired)
        fresh.idle.set()  # the blank page has nothing in flight; late events of the old page clamp at 0
        fresh.landed.set()
        for f in dataclasses.fields(_Episode):  # the handlers stay wired to this object: reset it in place
            setattr(ep, f.name, getattr(fresh, f.name))
        return ep

    def _retire(self, ep: _Episode) -> None:
        async def close() -> None:
            try:
                await ep.context.close()
            except PlaywrightError:
                pass
            if ep.id:
                self.sandbox.close_episode(ep.id)

        t = asyncio.ensure_future(close())
        self._closing.add(t)
        t.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ gym API
    async def reset(self, seed: int, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        old = self._ep
        if old is not None:
            self._finish(old, truncation_reason="reset before the episode ended")
            if self.config.isolation == "storage":
                self.sandbox.close_episode(old.id)
                self._ready.append(asyncio.ensure_future(self._make_ready(old)))  # wiped while others run
            else:
                self._retire(old)
            if not self.config.keep_episode_dirs and old.dir is not None:
                shutil.rmtree(old.dir, ignore_errors=True)
        episode_id = f"{self.spec.id}-s{seed}-{uuid.uuid4().hex[:8]}"
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
                else:  # the start page failed to load or be observed (e.g. a timeout on a loaded machine)
                    self._retire(ep)
                # start over once
        self._ep = ep
        ep.last_text = obs["text"]
        ep.dir.mkdir(parents=True, exist_ok=True)
        for name, text in variant.files.items():
            (ep.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (ep.dir / name).write_text(text)
        ep.tracker = MilestoneTracker(variant.milestones, self.spec.success_ids())
        if self.config.record:
            ep.writer = TrajectoryWriter(ep.dir / "trajectory.jsonl")
            ep.writer.reset(
                task_id=self.spec.id, seed=seed, episode_id=ep.id, instruction=variant.instruction,
                variables=variant.variables, max_steps=self.max_steps,
            )
        # the start page's own events (its load, blocked third-party requests) are reported, not scored
        info = self._info(ep, [], list(ep.events), error=None)
        return obs, info

    async def _open(self, ep: _Episode) -> dict[str, Any]:
        assert ep.variant is not None
        await ep.context.set_extra_http_headers({EPISODE_HEADER: ep.id})
        ep.events.clear()  # what happened while the context was made ready is not part of the episode
        if ep.preloaded:
            await ep.page.evaluate("seed => window.__agentrlStart(seed)", ep.variant.seed)
        else:
            await ep.page.goto(self.origin + self.spec.start.path, wait_until="load")
        await self._settle(ep)
        await self._enforce_wall(ep)
        return await self._observe(ep, last_action=None, error=None, notes=_notes(ep.events))

    async def _enforce_wall(self, ep: _Episode, since: int = 0) -> None:
        """Send frames that show undeclared documents to the blank page (`wall.enforce`; no browser call
        when every frame is declared), recording each as refused. An iframe the action added that has not
        committed its first document yet (a data: one makes no request to wait for) is waited for first,
        up to a second."""
        deadline = time.perf_counter() + min(1.0, self.config.settle_timeout_ms / 1000)
        while any(f.parent_frame is not None and not f.url and not f.is_detached() for f in ep.page.frames):
            ep.frame_landed.clear()
            try:
                await asyncio.wait_for(ep.frame_landed.wait(), timeout=max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                break
        for url in await wall.enforce(self.origin, ep.page, self._blank):
            failed = [e.url for e in ep.events[since:] if isinstance(e, BlockedRequestEvent)]
            if url.startswith("chrome-error:") and failed:  # the error page of a request the proxy refused
                if failed[-1] not in ep.refused:
                    ep.refused.append(failed[-1])  # already recorded, as the blocked request it was
                continue
            self._refuse(ep, url)
        if ep.refused:
            await self._settle(ep)

    async def step(self, action_text: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        ep = self._ep
        if ep is None or ep.variant is None or ep.tracker is None:
            raise RuntimeError("call reset() before step()")
        if ep.ended:
            raise RuntimeError("the episode has ended (terminated or truncated); call reset()")
        t0 = time.perf_counter()
        ep.t += 1
        mark = len(ep.events)
        action = parse_action(action_text)
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
                reason = f"{'browser died' if dead else 'page failed'}: {_short_error(e)}"
            return self._dead(ep, action_text, action, reason, t0)
        step_events = ep.events[mark:]
        t1 = time.perf_counter()
        ctx = self._detector_context(ep, step_events)
        done_before = list(ep.tracker.order)
        fired = ep.tracker.update(ctx)
        timings["detect_ms"] = _ms(t1)
        success = ep.tracker.success
        terminated = success or (isinstance(action, Action) and action.name == "done")
        truncated = not terminated and ep.t >= self.max_steps
        t2 = time.perf_counter()
        obs_after = obs["text"] if ep.withheld is None else f"[page withheld from the reward: {ep.withheld}]"
        reward, audit = self.router.step(StepInput(
            task=self.spec, variant=ep.variant, action=action_text, obs_before=ep.last_text, obs_after=obs_after,
            milestones=fired, done_milestones=done_before, history=tuple(ep.history), terminated=terminated,
            events=step_events, screenshot=obs.get("_screenshot_path") if ep.withheld is None else None, t=ep.t,
        ))
        if ep.withheld is not None:
            note = f"page state withheld from the detectors: {ep.withheld}"
            audit = audit.model_copy(update={"note": f"{audit.note}; {note}" if audit.note else note})
        timings["reward_ms"] = _ms(t2)
        ep.ret += reward
        ep.last_text = obs["text"]
        ep.history.append(action_text)
        record = StepRecord(
            t=ep.t, action=action_text, parsed=str(action) if isinstance(action, Action) else None, error=error,
            observation=obs["text"], url=obs["url"], reward=reward, milestones=fired, events=step_events,
            terminated=terminated, truncated=truncated,
            truncation_reason="max_steps reached" if truncated else None,
            screenshot=obs.get("_screenshot_path"), latency_ms=_ms(t0), timings=timings, audit=audit,
        )
        obs.pop("_screenshot_path", None)
        if ep.writer:
            ep.writer.step(record)
        if terminated or truncated:
            self._finish(ep, truncation_reason=record.truncation_reason, terminated=terminated)
        info = self._info(ep, fired, step_events, error=error)
        info["truncation_reason"] = record.truncation_reason
        # the audit without its timings (infos are reproducible); the trajectory keeps the whole record
        info["audit"] = audit.untimed()
        return obs, reward, terminated, truncated, info

    def _dead(self, ep: _Episode, action_text: str, action: Any, reason: str, t0: float):
        obs = self._blank_obs(ep, error=reason)
        record = StepRecord(
            t=ep.t, action=action_text, parsed=str(action) if isinstance(action, Action) else None, error=reason,
            observation=obs["text"], url="", reward=0.0, truncated=True, truncation_reason=reason,
            latency_ms=(time.perf_counter() - t0) * 1000,
        )
        if ep.writer:
            ep.writer.step(record)
        self._finish(ep, truncation_reason=reason)
        info = self._info(ep, [], [], error=reason)
        info["truncation_reason"] = reason
        return obs, 0.0, False, True, info

    def _finish(self, ep: _Episode, truncation_reason: str | None, terminated: bool = False) -> None:
        if ep.ended or ep.tracker is None or ep.variant is None:
            return
        ep.ended = True
        if ep.writer:
            ep.writer.end(self.summary(ep, terminated=terminated, truncation_reason=truncation_reason))
            ep.writer.close()

    def summary(self, ep: _Episode | None = None, *, terminated: bool = False, truncation_reason: str | None = None) -> EpisodeSummary:
        ep = ep or self._ep
        assert ep is not None and ep.tracker is not None and ep.variant is not None
        return EpisodeSummary(
            task_id=self.spec.id, seed=ep.variant.seed, instruction=ep.variant.instruction,
            success=ep.tracker.success, return_=ep.ret, steps=ep.t, milestones=list(ep.tracker.order),
            terminated=terminated, truncated=truncation_reason is not None, truncation_reason=truncation_reason,
            answer=ep.answer,
        )

    async def close(self) -> None:
        storage = self.config.isolation == "storage" and self.host.is_alive()
        if self._ep is not None:
            self._finish(self._ep, truncation_reason="env closed")
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

    # ------------------------------------------------------------------ acting
    async def _act_and_observe(
        self, ep: _Episode, action: Action | ActionError, error: str | None, mark: int, timings: dict[str, float]
    ) -> tuple[str | None, dict[str, Any]]:
        t0 = time.perf_counter()
        ep.refused.clear()
        if isinstance(action, Action):
            error = await self._execute(ep, action)
            timings["act_ms"] = _ms(t0)
            navigated = any(isinstance(e, NavigationEvent | DownloadEvent) for e in ep.events[mark:])
            await self._settle(ep, navigated=navigated or action.name in ("goto", "back", "press", "wait"))
            await self._enforce_wall(ep, mark)
            timings["settle_ms"] = _ms(t0) - timings["act_ms"]
        t1 = time.perf_counter()
        acted = error
        for attempt in (1, 2, 3):
            if ep.refused:
                blocked = wall.describe(ep.refused, self.origin)
                error = f"{acted}; {blocked}" if acted else f"{action}: {blocked}"
            try:
                obs = await self._observe(
                    ep, last_action=action, error=error, notes=_notes(ep.events[mark:]), page_state=True
                )
            except PlaywrightError as e:
                # a navigation landed while the page was being observed (a late link, a script's redirect):
                # let the new page settle and observe that one
                if attempt == 3 or "context was destroyed" not in str(e) or ep.page.is_closed():
                    raise
                await self._settle(ep)
                await self._enforce_wall(ep, mark)
                continue
            if ep.withheld is None or attempt == 3:
                break
            # a frame committed an undeclared document after the wall's check (e.g. a data: iframe a click
            # added): remove it and observe again (its state was withheld from the detectors either way)
            await self._enforce_wall(ep, mark)
        timings["observe_ms"] = _ms(t1)
        return error, obs

    async def _execute(self, ep: _Episode, action: Action) -> str | None:
        """Carry out the action; returns an error message for the agent, or None."""
        page, timeout = ep.page, self.config.action_timeout_ms
        el = None
        if action.target is not None:
            el = ep.ax.by_ref(action.target) if ep.ax else None
            if el is None:
                ids = ", ".join(ep.ax.refs()[:12]) if ep.ax else ""
                return f"{action}: there is no element {action.target} on the page (ids now: {ids}…)"
        event = ActionEvent(
            name=action.name, target=action.target, role=el.role if el else None, label=el.name if el else None,
            value=action.args[-1] if action.args and action.name != "click" else None,
        )
        try:
            loc = page.locator(f"aria-ref={ep.refs[action.target]}") if action.target else None
            match action.name:
                case "click":
                    await _click(loc, timeout)
                case "fill":
                    await loc.fill(action.args[1], timeout=timeout)
                case "select":
                    try:
                        await loc.select_option(label=action.args[1], timeout=timeout)
                    except PlaywrightError:
                        await loc.select_option(value=action.args[1], timeout=timeout)
                case "press":
                    await page.keyboard.press(action.args[0])
                case "scroll":
                    dx, dy = {"up": (0, -600), "down": (0, 600), "left": (-600, 0), "right": (600, 0)}[action.args[0]]
                    await page.mouse.wheel(dx, dy)
                case "goto":
                    url = urljoin(page.url, action.args[0])
                    if not wall.declared(self.origin, url):  # data:, blob:, about:, another host, ...
                        ep.events.append(BlockedRequestEvent(method="GET", url=url))
                        ep.events.append(event.model_copy(update={"ok": False}))
                        return f"{action}: blocked, {url} is outside the sandbox ({self.origin}): only its own pages can be visited"
                    await page.goto(url, wait_until="load")
                case "back":
                    await page.go_back(wait_until="load")
                case "wait":
                    await page.wait_for_timeout(300)
                case "upload":
                    path = _episode_file(ep.dir, action.args[1])
                    if isinstance(path, str):
                        ep.events.append(event.model_copy(update={"ok": False}))
                        return f"{action}: {path}"
                    await loc.set_input_files(path, timeout=timeout)
                case "done":
                    ep.answer = action.args[0]
        except PlaywrightError as e:
            if not self.host.is_alive() or page.is_closed():
                raise
            ep.events.append(event.model_copy(update={"ok": False}))
            return f"{action} failed: {_short_error(e)}"
        ep.events.append(event)
        return None

    async def _settle(self, ep: _Episode, navigated: bool = True) -> None:
        """Wait for the page to settle on signals, never a fixed sleep: a requested navigation landing
        (committed, or turned into a download), load state, in-flight requests, pending downloads — each
        capped by settle_timeout_ms."""
        deadline = time.perf_counter() + self.config.settle_timeout_ms / 1000
        if not ep.landed.is_set():  # a navigation was requested (a click may return before it commits)
            try:
                await asyncio.wait_for(ep.landed.wait(), timeout=self.config.settle_timeout_ms / 1000)
            except TimeoutError:
                pass
            navigated = True
        if navigated:
            # no navigation requested or committed during the action: no load to wait for
            try:
                await ep.page.wait_for_load_state("load", timeout=self.config.settle_timeout_ms)
            except PlaywrightError:
                if not self.host.is_alive() or ep.page.is_closed():
                    raise
        left = max(0.0, deadline - time.perf_counter())
        if not ep.idle.is_set():
            try:
                await asyncio.wait_for(ep.idle.wait(), timeout=left)
            except TimeoutError:
                pass
        if ep.downloads:
            pending, ep.downloads = ep.downloads, []
            await asyncio.wait(pending, timeout=max(0.5, deadline - time.perf_counter()))

    # ------------------------------------------------------------------ observing
    async def _observe(
        self, ep: _Episode, *, last_action: Any, error: str | None, notes: list[str], page_state: bool = False
    ) -> dict[str, Any]:
        """Snapshot, title, screenshot and (with `page_state`) what the detectors need from the page, all
        requested at once so the driver round trips overlap."""
        page = ep.page
        trusted = wall.trusted(self.origin, page)
        needs = ep.tracker.needs if (page_state and ep.tracker) else frozenset()
        exprs = ep.tracker.js_expressions() if "js" in needs and ep.tracker else []
        jobs: list[Any] = [
            page.aria_snapshot(mode="ai", timeout=self.config.settle_timeout_ms),
            page.evaluate(_PAGE_STATE_JS, ["fields" in needs, exprs]),
        ]
        if self.config.screenshot:
            jobs.append(page.screenshot(type="png"))
        raw_snapshot, (title, fields, values), *shot = await asyncio.gather(*jobs)
        snapshot, ep.refs = stable_refs(raw_snapshot)
        png = shot[0] if shot else None
        ep.fields = [FieldState(**f) for f in fields] if fields is not None else None
        ep.js = dict(zip(exprs, values, strict=True))
        ep.ax = parse_snapshot(snapshot)
        ep.title = title
        ep.withheld = None
        if not (trusted and wall.trusted(self.origin, page)):  # checked again: the page may have moved on
            ep.withheld = f"the page showed a document outside the task's origin ({page.url[:80]})"
        assert ep.variant is not None
        if last_action is None:
            last = "none (start of episode)"
        elif error:
            last = f"{last_action if isinstance(last_action, Action) else 'unparseable'} -> ERROR: {error}"
        else:
            last = f"{last_action} -> ok"
        parts = [
            f"Goal: {ep.variant.instruction}",
            f"URL: {page.url}",
            f"Title: {title}",
            f"Step: {ep.t}/{self.max_steps}",
            f"Last action: {last}",
        ]
        parts += [f"Note: {n}" for n in notes]
        parts += ["Page:", snapshot]
        text = "\n".join(parts)
        if len(text) > self.config.max_obs_chars:
            text = text[: self.config.max_obs_chars] + "\n[observation cut at max_obs_chars]"
        obs: dict[str, Any] = {
            "text": text, "goal": ep.variant.instruction, "url": page.url, "title": title,
            "axtree": snapshot, "last_action_error": error or "",
        }
        if png is not None:
            obs["screenshot"] = _png_to_array(png, self.config.viewport)
            if self.config.record and ep.dir is not None:
                shot = ep.dir / "screenshots" / f"{ep.t:04d}.png"
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(png)
                obs["_screenshot_path"] = shot.relative_to(ep.dir).as_posix()
        return obs

    def _blank_obs(self, ep: _Episode, error: str) -> dict[str, Any]:
        goal = ep.variant.instruction if ep.variant else ""
        obs: dict[str, Any] = {
            "text": f"Goal: {goal}\nURL: \nTitle: \nLast action: ERROR: {error}\nPage:\n",
            "goal": goal, "url": "", "title": "", "axtree": "", "last_action_error": error,
        }
        if self.config.screenshot:
            w, h = self.config.viewport
            obs["screenshot"] = np.zeros((h, w, 3), dtype=np.uint8)
        return obs

    def _detector_context(self, ep: _Episode, step_events: list[Event]) -> StepContext:
        assert ep.tracker is not None and ep.dir is not None and ep.ax is not None
        page_ok = ep.withheld is None  # defence in depth: no evidence from a document of another origin
        return StepContext(
            step=ep.t, events=step_events, history=list(ep.events), url=ep.page.url if page_ok else "",
            title=ep.title if page_ok else "", ax=ep.ax if page_ok else parse_snapshot(""), episode_dir=ep.dir,
            answer=ep.answer if any(isinstance(e, ActionEvent) and e.name == "done" for e in step_events) else None,
            fields=ep.fields if page_ok else ([] if ep.fields is not None else None),
            js=ep.js if page_ok else dict.fromkeys(ep.js),
            server_state=self.sandbox.episode_state(ep.id) if "server_state" in ep.tracker.needs else None,
        )

    def _info(self, ep: _Episode, fired: list[MilestoneEvent], events: list[Event], *, error: str | None) -> dict[str, Any]:
        # Only what the same seed and actions reproduce (Gymnasium's checker compares infos); the episode's
        # id, directory and timings are on the env (`episode_id`, `episode_dir`) and in the trajectory file.
        assert ep.tracker is not None and ep.variant is not None
        return {
            "milestones": fired,
            "events": events,
            "success": ep.tracker.success,
            "completed": list(ep.tracker.order),
            "revoked": sorted(ep.tracker.revoked),  # completed state milestones that no longer hold
            "return": ep.ret,
            "action_error": error,
            "instruction": ep.variant.instruction,
            "variables": dict(ep.variant.variables),
            "step": ep.t,
        }

    # for agents that need the task (the scripted agent follows the oracle)
    @property
    def variant(self) -> TaskVariant | None:
        return self._ep.variant if self._ep else None

    @property
    def episode_id(self) -> str | None:
        return self._ep.id if self._ep else None

    @property
    def episode_dir(self) -> Path | None:
        return self._ep.dir if self._ep else None


def _body_fields(req: Request) -> dict[str, str | list[str]]:
    if req.method in ("GET", "HEAD"):
        return {}
    try:
        data = req.post_data
    except (PlaywrightError, UnicodeDecodeError):
        return {}
    if not data:
        return {}
    ctype = (req.headers.get("content-type") or "").lower()
    if "json" in ctype:
        try:
            obj = req.post_data_json
        except (PlaywrightError, ValueError):
            return {}
        if isinstance(obj, dict):
            return {str(k): v if isinstance(v, str) else str(v) for k, v in obj.items()}
        return {}
    if "x-www-form-urlencoded" in ctype:
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(data, keep_blank_values=True).items()}
    return {}


def _episode_file(root: Path | None, name: str) -> Path | str:
    """The file `name` inside the episode directory, or why it cannot be used (the agent never reaches
    outside its own directory: absolute paths, '..' and symlinks that leave it are refused)."""
    assert root is not None
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return f"{name!r} must be a path inside the episode's directory (no '..', not absolute)"
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        return f"{name!r} leaves the episode's directory"
    if not path.is_file():
        have = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "trajectory.jsonl")
        return f"no file {name!r} in the episode's directory (files: {', '.join(have[:12]) or 'none'})"
    return path


def _notes(events: list[Event]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, DialogEvent):
            out.append(f"a {e.type} dialog said {e.message!r} (accepted)")
        elif isinstance(e, DownloadEvent):
            out.append(f"downloaded {e.suggested_filename} to {e.path}")
        elif isinstance(e, BlockedRequestEvent):
            out.append(f"blocked a request to {e.url} (outside the sandbox)")
    return out


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def _short_error(e: Exception) -> str:
    msg = str(e).split("Call log:")[0].strip()
    return msg.splitlines()[0][:300] if msg else type(e).__name__


def _png_to_array(png: bytes, viewport: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = viewport
    if img.size != (w, h):
        img = img.resize((w, h))
    return np.asarray(img, dtype=np.uint8)


# ====================================================================== Gymnasium env
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
        self.action_space = AnyText(max_length=10_000)
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
        return _png_to_array(png, self._env.config.viewport)

    def summary(self) -> EpisodeSummary:
        return self._env.summary()

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._host.run(self._env.close())
        super().close()
