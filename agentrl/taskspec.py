"""Task specs: YAML files with an instruction template, a start state, milestones, an oracle and near-misses.

>>> spec = load_task("tasks/core/login.yaml")             # doctest: +SKIP
>>> variant = spec.render(seed=3, facts=server.open_episode("ep1", 3))   # doctest: +SKIP

Every problem is reported with the file, line and field (``tasks/core/login.yaml:14: milestones[2].params:
unknown parameter 'patern' for detector url_matches (did you mean 'pattern'?)``), all of them at once.
See docs/tasks.md for the format.
"""

from __future__ import annotations

import random
import re
import urllib.parse
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

import agentrl.rewards.desktop_detectors  # noqa: F401  (registers the desktop env's detectors)
from agentrl.registry import did_you_mean
from agentrl.rewards.detectors import DETECTORS, ENV_GIVES
from agentrl.sitespec import SiteSpec, resolve_site
from agentrl.types import CATEGORIES, DEFAULT_WEIGHTS, Category
from agentrl.yamlpos import Loc, TaskFileError, field_name, line_of, load_with_lines

_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
#: anything that opens a template: each must be a whole, well-formed `_TEMPLATE`
_TEMPLATE_OPEN = re.compile(r"\{\{(.*?)(\}\}|$)", re.S)
#: where strings are templated (`TaskSpec.render`): these fields, and these keys of the items of these lists
_TEMPLATED_FIELDS = ("instruction", "oracle")
_TEMPLATED_ITEMS = {"start": "files", "milestones": "params", "near_misses": "steps"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variable(_Model):
    """A template variable drawn per seed: one of `choice`, or an integer in `int: [lo, hi]`."""

    choice: list[str | int | float] | None = None
    int_range: tuple[int, int] | None = Field(default=None, alias="int")

    @model_validator(mode="after")
    def _one(self) -> Variable:
        if (self.choice is None) == (self.int_range is None):
            raise ValueError("give exactly one of 'choice' or 'int'")
        if self.choice is not None and not self.choice:
            raise ValueError("'choice' is empty")
        if self.int_range is not None and self.int_range[0] > self.int_range[1]:
            raise ValueError("'int' must be [lo, hi] with lo <= hi")
        return self

    def draw(self, rng: random.Random) -> str:
        if self.choice is not None:
            return str(rng.choice(self.choice))
        assert self.int_range is not None
        return str(rng.randint(*self.int_range))


class Start(_Model):
    """Where an episode starts: a sandbox `app`, a declared `site` (`agentrl.sitespec`), or a `url`; `path`
    is the start page on the app or site (for a `url`, its path and query)."""

    app: str | None = None
    site: str | None = None
    url: str | None = None
    path: str = "/"
    #: files put in the episode's directory before the episode starts (relative path -> text, templated),
    #: e.g. a document to upload or attach
    files: dict[str, str] = {}
    #: desktop tasks: the apps started for the episode, one command line each (``notes todo.txt``; the first
    #: word names an app of agentrl.sandbox.desktop.APPS), in the episode's home directory
    launch: list[str] = []
    #: browser tasks: the start page is the same for every episode and starts its episode in the page when
    #: the env calls ``window.__agentrlStart(seed)`` (the ``miniwob`` app's pages), so the env loads it ahead,
    #: in the context made ready for the next episode, and a reset only hands over the seed
    preload: bool = False

    @model_validator(mode="before")
    @classmethod
    def _path_of_url(cls, v: Any) -> Any:
        if isinstance(v, dict) and isinstance(v.get("url"), str) and "path" not in v:
            parts = urllib.parse.urlsplit(v["url"])
            v = {**v, "path": (parts.path or "/") + (f"?{parts.query}" if parts.query else "")}
        return v

    @model_validator(mode="after")
    def _one_place(self) -> Start:
        given = [k for k in ("app", "site", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'app' (a sandbox app), 'site' (a site declared in suite.yaml "
                             f"`sites:`) or 'url', got {given or 'none'}")
        if self.url is not None:
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url must be an absolute http(s) URL, got {self.url!r}")
        return self

    @field_validator("launch")
    @classmethod
    def _known_apps(cls, v: list[str]) -> list[str]:
        from agentrl.sandbox.desktop import app_command

        for line in v:
            try:
                app_command(line)
            except (KeyError, ValueError) as e:
                raise ValueError(f"launch {line!r}: {e.args[0]}") from None
        return v

    @field_validator("path")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"path must start with '/', got {v!r}")
        return v

    @field_validator("files")
    @classmethod
    def _inside(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            p = PurePosixPath(name)
            if not name or p.is_absolute() or ".." in p.parts or name == "trajectory.jsonl":
                raise ValueError(f"file name {name!r} must be a relative path inside the episode directory")
        return v


class Milestone(_Model):
    id: str
    detector: str
    params: dict[str, Any] = {}
    category: Category
    weight: float | None = Field(default=None, ge=0)
    after: list[str] = []
    repeatable: bool = False
    description: str = ""

    @field_validator("detector")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DETECTORS:
            raise ValueError(f"unknown detector '{v}'{did_you_mean(v, tuple(DETECTORS.names()))}")
        return v

    def effective_weight(self) -> float:
        return DEFAULT_WEIGHTS[self.category] if self.weight is None else self.weight


class Target(_Model):
    """How an oracle step names an element: by ARIA role and accessible name, as a person would."""

    role: str
    name: str | None = None
    name_re: str | None = None
    nth: int = 0

    @model_validator(mode="after")
    def _named(self) -> Target:
        if self.name is None and self.name_re is None:
            raise ValueError("give 'name' or 'name_re'")
        return self


class ClickStep(Target):
    pass


class FillStep(Target):
    text: str


class SelectStep(Target):
    option: str


class UploadStep(Target):
    file: str  # relative to the episode's directory


ACTION_STEP_KEYS = (
    "click", "fill", "select", "upload", "press", "scroll", "goto", "back", "wait", "done",
    "type", "key", "focus",  # desktop env: type("text"), key("ctrl+s"), focus("window title")
)


class OracleStep(_Model):
    """One step of a scripted solution; exactly one key, e.g. ``{click: {role: button, name: Sign in}}``."""

    click: ClickStep | None = None
    fill: FillStep | None = None
    select: SelectStep | None = None
    upload: UploadStep | None = None
    press: str | None = None
    scroll: Literal["up", "down", "left", "right"] | None = None
    goto: str | None = None
    back: Literal[True] | None = None
    wait: Literal[True] | None = None
    done: str | None = None
    type: str | None = None
    key: str | None = None
    focus: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, v: Any) -> Any:
        # `- back` / `- wait` as bare strings, and `- back:` with no value
        if isinstance(v, str) and v in ("back", "wait"):
            return {v: True}
        if isinstance(v, dict):
            return {k: (True if k in ("back", "wait") and val is None else val) for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> OracleStep:
        set_keys = [k for k in ACTION_STEP_KEYS if getattr(self, k) is not None]
        if len(set_keys) != 1:
            raise ValueError(f"an oracle step has exactly one action key ({', '.join(ACTION_STEP_KEYS)}), got {set_keys}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ACTION_STEP_KEYS if getattr(self, k) is not None)


class NearMiss(_Model):
    """A plausible wrong solution that must not reach success (nor fire any milestone in `must_not`)."""

    name: str
    steps: list[OracleStep] = Field(min_length=1)
    must_not: list[str] = []


class TaskSpec(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    instruction: str
    start: Start
    variables: dict[str, Variable] = {}
    milestones: list[Milestone] = Field(min_length=1)
    success: Literal["all_goals"] | list[str] = "all_goals"
    #: milestones whose firing ends the episode as failed (terminated, not successful): the page says it is over
    fail_on: list[str] = []
    max_steps: int = Field(default=20, ge=1, le=500)
    oracle: list[OracleStep] = Field(min_length=1)
    near_misses: list[NearMiss] = []
    tags: list[str] = []
    tier: int = Field(default=1, ge=1, le=3)
    #: the workflow category in reports (e.g. "forms"); by default the task file's folder inside its suite
    category: str | None = None
    judge: bool = False  # the reward router should send this task to the judge (rules do not cover it)
    #: which env runs the task: the sandboxed browser, or the X11 desktop (agentrl.envs.desktop)
    env: Literal["browser", "desktop"] = "browser"

    _path: Path = PrivateAttr(default=Path("<memory>"))
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)
    _site: SiteSpec | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def site(self) -> SiteSpec | None:
        """The site the task runs on (`start.site`, or the site of `start.url`); None: agentrl's sandbox."""
        return self._site

    def success_ids(self) -> list[str]:
        if self.success == "all_goals":
            return [m.id for m in self.milestones if m.category == "goal"]
        return list(self.success)

    def where(self, loc: Loc) -> str:
        return f"{self._path}:{line_of(self._lines, loc)}: {field_name(loc)}"

    # ------------------------------------------------------------------ variants
    def draw_variables(self, seed: int) -> dict[str, str]:
        rng = random.Random(zlib.crc32(f"{self.id}:{seed}".encode()))
        return {k: v.draw(rng) for k, v in self.variables.items()}

    def render(self, seed: int, facts: dict[str, dict[str, str]] | None = None) -> TaskVariant:
        """The concrete variant for `seed`: templates filled from the drawn variables and the sandbox facts
        (``{{key}}`` for the start app's facts, ``{{app.key}}`` for any app's)."""
        ns: dict[str, str] = {}
        for app, kv in (facts or {}).items():
            for k, v in kv.items():
                ns[f"{app}.{k}"] = str(v)
                if app == (self.start.app or self.start.site):
                    ns[k] = str(v)
        ns.update(self.draw_variables(seed))
        problems: list[str] = []

        def fill(value: Any, loc: Loc, regex: bool = False) -> Any:
            if isinstance(value, str):
                def sub(m: re.Match) -> str:
                    key = m.group(1)
                    if key not in ns:
                        problems.append(f"{self.where(loc)}: unknown template variable '{key}'{did_you_mean(key, tuple(ns))}")
                        return m.group(0)
                    return re.escape(ns[key]) if regex or loc[-1] == "name_re" else ns[key]
                return _TEMPLATE.sub(sub, value)
            if isinstance(value, dict):
                return {k: fill(v, (*loc, k), regex) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v, (*loc, i), regex) for i, v in enumerate(value)]
            return value

        instruction = fill(self.instruction, ("instruction",))
        files = {fill(k, ("start", "files", k)): fill(v, ("start", "files", k)) for k, v in self.start.files.items()}
        milestones = []
        for i, m in enumerate(self.milestones):
            info = DETECTORS.get(m.detector)
            params = {k: fill(v, ("milestones", i, "params", k), k in info.regex_params) for k, v in m.params.items()}
            try:
                params = info.params_model.model_validate(params).model_dump(exclude_unset=True)
            except ValidationError as e:
                for err in e.errors():
                    problems.append(f"{self.where(('milestones', i, 'params', *err['loc']))}: {err['msg']} (after templating)")
            milestones.append(m.model_copy(update={"params": params}))
        oracle = [OracleStep.model_validate(fill(s.model_dump(exclude_none=True), ("oracle", i))) for i, s in enumerate(self.oracle)]
        near = [
            n.model_copy(update={"steps": [OracleStep.model_validate(fill(s.model_dump(exclude_none=True), ("near_misses", j, "steps", i))) for i, s in enumerate(n.steps)]})
            for j, n in enumerate(self.near_misses)
        ]
        if problems:
            raise TaskFileError(problems)
        return TaskVariant(
            task=self, seed=seed, instruction=instruction, variables=ns, milestones=milestones, oracle=oracle,
            near_misses=near, files=files,
        )


class TaskVariant(BaseModel):
    """A task with its templates filled for one seed."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    task: TaskSpec
    seed: int
    instruction: str
    variables: dict[str, str]
    milestones: list[Milestone]
    oracle: list[OracleStep]
    near_misses: list[NearMiss]
    files: dict[str, str] = {}  # start files, rendered


# ---------------------------------------------------------------------- loading
def load_task(path: str | Path) -> TaskSpec:
    """Load and validate one task file; raises TaskFileError listing every problem with file:line: field."""
    path = Path(path)
    data, lines = load_with_lines(path)
    problems: list[str] = []
    if not isinstance(data, dict):
        raise TaskFileError([f"{path}:1: (top level): expected a mapping of task fields, got {type(data).__name__}"])
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = _clean_loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                parent_fields = _fields_at(loc[:-1])
                msg = f"unknown field '{loc[-1]}'{did_you_mean(str(loc[-1]), parent_fields)}" if parent_fields else msg
            problems.append(f"{path}:{line_of(lines, loc)}: {field_name(loc)}: {msg}")
        raise TaskFileError(problems) from None
    spec._path = path
    spec._lines = lines
    problems += _cross_check(spec)
    problems += [f"{spec.where(loc)}: {msg}" for loc, msg in _malformed_templates(data)]
    if problems:
        raise TaskFileError(problems)
    return spec


def _clean_loc(loc: tuple) -> Loc:
    # pydantic puts union/model tags into loc ("function-after[...]", "list[...]"); drop them
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and "-" not in p or p in ("int",)))


def _fields_at(loc: Loc) -> tuple[str, ...]:
    model: Any = TaskSpec
    for part in loc:
        if isinstance(part, int):
            continue
        f = getattr(model, "model_fields", {}).get(part)
        if f is None:
            return ()
        ann = f.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
            for sub in getattr(cand, "__args__", ()):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    model = sub
                    break
    return tuple(getattr(model, "model_fields", {}).keys())


def _cross_check(spec: TaskSpec) -> list[str]:
    problems: list[str] = []
    ids = [m.id for m in spec.milestones]
    seen: set[str] = set()
    for i, m in enumerate(spec.milestones):
        if m.id in seen:
            problems.append(f"{spec.where(('milestones', i, 'id'))}: duplicate milestone id '{m.id}'")
        seen.add(m.id)
        for j, a in enumerate(m.after):
            if a not in ids:
                problems.append(f"{spec.where(('milestones', i, 'after', j))}: unknown milestone '{a}'{did_you_mean(a, tuple(ids))}")
            elif a == m.id:
                problems.append(f"{spec.where(('milestones', i, 'after', j))}: a milestone cannot come after itself")
        info = DETECTORS.get(m.detector)
        missing = sorted(info.needs - ENV_GIVES[spec.env])
        if missing:
            where = [e for e, gives in ENV_GIVES.items() if info.needs <= gives]
            problems.append(
                f"{spec.where(('milestones', i, 'detector'))}: detector {m.detector} needs {', '.join(missing)}, "
                f"which the {spec.env} env does not give: it would never fire in this task"
                + (f" (it works in {' and '.join(where)} tasks)" if where else "")
            )
        allowed = tuple(info.params_model.model_fields)
        for k in m.params:
            if k not in allowed:
                problems.append(
                    f"{spec.where(('milestones', i, 'params', k))}: unknown parameter '{k}' for detector "
                    f"{m.detector}{did_you_mean(k, allowed)}"
                )
        if not any(k not in allowed for k in m.params):
            raw = {k: v for k, v in m.params.items()}
            try:
                info.params_model.model_validate(raw)
            except ValidationError as e:
                for err in e.errors():
                    loc = ("milestones", i, "params", *err["loc"])
                    kind = "missing required parameter" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
                    problems.append(f"{spec.where(loc)}: {kind} for detector {m.detector}")
    problems += _after_cycles(spec)
    problems += _unknown_app(spec) if spec.start.app is not None else _resolve_site(spec)
    if not any(m.category == "goal" for m in spec.milestones) and spec.success == "all_goals":
        problems.append(f"{spec.where(('milestones',))}: no milestone has category 'goal', so success cannot be verified")
    if isinstance(spec.success, list):
        for j, s in enumerate(spec.success):
            if s not in ids:
                problems.append(f"{spec.where(('success', j))}: unknown milestone '{s}'{did_you_mean(s, tuple(ids))}")
    for j, s in enumerate(spec.fail_on):
        if s not in ids:
            problems.append(f"{spec.where(('fail_on', j))}: unknown milestone '{s}'{did_you_mean(s, tuple(ids))}")
        elif s in spec.success_ids():
            problems.append(f"{spec.where(('fail_on', j))}: milestone '{s}' is needed for success; it cannot also fail the episode")
    for j, n in enumerate(spec.near_misses):
        for k, s in enumerate(n.must_not):
            if s not in ids:
                problems.append(f"{spec.where(('near_misses', j, 'must_not', k))}: unknown milestone '{s}'{did_you_mean(s, tuple(ids))}")
    return problems


def _after_cycles(spec: TaskSpec) -> list[str]:
    """Each `after` cycle once (a milestone waiting on itself through others can never fire), at the
    milestone of the cycle that comes first in the file."""
    ids = {m.id: i for i, m in enumerate(spec.milestones)}
    after = {m.id: [a for a in m.after if a in ids and a != m.id] for m in spec.milestones}
    problems: list[str] = []
    reported: set[frozenset[str]] = set()
    for start in after:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in after[node]:
                if nxt == start:
                    cycle = frozenset(trail)
                    if cycle not in reported:
                        reported.add(cycle)
                        first = min(trail, key=ids.__getitem__)
                        k = trail.index(first)
                        loop = " -> ".join([*trail[k:], *trail[:k], first])
                        problems.append(f"{spec.where(('milestones', ids[first], 'after'))}: `after` cycle {loop}: none of them can ever fire")
                elif nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
    return problems


def _resolve_site(spec: TaskSpec) -> list[str]:
    spec._site, problems = resolve_site(spec)
    return problems


def _unknown_app(spec: TaskSpec) -> list[str]:
    from agentrl.sandbox.apps import default_apps
    from agentrl.sandbox.desktop import APPS

    names = tuple(a.name for a in default_apps())
    if spec.env == "desktop":
        names += tuple(n for n in APPS.names() if n not in names)
    if spec.start.app in names:
        return []
    return [f"{spec.where(('start', 'app'))}: unknown app '{spec.start.app}'{did_you_mean(spec.start.app, names)}"
            " (a web app of your own is a site: `start: {site: NAME}` with the site in suite.yaml `sites:`, "
            "docs/own-sites.md)"]


def _malformed_templates(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Every `{{` in a templated field that does not open a well-formed `{{name}}`, and every `{{` in a
    field that is never templated: either would reach the agent, the browser or a detector verbatim."""
    out: list[tuple[Loc, str]] = []

    def check(value: Any, loc: Loc, templated: bool) -> None:
        if isinstance(value, str):
            for m in _TEMPLATE_OPEN.finditer(value):
                if not templated:
                    out.append((loc, f"templates are not filled in this field: {m.group(0)[:40]!r}"))
                elif not m.group(2):
                    out.append((loc, f"unclosed template {m.group(0)[:40]!r}: write {{{{name}}}}"))
                elif not _TEMPLATE.fullmatch(m.group(0)):
                    out.append((loc, f"malformed template {m.group(0)!r}: a template is {{{{name}}}} or "
                                     "{{app.name}} (letters, digits, '_', '.')"))
        elif isinstance(value, dict):
            for k, v in value.items():
                check(k, (*loc, k), templated and loc[-2:] == ("start", "files"))  # start file names are filled
                check(v, (*loc, k), templated)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                check(v, (*loc, i), templated)

    for key, value in data.items():
        inner = _TEMPLATED_ITEMS.get(key)
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
        if inner is None or items is None:
            check(value, (key,), key in _TEMPLATED_FIELDS)
        elif isinstance(value, dict):  # start: only its files are templated
            for k, v in items:
                check(v, (key, k), k == inner)
        else:
            for i, item in items:
                if isinstance(item, dict):
                    for k, v in item.items():
                        check(v, (key, i, k), k == inner)
                else:
                    check(item, (key, i), False)
    return out


def discover(paths: list[str | Path]) -> list[Path]:
    """Task files under the given files/folders (``*.yaml``, excluding ``suite.yaml``), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.yaml") if q.name != "suite.yaml")
        else:
            out.append(p)
    return out


def load_suite(path: str | Path) -> list[TaskSpec]:
    """Every task in a suite folder; raises TaskFileError with the problems of all files."""
    problems: list[str] = []
    specs: list[TaskSpec] = []
    for f in discover([path]):
        try:
            specs.append(load_task(f))
        except TaskFileError as e:
            problems += e.problems
    ids = [s.id for s in specs]
    for s in specs:
        if ids.count(s.id) > 1:
            problems.append(f"{s.path}:1: id: duplicate task id '{s.id}' in the suite")
    if problems:
        raise TaskFileError(problems)
    return specs


assert set(CATEGORIES) == set(DEFAULT_WEIGHTS)
