"""Acting in and observing an episode's page: carry out an action (a real click at a point that is ready,
fill, select, press, scroll, goto within the sandbox, back, upload from the episode directory), settle on
signals (a navigation landing, load, requests in flight, downloads; never a fixed sleep), keep the wall
(frames of undeclared documents go to the blank page), and observe (ARIA snapshot with stable element ids,
title, the page state the detectors need, screenshot)."""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
from agentrl.envs import wall
from agentrl.envs.actions import Action, ActionError
from agentrl.envs.axtree import parse_snapshot, stable_refs
from agentrl.envs.browser.pointer import is_pointer, pointer_action, pointer_event
from agentrl.envs.browser.recorder import notes
from agentrl.envs.browser.scripts import CLICK_POINT_JS, ELEMENTS_JS, PAGE_STATE_JS, PAGE_TEXT_JS
from agentrl.envs.browser.state import BrowserEpisode
from agentrl.envs.episode import last_action_text
from agentrl.rewards.detectors import FieldState
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from agentrl.types import ActionEvent, BlockedRequestEvent, DownloadEvent, NavigationEvent


class ActObserve:
    """Acting, settling, the wall and observing (a part of `AsyncBrowserEnv`)."""

    async def _enforce_wall(self, ep: BrowserEpisode, since: int = 0) -> None:
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
        if ep.popup_refused:  # a popup's page comes a moment after its refused request: wait for it
            ep.popup_refused = False
            if wall.frame_declared(self.origins, ep.page.main_frame):  # not adopted yet
                ep.adopted.clear()
                try:
                    await asyncio.wait_for(ep.adopted.wait(), timeout=max(0.0, deadline - time.perf_counter()))
                except TimeoutError:
                    pass
        await self._leave_refused_popups(ep)
        # a tab that left the origin goes back to the last document of it (the blank page if none)
        for url in await wall.enforce(self.origins, ep.page, ep.last_declared or self._blank):
            failed = [e.url for e in ep.events[since:] if isinstance(e, BlockedRequestEvent)]
            if url.startswith("chrome-error:") and failed:  # the error page of a request the proxy refused
                if failed[-1] not in ep.refused:
                    ep.refused.append(failed[-1])  # already recorded, as the blocked request it was
                continue
            self._refuse(ep, url)
        if ep.refused:
            await self._settle(ep)

    async def _leave_refused_popups(self, ep: BrowserEpisode, *, errors_only: bool = False) -> None:
        """A popup whose document the wall refuses (an outside host's error page, a script's blank page) is
        closed and the agent's tab is again the page that opened it, as it was: recorded as a refused
        popup. No browser call unless there is one. `errors_only`: only one showing an error page (between
        steps: a popup still on its first, empty document may be on its way to a page of the origin)."""
        while ep.openers and not wall.frame_declared(self.origins, ep.page.main_frame):
            if errors_only and not ep.page.url.startswith("chrome-error:"):
                return
            popup, ep.page = ep.page, ep.openers.pop()
            if ep.page.is_closed():
                ep.page = popup  # nothing to go back to: `wall.enforce` moves the popup on instead
                return
            url = popup.url
            failed = [e.url for e in ep.events if isinstance(e, BlockedRequestEvent)]
            if (url.startswith("chrome-error:") or url in ("", "about:blank")) and failed:
                url = failed[-1]  # the proxy's refusal of the popup's first request
            self._refuse(ep, url, reason="a popup to a document outside the sandbox, closed; the agent stays "
                                         "on the page that opened it")
            try:
                await popup.close()
            except PlaywrightError:
                pass

    async def _act_and_observe(
        self, ep: BrowserEpisode, action: Action | ActionError, error: str | None, mark: int, timings: dict[str, float]
    ) -> tuple[str | None, dict[str, Any]]:
        t0 = time.perf_counter()
        ep.refused.clear()
        await self._leave_refused_popups(ep, errors_only=True)  # one the page opened since the last step
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
                blocked = wall.describe(ep.refused, self.origins)
                error = f"{acted}; {blocked}" if acted else f"{action}: {blocked}"
            try:
                obs = await self._observe(
                    ep, last_action=action, error=error, notes=notes(ep.events[mark:]), page_state=True
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

    async def _execute(self, ep: BrowserEpisode, action: Action) -> str | None:
        """Carry out the action; returns an error message for the agent, or None."""
        page, timeout = ep.page, self.config.action_timeout_ms
        if is_pointer(action):
            pointed: ActionEvent | str = ActionEvent(name=action.name)
            try:
                pointed = await pointer_event(ep, action, self.config.viewport, timeout)
                if isinstance(pointed, str):
                    return f"{action}: {pointed}"
                ep.events.append(await pointer_action(ep, action, pointed, timeout))
            except PlaywrightError as e:
                if not self.host.is_alive() or page.is_closed():
                    raise
                assert isinstance(pointed, ActionEvent)
                ep.events.append(pointed.model_copy(update={"ok": False}))
                return f"{action} failed: {short_error(e)}"
            return None
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
                    # relative to the page, or to the origin's last document (never to an error page)
                    base = page.url if wall.declared(self.origins, page.url) else (ep.last_declared or self.origin + "/")
                    url = urljoin(base, action.args[0])
                    if not wall.declared(self.origins, url):  # data:, blob:, about:, another host, ...
                        ep.events.append(BlockedRequestEvent(method="GET", url=url))
                        ep.events.append(event.model_copy(update={"ok": False}))
                        return f"{action}: blocked, {url} is outside the sandbox ({self.origin}): only its own pages can be visited"
                    await page.goto(url, wait_until="load")
                case "back":
                    await page.go_back(wait_until="load")
                case "wait":
                    await page.wait_for_timeout(300)
                case "upload":
                    path = episode_file(ep.dir, action.args[1])
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
            return f"{action} failed: {short_error(e)}"
        ep.events.append(event)
        return None

    async def _settle(self, ep: BrowserEpisode, navigated: bool = True) -> None:
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
        self, ep: BrowserEpisode, *, last_action: Any, error: str | None, notes: list[str], page_state: bool = False
    ) -> dict[str, Any]:
        """The page's size, then its ARIA snapshot, title and (with `page_state`) what the detectors need
        from it in one overlapped batch; the screenshot overlaps the rest. A page over `max_obs_elements`, or
        whose snapshot does not come within settle_timeout_ms, is observed as too large: its title and text,
        no element ids. Every text field is cut to `max_obs_chars`, the cut marked."""
        page, cfg = ep.page, self.config
        trusted = wall.trusted(self.origins, page)
        needs = ep.tracker.needs if (page_state and ep.tracker) else frozenset()
        exprs = ep.tracker.js_expressions() if "js" in needs and ep.tracker else []
        shot_job = asyncio.ensure_future(page.screenshot(type="png")) if cfg.screenshot else None
        try:
            size = await page.evaluate(ELEMENTS_JS)
            state_job = page.evaluate(PAGE_STATE_JS, ["fields" in needs, exprs])
            too_large = f"{size} elements, over max_obs_elements={cfg.max_obs_elements}" if size > cfg.max_obs_elements else None
            if too_large:
                (title, fields, values), raw_snapshot = await asyncio.gather(state_job, self._page_text(page, too_large))
            else:
                (title, fields, values), raw_snapshot = await asyncio.gather(
                    state_job, _snapshot(page, cfg.settle_timeout_ms, boxes=cfg.obs_boxes))
                if raw_snapshot is None:
                    too_large = f"{size} elements, whose snapshot did not come within {cfg.settle_timeout_ms} ms"
                    raw_snapshot = await self._page_text(page, too_large)
            png = await shot_job if shot_job else None
        finally:
            if shot_job and not shot_job.done():
                shot_job.cancel()
        snapshot, ep.refs = stable_refs(raw_snapshot) if not too_large else (raw_snapshot, {})
        if cfg.obs_boxes and not too_large:
            snapshot = _FRAME_BOX.sub(r"\1", snapshot)
        ep.fields = [FieldState(**f) for f in fields] if fields is not None else None
        ep.js = dict(zip(exprs, values, strict=True))
        ep.ax = parse_snapshot(snapshot if not too_large else "")
        ep.title = title
        ep.withheld = None
        if not (trusted and wall.trusted(self.origins, page)):  # checked again: the page may have moved on
            ep.withheld = f"the page showed a document outside the task's origin ({page.url[:80]})"
        assert ep.variant is not None
        last = last_action_text(last_action, error)
        n = cfg.max_obs_chars
        parts = [
            f"Goal: {ep.variant.instruction}",
            f"URL: {cut(page.url, 2000)}",
            f"Title: {cut(title, 2000)}",
            f"Step: {ep.t}/{self.max_steps}",
            f"Last action: {cut(last, 2000)}",
        ]
        parts += [f"Note: {cut(note, 2000)}" for note in notes[:50]]
        if len(notes) > 50:
            parts.append(f"Note: ... and {len(notes) - 50} more")
        parts += ["Page:", snapshot]
        obs: dict[str, Any] = {
            "text": cut("\n".join(parts), n), "goal": cut(ep.variant.instruction, n), "url": cut(page.url, n),
            "title": cut(title, n), "axtree": cut(snapshot, n), "last_action_error": cut(error or "", n),
        }
        if png is not None:
            obs["screenshot"] = png_to_array(png, cfg.viewport)
            if cfg.record and ep.dir is not None:
                shot = ep.dir / "screenshots" / f"{ep.t:04d}.png"
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(png)
                obs["_screenshot_path"] = shot.relative_to(ep.dir).as_posix()
        return obs

    async def _page_text(self, page: Any, why: str) -> str:
        """The observation of a page too large to snapshot: why, and its text (cut at `max_obs_chars`)."""
        text = await page.evaluate(PAGE_TEXT_JS, self.config.max_obs_chars)
        return (f"[page too large to observe in full ({why}): no element ids; its text follows; goto, back, "
                f"scroll, press and done still work]\n{text}")

    def _blank_obs(self, ep: BrowserEpisode, error: str) -> dict[str, Any]:
        goal = ep.variant.instruction if ep.variant else ""
        obs: dict[str, Any] = {
            "text": f"Goal: {goal}\nURL: \nTitle: \nLast action: ERROR: {error}\nPage:\n",
            "goal": goal, "url": "", "title": "", "axtree": "", "last_action_error": error,
        }
        if self.config.screenshot:
            w, h = self.config.viewport
            obs["screenshot"] = np.zeros((h, w, 3), dtype=np.uint8)
        return obs


