"""The episode core both envs share: an env acts and observes; this scores and records.

After an env has carried out an action and observed the result, `EpisodeCore.score` runs the rest of the
step the same way for every env: the task's detectors (`MilestoneTracker`), termination, the reward router
(rules first), the return, the `StepRecord` in the trajectory file, the episode's end and summary, and the
step's `info`. `dead` ends an episode whose env broke (truncated, with the reason, reward 0: never a reward
to train on). `EpisodeState` is what every episode holds; each env's episode adds what it observes with.

`EpisodeEnv` is the protocol the evaluator, the coverage run, the collector and the replayer drive.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentrl.envs.actions import Action
from agentrl.rewards.detectors import StepContext
from agentrl.rewards.milestones import MilestoneTracker
from agentrl.rewards.router import RewardRouter, StepInput

from agentrl.taskspec import TaskSpec, TaskVariant
from agentrl.trajectory import TrajectoryWriter
from agentrl.types import ActionEvent, EpisodeSummary, Event, MilestoneEvent, StepRecord

MAX_STEPS_REASON = "max_steps reached"


@runtime_checkable
class EpisodeEnv(Protocol):
    """What drives an episode, whatever the env: the Gymnasium calls, the task and the episode's record."""

    task: TaskSpec

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]: ...

    def step(self, action: str) -> tuple[dict, float, bool, bool, dict]: ...

    def summary(self) -> EpisodeSummary: ...

    def close(self) -> None: ...

    @property
    def variant(self) -> TaskVariant | None: ...

    @property
    def episode_id(self) -> str | None: ...

    @property
    def episode_dir(self) -> Path | None: ...


@dataclass(kw_only=True)
class EpisodeState:
    """What every episode holds, whatever the env."""

    id: str = ""
    dir: Path | None = None
    variant: TaskVariant | None = None
    tracker: MilestoneTracker | None = None
    writer: TrajectoryWriter | None = None
    events: list[Event] = field(default_factory=list)
    t: int = 0
    ret: float = 0.0
    answer: str | None = None
    ended: bool = False
    last_text: str = ""  # the observation the agent acted on (the reward router's o_t)
    history: list[str] = field(default_factory=list)  # actions sent so far


class EpisodeViews:
    """The current episode's variant, id and directory, for agents and callers (an env holds it in `_ep`)."""

    _ep: EpisodeState | None

    @property
    def variant(self) -> TaskVariant | None:
        return self._ep.variant if self._ep else None

    @property
    def episode_id(self) -> str | None:
        return self._ep.id if self._ep else None

    @property
    def episode_dir(self) -> Path | None:
        return self._ep.dir if self._ep else None


