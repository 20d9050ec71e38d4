"""One private X desktop: Xvfb on a free display, its own D-Bus session bus, openbox, an AT-SPI bridge.

    session = DesktopSession.start(width=1024, height=768)
    session.display            # ":7"
    session.windows()          # [WindowInfo(title="Notes — todo.txt", wm_class="notes", focused=True, ...)]
    session.close()            # kills every process it started (and their descendants), removes its files

Every process the session starts carries ``AGENTRL_DESKTOP=<session tag>`` in its environment, and apps
launched for an episode also ``AGENTRL_EPISODE=<episode id>``; the variables are inherited by everything
they start (D-Bus-activated services, a terminal's shell, a backgrounded ``sleep``), so :func:`tagged_pids`
finds every descendant even after it left the process group (xterm's shell calls setsid). Kills go by
process group first and then by tag. The session's files (D-Bus socket, AT-SPI bus, openbox's HOME)
live in one private directory that close() removes; Xvfb's own lock and socket in /tmp go when it exits.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.rewards.desktop_detectors import WindowInfo
from Xlib import X, Xatom, display, error

BRIDGE = Path(__file__).with_name("atspi_bridge.py")
SYSTEM_PYTHON = "/usr/bin/python3"
TAG = "AGENTRL_DESKTOP"
EPISODE_TAG = "AGENTRL_EPISODE"


class DesktopError(RuntimeError):
    """The desktop (X server, bus, window manager, bridge) could not be started or stopped answering."""


def tagged_pids(key: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment has ``key=value``."""
    want = f"{key}={value}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
            if want not in env.split(b"\0"):
                continue
            if Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        out.append(int(d))
    return out


def _has_env(pid: int, key: str) -> bool:
    try:
        return any(v.startswith(key.encode() + b"=") for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False


def cpu_state(pids: set[int]) -> tuple[bool, int, int]:
    """(any of `pids` running or runnable, their total CPU ticks, how many): a desktop whose processes all
    sleep and used no CPU between two looks has finished reacting to the input it was given. `pids` grows
    by the children of its processes, so a command a shell just started counts too."""
    busy, ticks = False, 0
    todo = list(pids)
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, ValueError):
            continue
        busy = busy or fields[0] in ("R", "D")
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
        for k in kids:
            if k not in pids:
                pids.add(k)
                todo.append(k)
    return busy, ticks, len(pids)


def kill_tagged(key: str, value: str, sig: int = signal.SIGKILL, rounds: int = 5) -> None:
    """Kill every process tagged key=value, again until none is left (a dying parent may fork)."""
    for _ in range(rounds):
        pids = [p for p in tagged_pids(key, value) if p != os.getpid()]
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=2)


@dataclass
class _Bridge:
    proc: subprocess.Popen
    lock: threading.Lock

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            if self.proc.poll() is not None:
                raise DesktopError(f"the AT-SPI bridge exited ({self.proc.returncode})")
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                # a stuck bridge (an app that blocks its accessibility calls): replace it
                self.proc.kill()
                raise DesktopError(f"the AT-SPI bridge gave no answer within {timeout:.1f} s")
            line = self.proc.stdout.readline()
        if not line:
            raise DesktopError("the AT-SPI bridge closed its output")
        return json.loads(line)