async def _click(loc: Any, timeout: int) -> None:
    """A real mouse click on the element. When one in-page check finds a point of it ready to click
    (`CLICK_POINT_JS`), Playwright clicks there without its actionability waits (it watches the element
    over two animation frames: about half the time of a click). Otherwise Playwright's own click waits
    for the element and, if it never gets ready, says why (e.g. which element covers it)."""
    try:
        point = await loc.evaluate(CLICK_POINT_JS, timeout=timeout)
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


def episode_file(root: Path | None, name: str) -> Path | str:
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


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


#: the box of an element inside an iframe, which Playwright gives in the frame's own coordinates
_FRAME_BOX = re.compile(r"(\[ref=f\d+e\d+\](?: \[[^\]]*\])*?) \[box=[\d,.-]+\]")


async def _snapshot(page: Any, timeout_ms: int, boxes: bool = False) -> str | None:
    """The page's AI-mode ARIA snapshot (with `boxes`, each element's ``[box=x,y,w,h]``), or None if it
    does not come within `timeout_ms`."""
    try:
        return await page.aria_snapshot(mode="ai", boxes=boxes, timeout=timeout_ms)
    except PlaywrightTimeoutError:
        return None


def cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut marked (with the length it had)."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[cut at {limit} of {len(text)} characters]"


def short_error(e: Exception) -> str:
    msg = str(e).split("Call log:")[0].strip()
    return msg.splitlines()[0][:300] if msg else type(e).__name__


def png_to_array(png: bytes, viewport: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = viewport
    if img.size != (w, h):
        img = img.resize((w, h))
    return np.asarray(img, dtype=np.uint8)


