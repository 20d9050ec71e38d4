"""What the reward layers score: one env step (`StepInput`) or one finished episode (`TrajectoryInput`).

The router, R_phi and the judge all read these; the envs and the learner build them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentrl.rewards.prefs import describe_action, step_text, trajectory_text

from agentrl.types import Event, MilestoneEvent, StepRecord

if TYPE_CHECKING:
    from agentrl.taskspec import TaskSpec, TaskVariant


@dataclass(frozen=True)
class StepInput:
    """One env step as the reward layers see it (`milestones`: the events fired by this step)."""

    task: TaskSpec
    action: str
    obs_after: str
    milestones: Sequence[MilestoneEvent] = ()
    variant: TaskVariant | None = None
    obs_before: str = ""
    done_milestones: Sequence[str] = ()  # ids completed before this step
    history: Sequence[str] = ()  # earlier actions (as sent)
    terminated: bool = False
    events: Sequence[Event] = ()  # the step's events: the ActionEvent names the target by role and name
    screenshot: str | None = None  # path of the screenshot after the step
    t: int = 0

    @classmethod
    def from_info(
        cls, task: TaskSpec, variant: TaskVariant | None, action: str, obs_before: str, obs_after: str,
        info: dict[str, Any], *, history: Sequence[str] = (), terminated: bool = False, screenshot: str | None = None,
    ) -> StepInput:
        """From what `BrowserEnv.step` returns: `info["milestones"]`, `info["events"]`, `info["completed"]`."""
        fired = list(info.get("milestones", ()))
        now = {m.id for m in fired if m.complete}
        return cls(task=task, variant=variant, action=action, obs_before=obs_before, obs_after=obs_after,
                   milestones=fired, done_milestones=[c for c in info.get("completed", ()) if c not in now],
                   history=tuple(history), terminated=terminated, events=tuple(info.get("events", ())),
                   screenshot=screenshot, t=int(info.get("step", 0)))

    @property
    def goal(self) -> str:
        return self.variant.instruction if self.variant is not None else self.task.instruction

    def text(self) -> str:
        """What R_phi reads (`prefs.step_text`)."""
        return step_text(self.goal, describe_action(self.action, self.events), self.obs_after)


@dataclass(frozen=True)
class TrajectoryInput:
    """A finished episode: the action history, every milestone event, the final observation."""

    task: TaskSpec
    actions: Sequence[str]
    final_observation: str
    milestones: Sequence[MilestoneEvent] = ()
    variant: TaskVariant | None = None
    rule_return: float = 0.0
    screenshot: str | None = None
    id: str = ""  # e.g. the episode id (group mode names trajectories by it)

    @classmethod
    def from_steps(cls, task: TaskSpec, variant: TaskVariant | None, steps: Sequence[StepRecord], id: str = "",
                   screenshot: str | None = None) -> TrajectoryInput:
        """From the `StepRecord`s of an episode (as in trajectory.jsonl)."""
        return cls(task=task, variant=variant, actions=[describe_action(s.action, s.events, s.error) for s in steps],
                   final_observation=steps[-1].observation if steps else "",
                   milestones=[m for s in steps for m in s.milestones], rule_return=sum(s.reward for s in steps),
                   screenshot=screenshot, id=id)

    @property
    def goal(self) -> str:
        return self.variant.instruction if self.variant is not None else self.task.instruction

    def text(self) -> str:
        return trajectory_text(self.goal, self.actions, self.final_observation)
