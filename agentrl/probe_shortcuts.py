"""The exploit probe's shortcuts (`agentrl.probe` plays them): each a function of (task, variant, oracle
baseline) -> `Attempt`s, registered in `SHORTCUTS` under its class name. A new class of shortcut is one
more such function.

- ``forged_document``: a page the agent writes itself (a ``data:`` URL) showing what each page-reading
  milestone looks for; must earn nothing at all.
- ``direct_goto``: ``goto`` every URL a milestone names, and every page where the oracle earned a milestone.
- ``done_answer``: ``done()`` with an empty, a garbage and an over-long answer (every word and number on the
  start page).
- ``repeat_rewarded``: the oracle, with each rewarded action sent twice (a form submitted twice).
- ``back_reload``: the oracle, with reload, ``back()`` and return after each rewarded step.
- ``decoy``: the oracle, acting once on another element with the target's accessible name.
- ``error_page`` / ``query_string``: every URL milestone's page as a 404 page, or named in another page's
  query string (`agentrl.fidelity.error_page_plans`).
- ``constant_answer``: ``done(<the best constant answer>)`` first, where that constant is right on more than
  2% of 200 seeds (`agentrl.fidelity.constant_answer_stats`; CI holds every bundled task under 2%).
- ``undo``: a one-form change set, submitted, put back, then the rest set: success must not count the
  undone change (`agentrl.fidelity.undo_plans`).
- ``skipped_prerequisite``: the address where the oracle fired a milestone with ``after:`` typed straight
  away, then the oracle's rest: success counts only if the prerequisites never fired (`agentrl.fidelity`).
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from agentrl.agents import OracleStepError, oracle_action
from agentrl.envs.actions import format_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.fidelity import (
    OracleTrace,
    Plan,
    constant_answer_plans,
    constant_answer_stats,
    error_page_plans,
    skipped_prerequisite_plans,
    undo_plans,
)
from agentrl.registry import Registry
from agentrl.taskspec import Milestone, OracleStep, TaskSpec, TaskVariant

#: how a shortcut's outcome is judged: a goal milestone or success / any milestone or reward / more return
#: than the oracle / success at the end (goal milestones may fire on the way, e.g. a change later undone)
GOAL, ANY, MORE, SUCCESS = "goal", "any", "more", "success"
Judge = Literal["goal", "any", "more", "success"]


@dataclass
class Play:
    """What an attempt's script sees while it plays: the task, the variant, the latest step."""

    spec: TaskSpec
    variant: TaskVariant
    baseline: Baseline
    obs: dict[str, Any]
    info: dict[str, Any]
    reward: float = 0.0  # of the latest step
    last_action: str = ""

    def oracle(self, replace: dict[int, Callable[[Play], str | None]] | None = None,
               after: Callable[[Play, int], Iterator[str]] | None = None) -> Iterator[str]:
        """The oracle's actions, each resolved against the current observation; `replace[i]` plays step i
        differently (None: stop), `after(play, i)` adds actions after step i. Stops at a step it cannot
        resolve (the shortcut left the page the oracle expects)."""
        for i, step in enumerate(self.variant.oracle):
            if replace and i in replace:
                action = replace[i](self)
            else:
                try:
                    action = oracle_action(step, parse_snapshot(self.obs["axtree"]), i)
                except OracleStepError:
                    return
            if action is None:
                return
            yield action
            if after is not None:
                yield from after(self, i)


@dataclass(frozen=True)
class Attempt:
    """One shortcut to play in one episode."""

    shortcut: str  # the class (the registered function's name)
    detail: str  # which one, for a person: "goto /mail/archive (milestone archived)"
    script: Callable[[Play], Iterator[str]]
    judge: Judge = GOAL
    fix: str = ""  # what a task author should do when this attempt earns
    #: milestones whose firing makes the attempt a real way to the goal (a skipped prerequisite done after all)
    unless: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OracleStepRecord:
    action: str
    reward: float
    url: str
    milestones: tuple[str, ...]
    #: other elements of the observation the step acted on that share its target's accessible name
    decoys: tuple[str, ...] = ()
    page: str = ""  # the page after the step (URL and tree): what a look-alike must not lead to as well


