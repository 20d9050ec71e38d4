"""Shortcuts that milestones must not pay for, as plain generators: what the exploit probe plays.

Each generator takes a task's rendered variant (for one seed) and returns labelled plans, `Plan`: a kind, a
label and oracle-style steps (``{goto: /x}``, ``{done: "7"}``, the oracle's own steps) that a policy
hunting for shortcuts would try:

* `error_page_plans`: every URL milestone's page reached as an error page (``/nope/<path>``,
  ``<path>/nope``) or named in the query string of another page (``/<app>/?q=<path>``,
  ``<start path>?next=<path>``);
* `constant_answer_plans`: ``done(<the best constant answer>)`` as the very first action, the answer
  from `constant_answer_stats`;
* `undo_plans`: each field of a one-form oracle set and submitted alone, then put back to its value on
  the start page, then the other fields set and submitted;
* `skipped_prerequisite_plans`: for every milestone with `after`, the address of the page where the
  oracle fired it typed straight away, then the oracle's remaining steps.

`play` runs a plan in a browser env and says what it earned; `trace_oracle` records the oracle's pages
and milestones (for `skipped_prerequisite_plans`) and the start page (for `undo_plans`). None of the
plans may succeed (tests/test_fidelity.py). `constant_answer_stats` / `constant_answer_table` measure, over
many seeds, how often the best constant answer is right (docs/coverage.md).
"""

from __future__ import annotations

import collections
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.envs.axtree import AXTree
from agentrl.rewards.detectors import DETECTORS, StepContext
from agentrl.taskspec import Milestone, OracleStep, TaskSpec, TaskVariant

Facts = dict[str, dict[str, str]]


@dataclass(frozen=True)
class Plan:
    """A labelled shortcut: `steps` are oracle-style steps (``{goto: /x}``, ``{done: "7"}``, an oracle step)."""

    kind: str  # error_page | query_string | constant_answer | undo | skipped_prerequisite
    label: str
    steps: tuple[OracleStep, ...]


def _step(**kw: Any) -> OracleStep:
    return OracleStep.model_validate(kw)


# ------------------------------------------------------------------ URLs
def _literal_path(pattern: str) -> str | None:
    """The one path a rendered `url_matches` pattern names (escapes undone, anchors and an optional
    trailing group dropped), or None for a pattern with alternatives or repetitions."""
    p = pattern.removeprefix("^").removesuffix("$")
    if p.endswith(")?") and "(" in p:
        p = p[: p.index("(")]
    out, i = "", 0
    while i < len(p):
        if p[i] == "\\" and i + 1 < len(p):
            out, i = out + p[i + 1], i + 2
        elif p[i] in "()[]{}*+?|.^$":
            return None
        else:
            out, i = out + p[i], i + 1
    return out if out.startswith("/") else None


def error_page_plans(spec: TaskSpec, variant: TaskVariant) -> list[Plan]:
    """For each URL milestone that names one page: that page's path under a path that does not exist (the
    404 page shows it in the address bar) and the path as the query of the app's own pages."""
    plans: list[Plan] = []
    app = f"/{spec.start.app}/" if spec.start.app else "/"
    for m in variant.milestones:
        if m.detector != "url_matches":
            continue
        path = _literal_path(m.params["pattern"])
        if path is None:
            continue
        q = urllib.parse.quote(path, safe="/")
        plans.append(Plan("error_page", f"{m.id}: 404 page at /nope{path}", (_step(goto=f"/nope{path}"),)))
        plans.append(Plan("error_page", f"{m.id}: 404 page at {path}/nope", (_step(goto=f"{path.split('?')[0]}/nope"),)))
        plans.append(Plan("query_string", f"{m.id}: {app}?q={path}", (_step(goto=f"{app}?q={q}"),)))
        plans.append(Plan("query_string", f"{m.id}: {spec.start.path}?next={path}", (_step(goto=f"{spec.start.path.split('?')[0]}?next={q}"),)))
    return plans


# ------------------------------------------------------------------ answers
def _answer_milestones(milestones: list[Milestone]) -> list[Milestone]:
    return [m for m in milestones if m.detector == "answer_matches"]


