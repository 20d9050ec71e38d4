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

    Success is the final state: a completed milestone whose detector checks a state (`final_state`:
    server state, form fields) is checked again after every step, and counts toward success only while
    it still holds, so undoing a change revokes it (its reward, paid once, is not taken back).
    """

    milestones: list[Milestone]
    success_ids: list[str]
    progress: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # completed milestone ids, in firing order
    #: completed state milestones that no longer hold after the last step (their change was undone)
    revoked: set[str] = field(default_factory=set)

    @property
    def needs(self) -> frozenset[str]:
        out: set[str] = set()
        for m in self.milestones:
            out |= DETECTORS.get(m.detector).needs
        return frozenset(out)

    def js_expressions(self) -> list[str]:
        return [m.params["expr"] for m in self.milestones if m.detector == "js_true"]

    def json_urls(self) -> list[str]:
        """The site paths `http_json` milestones read (fetched once per step, however many read one)."""
        return list(dict.fromkeys(m.params["url"] for m in self.milestones if m.detector == "http_json"))

    def complete(self, mid: str) -> bool:
        return self.progress.get(mid, 0.0) >= 1.0

    @property
    def success(self) -> bool:
        return all(self.complete(m) and m not in self.revoked for m in self.success_ids)

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
        self._recheck(ctx, {e.id for e in fired})
        return fired

    def _recheck(self, ctx: StepContext, just_fired: set[str]) -> None:
        """Check again that every completed state milestone still holds after this step."""
        for m in self.milestones:
            info = DETECTORS.get(m.detector)
            if not info.final_state or not self.complete(m.id) or m.id in just_fired:
                self.revoked.discard(m.id)
                continue
            ev = info(ctx, m.params)
            if ev is not None and ev.progress >= 1.0:
                self.revoked.discard(m.id)
            else:
                self.revoked.add(m.id)

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
