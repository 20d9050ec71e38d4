"""What happens in an episode's browser context, as events: requests (and the wall's refusals), responses,
navigations, dialogs (accepted), downloads (saved into the episode directory), new tabs (adopted)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from agentrl.envs import wall
from agentrl.envs.browser.state import BrowserEpisode
from playwright.async_api import Dialog, Download, Page, Request, Response
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

        for event, fn in (
            ("framenavigated", on_nav), ("dialog", on_dialog), ("download", on_download), ("console", on_console),
        ):
            page.on(event, fn)
            ep.wired.append((page, event, fn))

    @staticmethod
    def _refuse(ep: BrowserEpisode, url: str) -> None:
        """Record a document the wall kept out (once per step)."""
        if url not in ep.refused:
            ep.refused.append(url)
            ep.events.append(BlockedRequestEvent(method="GET", url=url))

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
        ep.page = page
        if page.url not in ("", "about:blank"):  # its navigation committed before it was wired
            ep.landed.set()

    async def _save_download(self, ep: BrowserEpisode, d: Download) -> None:
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
            out.append(f"blocked a request to {e.url} (outside the sandbox)")
    return out
