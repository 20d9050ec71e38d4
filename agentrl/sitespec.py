"""Sites: the user's own web apps that tasks run on, declared once per suite (``suite.yaml``) or per run.

A task starts on agentrl's sandbox (``start: {app: accounts}``), on a declared site
(``start: {site: helpdesk, path: /tickets}``) or on a URL (``start: {url: http://127.0.0.1:3000/}``: the
declared site with that origin, or else an undeclared one without a start command or reset contract)::

    sites:
      helpdesk:
        origin: http://127.0.0.1:8765
        command: "{python} app.py --port 8765 --db {tmp}/helpdesk.db"   # agentrl starts and stops it
        ready: {url: /health}                  # or {port: 8765}; default: the origin's port accepts
        reset: {http: /reset, header: true}    # or {command: "cp seed.db app.db"}
      handbook:
        static: handbook/                      # a folder agentrl serves itself on 127.0.0.1

The **reset contract** says how an episode gets a clean start: ``http`` (agentrl POSTs
``{"episode": ID, "seed": SEED}`` to that path before the episode), ``command`` (a shell command run
before the episode, with ``AGENTRL_EPISODE`` and ``AGENTRL_SEED`` set), and ``header: true`` (the app
keeps its state per ``X-Agentrl-Episode`` header, which every request of an episode carries). Only
``header: true`` lets parallel episodes share one backend (`SiteSpec.parallel`); a static site has no
state to reset. An origin that is not loopback needs ``remote: true``. Problems are reported as
``file:line: sites.NAME.field: message``.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentrl.registry import did_you_mean
from agentrl.rewards.detectors import DETECTORS, SANDBOX_ONLY
from agentrl.yamlpos import Loc, TaskFileError, field_name, line_of, load_with_lines

#: a YAML file of ``sites:`` for one run, added to (and overriding) the suites' own (`--sites` sets it)
SITES_ENV = "AGENTRL_SITES"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ready(_Model):
    """When a started site is ready: a GET of `url` (a path of the site) answers, or `port` accepts."""

    url: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _one(self) -> Ready:
        if (self.url is None) == (self.port is None):
            raise ValueError("give exactly one of 'url' or 'port'")
        if self.url is not None and not self.url.startswith("/"):
            raise ValueError(f"url must be a path of the site starting with '/', got {self.url!r}")
        return self


class Reset(_Model):
    """How each episode starts clean (see the module's docstring)."""

    http: str | None = None
    command: str | None = None
    header: bool = False

    @model_validator(mode="after")
    def _some(self) -> Reset:
        if self.http is None and self.command is None and not self.header:
            raise ValueError("give at least one of 'http' (a path), 'command' or 'header: true'")
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError(f"http must be a path of the site starting with '/', got {self.http!r}")
        if self.command is not None and "{tmp}" in self.command:
            raise ValueError("{tmp} is the started command's own directory, unknown to a reset command: "
                             "name a path (e.g. one the site's command also uses)")
        return self


class SiteSpec(_Model):
    """One site: where it is, how agentrl starts it (optional) and how each episode starts clean."""

    name: str = ""
    origin: str | None = None
    command: str | list[str] | None = None
    #: the command's working directory, relative to the file that declares the site (default: its folder)
    cwd: str = "."
    ready: Ready | None = None
    ready_timeout_s: float = Field(default=30.0, gt=0)
    static: str | None = None
    reset: Reset | None = None
    #: an origin that is not loopback (127.0.0.0/8, localhost, ::1) must say so: the wall then admits it
    remote: bool = False

    _base: Path = PrivateAttr(default=Path("."))
    _where: str = PrivateAttr(default="")

    @field_validator("origin")
    @classmethod
    def _origin(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.fragment:
            raise ValueError(f"an origin is scheme://host[:port] (e.g. http://127.0.0.1:3000), got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _shape(self) -> SiteSpec:
        if self.static is not None and (self.command is not None or self.reset is not None):
            raise ValueError("a static site is served by agentrl: give no 'command' and no 'reset'")
        if self.static is None and self.origin is None:
            raise ValueError("give 'origin' (where the site answers) or 'static' (a folder agentrl serves)")
        if self.static is not None and self.origin is not None and not is_loopback(self.origin):
            raise ValueError("a static site is served on 127.0.0.1: its origin must be loopback")
        if self.origin is not None and not self.remote and not is_loopback(self.origin):
            raise ValueError(f"origin {self.origin} is not loopback: set 'remote: true' to let episodes reach it "
                             "(the wall then admits it; its state is yours to reset)")
        return self

    @property
    def parallel(self) -> bool:
        """Whether parallel episodes may share this site's one backend: a static site, or the header contract."""
        return self.static is not None or (self.reset is not None and self.reset.header)

    @property
    def where(self) -> str:
        """``file:line`` of the site's declaration ('' for a task's undeclared `start.url` site)."""
        return self._where

    def folder(self) -> Path:
        assert self.static is not None
        return (self._base / self.static).resolve()

    def workdir(self) -> Path:
        return (self._base / self.cwd).resolve()


def is_loopback(origin: str) -> bool:
    host = urllib.parse.urlsplit(origin).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Sites:
    """The sites a task may name, by name (each knows where it was declared: `SiteSpec.where`)."""

    def __init__(self, sites: dict[str, SiteSpec] | None = None) -> None:
        self.by_name: dict[str, SiteSpec] = dict(sites or {})

    def merged(self, other: Sites) -> Sites:
        return Sites({**self.by_name, **other.by_name})

    def by_origin(self, origin: str) -> SiteSpec | None:
        return next((s for s in self.by_name.values() if s.origin == origin.rstrip("/")), None)


def parse_sites(data: Any, path: Path, lines: dict[Loc, int], key: Loc = ("sites",)) -> Sites:
    """The ``sites:`` mapping found at `key` of a loaded YAML file; TaskFileError naming file:line: field."""
    if data is None:
        return Sites()
    if not isinstance(data, dict):
        raise TaskFileError([f"{path}:{line_of(lines, key)}: {field_name(key)}: expected a mapping of site "
                             f"names to sites, got {type(data).__name__}"])
    problems: list[str] = []
    out: dict[str, SiteSpec] = {}
    for name, raw in data.items():
        loc = (*key, name)
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            problems.append(f"{path}:{line_of(lines, loc)}: {field_name(loc)}: a site name is letters, digits, "
                            f"'-' and '_', got {name!r}")
            continue
        try:
            spec = SiteSpec.model_validate({**(raw or {}), "name": name} if isinstance(raw, dict) else raw)
        except ValidationError as e:
            for err in e.errors():
                at = (*loc, *(p for p in err["loc"] if isinstance(p, str | int) and "[" not in str(p)))
                msg = err["msg"].removeprefix("Value error, ")
                problems.append(f"{path}:{line_of(lines, at)}: {field_name(at)}: {msg}")
            continue
        spec._base = path.parent.resolve()
        if spec.static is not None and not spec.folder().is_dir():
            at = (*loc, "static")
            problems.append(f"{path}:{line_of(lines, at)}: {field_name(at)}: no folder {spec.folder()}")
        spec._where = f"{path}:{line_of(lines, loc)}"
        out[name] = spec
    if problems:
        raise TaskFileError(problems)
    return Sites(out)


_cache: dict[Path, tuple[float, Sites]] = {}


def _load_file(path: Path, key: str) -> Sites:
    path = path.resolve()
    mtime = path.stat().st_mtime
    hit = _cache.get(path)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    data, lines = load_with_lines(path)
    sites = parse_sites(data.get(key) if isinstance(data, dict) else None, path, lines, (key,))
    _cache[path] = (mtime, sites)
    return sites


def suite_file_of(task_path: Path) -> Path | None:
    """The ``suite.yaml`` of the suite a task file belongs to: the nearest one in its folder or above."""
    for d in Path(task_path).resolve().parents:
        if (d / "suite.yaml").is_file():
            return d / "suite.yaml"
    return None


def sites_for(task_path: Path) -> Sites:
    """The sites a task file may name: its suite's (``suite.yaml`` ``sites:``), then the run's
    (the file in ``AGENTRL_SITES``), which add to and override them."""
    suite = suite_file_of(task_path)
    sites = _load_file(suite, "sites") if suite is not None else Sites()
    run = os.environ.get(SITES_ENV)
    if run:
        if not Path(run).is_file():
            raise TaskFileError([f"{run}:1: (file): {SITES_ENV} names no file"])
        sites = sites.merged(_load_file(Path(run), "sites"))
    return sites


def resolve_site(spec: Any) -> tuple[SiteSpec | None, list[str]]:
    """The site of a task (a `TaskSpec`) that starts on `start.site` or `start.url`, and the problems with it
    (``file:line: field: message``): an undeclared site, a non-loopback URL without a declared remote site,
    a detector that needs agentrl's own server state."""
    if spec.env != "browser":
        return None, [f"{spec.where(('start',))}: a desktop task starts with 'app' (a desktop app), not a site or URL"]
    try:
        sites = sites_for(spec.path)
    except TaskFileError as e:
        return None, list(e.problems)
    site: SiteSpec | None
    if spec.start.site is not None:
        site = sites.by_name.get(spec.start.site)
        if site is None:
            names = tuple(sites.by_name)
            hint = did_you_mean(spec.start.site, names) if names else " (no site is declared: declare it in suite.yaml `sites:` or a --sites FILE)"
            return None, [f"{spec.where(('start', 'site'))}: unknown site '{spec.start.site}'{hint}"]
    else:
        assert spec.start.url is not None
        origin = origin_of(spec.start.url)
        site = sites.by_origin(origin)
        if site is None:
            if not is_loopback(origin):
                return None, [f"{spec.where(('start', 'url'))}: {origin} is not loopback: declare it as a site with "
                        "'remote: true' (suite.yaml `sites:`) to let episodes reach it"]
            site = SiteSpec(name="site", origin=origin)
    assert site is not None
    problems = []
    for i, m in enumerate(spec.milestones):
        if DETECTORS.get(m.detector).needs & SANDBOX_ONLY:
            problems.append(
                f"{spec.where(('milestones', i, 'detector'))}: detector {m.detector} reads agentrl's own sandbox "
                f"server state, which the site '{site.name}' does not have: use http_json (GET a URL of the "
                "site and match a JSON path) or a page detector"
            )
    return site, problems
