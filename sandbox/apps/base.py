"""Shared plumbing for sandbox apps: request/response types, safe HTML helpers and the page layout.

Markup is built with :func:`render`, which HTML-escapes every interpolated value unless it is already
:class:`Html` (trusted markup produced by these helpers). User input therefore can never be injected
unescaped: it is a plain ``str`` and gets escaped on the way in.
"""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


class Html(str):
    """A string of trusted markup. Every other value is escaped when interpolated by :func:`render`."""

    __slots__ = ()

    def __add__(self, other: str) -> Html:
        return Html(str.__add__(self, esc(other)))

    def __radd__(self, other: str) -> Html:
        return Html(str.__add__(esc(other), self))


EMPTY = Html("")


def esc(value: object) -> Html:
    """Escape ``value`` for HTML text or a quoted attribute (``Html`` passes through unchanged)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def render(template: str, /, **values: object) -> Html:
    """``template.format(**values)`` with every value escaped (``Html`` values are inserted as is)."""
    return Html(template.format_map({key: esc(value) for key, value in values.items()}))


def join(parts: Iterable[object], sep: str = "") -> Html:
    """Concatenate escaped ``parts`` (``Html`` parts are kept as markup)."""
    return Html(sep.join(esc(part) for part in parts))


def attr(name: str, value: object) -> Html:
    """`` name="value"`` (escaped); ``True`` gives a bare boolean attribute; ``None``/``False`` gives nothing."""
    if value is None or value is False:
        return Html("")
    if value is True:
        return Html(f" {name}")
    return render(' {name}="{value}"', name=Html(name), value=value)


@dataclass(frozen=True)
class UploadedFile:
    """One file of a multipart/form-data POST (``<input type="file">``)."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class Request:
    """One HTTP request as an app sees it (path relative to the app's prefix)."""

    method: str  #: "GET", "HEAD" or "POST"
    path: str  #: path inside the app, always starting with "/" (e.g. "/login")
    prefix: str  #: the app's mount point, e.g. "/accounts"
    query: dict[str, str] = field(default_factory=dict)
    #: POST fields: from an urlencoded or multipart body, or the top-level keys of a JSON-object body (non-string values
    #: JSON-encoded); first value wins for repeated keys
    form: dict[str, str] = field(default_factory=dict)
    #: uploaded files of a multipart/form-data POST, by field name (their other fields are in `form`)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  #: the raw request body
    content_type: str = ""  #: the request's Content-Type without parameters, lower-cased
    #: a preload request (``X-Agentrl-Preload``): no episode yet, `state` is a throwaway; an app that supports
    #: it answers a start page that waits for ``window.__agentrlStart(seed)`` (see ``TaskSpec.start.preload``)
    preload: bool = False

    @property
    def is_read(self) -> bool:
        """True for GET and HEAD."""
        return self.method in ("GET", "HEAD")

    def url(self, sub: str) -> str:
        """Absolute path of ``sub`` inside this app (``req.url("/login")`` -> ``"/accounts/login"``)."""
        return self.prefix + sub


@dataclass
class Response:
    """What an app answers; the server adds Content-Length and Cache-Control."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: the same bytes for every episode and request (a file shipped with an app's package): the browser may
    #: keep it in its HTTP cache across episodes. Everything else is ``no-store``, so the cache never holds
    #: anything one episode could see and another could not.
    immutable: bool = False


class App(ABC):
    """A stateful web app mounted at ``/<name>/``. State objects are created per episode by the server."""

    name: str = ""  #: URL prefix segment, also the key in facts and episode-state JSON
    title: str = ""  #: human title shown in the header and on the index page
    description: str = ""

    @abstractmethod
    def new_state(self, seed: int) -> Any:
        """Fresh, deterministic state for one episode."""

    @abstractmethod
    def facts(self, state: Any) -> dict[str, str]:
        """The seeded facts task templates may refer to (all values are strings)."""

    @abstractmethod
    def public_state(self, state: Any) -> dict[str, Any]:
        """JSON-serialisable snapshot of what happened on the server (a fresh copy)."""

    @abstractmethod
    def handle(self, req: Request, state: Any) -> Response:
        """Answer one request. Called with the episode's lock held."""