def oracle_answer(variant: TaskVariant) -> str | None:
    """The answer the oracle gives (its `done` step), rendered."""
    return next((s.done for s in variant.oracle if s.done is not None), None)


def answer_accepted(milestone: Milestone, answer: str) -> bool:
    """Whether the (rendered) answer milestone accepts `answer` as done()'s argument."""
    ctx = StepContext(step=1, events=[], history=[], url="", title="", ax=AXTree("", ()), episode_dir=Path("."), answer=answer)
    return DETECTORS.get(milestone.detector)(ctx, milestone.params) is not None


@dataclass(frozen=True)
class ConstantAnswer:
    """How often the best constant answer is right for one answer task over `seeds` seeds."""

    task_id: str
    best: str
    hits: int
    seeds: int
    distinct: int  # distinct correct answers over the seeds

    @property
    def rate(self) -> float:
        return self.hits / self.seeds


def constant_answer_stats(
    spec: TaskSpec, facts_by_seed: dict[int, Facts], *, candidates: int = 25
) -> ConstantAnswer | None:
    """The best constant answer of an answer task: of the `candidates` answers the oracle gives most often
    over the seeds, the one the most seeds' answer milestones all accept. None for a task without an
    answer milestone."""
    if not _answer_milestones(spec.milestones):
        return None
    variants = [spec.render(seed, facts) for seed, facts in facts_by_seed.items()]
    answers = [a for v in variants if (a := oracle_answer(v)) is not None]
    counts = collections.Counter(answers)
    # the best constant is among the most common right answers (a constant right on no seed scores 0)
    cands = [c for c, _ in counts.most_common(candidates)]
    hits_of = dict.fromkeys(cands, 0)
    for v in variants:  # variant-major: each variant's patterns are compiled once for all candidates
        ms = _answer_milestones(v.milestones)
        for c in cands:
            hits_of[c] += all(answer_accepted(m, c) for m in ms)
    best = max(cands, key=lambda c: (hits_of[c], counts[c]), default="")
    hits = hits_of.get(best, 0)
    return ConstantAnswer(spec.id, best, hits, len(variants), len(counts))


def constant_answer_table(specs: list[TaskSpec], first_seed: int, n: int = 1000) -> list[ConstantAnswer]:
    """`constant_answer_stats` for every answer task of `specs` over seeds ``first_seed .. first_seed+n-1``
    (facts from an in-process sandbox)."""
    answer_tasks = [s for s in specs if _answer_milestones(s.milestones)]
    if not answer_tasks:
        return []
    from agentrl.sandbox.server import SandboxServer

    with SandboxServer() as server:
        facts = {seed: server.open_episode(f"constant-{seed}", seed) for seed in range(first_seed, first_seed + n)}
    return [r for s in answer_tasks if (r := constant_answer_stats(s, facts)) is not None]


def constant_answer_plans(stats: ConstantAnswer) -> list[Plan]:
    """done(<the task's best constant answer>) as the first action (`stats` from `constant_answer_stats`)."""
    return [Plan("constant_answer", f"done({json.dumps(stats.best)}) first", (_step(done=stats.best),))]


# ------------------------------------------------------------------ state
_RESTORABLE = ("fill", "select")


def _restore(step: OracleStep, start: AXTree) -> OracleStep | None:
    """The step that puts the field `step` sets back to its value in `start` (the episode's first page)."""
    target = getattr(step, step.kind)
    at = next((i for i, e in enumerate(start.elements) if e.ref and e.matches(target.role, target.name)), None)
    if at is None:
        return None
    el = start.elements[at]
    if step.kind == "fill":
        return _step(fill={"role": target.role, "name": target.name, "text": el.value})
    chosen = el.value
    for o in start.elements[at + 1 :]:  # its options: the nodes under it
        if o.depth <= el.depth:
            break
        if o.role == "option" and "selected" in o.attrs:
            chosen = chosen or o.name
    return _step(select={"role": target.role, "name": target.name, "option": chosen}) if chosen else None


