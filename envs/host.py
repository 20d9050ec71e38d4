"""One Playwright driver and one Chromium per event loop, shared by the envs that run on that loop.

The sync `BrowserEnv` runs its browser work on a private event-loop thread (`BrowserHost.shared()`), so
it works inside an asyncio program too (sync Playwright refuses to run inside a running loop — the
anchors' most-reported rollout bug). `AsyncBrowserEnv` uses the host of the loop it runs on.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from playwright.async_api import Browser, Playwright, async_playwright

T = TypeVar("T")

#: the full browser (headed runs, and headless ones when no headless shell is installed)
CHROMIUM = os.environ.get("AGENTRL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: for headless runs: Debian's chromium-headless-shell, the same engine without the full browser's UI
#: layers (what Playwright itself runs headless), when installed; far less CPU per page load (BENCHMARKS.md)
HEADLESS_SHELL = os.environ.get("AGENTRL_CHROMIUM") or next(
    (p for p in ("/usr/lib/chromium/chromium-headless-shell",) if os.access(p, os.X_OK)),
    shutil.which("chromium-headless-shell") or CHROMIUM,
)
CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # Episodes leave their pages for good: keeping them frozen in the back/forward cache costs memory and
    # ~10% of the CPU of a MiniWoB episode (BENCHMARKS.md), and `back()` reloads the page anyway (no-store).
    "--disable-features=BackForwardCache",
    # Without this Chromium keeps resolving Google hosts on a closed network; also keeps every name but
    # the loopback ones unresolvable, a second wall behind the per-context request blocking.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]


class BrowserHost:
    """Owns Playwright + one Chromium process for one event loop; relaunches Chromium if it died."""

    #: host names of declared remote sites (``remote: true``): left resolvable by Chromium's resolver rules
    remote_hosts: set[str] = set()
    _by_loop: dict[int, BrowserHost] = {}
    _shared: BrowserHost | None = None
    _shared_pid: int | None = None
    _lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop, *, headless: bool = True) -> None:
        self.loop = loop
        self.headless = headless
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._launch_lock: asyncio.Lock | None = None
        self.launches = 0
        # an unknown switch that Chromium ignores, so that `restart` can tell this host's browser process
        # from those of other hosts in the same process (another loop's, a test's)
        self._tag = f"--agentrl-host={uuid.uuid4().hex}"
        #: contexts that envs handed back clean (`AsyncBrowserEnv.close` with isolation="storage"), by what
        #: fixes a context for good (the origin its proxy lets through, the viewport): the next env with the
        #: same key takes one instead of making a new one (with an empty HTTP cache and a new renderer)
        self.spare: dict[tuple, list[Any]] = {}
        # The wall's dead end: a loopback port bound but never listening, so a connection to it is refused
        # at once. Contexts use it as their proxy for every origin but the sandbox's (`wall_proxy`).
        self._dead_end = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead_end.bind(("127.0.0.1", 0))
        self._resolvable: frozenset[str] = frozenset()  # the remote hosts the running browser resolves

    @classmethod
    def resolve_also(cls, origin: str) -> None:
        """Let the host name of a declared remote site's `origin` resolve (the next launch of every host)."""
        host = urllib.parse.urlsplit(origin).hostname
        if host and host not in ("localhost", "127.0.0.1"):
            cls.remote_hosts.add(host)

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_running_loop(cls) -> BrowserHost:
        loop = asyncio.get_running_loop()
        host = cls._by_loop.get(id(loop))
        if host is None or host.loop is not loop:
            host = cls._by_loop[id(loop)] = cls(loop)
        return host

    @classmethod
    def shared(cls) -> BrowserHost:
        """The process-wide host on a private daemon loop thread (fork-safe: a child process gets its own)."""
        with cls._lock:
            if cls._shared is None or cls._shared_pid != os.getpid():
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="agentrl-browser-loop", daemon=True)
                t.start()
                cls._shared, cls._shared_pid = cls(loop), os.getpid()
            return cls._shared

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on this host's loop from another thread and wait for it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise RuntimeError("BrowserHost.run() called from its own loop; await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wall_proxy(self, origin: str | tuple[str, ...]) -> dict[str, str]:
        """Playwright's per-context ``proxy`` that lets a context reach `origin` and nothing else.

        Every request but those to `origin` (any scheme, host or port, loopback included — Chromium's
        implicit loopback bypass is removed with ``<-loopback>``, WebSockets too) goes to a proxy that
        refuses connections, so it fails in the network stack with ERR_PROXY_CONNECTION_FAILED. Unlike
        request interception (``context.route``), the sandbox's own requests pay nothing for it: on a
        MiniWoB page load, interception cost ~100 ms of CPU (BENCHMARKS.md)."""
        origins = (origin,) if isinstance(origin, str) else origin
        host_ports = ",".join(o.split("://", 1)[-1].rstrip("/") for o in origins)
        port = self._dead_end.getsockname()[1]
        return {"server": f"http://127.0.0.1:{port}", "bypass": f"<-loopback>,{host_ports}"}

    # ------------------------------------------------------------------ browser
    async def browser(self) -> Browser:
        if self._launch_lock is None:
            self._launch_lock = asyncio.Lock()
        async with self._launch_lock:
            hosts = frozenset(BrowserHost.remote_hosts)
            if self._browser is not None and self._browser.is_connected():
                if hosts <= self._resolvable:
                    return self._browser
                await self.restart()  # a remote site was declared since launch: its name must resolve
            if self._pw is None:
                self._pw = await async_playwright().start()
            self.spare.clear()  # contexts of a browser that died
            rules = "".join(f" , EXCLUDE {h}" for h in sorted(hosts))
            self._browser = await self._pw.chromium.launch(
                executable_path=HEADLESS_SHELL if self.headless else CHROMIUM, headless=self.headless,
                args=[*(a + rules if a.startswith("--host-resolver-rules=") else a for a in CHROME_ARGS), self._tag],
            )
            self._resolvable = hosts
            self.launches += 1
            return self._browser

    async def restart(self) -> None:
        """Kill this host's Chromium (whatever state it is in) so the next `browser()` launches a new one.
        Other hosts' browsers in the same process live on."""
        browser, self._browser = self._browser, None
        self.spare.clear()
        if browser is not None:
            try:
                await asyncio.wait_for(browser.close(), timeout=5)
            except (Exception, TimeoutError):  # noqa: BLE001 - a stuck or dead browser is what we are fixing
                pass
        for pid in browser_pids(tag=self._tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def is_alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def aclose(self) -> None:
        self.spare.clear()
        if self._browser is not None:
            try:
                await self._browser.close()
            except Exception:  # noqa: BLE001 - already dead is fine when closing
                pass
            self._browser = None
        if self._pw is not None:
            await self._pw.stop()
            self._pw = None


def browser_pids(root_pid: int | None = None, *, tag: str | None = None) -> list[int]:
    """PIDs of Chromium processes descending from `root_pid` (default: this process), read from /proc; with
    `tag`, only the browser launched with that switch (a host's `_tag`) and its child processes."""
    root_pid = root_pid or os.getpid()
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    tagged: set[int] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." — comm may contain spaces, so split at the last ')'
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(d.name))
        names[int(d.name)] = comm
        if tag is not None and "chrom" in comm:
            try:
                if tag.encode() in (d / "cmdline").read_bytes().split(b"\0"):
                    tagged.add(int(d.name))
            except OSError:
                continue
    out, stack = [], [(root_pid, tag is None)]
    while stack:
        pid, inside = stack.pop()
        for c in children.get(pid, []):
            mine = inside or c in tagged
            stack.append((c, mine))
            if mine and "chrom" in names.get(c, ""):
                out.append(c)
    return out
