"""Running the user's own sites (`agentrl.sitespec`): started, made ready, reset per episode, stopped.

- A site with a ``command`` is started once per process tree (the first process that needs it: the
  evaluator before its workers, or the env), in its own process group, and waited for until it answers
  (``ready``); a command that exits first or a site that never answers is a `SiteError` with the tail of
  its output, and the whole group is killed. `stop_sites` (run at exit too) stops every site this process
  started, with everything it spawned (the process group: SIGTERM, then SIGKILL). An origin that already
  answers is used as it is: the command is not started.
- A ``static`` site is a folder served by agentrl on 127.0.0.1 (a free port unless the origin names one).
- `SiteBackend` is what the browser env talks to instead of the sandbox server: the origins the wall
  admits, the blank page, and ``open_episode``, which runs the site's reset contract (HTTP ``POST`` with
  the episode id and seed, or a command); a reset that fails is a `SiteError` naming the site and why.

Command and reset lines may use ``{python}`` (this interpreter), ``{port}`` (the origin's port) and
``{tmp}`` (a fresh directory for this run of the site, removed when it stops).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentrl.sandbox.server import BLANK_PATH, EPISODE_HEADER, HOST

from agentrl.sitespec import SiteSpec
from agentrl.taskspec import TaskSpec

_BLANK_PAGE = b"<!doctype html><title></title>"


class SiteError(RuntimeError):
    """A site could not be started, did not become ready, or failed to reset an episode."""


# ---------------------------------------------------------------------- static folders and the blank page
class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == BLANK_PATH or self.directory is None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(_BLANK_PAGE)))
            self.end_headers()
            self.wfile.write(_BLANK_PAGE)
            return
        super().do_GET()


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:  # a browser that went away
        return


class StaticServer:
    """A folder served on 127.0.0.1 (`folder` None: only the blank page ``/__blank``), in a daemon thread."""

    def __init__(self, folder: Path | None, port: int = 0) -> None:
        handler = functools.partial(_StaticHandler, directory=str(folder) if folder is not None else None)
        try:
            self._httpd = _Quiet((HOST, port), handler)
        except OSError as e:
            raise SiteError(f"cannot serve {folder} on {HOST}:{port}: {e}") from None
        self.origin = f"http://{HOST}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"agentrl-static-{self.origin}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_lock = threading.Lock()
_blank: tuple[int, StaticServer] | None = None


def blank_origin() -> str:
    """The origin of this process's blank-page server: where a tab waits between episodes of a site that
    is not agentrl's own (the site's own pages are never loaded outside an episode)."""
    global _blank
    with _lock:
        if _blank is None or _blank[0] != os.getpid():
            _blank = (os.getpid(), StaticServer(None))
        return _blank[1].origin


# ---------------------------------------------------------------------- started sites
def _fill(line: str | list[str], site: SiteSpec, tmp: Path | None) -> str | list[str]:
    port = str(urllib.parse.urlsplit(site.origin).port or "") if site.origin else ""
    subs = {"{python}": sys.executable, "{port}": port, "{tmp}": str(tmp) if tmp else ""}

    def one(s: str) -> str:
        for k, v in subs.items():
            s = s.replace(k, v)
        return s

    return one(line) if isinstance(line, str) else [one(x) for x in line]


def is_ready(site: SiteSpec, origin: str) -> bool:
    """The site answers: its ``ready.url`` gives an HTTP answer below 500, or the port (``ready.port``, by
    default the origin's) accepts a connection."""
    if site.ready is not None and site.ready.url is not None:
        try:
            with urllib.request.urlopen(origin + site.ready.url, timeout=2) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as e:
            return e.code < 500
        except (OSError, ValueError):
            return False
    parts = urllib.parse.urlsplit(origin)
    port = site.ready.port if site.ready is not None and site.ready.port else parts.port or (
        443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=1):
            return True
    except OSError:
        return False


class SiteProcess:
    """A site's command, started in its own process group and waited for until the site is ready."""

    def __init__(self, site: SiteSpec) -> None:
        assert site.command is not None and site.origin is not None
        self.site = site
        self.tmp = Path(tempfile.mkdtemp(prefix=f"agentrl-site-{site.name}-"))
        self.log = self.tmp / "site.log"
        cmd = _fill(site.command, site, self.tmp)
        with self.log.open("wb") as out:
            try:
                self.proc = subprocess.Popen(
                    cmd, shell=isinstance(cmd, str), cwd=site.workdir(), stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,  # its own group: stopped with all it spawned
                )
            except OSError as e:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise SiteError(f"site '{site.name}': cannot run its command {cmd!r}: {e}") from None
        deadline = time.monotonic() + site.ready_timeout_s
        while not is_ready(site, site.origin):
            code = self.proc.poll()
            if code is not None:
                tail = self._tail()
                self.stop()
                raise SiteError(f"site '{site.name}': its command exited with code {code} before the site was "
                                f"ready at {site.origin}{tail}")
            if time.monotonic() >= deadline:
                tail = self._tail()
                self.stop()
                what = site.origin + (site.ready.url if site.ready and site.ready.url else "")
                raise SiteError(f"site '{site.name}': not ready at {what} within {site.ready_timeout_s:g} s "
                                f"after starting its command (stopped it){tail}")
            time.sleep(0.05)

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            return ""
        return ("; its last output: " + " | ".join(lines)) if lines else ""

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after 5 s."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(self.proc.pid):
                break
        shutil.rmtree(self.tmp, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: what this process started, by site name and origin (a process's static servers are its own)
_started: dict[tuple[str, str | None], SiteProcess | StaticServer] = {}
_started_pid: int | None = None


def ensure_running(site: SiteSpec) -> str:
    """Start `site` if this process tree has not (its command, or its static folder's server) and return its
    origin. A site without a command must already answer (a clear `SiteError` if it does not)."""
    global _started_pid
    with _lock:
        if _started_pid != os.getpid():  # a forked or spawned child: its parent's servers are not its own
            _started.clear()
            _started_pid = os.getpid()
        key = (site.name, site.origin)
        have = _started.get(key)
        if isinstance(have, StaticServer):
            return have.origin
        if site.static is not None:
            port = urllib.parse.urlsplit(site.origin).port or 0 if site.origin else 0
            server = _started[key] = StaticServer(site.folder(), port)
            return server.origin
        assert site.origin is not None
        if have is not None and have.proc.poll() is None:
            return site.origin
        if is_ready(site, site.origin):
            return site.origin
        if site.command is None:
            raise SiteError(f"site '{site.name}': nothing answers at {site.origin} and it has no 'command' to "
                            "start it: start your app first, or give the site a command")
        _started[key] = SiteProcess(site)
        return site.origin


def stop_sites() -> None:
    """Stop every site this process started (commands with everything they spawned; static servers)."""
    with _lock:
        if _started_pid != os.getpid():
            return
        items = list(_started.values())
        _started.clear()
    for s in items:
        s.stop() if isinstance(s, SiteProcess) else s.close()


atexit.register(stop_sites)


@contextlib.contextmanager
def sites_up(sites: list[SiteSpec]) -> Iterator[None]:
    """Start `sites` (those not running yet) for a run, and stop, when it ends, those this started."""
    with _lock:
        before = set(_started) if _started_pid == os.getpid() else set()
    try:
        for s in sites:
            ensure_running(s)
        yield
    finally:
        with _lock:
            mine = [k for k in _started if k not in before] if _started_pid == os.getpid() else []
            items = [_started.pop(k) for k in mine]
        for s in items:
            s.stop() if isinstance(s, SiteProcess) else s.close()


def run_sites(tasks: list[TaskSpec], workers: int) -> list[SiteSpec]:
    """The sites the tasks run on; with several workers, each must let parallel episodes share it (a
    static folder, or the header reset contract), else a ValueError naming the task and the site."""
    sites: dict[tuple, SiteSpec] = {}
    for t in tasks:
        if t.site is None:
            continue
        sites.setdefault((t.site.name, t.site.origin, t.site.static), t.site)
        if workers > 1 and not t.site.parallel:
            have = "no reset contract" if t.site.reset is None else "a reset contract that resets the one shared backend"
            raise ValueError(
                f"{t.where(('start',))}: task {t.id} runs on site '{t.site.name}'"
                + (f" ({t.site.where})" if t.site.where else "")
                + f", which has {have}: parallel episodes (--workers {workers}) would see and undo each other's "
                "changes. Run with --workers 1, or give the site `reset: {header: true}` (the app keeps its state "
                "per X-Agentrl-Episode header; docs/own-sites.md)"
            )
    return list(sites.values())


# ---------------------------------------------------------------------- what the env talks to
class SiteBackend:
    """A site, as the browser env sees it (in place of the sandbox server): the origins the wall admits,
    the blank page, and each episode's reset."""

    def __init__(self, site: SiteSpec) -> None:
        self.site = site
        self.origin = ensure_running(site)
        if site.static is not None:  # the static server has the blank page itself
            self.origins: tuple[str, ...] = (self.origin,)
            self.blank_url = self.origin + BLANK_PATH
        else:
            blank = blank_origin()
            self.origins = (self.origin, blank)
            self.blank_url = blank + BLANK_PATH

    def open_episode(self, episode_id: str, seed: int) -> dict[str, dict[str, str]]:
        """Run the site's reset contract for a new episode; `SiteError` (naming the site and why) if it fails.
        Returns the facts of the episode's start for the task's templates: the ``facts`` object of the HTTP
        reset's JSON answer, if any (``{{key}}``, or ``{{site.key}}``)."""
        facts: dict[str, str] = {}
        reset = self.site.reset
        if reset is not None and reset.command is not None:
            env = {**os.environ, "AGENTRL_EPISODE": episode_id, "AGENTRL_SEED": str(seed)}
            cmd = _fill(reset.command, self.site, None)
            try:
                done = subprocess.run(cmd, shell=True, cwd=self.site.workdir(), env=env, capture_output=True,
                                      text=True, timeout=120, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise SiteError(f"site '{self.site.name}': reset command {cmd!r} did not finish within 120 s") from None
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise SiteError(f"site '{self.site.name}': reset command {cmd!r} exited with code "
                                f"{done.returncode}" + (f": {' | '.join(tail)}" if tail else ""))
        if reset is not None and reset.http is not None:
            url = self.origin + reset.http
            req = urllib.request.Request(
                url, data=json.dumps({"episode": episode_id, "seed": seed}).encode(), method="POST",
                headers={"Content-Type": "application/json", EPISODE_HEADER: episode_id},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as e:
                body = e.read()[:200].decode(errors="replace").strip()
                raise SiteError(f"site '{self.site.name}': reset POST {url} answered {e.code}"
                                + (f": {body}" if body else "")) from None
            except OSError as e:
                raise SiteError(f"site '{self.site.name}': reset POST {url} failed: {e}") from None
            try:
                answer = json.loads(body) if body.strip() else {}
            except ValueError:
                answer = {}
            if isinstance(answer, dict) and isinstance(answer.get("facts"), dict):
                facts = {str(k): str(v) for k, v in answer["facts"].items()}
        return {self.site.name: facts}

    def close_episode(self, episode_id: str) -> bool:
        return True

    def episode_state(self, episode_id: str) -> dict[str, Any]:
        raise SiteError(f"site '{self.site.name}' is not agentrl's sandbox: it has no server state to read "
                        "(tasks on it use http_json)")


def get_json(url: str, episode_id: str) -> Any:
    """The JSON at `url`, fetched with the episode's header; raises OSError or ValueError."""
    url = urllib.parse.quote(url, safe=":/?&=%#+,;@")  # a templated value may hold spaces
    req = urllib.request.Request(url, headers={EPISODE_HEADER: episode_id, "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
