"""Rule-based milestone detectors, registered by name.

A detector is a function ``fn(ctx, *, **params) -> Evidence | None``: it looks at what the sandbox
observed in this step (``ctx.events``), the page state after the step (URL, accessibility tree, form
fields, JS results) and the episode directory, and returns evidence when its condition holds. The
keyword-only signature is the parameter schema: task files are checked against it when they load.

>>> @detector("always")
... def always(ctx, *, note: str = "") -> Evidence | None:
...     return Evidence(detail=note or "always fires")
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from agentrl.envs.axtree import AXTree
from pydantic import AfterValidator, BaseModel, ConfigDict, create_model

from agentrl.registry import Registry
from agentrl.types import (
    ActionEvent,
    DialogEvent,
    DownloadEvent,
    Event,
    Evidence,
    NavigationEvent,
    RequestEvent,
)


def _check_regex(v: str) -> str:
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"invalid regular expression {v!r}: {e}") from None
    return v


Regex = Annotated[str, AfterValidator(_check_regex), "regex"]
"""A parameter that is a regular expression (template values inserted into it are escaped)."""


def _check_site_path(v: str) -> str:
    if not v.startswith("/") or v.startswith("//"):
        raise ValueError(f"a path of the task's site starting with '/' (no origin: the probe never leaves the site), got {v!r}")
    return v


SitePath = Annotated[str, AfterValidator(_check_site_path)]


@dataclass(frozen=True)
class FieldState:
    """A form control on the page: what a detector needs to check a value."""

    id: str
    name: str
    label: str
    type: str
    value: str
    checked: bool | None = None

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.label, self.name, self.id) if k)


@dataclass
class StepContext:
    """What detectors see after a step. Optional parts are filled only when a detector needs them."""

    step: int
    events: list[Event]  # observed during this step
    history: list[Event]  # observed during the episode so far (including this step)
    url: str
    title: str
    ax: AXTree
    episode_dir: Path
    answer: str | None = None  # the done("…") answer, on the step it was given
    fields: list[FieldState] | None = None
    js: dict[str, Any] = field(default_factory=dict)
    server_state: dict[str, Any] | None = None
    #: `http_json`'s documents: a path of the task's site (or sandbox) -> its JSON, fetched after the step
    #: with the episode's header, or the error that kept it
    site_json: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorInfo:
    name: str
    fn: Callable[..., Evidence | None]
    needs: frozenset[str]  # what it reads that only some envs give (`ENV_GIVES`)
    params_model: type[BaseModel]
    regex_params: frozenset[str]
    #: a state detector: what it checks must still hold at the end of the episode for a goal to count
    #: (`MilestoneTracker.success`); the others report events, which count once they happened
    final_state: bool = False

    def __call__(self, ctx: StepContext, params: dict[str, Any]) -> Evidence | None:
        return self.fn(ctx, **params)


DETECTORS: Registry[DetectorInfo] = Registry("detector")

#: What each env gives its detectors beyond what both give (the accessibility tree, the step's events,
#: the episode directory, the answer). A detector that `needs` something its task's env does not give
#: would never fire: loading such a task is an error (`agentrl.taskspec`).
ENV_GIVES: dict[str, frozenset[str]] = {
    # the page's URL, the requests it made, its dialogs, its form fields, JS values, the app's server state
    "browser": frozenset({"url", "requests", "page_dialogs", "fields", "js", "server_state", "site_json"}),
    # the X windows, the episode's processes, file change events in its home, screenshots
    "desktop": frozenset({"windows", "processes", "file_events", "screenshot"}),
}


#: What only agentrl's own sandbox server gives: a task on a site of its own cannot use such a detector.
SANDBOX_ONLY: frozenset[str] = frozenset({"server_state"})


def detector(
    name: str, *, needs: tuple[str, ...] = (), final_state: bool = False
) -> Callable[[Callable], Callable]:
    """Register a detector; its keyword-only parameters become the YAML parameter schema. `final_state`:
    it checks a state the agent can undo, so a goal it decides must still hold when the episode ends."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        fields_: dict[str, Any] = {}
        regex_params = set()
        for p in list(sig.parameters.values())[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"detector {name}: parameter {p.name} must be keyword-only")
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields_[p.name] = (p.annotation, default)
            if "regex" in getattr(p.annotation, "__metadata__", ()) or any(
                "regex" in getattr(a, "__metadata__", ()) for a in getattr(p.annotation, "__args__", ())
            ):
                regex_params.add(p.name)
        model = create_model(
            f"{name}_params", __config__=ConfigDict(extra="forbid", strict=False), **fields_
        )
        DETECTORS.register(name)(
            DetectorInfo(name, fn, frozenset(needs), model, frozenset(regex_params), final_state)
        )
        return fn

    return deco