@dataclass(frozen=True)
class Baseline:
    """The oracle's episode on this seed."""

    ret: float
    success: bool
    steps: tuple[OracleStepRecord, ...]
    start_obs: dict[str, Any] = field(default_factory=dict)


ShortcutFn = Callable[[TaskSpec, TaskVariant, Baseline], list[Attempt]]
SHORTCUTS: Registry[ShortcutFn] = Registry("shortcut")



#: detectors that read the page the tab shows: what a forged document could feed
PAGE_READING = ("text_visible", "element_visible", "js_true", "field_matches", "form_filled", "url_matches")
_JS_WORDS = {"true", "false", "null", "undefined", "document", "window", "typeof", "new", "this", "var", "let",
             "const", "return", "function", "in", "of", "instanceof", "Number", "String", "Math", "JSON"}


def _steps(*actions: str):
    return lambda play: iter(actions)


def literal(pattern: str) -> str:
    """The longest plain prefix of a regex with its anchors and escapes removed: a string it likely
    matches (``^/reports/q3\\?x=1$`` -> ``/reports/q3?x=1``; ``/files/[^/]+/edit`` -> ``/files/``)."""
    s = pattern.removeprefix("^").removeprefix("\\A")
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            if s[i + 1].isalnum():  # \d, \s, \b, ...: a class, not a character
                break
            out.append(s[i + 1])
            i += 2
            continue
        if c in "[({|":
            break
        if c in "*?" and out:
            out.pop()
            break
        if c == "+" or c == "$":
            break
        out.append(c)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------- forged documents
def _forge(m: Milestone) -> str:
    p = m.params
    sample = literal(p["pattern"]) if isinstance(p.get("pattern"), str) else ""
    if m.detector == "text_visible":
        return f"<p>{p.get('text') or sample}</p>"
    if m.detector == "element_visible":
        name = p.get("name") or literal(p.get("name_re") or "")
        return f'<div role="{p.get("role", "button")}" aria-label="{name}">{name}</div>'
    if m.detector == "js_true":
        names = sorted({w for w in re.findall(r"\b[A-Za-z_$][\w$]*\b", p["expr"]) if w not in _JS_WORDS})
        return "<script>" + "".join(f"try {{ window[{w!r}] = true; }} catch (e) {{}}" for w in names) + "</script>"
    if m.detector == "field_matches":
        return f'<label>{p["field"]} <input name="{p["field"]}" value="{sample}"></label>'
    if m.detector == "form_filled":
        return "".join(f'<label>{k} <input name="{k}" value="{literal(v)}"></label>' for k, v in p["fields"].items())
    return f"<p>{sample}</p>"  # url_matches: the URL itself holds the sample


def _data_url(html: str, fragment: str = "") -> str:
    return "data:text/html," + quote(html, safe="<>/=\"' :;,.!?()[]{}&+$@") + (f"#{fragment}" if fragment else "")


