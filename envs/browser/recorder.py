"""What happens in an episode's browser context, as events: requests (and the wall's refusals), responses,
navigations, dialogs (accepted), downloads (saved into the episode directory, within its budget), new tabs
(adopted), WebSockets the wall refused, a crashed renderer."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from agentrl.envs import wall
from agentrl.envs.browser.state import BrowserEpisode
from playwright.async_api import Dialog, Download, Page, Request, Response, WebSocket
from playwright.async_api import Error as PlaywrightError

from agentrl.types import (
    BlockedRequestEvent,
    DialogEvent,
    DownloadEvent,
    Event,
    NavigationEvent,
    RequestEvent,
)


class EventRecorder:
    """The env's handlers on a context and its pages (a part of `AsyncBrowserEnv`)."""

    def _wire(self, ep: BrowserEpisode) -> None:
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
                if req.is_navigation_request():
                    try:
                        req.frame  # noqa: B018 - a new tab's first request has no frame yet: a popup
                    except PlaywrightError:
                        ep.popup_refused = True  # its page is adopted soon after: `_enforce_wall` waits

        def on_response(resp: Response) -> None:
            req = resp.request
            if resp.status in (204, 205) and req.is_navigation_request():
                ep.landed.set()  # "no content": the page stays
            if not req.url.startswith(self.origin):
                return
            ep.events.append(
                RequestEvent(method=req.method, url=req.url, status=resp.status, fields=body_fields(req))
            )

        for event, fn in (
            ("request", on_request), ("requestfinished", on_request_done), ("requestfailed", on_request_failed),
            ("response", on_response), ("page", lambda p: self._adopt_page(ep, p)),
        ):
            ep.context.on(event, fn)
            ep.wired.append((ep.context, event, fn))
        self._wire_page(ep, ep.page)

    def _wire_page(self, ep: BrowserEpisode, page: Page) -> None:
        def on_nav(frame: Any) -> None:
            if frame == page.main_frame:
                ep.events.append(NavigationEvent(url=frame.url))
                ep.landed.set()
                if wall.declared(self.origin, frame.url) and page is ep.page:
                    ep.last_declared = frame.url
            else:
                ep.frame_landed.set()
                if not wall.frame_declared(self.origins, frame):  # removed by `_enforce_wall` after the action
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

        def on_websocket(ws: WebSocket) -> None:
            # the wall's proxy refuses it, but Playwright reports no failed request for a WebSocket
            if not self._allowed.match(re.sub(r"^ws", "http", ws.url)):
                ep.events.append(BlockedRequestEvent(method="GET", url=ws.url, reason="a WebSocket to an origin outside the sandbox"))

        def on_crash(_: Page) -> None:
            if page is ep.page:
                ep.crashed = True

        for event, fn in (
            ("framenavigated", on_nav), ("dialog", on_dialog), ("download", on_download), ("console", on_console),
            ("websocket", on_websocket), ("crash", on_crash),
        ):
            page.on(event, fn)
            ep.wired.append((page, event, fn))

    @staticmethod
    def _refuse(ep: BrowserEpisode, url: str, reason: str | None = None) -> None:
        """Record a document the wall kept out (once per step)."""
        if url not in ep.refused:
            ep.refused.append(url)
            ep.events.append(BlockedRequestEvent(method="GET", url=url, reason=reason))

    @staticmethod
    def _unwire(ep: BrowserEpisode) -> None:
        for emitter, event, fn in ep.wired:
            emitter.remove_listener(event, fn)
        ep.wired.clear()

    def _adopt_page(self, ep: BrowserEpisode, page: Page) -> None:
        """A popup or target=_blank page becomes the page the agent works in."""
        if page is ep.page:
            return
        self._wire_page(ep, page)
        ep.openers.append(ep.page)  # where the agent goes back to if the popup shows a refused document
        ep.page = page
        ep.adopted.set()
        if page.url not in ("", "about:blank"):  # its navigation committed before it was wired
            ep.landed.set()

    async def _save_download(self, ep: BrowserEpisode, d: Download) -> None:
        """Save a download into the episode directory, within the episode's download budget: one that would
        pass it (in number, or in bytes while Chromium writes it) is cancelled and recorded as blocked."""
        assert ep.dir is not None
        cfg = self.config
        if ep.download_count >= cfg.max_downloads:
            await _cancel(d)
            ep.events.append(BlockedRequestEvent(method="GET", url=d.url, reason=(
                f"download refused: the episode's budget of {cfg.max_downloads} downloads is spent")))
            return
        ep.download_count += 1
        finished = asyncio.ensure_future(d.failure())
        partial = _partial_path(d)
        size = 0
        while not finished.done():  # `left` again each time: downloads running at once share the budget
            size = max(_size(partial), _size(partial and Path(f"{partial}.crdownload")))
            if size > cfg.max_download_bytes - ep.download_bytes:
                break
            await asyncio.wait({finished}, timeout=0.02)
        if finished.done() and finished.result() is None:
            size = _size(Path(await d.path()))
        left = cfg.max_download_bytes - ep.download_bytes
        if size > left:
            await _cancel(d)
            ep.events.append(BlockedRequestEvent(method="GET", url=d.url, reason=(
                f"download cancelled: {d.suggested_filename!r} passed the episode's budget of "
                f"{cfg.max_download_bytes} bytes ({max(left, 0)} were left)")))
            return
        if finished.result() is not None:  # the page or the browser gave up on it
            return
        ep.download_bytes += size  # taken before the copy: another download finishing meanwhile sees it
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


def _partial_path(d: Download) -> Path | None:
    """Where Chromium writes the download (``<path>.crdownload`` until it is complete): Playwright's
    artifact path, which its public API gives only once the download has finished. None if a Playwright
    version keeps it elsewhere (then only the finished file's size is checked)."""
    try:
        return Path(d._impl_obj._artifact._initializer["absolutePath"])  # noqa: SLF001
    except (AttributeError, KeyError, TypeError):
        return None


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


async def _cancel(d: Download) -> None:
    try:
        await d.cancel()
        await d.delete()
    except PlaywrightError:
        pass


def body_fields(req: Request) -> dict[str, str | list[str]]:
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


def notes(events: list[Event]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, DialogEvent):
            out.append(f"a {e.type} dialog said {e.message!r} (accepted)")
        elif isinstance(e, DownloadEvent):
            out.append(f"downloaded {e.suggested_filename} to {e.path}")
        elif isinstance(e, BlockedRequestEvent):
            out.append(f"blocked {e.url[:200]}: {e.reason}" if e.reason else
                       f"blocked a request to {e.url[:200]} (outside the sandbox)")
    return out
