"""The browser contexts of an env's episodes: made ready while the previous episode runs, wiped and reused
(``isolation="storage"``), handed to the host at close for the next env, and retired."""

from __future__ import annotations

import asyncio
import collections
import dataclasses

from agentrl.envs.browser.state import SPARES, BrowserEpisode
from agentrl.sandbox.server import PRELOAD_HEADER
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page


class ContextPool:
    """The contexts of an env's coming, current and past episodes (a part of `AsyncBrowserEnv`)."""

    _ready: collections.deque[asyncio.Task[BrowserEpisode]]
    _closing: set[asyncio.Task]

    async def _new_context(self) -> BrowserEpisode:
        browser = await self.host.browser()
        w, h = self.config.viewport
        # The wall: the context's proxy refuses every origin but the sandbox's (`BrowserHost.wall_proxy`).
        ctx = await browser.new_context(
            viewport={"width": w, "height": h}, accept_downloads=True, service_workers="block",
            proxy=self.host.wall_proxy(self.origins),
        )
        page = await ctx.new_page()
        ep = BrowserEpisode(context=ctx, page=page)
        # Visit an empty page of the sandbox origin now, so the renderer process for that site is up
        # before the episode starts: a first cross-site navigation spawns one and costs ~100-200 ms.
        await page.goto(self._blank, wait_until="commit")
        ep.idle.set()
        ep.landed.set()
        self._wire(ep)
        return ep

    async def _make_ready(self, ep: BrowserEpisode | None) -> BrowserEpisode:
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
        return (self.origins, tuple(self.config.viewport))

    def _take_spare(self) -> BrowserEpisode | None:
        """A context another env of this host handed back clean (`_hand_back`), wired to this env."""
        spare = self.host.spare.get(self._spare_key, [])
        while spare:
            ep = spare.pop()
            if ep.context.browser is not None and ep.context.browser.is_connected() and not ep.page.is_closed():
                self._wire(ep)
                return ep
        return None

    async def _hand_back(self, ep: BrowserEpisode, *, clean: bool = False) -> None:
        """isolation="storage", at close: wipe the context (its page left for the blank page; not again if
        it is `clean`, i.e. made ready for an episode that never came) and leave it to the host for the
        next env with the same origin and viewport, which wipes it again for its own start page. It keeps
        its HTTP cache of immutable files, its warm renderer and V8's code cache: a new env's first reset
        then costs a wipe instead of a new context (BENCHMARKS.md). Beyond `SPARES` kept per key, or if
        the wipe fails, the context is closed."""
        spare = self.host.spare.setdefault(self._spare_key, [])
        if len(spare) < SPARES:
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

    async def _take_context(self) -> BrowserEpisode:
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
            if self.host.is_alive() and not ep.page.is_closed() and not ep.crashed:
                return ep
            self._retire(ep)
        try:
            return await asyncio.wait_for(self._make_ready(None), timeout=limit)
        except (PlaywrightError, TimeoutError):
            await self.host.restart()
            return await asyncio.wait_for(self._make_ready(None), timeout=limit)

    async def _wipe(self, ep: BrowserEpisode, start: str | None = None) -> BrowserEpisode:
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
        await ep.page.goto(self.origin + start if start else self._blank, wait_until="load")
        if ep.cdp is None or ep.cdp_page is not ep.page:
            ep.cdp, ep.cdp_page = await ep.context.new_cdp_session(ep.page), ep.page
        await asyncio.gather(
            ep.context.clear_cookies(),
            ep.context.clear_permissions(),
            *(ep.cdp.send("Storage.clearDataForOrigin", {"origin": o, "storageTypes": "all"}) for o in self.origins),
            ep.cdp.send("Page.resetNavigationHistory"),
            ep.page.evaluate("() => { sessionStorage.clear(); window.name = ''; }"),
        )
        fresh = BrowserEpisode(context=ep.context, page=ep.page, cdp=ep.cdp, cdp_page=ep.cdp_page, wired=ep.wired)
        fresh.idle.set()  # the blank page has nothing in flight; late events of the old page clamp at 0
        fresh.landed.set()
        for f in dataclasses.fields(BrowserEpisode):  # the handlers stay wired to this object: reset it in place
            setattr(ep, f.name, getattr(fresh, f.name))
        return ep

    def _retire(self, ep: BrowserEpisode, *, close_episode: bool = True) -> None:
        """Close `ep`'s context in the background, and its sandbox episode (the one `ep.id` names now, not
        whatever it names later) unless `close_episode` is False (a context that failed to start an episode
        the next attempt still needs)."""
        episode_id = ep.id if close_episode else ""

        async def close() -> None:
            try:
                await ep.context.close()
            except PlaywrightError:
                pass
            if episode_id:
                self.sandbox.close_episode(episode_id)

        t = asyncio.ensure_future(close())
        self._closing.add(t)
        t.add_done_callback(self._closing.discard)