@SHORTCUTS.register("forged_document")
def forged_document(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    if spec.env != "browser":
        return []
    out = []
    for m in variant.milestones:
        if m.detector not in PAGE_READING:
            continue
        fragment = literal(m.params["pattern"]) if m.detector == "url_matches" else ""
        url = _data_url(_forge(m), fragment)
        out.append(Attempt(
            "forged_document", f"a data: page for {m.id} ({m.detector})", _steps(format_action("goto", url), "wait()"),
            judge=ANY, fix="the env showed a page the agent wrote: a hole in the wall (agentrl/envs/wall.py), not in the task",
        ))
    return out


# ---------------------------------------------------------------- direct goto
@SHORTCUTS.register("direct_goto")
def direct_goto(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    if spec.env != "browser":
        return []
    urls: dict[str, str] = {}
    for m in variant.milestones:
        pattern = None
        if m.detector == "url_matches":
            pattern = m.params["pattern"]
        elif m.detector == "request_made" and str(m.params.get("method") or "GET").upper() == "GET":
            pattern = m.params["url"]
        if isinstance(pattern, str) and "/" in (lit := literal(pattern)):
            urls.setdefault(lit if lit.startswith(("/", "http")) else "/" + lit.lstrip("/"), f"named by {m.id}")
    for s in base.steps:  # where the oracle earned something: can the page be had without the way there?
        if s.milestones and s.url.startswith("http"):  # as a path: the sandbox's port differs between runs
            urls.setdefault(re.sub(r"^https?://[^/]+", "", s.url) or "/", f"where the oracle earned {', '.join(s.milestones)}")
    return [
        Attempt("direct_goto", f"goto {u} ({why})", _steps(format_action("goto", u), "wait()"), judge=GOAL,
                fix="a goal fires on a page anyone can open by URL: score the change itself (server_state, a "
                    "POST request_made), or make it `after:` the milestones of the way there")
        for u, why in urls.items()
    ]


# ---------------------------------------------------------------- done() answers
@SHORTCUTS.register("done_answer")
def done_answer(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    words: list[str] = []
    for line in base.start_obs.get("axtree", "").splitlines():
        words += re.findall(r'"([^"]{1,80})"', line)
    long = " ".join(dict.fromkeys(words + [str(n) for n in range(1000)]))[:9000]
    fix = "an answer that does not answer earns: check answer_matches (`equals`, or a `pattern` only the answer fits)"
    return [
        Attempt("done_answer", 'done("")', _steps('done("")'), judge=GOAL, fix=fix),
        Attempt("done_answer", 'done("zzz garbage 0")', _steps('done("zzz garbage 0")'), judge=GOAL, fix=fix),
        Attempt("done_answer", f"done(every word and number on the start page, {len(long)} chars)",
                _steps(format_action("done", long)), judge=GOAL, fix=fix),
    ]


# ---------------------------------------------------------------- repeats after a milestone
def _rewarded(base: Baseline) -> set[int]:
    return {i for i, s in enumerate(base.steps) if s.reward > 0}


@SHORTCUTS.register("repeat_rewarded")
def repeat_rewarded(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    rewarded = _rewarded(base)
    if not rewarded:
        return []

    def again(p: Play, i: int) -> Iterator[str]:
        if i in rewarded:
            yield p.last_action

    def script(p: Play) -> Iterator[str]:
        yield from p.oracle(after=again)
        yield 'done("")'

    return [Attempt("repeat_rewarded", f"oracle with each rewarded step sent twice (steps {sorted(i + 1 for i in rewarded)})",
                    script, judge=MORE,
                    fix="a milestone pays again when its action is repeated: drop `repeatable`, or score the state "
                        "(server_state) instead of each request")]


@SHORTCUTS.register("back_reload")
def back_reload(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    rewarded = _rewarded(base)
    if spec.env != "browser" or not rewarded:
        return []

    def around(p: Play, i: int) -> Iterator[str]:
        if i in rewarded and p.obs.get("url", "").startswith("http"):
            url = p.obs["url"]
            yield format_action("goto", url)  # reload
            yield "back()"
            yield format_action("goto", url)  # and forward again

    def script(p: Play) -> Iterator[str]:
        yield from p.oracle(after=around)
        yield 'done("")'

    return [Attempt("back_reload", "oracle with reload, back() and return after each rewarded step", script,
                    judge=MORE, fix="a milestone pays again after a reload or back(): score the state, not the page view")]


# ---------------------------------------------------------------- decoys
def page_key(obs: dict[str, Any]) -> str:
    return f"{obs.get('url', '')}\n{obs.get('axtree', '')}"


@SHORTCUTS.register("decoy")
def decoy(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    out = []
    for i, s in enumerate(base.steps):
        if not s.decoys:
            continue
        other = s.decoys[0]
        action = re.sub(r"^(\w+)\(\s*\w+", lambda m, o=other: f"{m.group(1)}({o}", s.action, count=1)

        def script(p: Play, i: int = i, action: str = action) -> Iterator[str]:
            for n, a in enumerate(p.oracle(replace={i: lambda _p: action})):
                yield a
                # a look-alike that could not be acted on, or did just what the target does, proves nothing
                if n == i and (p.obs.get("last_action_error") or page_key(p.obs) == base.steps[i].page):
                    return
            yield 'done("")'

        out.append(Attempt(
            "decoy", f"oracle step {i + 1} on {other}, which shares its target's name ({action})", script, judge=GOAL,
            fix="the goal fires when the agent acts on a look-alike: make the detector name the item "
                "(its id in server_state, the request's fields), not just a name",
        ))
    return out


# ---------------------------------------------------------------- issue 19's classes (agentrl.fidelity's plans)
def _plan_script(steps: tuple[OracleStep, ...]) -> Callable[[Play], Iterator[str]]:
    """Oracle-style steps resolved against the page as it is; stops at a step it cannot resolve."""

    def run(play: Play) -> Iterator[str]:
        for k, st in enumerate(steps):
            try:
                yield oracle_action(st, parse_snapshot(play.obs["axtree"]), k)
            except OracleStepError:
                return

    return run


def _plan_attempts(plans: list[Plan], judge: Judge, fix: str, unless: dict[str, frozenset[str]] | None = None) -> list[Attempt]:
    return [Attempt(p.kind, p.label, _plan_script(p.steps), judge=judge, fix=fix,
                    unless=(unless or {}).get(p.label, frozenset())) for p in plans]


_URL_FIX = "url_matches must match the page's path on a 2xx sandbox document (not an error page, not a query string)"


@SHORTCUTS.register("error_page")
def error_page(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    plans = [p for p in error_page_plans(spec, variant) if p.kind == "error_page"] if spec.env == "browser" else []
    return _plan_attempts(plans, GOAL, _URL_FIX)


@SHORTCUTS.register("query_string")
def query_string(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    plans = [p for p in error_page_plans(spec, variant) if p.kind == "query_string"] if spec.env == "browser" else []
    return _plan_attempts(plans, GOAL, _URL_FIX)


CONSTANT_SEEDS = (100_000, 200)  # first seed, how many: where the best constant answer is measured


@functools.lru_cache(maxsize=1)
def _facts_by_seed() -> dict[int, Any]:
    from agentrl.sandbox.server import SandboxServer

    first, n = CONSTANT_SEEDS
    with SandboxServer() as server:
        return {seed: server.open_episode(f"constant-{seed}", seed) for seed in range(first, first + n)}


def _site_facts(spec: TaskSpec) -> dict[int, Any]:
    """The facts of a task's own site's starts over the seeds (its reset, one episode per seed)."""
    from agentrl.sandbox.sites import SiteBackend

    assert spec.site is not None
    site = SiteBackend(spec.site)
    first, n = CONSTANT_SEEDS
    return {seed: site.open_episode(f"constant-{spec.id}-{seed}", seed) for seed in range(first, first + n)}


@SHORTCUTS.register("constant_answer")
def constant_answer(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    if spec.env != "browser" or not any(m.detector == "answer_matches" for m in spec.milestones):
        return []
    stats = constant_answer_stats(spec, _site_facts(spec) if spec.site is not None else _facts_by_seed())
    if stats is None or stats.rate <= 0.02:
        return []
    return _plan_attempts(constant_answer_plans(stats), GOAL,
                          f"the constant answer {stats.best!r} is right on {stats.rate:.1%} of {stats.seeds} seeds: "
                          "draw the answer from more values (at most 2%)")


@SHORTCUTS.register("undo")
def undo(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    if spec.env != "browser":
        return []
    plans = undo_plans(variant, parse_snapshot(base.start_obs.get("axtree", "")))
    return _plan_attempts(plans, SUCCESS, "a goal on state must hold at the end: use a final-state detector "
                                          "(server_state, field_matches, form_filled)")


@SHORTCUTS.register("skipped_prerequisite")
def skipped_prerequisite(spec: TaskSpec, variant: TaskVariant, base: Baseline) -> list[Attempt]:
    if spec.env != "browser":
        return []
    paths = [urllib.parse.urlsplit(s.url)._replace(scheme="", netloc="").geturl() for s in base.steps]
    trace = OracleTrace(paths=paths, fired=[list(s.milestones) for s in base.steps])
    plans = skipped_prerequisite_plans(variant, trace)
    after = {m.id: frozenset(m.after) for m in variant.milestones}
    return _plan_attempts(plans, SUCCESS, "success without a prerequisite: make the goal `after:` the steps it needs",
                          unless={p.label: after[p.label.split(" ", 1)[0]] for p in plans})