def _name_ok(text: str, name: str | None, name_re: str | None) -> bool:
    if name is not None and text != name:
        return False
    return not (name_re is not None and not re.search(name_re, text))


# ---------------------------------------------------------------- navigation
@detector("url_matches", needs=("url",))
def url_matches(ctx: StepContext, *, pattern: Regex) -> Evidence | None:
    """A page the agent is on (after the step, or one a navigation landed on during it) has a path that
    `pattern` matches whole (re.fullmatch; the query counts only when the pattern asks for it:
    ``/kb/\\?page=2``), and its document loaded from the sandbox with a 2xx status: an error page, a
    redirect on its way elsewhere or a page of another origin never matches."""
    urls = [e.url for e in ctx.events if isinstance(e, NavigationEvent)] + [ctx.url]
    for url in urls:
        if _path_matches(pattern, url) and 200 <= (_document_status(ctx.history, url) or 0) < 300:
            return Evidence(detail=f"navigated to {url}", data={"url": url})
    return None


def _path_matches(pattern: str, url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    if re.fullmatch(pattern, parts.path or "/"):
        return True
    return bool(parts.query) and re.fullmatch(pattern, f"{parts.path}?{parts.query}") is not None


def _document_status(history: list[Event], url: str) -> int | None:
    """The status of the last response the sandbox sent for `url` (its fragment aside): the document's
    status. None when the sandbox never answered it (another origin, a page the agent wrote, about:blank)."""
    want = url.split("#", 1)[0]
    for e in reversed(history):
        if isinstance(e, RequestEvent) and e.url.split("#", 1)[0] == want:
            return e.status
    return None


# ---------------------------------------------------------------- what is on the page
@detector("element_visible")
def element_visible(
    ctx: StepContext, *, role: str, name: str | None = None, name_re: Regex | None = None
) -> Evidence | None:
    """An element with this ARIA role and accessible name (exact `name` or regex `name_re`) is on the page."""
    for el in ctx.ax.elements:
        if el.role == role and _name_ok(el.name, name, name_re):
            return Evidence(detail=f'{role} "{el.name}" is visible', data={"ref": el.ref, "name": el.name})
    return None


@detector("text_visible")
def text_visible(ctx: StepContext, *, text: str | None = None, pattern: Regex | None = None) -> Evidence | None:
    """The page shows `text` (substring) or text matching `pattern`."""
    visible = ctx.ax.visible_text
    if text is not None and text in visible:
        return Evidence(detail=f"text {text!r} is visible")
    if pattern is not None:
        m = re.search(pattern, visible)
        if m:
            return Evidence(detail=f"text {m.group(0)!r} is visible", data={"match": m.group(0)})
    return None


@detector("dialog_shown", needs=("page_dialogs",))
def dialog_shown(ctx: StepContext, *, message_re: Regex | None = None, type: str | None = None) -> Evidence | None:
    """A JS dialog (alert/confirm/prompt) opened this step, or an ARIA dialog/alertdialog is on the page."""
    for e in ctx.events:
        if isinstance(e, DialogEvent) and (type is None or e.type == type):
            if message_re is None or re.search(message_re, e.message):
                return Evidence(detail=f"{e.type} dialog: {e.message!r}", data={"message": e.message})
    if type in (None, "dialog", "alertdialog"):
        for el in ctx.ax.elements:
            if el.role in ("dialog", "alertdialog") and (type is None or el.role == type):
                if message_re is None or re.search(message_re, el.name):
                    return Evidence(detail=f'{el.role} "{el.name}" is open', data={"name": el.name})
    return None


@detector("js_true", needs=("js",))
def js_true(ctx: StepContext, *, expr: str) -> Evidence | None:
    """Escape hatch: the JS expression `expr`, evaluated in the page after the step, is truthy."""
    value = ctx.js.get(expr)
    if value:
        return Evidence(detail=f"js {expr!r} -> {value!r}", data={"value": str(value)[:200]})
    return None


# ---------------------------------------------------------------- interaction
@detector("element_activated")
def element_activated(
    ctx: StepContext, *, role: str | None = None, name: str | None = None, name_re: Regex | None = None
) -> Evidence | None:
    """The agent clicked (or pressed a key on) a control with this role and accessible name this step."""
    for e in ctx.events:
        if isinstance(e, ActionEvent) and e.ok and e.name in ("click", "press", "select") and e.role:
            if (role is None or e.role == role) and _name_ok(e.label or "", name, name_re):
                return Evidence(detail=f'{e.name} on {e.role} "{e.label}"', data={"ref": e.target})
    return None


# ---------------------------------------------------------------- forms
def _find_field(fields: list[FieldState], key: str) -> FieldState | None:
    for f in fields:
        if key in f.keys():
            return f
    low = key.lower()
    for f in fields:
        if any(k.lower() == low for k in f.keys()):
            return f
    return None


def _field_value(f: FieldState) -> str:
    # A checkbox reads "checked" or ""; a radio group reads the label of its checked option.
    if f.type == "checkbox":
        return "checked" if f.checked else ""
    return f.value


@detector("field_matches", needs=("fields",), final_state=True)
def field_matches(ctx: StepContext, *, field: str, pattern: Regex) -> Evidence | None:
    """The form field named `field` (label, name or id) has a value matching `pattern` (re.fullmatch).

    A checkbox has the value "checked" when checked; a radio group (named by its legend or name) has the
    label of its checked option.
    """
    f = _find_field(ctx.fields or [], field)
    if f is not None and re.fullmatch(pattern, _field_value(f)):
        return Evidence(detail=f"{field} = {_field_value(f)!r}", data={"value": _field_value(f)})
    return None


@detector("form_filled", needs=("fields",), final_state=True)
def form_filled(ctx: StepContext, *, fields: dict[str, Regex]) -> Evidence | None:
    """Partial credit r_form = N_filled / N_expected: how many `fields` (name -> regex) hold a matching value."""
    ok = [k for k, pat in fields.items() if (f := _find_field(ctx.fields or [], k)) and re.fullmatch(pat, _field_value(f))]
    if not ok:
        return None
    return Evidence(
        detail=f"{len(ok)}/{len(fields)} fields filled: {', '.join(ok)}",
        progress=len(ok) / len(fields),
        data={"filled": len(ok), "expected": len(fields)},
    )


# ---------------------------------------------------------------- network
def _field_text(v: str | list[str]) -> str:
    return v if isinstance(v, str) else ",".join(v)


@detector("request_made", needs=("requests",))
def request_made(
    ctx: StepContext,
    *,
    url: Regex,
    method: str | None = None,
    fields: dict[str, Regex] | None = None,
    status: int | None = None,
) -> Evidence | None:
    """A request reached the sandbox server this step: URL matches `url` (re.search), method, status and
    every body field in `fields` (name -> regex, re.fullmatch) match. This is what WebArena-Verified scores."""
    for e in ctx.events:
        if not isinstance(e, RequestEvent) or not re.search(url, e.url):
            continue
        if method is not None and e.method.upper() != method.upper():
            continue
        if status is not None and e.status != status:
            continue
        if fields and not all(k in e.fields and re.fullmatch(p, _field_text(e.fields[k])) for k, p in fields.items()):
            continue
        return Evidence(
            detail=f"{e.method} {e.url} -> {e.status}",
            data={"url": e.url, "method": e.method, "status": e.status},
        )
    return None


# ---------------------------------------------------------------- files
@detector("file_created")
def file_created(
    ctx: StepContext,
    *,
    glob: str = "*",
    ext: str | None = None,
    contains: str | None = None,
    pattern: Regex | None = None,
    sha256: str | None = None,
    min_bytes: int = 1,
    downloaded: bool = False,
) -> Evidence | None:
    """A file in the episode directory matches the name `glob` (relative path), extension, size, a content
    check (`contains` substring, `pattern` regex, or `sha256`). With `downloaded: true` it must have
    arrived as a browser download."""
    root = ctx.episode_dir
    if downloaded:
        candidates = [root / e.path for e in ctx.history if isinstance(e, DownloadEvent)]
    else:
        candidates = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    for p in candidates:
        rel = p.relative_to(root).as_posix()
        if not (fnmatch.fnmatch(rel, glob) or fnmatch.fnmatch(p.name, glob)):
            continue
        if ext is not None and p.suffix.lower() != "." + ext.lower().lstrip("."):
            continue
        if not p.exists() or p.stat().st_size < min_bytes:
            continue
        if contains is not None or pattern is not None or sha256 is not None:
            data = p.read_bytes()
            if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
                continue
            text = data.decode("utf-8", errors="replace")
            if contains is not None and contains not in text:
                continue
            if pattern is not None and not re.search(pattern, text):
                continue
        return Evidence(detail=f"file {rel} ({p.stat().st_size} bytes)", data={"path": rel})
    return None


# ---------------------------------------------------------------- goal
def _normalise(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower())


@detector("answer_matches")
def answer_matches(
    ctx: StepContext, *, equals: str | None = None, pattern: Regex | None = None, normalize: bool = True
) -> Evidence | None:
    """The agent called done(answer) this step with an answer equal to `equals` (case/space-insensitive
    when `normalize`) or matching `pattern` (re.fullmatch, case-insensitive)."""
    if ctx.answer is None:
        return None
    a = ctx.answer
    if equals is not None:
        if (_normalise(a) == _normalise(equals)) if normalize else (a == equals):
            return Evidence(detail=f"answer {a!r} equals the expected answer")
        return None
    if pattern is not None and re.fullmatch(pattern, a.strip(), re.I):
        return Evidence(detail=f"answer {a!r} matches {pattern!r}")
    return None


_MISSING = object()


def _lookup(state: Any, path: str) -> Any:
    cur = state
    for part in path.split("."):
        if isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _value_matches(value: Any, equals: Any, pattern: str | None, min_count: int | None) -> bool:
    """`value` equals `equals` (or its text does), fully matches `pattern`, and is a list/dict of at least
    `min_count` items: each only where given (none given: any value matches)."""
    if equals is not None and value != equals and str(value) != str(equals):
        return False
    if pattern is not None and not re.fullmatch(pattern, str(value)):
        return False
    return min_count is None or (isinstance(value, list | dict) and len(value) >= min_count)


@detector("server_state", needs=("server_state",), final_state=True)
def server_state(
    ctx: StepContext,
    *,
    path: str,
    equals: str | int | float | bool | None = None,
    pattern: Regex | None = None,
    min_count: int | None = None,
) -> Evidence | None:
    """The sandbox server's state for this episode (what really happened server-side) has, at the dotted
    `path` (e.g. ``accounts.submissions.-1.email``), a value equal to `equals`, matching `pattern`, or a
    list/dict of at least `min_count` items. With none of these, the path must merely exist."""
    value = _lookup(ctx.server_state or {}, path)
    if value is _MISSING:
        return None
    if not _value_matches(value, equals, pattern, min_count):
        return None
    return Evidence(detail=f"server {path} = {str(value)[:80]!r}", data={"value": str(value)[:200]})


class JsonFetchError(str):
    """Why a document `http_json` asked for could not be had (never matches)."""


@detector("http_json", needs=("site_json",), final_state=True)
def http_json(
    ctx: StepContext,
    *,
    url: SitePath,
    at: str = "",
    equals: str | int | float | bool | None = None,
    pattern: Regex | None = None,
    min_count: int | None = None,
) -> Evidence | None:
    """A state probe on any site: GET `url` (a path of the task's site, sent with the episode's header after
    the step) answers JSON whose value at the dotted path `at` (``tickets.-1.title``; empty: the whole
    document) equals `equals`, matches `pattern` (re.fullmatch) or has at least `min_count` items. With
    none of these, the path must merely exist. Like WebArena's API checks (`program_html`)."""
    doc = ctx.site_json.get(url, _MISSING)
    if doc is _MISSING or isinstance(doc, JsonFetchError):
        return None
    value = _lookup(doc, at) if at else doc
    if value is _MISSING:
        return None
    if not _value_matches(value, equals, pattern, min_count):
        return None
    return Evidence(detail=f"GET {url}: {at or '(document)'} = {str(value)[:80]!r}", data={"value": str(value)[:200]})