STYLE = """
:root{--fg:#1f2933;--muted:#52606d;--accent:#1d4ed8;--bg:#f3f5f8;--card:#fff;--err:#b91c1c;--ok:#047857;--border:#cbd2d9}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
.site-header{display:flex;align-items:center;gap:1.5rem;padding:.75rem 1.5rem;background:#0f172a;color:#fff;flex-wrap:wrap}
.site-header a{color:#fff}
.brand{font-weight:700;text-decoration:none}
.app-name{color:#cbd5e1}
.site-header nav ul{list-style:none;display:flex;gap:1.25rem;margin:0;padding:0}
.user{margin-left:auto;display:flex;gap:.75rem;align-items:center}
.user form{margin:0}
.user button{padding:.3rem .8rem;background:transparent;border-color:#94a3b8}
main{max-width:56rem;margin:2rem auto;padding:1.5rem 2rem;background:var(--card);border:1px solid var(--border);border-radius:8px}
h1{margin-top:0;font-size:1.75rem}
label,legend{display:block;font-weight:600;margin-bottom:.25rem}
input[type=text],input[type=email],input[type=tel],input[type=password],input[type=search],select{
width:100%;max-width:28rem;padding:.5rem .6rem;border:1px solid var(--border);border-radius:6px;font:inherit;background:#fff}
.field{margin-bottom:1.1rem}
fieldset{border:1px solid var(--border);border-radius:6px;padding:.5rem 1rem .75rem;margin:0 0 1.1rem}
.choice{display:flex;align-items:center;gap:.5rem;margin:.3rem 0}
.choice label{display:inline;font-weight:400;margin:0}
.hint{color:var(--muted);margin:0 0 .25rem;font-size:.9rem}
.error{color:var(--err);font-weight:600;margin:0 0 .25rem}
[aria-invalid=true]{border-color:var(--err);outline:2px solid #fecaca}
.alert{border-left:4px solid var(--err);background:#fef2f2;padding:.75rem 1rem;margin:0 0 1rem}
.status{border-left:4px solid var(--ok);background:#ecfdf5;padding:.75rem 1rem}
.notice{border-left:4px solid #b45309;background:#fffbeb;padding:.6rem 1rem}
button,.button{display:inline-block;padding:.55rem 1.1rem;border-radius:6px;border:1px solid var(--accent);
background:var(--accent);color:#fff;font:inherit;font-weight:600;cursor:pointer;text-decoration:none}
button.secondary,.button.secondary{background:#fff;color:var(--accent)}
.actions{display:flex;gap:.75rem;align-items:center;margin-top:1.25rem;flex-wrap:wrap}
.actions form{margin:0}
.search{display:flex;gap:.5rem;align-items:flex-end;margin-bottom:1rem}
.search div{flex:1}
table{border-collapse:collapse;width:100%;margin:1rem 0}
caption{text-align:left;font-weight:600;padding-bottom:.5rem}
th,td{border-bottom:1px solid var(--border);padding:.45rem .6rem;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#eef2f7}
dl.review{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1.5rem}
dt{font-weight:600}
dd{margin:0}
.list{padding-left:1.2rem}
.list li{margin:.5rem 0}
.meta{color:var(--muted);font-size:.9rem}
.list .meta{margin-left:.5rem}
.summary{font-size:1.1rem}
footer{text-align:center;color:var(--muted);font-size:.85rem;padding-bottom:2rem}
"""


def page(
    title: str,
    body: Html,
    *,
    app_title: str | None = None,
    nav: Sequence[tuple[str, str]] = (),
    user_area: Html = EMPTY,
) -> Html:
    """A full HTML5 document: header (brand link, app name, app nav), ``<main>`` with ``body``, footer."""
    nav_html = Html("")
    if nav:
        items = join(
            render('<li><a href="{href}">{text}</a></li>', href=href, text=text) for text, href in nav
        )
        nav_html = render(
            '<nav aria-label="{label}"><ul>{items}</ul></nav>', label=app_title or "Site", items=items
        )
    full_title = " · ".join(part for part in (title, app_title, "Agentrl Sandbox") if part)
    return render(
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        "<title>{full_title}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        '<header class="site-header">\n<a class="brand" href="/">Agentrl Sandbox</a>\n{app}{nav}{user}\n</header>\n'
        '<main id="main">\n{body}\n</main>\n'
        "<footer><p>Local sandbox. All people, accounts and figures are synthetic.</p></footer>\n"
        "</body>\n</html>\n",
        full_title=full_title,
        style=Html(STYLE),
        app=render('<span class="app-name">{t}</span>\n', t=app_title) if app_title else Html(""),
        nav=nav_html,
        user=user_area,
        body=body,
    )


def html_response(markup: Html, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """An HTML response."""
    return Response(status=status, body=markup.encode("utf-8"), headers=list(headers))


def redirect(location: str, status: int = 303, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """A redirect (303 See Other by default, so a POST is followed by a GET)."""
    return Response(status=status, body=b"", headers=[("Location", location), *headers])


def message_page(
    status: int,
    heading: str,
    text: str,
    *,
    link: tuple[str, str] = ("Go to the sandbox home", "/"),
    app_title: str | None = None,
) -> Response:
    """A simple page with a heading, one paragraph and one link (404, 403, 405 and friends)."""
    body = render(
        '<h1>{heading}</h1>\n<p>{text}</p>\n<p><a href="{href}">{link}</a></p>',
        heading=heading,
        text=text,
        href=link[1],
        link=link[0],
    )
    return html_response(page(heading, body, app_title=app_title), status=status)


def not_found(app_title: str | None = None) -> Response:
    """The standard 404 page."""
    return message_page(404, "Page not found", "There is no page at this address.", app_title=app_title)


def method_not_allowed(allow: str, app_title: str | None = None) -> Response:
    """The standard 405 page."""
    resp = message_page(
        405, "Method not allowed", f"This page only accepts {allow} requests.", app_title=app_title
    )
    resp.headers.append(("Allow", allow))
    return resp