def undo_plans(variant: TaskVariant, start: AXTree) -> list[Plan]:
    """For an oracle that sets fields on one form and submits it (``fill``/``select`` steps, then one
    ``click``) and has more than one goal: each field set and submitted alone, then put back to its value
    on the start page, and the other fields set and submitted. The undone change must not count."""
    *sets, submit = variant.oracle
    goals = [m for m in variant.milestones if m.category == "goal"]
    if len(goals) < 2 or len(sets) < 2 or submit.kind != "click" or any(s.kind not in _RESTORABLE for s in sets):
        return []
    plans = []
    for i, s in enumerate(sets):
        back = _restore(s, start)
        if back is None:
            continue
        target = getattr(s, s.kind)
        rest = [x for j, x in enumerate(sets) if j != i]
        plans.append(Plan("undo", f"set {target.name!r}, submit, put it back, set the rest, submit",
                          (s, submit, back, *rest, submit)))
    return plans


# ------------------------------------------------------------------ order
@dataclass(frozen=True)
class OracleTrace:
    """What the oracle did on one seed: per step, the page's path (with query) after it and the ids fired."""

    paths: list[str]
    fired: list[list[str]]


def skipped_prerequisite_plans(variant: TaskVariant, trace: OracleTrace) -> list[Plan]:
    """For every milestone with `after`, the oracle's way to it cut short by typing an address: the page
    the oracle was on when it fired, then the oracle's remaining steps; and the page before, then the
    oracle's step that fired it and the rest. A prerequisite the jump does not fire was skipped: the
    milestone must not fire, nor the task succeed."""
    step_of = {mid: i for i, ids in enumerate(trace.fired) for mid in ids}
    plans: list[Plan] = []
    for m in variant.milestones:
        i = step_of.get(m.id)
        if not m.after or i is None:
            continue
        jumps = [(trace.paths[i], i + 1)] + ([(trace.paths[i - 1], i)] if i > 0 else [])
        for path, resume in jumps:
            plans.append(Plan("skipped_prerequisite", f"{m.id} (after {', '.join(m.after)}): goto {path}",
                              (_step(goto=path), *variant.oracle[resume:])))
    return plans


# ------------------------------------------------------------------ playing
@dataclass
class Outcome:
    success: bool
    fired: list[str]  # milestone ids, in firing order
    errors: list[str]  # action errors and steps that named nothing on the page
    revoked: list[str]  # state milestones that fired and no longer held at the end


def play(env: Any, seed: int, steps: tuple[OracleStep, ...] | list[OracleStep]) -> Outcome:
    """Play oracle-style `steps` in a browser env (a step naming an element that is not there is skipped
    and recorded), then ``done()``; what the episode earned."""
    from agentrl.agents import OracleStepError, oracle_action
    from agentrl.envs.axtree import parse_snapshot

    obs, _ = env.reset(seed=seed)
    fired: list[str] = []
    errors: list[str] = []
    revoked: list[str] = []
    success = ended = False
    for k, st in enumerate([*steps, _step(done="")]):
        if ended:
            break
        if k == len(steps) and any(x.kind == "done" for x in steps):
            break
        try:
            action = oracle_action(st, parse_snapshot(obs["axtree"]), k)
        except OracleStepError as e:
            errors.append(str(e))
            continue
        obs, _, terminated, truncated, info = env.step(action)
        fired += [m.id for m in info["milestones"]]
        success, revoked = info["success"], info["revoked"]
        ended = terminated or truncated
        if info["action_error"]:
            errors.append(f"step {k + 1}: {info['action_error']}")
    return Outcome(success, fired, errors, revoked)


def trace_oracle(env: Any, seed: int) -> tuple[OracleTrace, AXTree]:
    """Play the oracle once: its trace, and the start page's accessibility tree (for `undo_plans`)."""
    from agentrl.agents import oracle_action
    from agentrl.envs.axtree import parse_snapshot

    obs, _ = env.reset(seed=seed)
    start = parse_snapshot(obs["axtree"])
    paths: list[str] = []
    fired: list[list[str]] = []
    for k, st in enumerate(env.variant.oracle):
        obs, _, terminated, truncated, info = env.step(oracle_action(st, parse_snapshot(obs["axtree"]), k))
        parts = urllib.parse.urlsplit(obs["url"])
        paths.append(parts.path + (f"?{parts.query}" if parts.query else ""))
        fired.append([m.id for m in info["milestones"]])
        if terminated or truncated:
            break
    return OracleTrace(paths, fired), start
