"""The local sandbox web server: hosts the sandbox apps on 127.0.0.1 with per-episode state.

Episode protocol
----------------
* Every browser request of an episode carries ``X-Agentrl-Episode: <episode_id>``; all app state is
  keyed by it. An unknown episode id answers 403. Responses to such requests also set the cookie
  ``agentrl_episode=<episode_id>``, so requests the browser makes without the extra header (Chromium's
  download manager does not send it) still land in the right episode. Requests with neither header nor
  a cookie naming an open episode use the built-in ``demo`` episode (seed 0 by default).
* The env opens/closes episodes and inspects their server-side state through the admin API under
  ``/__agentrl/`` (header ``X-Agentrl-Admin: <admin_token>`` required), through the in-process methods of
  :class:`SandboxServer`, or from another process with :class:`SandboxClient`.
* A request with ``X-Agentrl-Preload: 1`` and no episode header belongs to no episode: the env loads a
  task's start page ahead of its episode (``start.preload``). The app answers from a throwaway state with
  ``Request.preload`` set; an app that supports it serves a page that starts its episode when the env
  calls ``window.__agentrlStart(seed)`` (the ``miniwob`` app does).

Run by hand: ``python -m agentrl.sandbox.server --port 8000``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import secrets
import socketserver
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .apps import App, Request, Response, default_apps
from .apps.base import UploadedFile, html_response, join, message_page, not_found, page, redirect, render

EPISODE_HEADER = "X-Agentrl-Episode"
PRELOAD_HEADER = "X-Agentrl-Preload"
ADMIN_HEADER = "X-Agentrl-Admin"
ADMIN_PREFIX = "/__agentrl"
BLANK_PATH = "/__blank"  # an empty page outside every app and episode
DEMO_EPISODE = "demo"
EPISODE_COOKIE = "agentrl_episode"
MAX_BODY_BYTES = 1 << 20
HOST = "127.0.0.1"
_EPISODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

log = logging.getLogger("agentrl.sandbox")

Facts = dict[str, dict[str, str]]


class SandboxError(RuntimeError):
    """An admin call failed for a reason other than a bad argument or an unknown episode."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"sandbox admin API answered {status}: {message}")
        self.status = status
        self.message = message