class EpisodeCore:
    """Milestones, reward routing, step records, the trajectory file, the summary and the info of one env's
    episodes (one core per env)."""

    def __init__(
        self, task: TaskSpec, router: Any, max_steps: int, *, record: bool, max_record_chars: int | None = None
    ) -> None:
        self.task = task
        self.router = RewardRouter.of(router)
        self.max_steps = max_steps
        self.record = record
        self.max_record_chars = max_record_chars  # a step's line in the trajectory file; None: no budget

    def begin(self, ep: EpisodeState, seed: int, obs_text: str, **meta: Any) -> dict[str, Any]:
        """Start scoring and recording `ep` (its id, dir and variant set, its first observation made);
        `meta` goes into the trajectory's header. Returns the reset's info (the start's events: reported,
        not scored)."""
        assert ep.variant is not None and ep.dir is not None
        ep.last_text = obs_text
        ep.tracker = MilestoneTracker(ep.variant.milestones, self.task.success_ids())
        if self.record:
            ep.writer = TrajectoryWriter(ep.dir / "trajectory.jsonl")
            ep.writer.reset(task_id=self.task.id, seed=seed, episode_id=ep.id, instruction=ep.variant.instruction,
                            variables=ep.variant.variables, max_steps=self.max_steps, **meta)
        return self.info(ep, [], list(ep.events), error=None)

    def score(
        self, ep: EpisodeState, action_text: str, action: Any, error: str | None, obs: dict[str, Any],
        step_events: list[Event], ctx: StepContext, *, t0: float, timings: dict[str, float],
        withheld: str | None = None,
    ) -> tuple[float, bool, bool, dict[str, Any]]:
        """Detectors -> milestones -> termination -> reward router -> record -> info, for the step the env
        just took and observed (`obs`, with the screenshot's path under ``_screenshot_path`` when one was
        saved; removed here). `withheld`: why the page was kept from the detectors and the judge (the
        browser's wall), or None. Returns (reward, terminated, truncated, info)."""
        assert ep.tracker is not None and ep.variant is not None
        t1 = time.perf_counter()
        done_before = list(ep.tracker.order)
        fired = ep.tracker.update(ctx)
        timings["detect_ms"] = _ms(t1)
        failed = any(m.id in self.task.fail_on for m in fired)  # the task's `fail_on`: the page says it is over
        terminated = ep.tracker.success or failed or (isinstance(action, Action) and action.name == "done")
        truncated = not terminated and ep.t >= self.max_steps
        shot = obs.pop("_screenshot_path", None)
        t2 = time.perf_counter()
        obs_after = obs["text"] if withheld is None else f"[page withheld from the reward: {withheld}]"
        reward, audit = self.router.step(StepInput(
            task=self.task, variant=ep.variant, action=action_text, obs_before=ep.last_text, obs_after=obs_after,
            milestones=fired, done_milestones=done_before, history=tuple(ep.history), terminated=terminated,
            events=step_events, screenshot=shot if withheld is None else None, t=ep.t,
        ))
        if withheld is not None:
            note = f"page state withheld from the detectors: {withheld}"
            audit = audit.model_copy(update={"note": f"{audit.note}; {note}" if audit.note else note})
        timings["reward_ms"] = _ms(t2)
        ep.ret += reward
        ep.last_text = obs["text"]
        ep.history.append(action_text)
        record = StepRecord(
            t=ep.t, action=action_text, parsed=str(action) if isinstance(action, Action) else None, error=error,
            observation=obs["text"], url=obs.get("url", ""), reward=reward, milestones=fired, events=step_events,
            terminated=terminated, truncated=truncated, truncation_reason=MAX_STEPS_REASON if truncated else None,
            screenshot=shot, latency_ms=_ms(t0), timings=timings, audit=audit,
        )
        if ep.writer:
            ep.writer.step(fit_record(record, self.max_record_chars))
        if terminated or truncated:
            self.finish(ep, record.truncation_reason, terminated=terminated)
        info = self.info(ep, fired, step_events, error=error)
        info["truncation_reason"] = record.truncation_reason
        # the audit without its timings (infos are reproducible); the trajectory keeps the whole record
        info["audit"] = audit.untimed()
        return reward, terminated, truncated, info

    def dead(self, ep: EpisodeState, action_text: str, action: Any, reason: str, obs: dict[str, Any], *,
             t0: float, events: list[Event] | None = None) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """The env broke during the step: the episode ends truncated with `reason`, reward 0."""
        obs.pop("_screenshot_path", None)
        obs["last_action_error"] = reason
        record = StepRecord(
            t=ep.t, action=action_text, parsed=str(action) if isinstance(action, Action) else None, error=reason,
            observation=obs["text"], url="", reward=0.0, events=list(events or []), truncated=True,
            truncation_reason=reason, latency_ms=_ms(t0),
        )
        if ep.writer:
            ep.writer.step(fit_record(record, self.max_record_chars))
        self.finish(ep, reason)
        info = self.info(ep, [], [], error=reason)
        info["truncation_reason"] = reason
        return obs, 0.0, False, True, info

    def finish(self, ep: EpisodeState, truncation_reason: str | None, *, terminated: bool = False) -> None:
        """The episode ends (once): its summary closes the trajectory file."""
        if ep.ended or ep.tracker is None or ep.variant is None:
            return
        ep.ended = True
        if ep.writer:
            ep.writer.end(self.summary(ep, terminated=terminated, truncation_reason=truncation_reason))
            ep.writer.close()

    def summary(self, ep: EpisodeState, *, terminated: bool = False,
                truncation_reason: str | None = None) -> EpisodeSummary:
        assert ep.tracker is not None and ep.variant is not None
        return EpisodeSummary(
            task_id=self.task.id, seed=ep.variant.seed, instruction=ep.variant.instruction,
            success=ep.tracker.success, return_=ep.ret, steps=ep.t, milestones=list(ep.tracker.order),
            terminated=terminated, truncated=truncation_reason is not None, truncation_reason=truncation_reason,
            answer=ep.answer,
        )

    @staticmethod
    def info(ep: EpisodeState, fired: list[MilestoneEvent], events: list[Event], *, error: str | None) -> dict[str, Any]:
        # Only what the same seed and actions reproduce (Gymnasium's checker compares infos); the episode's
        # id, directory and timings are on the env (`episode_id`, `episode_dir`) and in the trajectory file.
        assert ep.tracker is not None and ep.variant is not None
        return {
            "milestones": fired,
            "events": events,
            "success": ep.tracker.success,
            "completed": list(ep.tracker.order),
            "revoked": sorted(ep.tracker.revoked),  # completed state milestones that no longer hold
            "return": ep.ret,
            "action_error": error,
            "instruction": ep.variant.instruction,
            "variables": dict(ep.variant.variables),
            "step": ep.t,
        }