class DesktopSession:
    """Xvfb + D-Bus + openbox + AT-SPI bridge for one env. Use :meth:`start`."""

    def __init__(self, width: int, height: int, window_manager: bool) -> None:
        self.tag = uuid.uuid4().hex[:12]
        self.size = (width, height)
        self.dir = Path(tempfile.mkdtemp(prefix="agentrl-desktop-"))
        self.runtime = self.dir / "run"
        self.home = self.dir / "home"
        self.bin = self.dir / "bin"
        for d in (self.runtime, self.home, self.bin):
            d.mkdir(mode=0o700)
        self.display = ""
        self.bus = ""
        self._xvfb: subprocess.Popen | None = None
        self._procs: list[subprocess.Popen] = []  # infrastructure other than Xvfb
        self._bridge: _Bridge | None = None
        self._x: display.Display | None = None
        self._atoms: dict[str, int] = {}
        self._wm = window_manager

    # ------------------------------------------------------------------ start / stop
    @classmethod
    def start(cls, width: int = 1024, height: int = 768, *, window_manager: bool = True,
              timeout: float = 15.0) -> DesktopSession:
        s = cls(width, height, window_manager)
        try:
            s._start(timeout)
        except BaseException:
            s.close()
            raise
        return s

    def base_env(self) -> dict[str, str]:
        """The environment every process of this desktop gets (apps add HOME, cwd and the episode tag)."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "TERM")}
        keep.setdefault("LANG", "C.UTF-8")
        return {
            **keep, "PATH": f"{self.bin}:{keep.get('PATH', '/usr/bin:/bin')}",
            "DISPLAY": self.display, "DBUS_SESSION_BUS_ADDRESS": self.bus, "XDG_RUNTIME_DIR": str(self.runtime),
            "HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"), "XDG_DATA_HOME": str(self.home / ".local/share"),
            "GSETTINGS_BACKEND": "memory", "NO_AT_BRIDGE": "0", "GTK_A11Y": "atspi", TAG: self.tag,
        }

    def _spawn(self, argv: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(argv, env=env, cwd=self.dir, **kw)

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        env = {TAG: self.tag, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        r, w = os.pipe()
        w_, h_ = self.size
        # -displayfd: Xvfb picks a free display number and writes it to the pipe once it accepts clients.
        self._xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", f"{w_}x{h_}x24", "-nolisten", "tcp", "-noreset"],
            env=env, pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, process_group=0, cwd=self.dir,
        )
        os.close(w)
        num = b""
        while not num.endswith(b"\n"):
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(r, 32) if ready else b""
            if not chunk:
                os.close(r)
                raise DesktopError(f"Xvfb did not report a display within {timeout:.0f} s (exit {self._xvfb.poll()})")
            num += chunk
        os.close(r)
        self.display = f":{int(num)}"
        self._x = display.Display(self.display)
        # Its own session bus (socket inside the session dir): AT-SPI of two envs never mixes.
        r, w = os.pipe()
        dbus = self._spawn(
            ["dbus-daemon", "--session", "--nofork", f"--address=unix:path={self.runtime}/bus",
             f"--print-address={w}"],
            {**env, "HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.runtime), "DISPLAY": self.display},
            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            process_group=self._xvfb.pid,
        )
        self._procs.append(dbus)
        os.close(w)
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        addr = os.read(r, 4096).decode().strip() if ready else ""
        os.close(r)
        if not addr:
            raise DesktopError("dbus-daemon did not print its address")
        self.bus = addr
        base = self.base_env()
        if self._wm:
            self._procs.append(self._spawn(["openbox", "--sm-disable"], base, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, process_group=self._xvfb.pid))
            while self._atom_value(self._x.screen().root, "_NET_SUPPORTING_WM_CHECK") is None:
                if time.monotonic() > deadline:
                    raise DesktopError("openbox did not start")
                time.sleep(0.02)
        self._start_bridge()

    def _start_bridge(self) -> None:
        proc = self._spawn([SYSTEM_PYTHON, str(BRIDGE)], self.base_env(), stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           process_group=self._xvfb.pid if self._xvfb else 0)
        self._procs.append(proc)
        self._bridge = _Bridge(proc, threading.Lock())

    def busy_watch(self) -> list[int]:
        """The desktop's own processes whose activity means "still reacting": X server, buses, window
        manager, AT-SPI registry (not the bridge, not the apps: the env adds the episode's processes)."""
        skip = {self._bridge.proc.pid if self._bridge is not None else -1}
        return [p for p in tagged_pids(TAG, self.tag) if p not in skip and not _has_env(p, EPISODE_TAG)]

    def alive(self) -> str | None:
        """None when the desktop works, else what died."""
        if self._xvfb is None or self._xvfb.poll() is not None:
            return "the X server (Xvfb) died"
        for p in self._procs[:2]:
            if p.poll() is not None:
                return f"{Path(p.args[0]).name} died"
        return None

    def close(self) -> None:
        """Kill every process of this desktop (apps included) and remove its files."""
        if self._x is not None:
            try:
                self._x.close()
            except Exception:  # noqa: BLE001  (the server may be gone already)
                pass
            self._x = None
        others = [p for p in tagged_pids(TAG, self.tag) if not self._xvfb or p != self._xvfb.pid]
        for p in others:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(self._procs)
        if self._xvfb is not None and self._xvfb.poll() is None:
            self._xvfb.terminate()  # SIGTERM: Xvfb removes its /tmp/.X<n>-lock and socket itself
            try:
                self._xvfb.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._xvfb.kill()
                self._xvfb.wait(timeout=2)
        if self._xvfb is not None and self.display:
            n = self.display.lstrip(":")
            for stale in (Path(f"/tmp/.X{n}-lock"), Path(f"/tmp/.X11-unix/X{n}")):
                if stale.exists() and self._xvfb.returncode not in (0, -signal.SIGTERM):
                    stale.unlink(missing_ok=True)
        kill_tagged(TAG, self.tag)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ windows (Xlib, in-process)
    def _atom(self, name: str) -> int:
        if name not in self._atoms:
            assert self._x is not None
            self._atoms[name] = self._x.intern_atom(name)
        return self._atoms[name]

    def _atom_value(self, win: Any, name: str, kind: int = X.AnyPropertyType) -> Any:
        try:
            prop = win.get_full_property(self._atom(name), kind)
        except (error.BadWindow, error.BadValue):
            return None
        return prop.value if prop is not None else None

    def windows(self) -> list[WindowInfo]:
        """The managed top-level windows in stacking order (EWMH client list), with the focused one marked."""
        assert self._x is not None
        root = self._x.screen().root
        ids = self._atom_value(root, "_NET_CLIENT_LIST_STACKING") or self._atom_value(root, "_NET_CLIENT_LIST")
        active = self._atom_value(root, "_NET_ACTIVE_WINDOW")
        active_id = int(active[0]) if active is not None and len(active) else 0
        out = []
        for wid in ids if ids is not None else []:
            w = self._x.create_resource_object("window", int(wid))
            try:
                attrs = w.get_attributes()
                if attrs.map_state != X.IsViewable:
                    continue
                title = self._atom_value(w, "_NET_WM_NAME", self._atom("UTF8_STRING"))
                title = title.decode("utf-8", "replace") if isinstance(title, bytes) else (w.get_wm_name() or "")
                cls = w.get_wm_class() or ("", "")
                pid = self._atom_value(w, "_NET_WM_PID", Xatom.CARDINAL)
                geo = w.get_geometry()
                pos = w.translate_coords(root, 0, 0)
            except (error.BadWindow, error.BadDrawable, error.BadValue):
                continue  # closed while we looked
            out.append(WindowInfo(
                id=int(wid), title=str(title), wm_class=cls[1] or cls[0], pid=int(pid[0]) if pid is not None else None,
                x=-pos.x, y=-pos.y, width=geo.width, height=geo.height, focused=int(wid) == active_id,
            ))
        return out

    # ------------------------------------------------------------------ accessibility
    def ax_nodes(self, max_nodes: int = 400, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The showing accessibility nodes of every AT-SPI app on this display (see atspi_bridge)."""
        if self._bridge is None or self._bridge.proc.poll() is not None:
            self._start_bridge()
        assert self._bridge is not None
        try:
            reply = self._bridge.ask({"op": "tree", "max_nodes": max_nodes}, timeout)
        except DesktopError:
            self._bridge = None  # started afresh on the next call
            raise
        if not reply.get("ok"):
            raise DesktopError(f"AT-SPI bridge: {reply.get('error')}")
        return reply["nodes"]

    # ------------------------------------------------------------------ input
    def xdotool(self, *args: str, timeout: float = 10.0) -> str | None:
        """Run xdotool on this display; returns its error text, or None."""
        try:
            r = subprocess.run(["xdotool", *args], env=self.base_env(), capture_output=True, text=True,
                               timeout=timeout, cwd=self.dir)
        except subprocess.TimeoutExpired:
            return f"xdotool {' '.join(args)} took longer than {timeout:.0f} s"
        if r.returncode != 0 or "Invalid" in r.stderr or "No such key" in r.stderr:
            return (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[0][:300]
        return None

    def grab(self) -> Any:
        """A screenshot of the whole display as a PIL image (~4 ms)."""
        from PIL import ImageGrab

        return ImageGrab.grab(xdisplay=self.display)