class _BadRequest(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _check_episode_args(episode_id: object, seed: object) -> tuple[str, int]:
    if not isinstance(episode_id, str) or not _EPISODE_ID_RE.match(episode_id):
        raise _BadRequest(
            "episode_id must be a string of 1-128 letters, digits, '.', '_', ':' or '-' "
            "starting with a letter or digit",
            "episode_id",
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _BadRequest("seed must be an integer", "seed")
    return episode_id, seed


@dataclass
class _Episode:
    episode_id: str
    seed: int
    states: dict[str, Any]
    facts: Facts
    lock: threading.Lock = field(default_factory=threading.Lock)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default listen backlog (5) stalls parallel browsers for a 1 s SYN retry
    sandbox: SandboxServer

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's socket.getfqdn(), which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the browser went away; nothing to report
        log.exception("sandbox: error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "AgentrlSandbox/0.1"
    protocol_version = "HTTP/1.1"  # keep-alive: a page's requests reuse connections (every response has a length)
    sys_version = ""
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no per-request lines
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(
                method,
                message_page(
                    413 if length > 0 else 400,
                    "Request rejected",
                    "The request body is too large or malformed.",
                ),
            )
            return
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            resp = self.server.sandbox._handle(method, self.path, headers, body)
        except Exception:
            log.exception("sandbox: error handling %s %s", method, self.path)
            resp = message_page(500, "Server error", "Something went wrong on the sandbox server.")
        self._send(method, resp)

    def _send(self, method: str, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "public, max-age=31536000, immutable" if resp.immutable else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in resp.headers:
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD" and resp.body:
            self.wfile.write(resp.body)


def _json(status: int, data: Any) -> Response:
    return Response(status=status, body=json.dumps(data).encode("utf-8"), content_type="application/json")


def _json_error(status: int, message: str, field: str | None = None) -> Response:
    return _json(status, {"error": message, **({"field": field} if field else {})})


class SandboxServer:
    """Threaded HTTP server on 127.0.0.1 hosting the sandbox apps under ``/<app>/`` with per-episode state.

    >>> with SandboxServer() as server:                      # port 0: any free port
    ...     facts = server.open_episode("ep-1", seed=7)      # {"accounts": {...}, "reports": {...}}
    ...     # browse server.origin with header X-Agentrl-Episode: ep-1 ...
    ...     state = server.episode_state("ep-1")
    """

    def __init__(
        self,
        port: int = 0,
        *,
        admin_token: str | None = None,
        apps: Sequence[App] | None = None,
        demo_seed: int = 0,
    ) -> None:
        self.admin_token: str = admin_token or secrets.token_hex(16)
        self.apps: dict[str, App] = {app.name: app for app in (apps if apps is not None else default_apps())}
        self.demo_seed = demo_seed
        self._lock = threading.Lock()
        self._episodes: dict[str, _Episode] = {}
        self._httpd = _HTTPServer((HOST, port), _Handler)
        self._httpd.sandbox = self
        self.port: int = self._httpd.server_address[1]
        self.origin: str = f"http://{HOST}:{self.port}"
        self._thread: threading.Thread | None = None
        self._closed = False
        self.open_episode(DEMO_EPISODE, demo_seed)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        """Serve in a background daemon thread (idempotent). Returns ``self``."""
        if self._closed:
            raise RuntimeError("this SandboxServer is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"agentrl-sandbox-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server (``server.url("/accounts/login")``)."""
        return self.origin + (path if path.startswith("/") else "/" + path)

    # -- episodes (in-process admin API) ------------------------------------------------------------
    def open_episode(self, episode_id: str, seed: int) -> Facts:
        """Open (or re-open, wiping) ``episode_id`` for all apps, seeded from ``seed``. Returns the facts.

        Raises ``ValueError`` for a malformed id or a non-integer seed.
        """
        episode_id, seed = _check_episode_args(episode_id, seed)
        states = {name: app.new_state(seed) for name, app in self.apps.items()}
        facts = {name: dict(app.facts(states[name])) for name, app in self.apps.items()}
        with self._lock:
            self._episodes[episode_id] = _Episode(episode_id, seed, states, facts)
        return copy.deepcopy(facts)

    def close_episode(self, episode_id: str) -> bool:
        """Drop an episode's state. Returns whether it was open."""
        with self._lock:
            return self._episodes.pop(episode_id, None) is not None

    def episode_state(self, episode_id: str) -> dict[str, dict[str, Any]]:
        """``{app: public state}`` of an open episode (a copy). Raises ``KeyError`` if it is not open."""
        ep = self._get(episode_id)
        with ep.lock:
            return {name: self.apps[name].public_state(state) for name, state in ep.states.items()}

    def episode_facts(self, episode_id: str) -> Facts:
        """The facts returned when the episode was opened. Raises ``KeyError`` if it is not open."""
        return copy.deepcopy(self._get(episode_id).facts)

    def episode_ids(self) -> list[str]:
        """Ids of all open episodes (including ``demo``)."""
        with self._lock:
            return sorted(self._episodes)

    def _ensure_demo(self) -> _Episode:
        states = {name: app.new_state(self.demo_seed) for name, app in self.apps.items()}
        facts = {name: dict(app.facts(states[name])) for name, app in self.apps.items()}
        with self._lock:
            return self._episodes.setdefault(
                DEMO_EPISODE, _Episode(DEMO_EPISODE, self.demo_seed, states, facts)
            )

    def _get(self, episode_id: str) -> _Episode:
        with self._lock:
            ep = self._episodes.get(episode_id)
        if ep is None:
            raise KeyError(f"episode {episode_id!r} is not open")
        return ep

    # -- HTTP dispatch ------------------------------------------------------------------------------
    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        parts = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(parts.path) or "/"
        if path == BLANK_PATH:  # stateless: lets a browser warm up a renderer for this origin
            return Response(body=b"<!doctype html><title></title>")
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            return self._admin(method, path[len(ADMIN_PREFIX) :], headers, body)
        cookies = _cookies(headers.get("cookie", ""))
        header_id = headers.get(EPISODE_HEADER.lower(), "").strip()
        if not header_id and headers.get(PRELOAD_HEADER.lower()) == "1":
            return self._route(method, parts, path, body, headers.get("content-type", ""), cookies, None)
        ep, set_cookie = self._resolve_episode(header_id, cookies.get(EPISODE_COOKIE, ""))
        if isinstance(ep, str):
            return message_page(
                403, "Episode not open", f"The episode “{ep}” is not open on this sandbox server."
            )
        raw_type = headers.get("content-type", "")
        resp = self._route(method, parts, path, body, raw_type, cookies, ep)
        if set_cookie:
            resp.headers.append(("Set-Cookie", set_cookie))
        return resp

    def _resolve_episode(self, header_id: str, cookie_id: str) -> tuple[_Episode | str, str | None]:
        """(episode or the unknown id, Set-Cookie value or None). Header > episode cookie > demo."""
        with self._lock:
            if header_id:
                ep = self._episodes.get(header_id)
                if ep is None:
                    return header_id, None
                fresh = header_id != cookie_id
                return ep, f"{EPISODE_COOKIE}={header_id}; Path=/; HttpOnly; SameSite=Lax" if fresh else None
            ep = self._episodes.get(cookie_id) if cookie_id else None
            if ep is not None:  # a browser-initiated request (e.g. the download manager) without the header
                return ep, None
            demo = self._episodes.get(DEMO_EPISODE)
        stale = f"{EPISODE_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax" if cookie_id else None
        return demo or self._ensure_demo(), stale  # the demo episode always exists (re-created if closed)

    def _route(
        self,
        method: str,
        parts: urllib.parse.SplitResult,
        path: str,
        body: bytes,
        raw_type: str,
        cookies: dict[str, str],
        ep: _Episode | None,
    ) -> Response:
        """Dispatch to the app the path names; `ep` None: a preload request, answered from a throwaway state."""
        content_type = raw_type.split(";")[0].strip().lower()
        if method == "DELETE":
            return message_page(405, "Method not allowed", "DELETE is only used by the admin API.")
        if path == "/":
            return (
                self._index()
                if method in ("GET", "HEAD")
                else message_page(405, "Method not allowed", "Use GET for this page.")
            )
        name = path.split("/")[1]
        app = self.apps.get(name)
        if app is None:
            return not_found()
        if path == "/" + name:
            return redirect(f"/{name}/" + (f"?{parts.query}" if parts.query else ""), status=308)
        req = Request(
            method=method,
            path=path[len(name) + 1 :],
            prefix="/" + name,
            query=_first_values(parts.query),
            form=_form(body, content_type, raw_type) if method == "POST" else {},
            files=_files(body, raw_type) if method == "POST" and content_type == "multipart/form-data" else {},
            cookies=cookies,
            body=body,
            content_type=content_type,
            preload=ep is None,
        )
        if ep is None:
            return app.handle(req, app.new_state(0))
        with ep.lock:
            return app.handle(req, ep.states[name])

    def _index(self) -> Response:
        items = join(
            render(
                '<li><a href="/{name}/">{title}</a> <span class="meta">{desc}</span></li>\n',
                name=app.name,
                title=app.title,
                desc=app.description,
            )
            for app in self.apps.values()
        )
        body = render(
            '<h1>Sandbox apps</h1>\n<nav aria-label="Apps"><ul class="list">\n{items}</ul></nav>', items=items
        )
        return html_response(page("Sandbox apps", body))

    def _admin(self, method: str, sub: str, headers: dict[str, str], body: bytes) -> Response:
        token = headers.get(ADMIN_HEADER.lower(), "")
        if not secrets.compare_digest(token.encode("utf-8", "replace"), self.admin_token.encode("utf-8")):
            return _json_error(403, f"forbidden: missing or wrong {ADMIN_HEADER} header")
        segs = [urllib.parse.unquote(s) for s in sub.strip("/").split("/")] if sub.strip("/") else []
        if segs == ["health"] and method == "GET":
            return _json(200, {"ok": True, "apps": list(self.apps), "episodes": len(self.episode_ids())})
        if segs == ["episodes"]:
            if method == "GET":
                return _json(200, {"episodes": self.episode_ids()})
            if method == "POST":
                return self._admin_open(body)
            return _json_error(405, "use GET or POST on /__agentrl/episodes")
        if len(segs) == 2 and segs[0] == "episodes" and method == "DELETE":
            return _json(200, {"episode_id": segs[1], "closed": self.close_episode(segs[1])})
        if len(segs) == 3 and segs[0] == "episodes" and segs[2] in ("state", "facts") and method == "GET":
            try:
                data = (
                    self.episode_state(segs[1])
                    if segs[2] == "state"
                    else {"facts": self.episode_facts(segs[1])}
                )
            except KeyError:
                return _json_error(404, f"episode {segs[1]!r} is not open", "episode_id")
            return _json(200, data)
        return _json_error(404, f"no admin endpoint {method} {ADMIN_PREFIX}{sub}")

    def _admin_open(self, body: bytes) -> Response:
        try:
            payload = json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _json_error(400, f"body is not valid JSON: {exc}", "body")
        if not isinstance(payload, dict):
            return _json_error(400, 'body must be a JSON object {"episode_id": str, "seed": int}', "body")
        for key in ("episode_id", "seed"):
            if key not in payload:
                return _json_error(400, f"missing field {key!r}", key)
        try:
            facts = self.open_episode(payload["episode_id"], payload["seed"])
        except _BadRequest as exc:
            return _json_error(400, str(exc), exc.field)
        return _json(200, {"episode_id": payload["episode_id"], "seed": payload["seed"], "facts": facts})


def _first_values(qs: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(qs, keep_blank_values=True):
        out.setdefault(key, value)
    return out


def _multipart_parts(body: bytes, raw_type: str) -> list[Message]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + raw_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    return list(msg.iter_parts()) if msg.is_multipart() else []


def _files(body: bytes, raw_type: str) -> dict[str, UploadedFile]:
    """The file parts of a multipart/form-data body, by field name (first wins; empty file inputs skipped)."""
    out: dict[str, UploadedFile] = {}
    for part in _multipart_parts(body, raw_type):
        name, filename = part.get_param("name", header="content-disposition"), part.get_filename()
        if name and filename and name not in out:
            out[str(name)] = UploadedFile(
                filename=filename, content_type=part.get_content_type(), data=part.get_payload(decode=True) or b""
            )
    return out


def _form(body: bytes, content_type: str, raw_type: str = "") -> dict[str, str]:
    if content_type == "multipart/form-data":
        out: dict[str, str] = {}
        for part in _multipart_parts(body, raw_type):
            name = part.get_param("name", header="content-disposition")
            if name and part.get_filename() is None and name not in out:
                out[str(name)] = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        return out
    text = body.decode("utf-8", "replace")
    if content_type == "application/json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    return _first_values(text)


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {key: morsel.value for key, morsel in jar.items()}


class SandboxClient:
    """Drives a :class:`SandboxServer` in another process through its admin API (stdlib ``urllib``).

    Raises ``ValueError`` for a 400 answer, ``KeyError`` for an unknown episode, :class:`SandboxError` otherwise.
    """

    def __init__(self, origin: str, admin_token: str, *, timeout: float = 10.0) -> None:
        self.origin = origin.rstrip("/")
        self.admin_token = admin_token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    def open_episode(self, episode_id: str, seed: int) -> Facts:
        """Open (or re-open, wiping) an episode; returns ``{app: {fact: value}}``."""
        return self._call("POST", "/episodes", {"episode_id": episode_id, "seed": seed})["facts"]

    def close_episode(self, episode_id: str) -> bool:
        """Drop an episode's state; returns whether it was open."""
        return bool(self._call("DELETE", f"/episodes/{urllib.parse.quote(episode_id, safe='')}")["closed"])

    def episode_state(self, episode_id: str) -> dict[str, dict[str, Any]]:
        """``{app: public state}`` of an open episode."""
        return self._call("GET", f"/episodes/{urllib.parse.quote(episode_id, safe='')}/state")

    def episode_facts(self, episode_id: str) -> Facts:
        """The facts of an open episode."""
        return self._call("GET", f"/episodes/{urllib.parse.quote(episode_id, safe='')}/facts")["facts"]

    def health(self) -> dict[str, Any]:
        """``{"ok": true, "apps": [...], "episodes": n}``; raises :class:`SandboxError` if unreachable."""
        return self._call("GET", "/health")

    def _call(self, method: str, sub: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        req = urllib.request.Request(
            self.origin + ADMIN_PREFIX + sub,
            data=data,
            method=method,
            headers={
                ADMIN_HEADER: self.admin_token,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = str(json.loads(raw).get("error", raw[:200]))
            except (ValueError, AttributeError):
                message = raw[:200].decode("utf-8", "replace")
            if exc.code == 400:
                raise ValueError(message) from None
            if exc.code == 404 and "is not open" in message:
                raise KeyError(message) from None
            raise SandboxError(exc.code, message) from None
        except urllib.error.URLError as exc:
            raise SandboxError(0, f"cannot reach {self.origin}: {exc.reason}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: serve the sandbox until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m agentrl.sandbox.server", description="Serve the agentrl sandbox apps on 127.0.0.1."
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind (0: any free port; default 8000)"
    )
    parser.add_argument("--admin-token", default=None, help="admin token (default: a random one)")
    parser.add_argument("--demo-seed", type=int, default=0, help="seed of the header-less demo episode")
    args = parser.parse_args(argv)
    server = SandboxServer(args.port, admin_token=args.admin_token, demo_seed=args.demo_seed).start()
    print(f"agentrl sandbox serving at {server.origin}/", flush=True)
    print(f"admin token: {server.admin_token}  (send it as header {ADMIN_HEADER})", flush=True)
    print("press Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ADMIN_HEADER",
    "DEMO_EPISODE",
    "EPISODE_COOKIE",
    "EPISODE_HEADER",
    "PRELOAD_HEADER",
    "SandboxClient",
    "SandboxError",
    "SandboxServer",
    "main",
]
