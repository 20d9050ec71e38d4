"""Turns detector results into milestone events and the rule reward, with ordering and partial credit."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentrl.rewards.detectors import DETECTORS, StepContext

from agentrl.taskspec import Milestone
from agentrl.types import Evidence, MilestoneEvent


@dataclass
class MilestoneTracker:
    """Per-episode state of a task's milestones.

    A milestone fires once per episode (unless `repeatable`), only after every milestone in its `after`
    list has completed. A detector may report partial progress (e.g. 2 of 4 fields filled); the milestone
    then pays weight x (new best progress - previous best) and completes at progress 1.
    """

    milestones: list[Milestone]
    success_ids: list[str]
    progress: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # completed milestone ids, in firing order

    @property
    def needs(self) -> frozenset[str]:
        out: set[str] = set()
        for m in self.milestones:
            out |= DETECTORS.get(m.detector).needs
        return frozenset(out)

    def js_expressions(self) -> list[str]:
        return [m.params["expr"] for m in self.milestones if m.detector == "js_true"]

    def complete(self, mid: str) -> bool:
        return self.progress.get(mid, 0.0) >= 1.0

    @property
    def success(self) -> bool:
        return all(self.complete(m) for m in self.success_ids)

    def update(self, ctx: StepContext) -> list[MilestoneEvent]:
        fired: list[MilestoneEvent] = []
        # Loop until nothing new fires, so `after` chains completed within one step resolve in order.
        changed = True
        while changed:
            changed = False
            for m in self.milestones:
                if self.complete(m.id) and not m.repeatable:
                    continue
                if any(fe.id == m.id for fe in fired):
                    continue
                if not all(self.complete(a) for a in m.after):
                    continue
                ev = DETECTORS.get(m.detector)(ctx, m.params)
                if ev is None:
                    continue
                event = self._fire(m, ev, ctx.step)
                if event is not None:
                    fired.append(event)
                    changed = True
        return fired

    def _fire(self, m: Milestone, ev: Evidence, step: int) -> MilestoneEvent | None:
        prev = self.progress.get(m.id, 0.0)
        new = max(0.0, min(1.0, ev.progress))
        w = m.effective_weight()
        if m.repeatable and new >= 1.0:
            reward = w
        elif new > prev:
            reward = w * (new - prev)
        else:
            return None
        self.progress[m.id] = max(prev, new)
        if new >= 1.0 and (m.id not in self.order or m.repeatable):
            self.order.append(m.id)
        return MilestoneEvent(
            id=m.id, category=m.category, weight=w, progress=new, reward=reward, step=step, evidence=ev
        )