#: the text fields of a step record, cut in this order when its line is over budget (the action last: a
#: replay sends the recorded action again)
_CUT_FIELDS = ("observation", "error", "url", "truncation_reason", "action")


def fit_record(record: StepRecord, budget: int | None) -> StepRecord:
    """`record` within `budget` characters of JSON: its events first (the leading ones kept, up to a
    quarter of the budget), then its text fields, each cut with a marker; `cut` says what was cut."""
    if budget is None:
        return record
    if _line_chars(record) <= budget:
        return record
    cut: dict[str, int] = {}
    update: dict[str, Any] = {}
    if record.events:
        kept, size = [], 0
        for e in record.events:
            size += len(json.dumps(e.model_dump(mode="json"))) + 2
            if size > budget // 4:
                break
            kept.append(e)
        if len(kept) < len(record.events):
            cut["events"] = len(record.events)
            update["events"] = kept
    for name in _CUT_FIELDS:
        record = record.model_copy(update={**update, "cut": cut})
        over = _line_chars(record) - budget
        value = getattr(record, name)
        if over <= 0:
            return record
        if not value:
            continue
        keep = max(0, len(value) - over - 100)
        while True:  # JSON escapes make some characters longer than one: cut until it fits
            cut[name] = len(value)
            update[name] = value[:keep] + f"\n[cut at {keep} of {len(value)} characters: max_record_chars]"
            trial = record.model_copy(update={**update, "cut": cut})
            if _line_chars(trial) <= budget or keep == 0:
                break
            keep //= 2
    return record.model_copy(update={**update, "cut": cut})


def _line_chars(record: StepRecord) -> int:
    """The length of `record`'s line in the trajectory file (`TrajectoryWriter.step`'s serialisation)."""
    return len(json.dumps({"type": "step", **record.model_dump(mode="json")}))


def last_action_text(last_action: Any, error: str | None) -> str:
    """The observation's "last action" line: none at the start, the action and ok, or its error."""
    if last_action is None:
        return "none (start of episode)"
    if error:
        return f"{last_action if isinstance(last_action, Action) else 'unparseable'} -> ERROR: {error}"
    return f"{last_action} -> ok"


def answer_of(ep: EpisodeState, step_events: list[Event]) -> str | None:
    """The agent's answer, for the detectors, on the step it called done()."""
    return ep.answer if any(isinstance(e, ActionEvent) and e.name == "done" for e in step_events) else None


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
