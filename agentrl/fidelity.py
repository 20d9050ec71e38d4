"""Shortcuts that milestones must not pay for, as plain generators: what the exploit probe plays.

Each generator takes a task and one seed's rendered variant and returns labelled action plans (action
strings of the env's action language) that a policy hunting for shortcuts would try:

* `error_page_plans`: every URL milestone's page reached as an error page (``/nope/<path>``) or named in
  the query string of another page (``/<app>/?q=<path>``);
* `constant_answer_plans`: ``done(<the best constant answer>)`` as the very first action;
* `undo_plans`: the oracle up to each state milestone's step, then the start page's form put back and
  submitted as it was (the change undone), then the rest of the oracle;
* `skipped_prerequisite_plans`: for every milestone with `after`, the oracle without the steps that fire
  its prerequisites (typing its URL, answering straight away).

None of them may reach success; the tests play them through the real env. `constant_answer_stats`
measures, over many seeds, how often the best constant answer is right (docs/coverage.md).
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
    """The one path a rendered `url_matches` pattern names, when it names one (escapes undone, anchors
    dropped); None for a pattern with alternatives or repetitions."""
    p = pattern.removeprefix("^").removesuffix("$")
    out, i = "", 0
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            out += p[i + 1]
            i += 2
            continue
        if c in "()[]{}*+?|.^$":
            if c == "(" and p.endswith(")?") and p.find("(") == i:  # an optional suffix: the bare path
                return out
            return None if c != "." else None
        out += c
        i += 1
    return out or None


def error_page_plans(spec: TaskSpec, variant: TaskVariant) -> list[Plan]:
    """For each URL milestone that names one page: that page's path under a path that does not exist (the
    404 page shows it in the address bar) and the path as the query of the app's own pages."""
    plans: list[Plan] = []
    app = "/" + spec.start.app + "/"
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


def constant_answer_plans(spec: TaskSpec, best: str) -> list[Plan]:
    """done(<best constant>) as the first action (from `constant_answer_stats`)."""
    return [Plan("constant_answer", f"done({json.dumps(best)}) first", (_step(done=best),))]
