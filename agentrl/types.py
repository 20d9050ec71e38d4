"""Records that cross module boundaries. All frozen pydantic models that round-trip to JSON.

`Event` is what the sandbox observed (the env reports it and never judges it); a `MilestoneEvent` is a
milestone of the task that fired, with the evidence that made it fire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Category = Literal["nav", "ui", "form", "file", "goal"]
CATEGORIES: tuple[str, ...] = ("nav", "ui", "form", "file", "goal")
# Suite default weights per category (used when a milestone gives no weight).
DEFAULT_WEIGHTS: dict[str, float] = {"nav": 0.1, "ui": 0.2, "form": 0.2, "file": 0.3, "goal": 0.2}


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- events (observed, not judged)
class NavigationEvent(Record):
    kind: Literal["navigation"] = "navigation"
    url: str


class RequestEvent(Record):
    """A request that reached the sandbox server and got a response."""

    kind: Literal["request"] = "request"
    method: str
    url: str
    status: int
    fields: dict[str, str | list[str]] = {}  # parsed form or JSON body (flat), empty for GET


class BlockedRequestEvent(Record):
    """A request to an origin outside the sandbox, aborted before it left the browser (a WebSocket's too), or
    one the env refused for another reason it gives (a download over the episode's budget, a popup)."""

    kind: Literal["blocked_request"] = "blocked_request"
    method: str
    url: str
    reason: str | None = None  # None: outside the sandbox


class DownloadEvent(Record):
    kind: Literal["download"] = "download"
    url: str
    suggested_filename: str
    path: str  # relative to the episode directory


class DialogEvent(Record):
    kind: Literal["dialog"] = "dialog"
    type: str  # alert | confirm | prompt | beforeunload
    message: str
    accepted: bool


class ActionEvent(Record):
    """The agent acted on an element (or the page). role/name come from the observation it acted on."""

    kind: Literal["action"] = "action"
    name: str  # click | fill | select | press | scroll | goto | back | wait | upload | hover | drag | done
    target: str | None = None  # element id the action named
    role: str | None = None
    label: str | None = None  # accessible name of the target
    value: str | None = None  # text filled, option selected, key pressed, url, answer
    ok: bool = True


class FileEvent(Record):
    kind: Literal["file"] = "file"
    change: Literal["created", "modified", "deleted"]
    path: str  # relative to the episode directory


class WindowEvent(Record):
    """A top-level X window of the desktop env opened, closed, got the focus or changed its title."""

    kind: Literal["window"] = "window"
    change: Literal["opened", "closed", "focused", "renamed"]
    title: str
    wm_class: str = ""
    window: int = 0  # X window id
    pid: int | None = None


class ProcessEvent(Record):
    """A process of the desktop env's episode started or exited (found by its environment tag)."""

    kind: Literal["process"] = "process"
    change: Literal["started", "exited"]
    pid: int
    name: str  # the executable's name (python apps: the script's name without .py)
    cmdline: str
    returncode: int | None = None  # known for the apps the env launched itself; negative: killed by a signal


Event = Annotated[
    NavigationEvent | RequestEvent | BlockedRequestEvent | DownloadEvent | DialogEvent | ActionEvent | FileEvent
    | WindowEvent | ProcessEvent,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- milestones
class Evidence(Record):
    """Why a detector fired. `progress` < 1 is partial credit (e.g. 2 of 4 form fields filled)."""

    detail: str
    progress: float = 1.0
    data: dict[str, str | float | int | bool | None] = {}


class MilestoneEvent(Record):
    id: str
    category: Category
    weight: float
    progress: float  # best progress so far, in (0, 1]
    reward: float  # weight * (progress - previous best progress)
    step: int
    evidence: Evidence

    @property
    def complete(self) -> bool:
        return self.progress >= 1.0


# ---------------------------------------------------------------- reward layers (agentrl.rewards.router)
class Score(Record):
    """What one reward source says about a step or a trajectory.

    `value` is in reward units (the rules layer: milestone weight earned) or in [0, 1] (R_phi, the judge);
    `confidence` in [0, 1]. A source that could not score sets `error` and confidence 0: the router then
    falls through to the next layer instead of reading the value.
    """

    value: float
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = ""
    error: str | None = None


class LayerResult(Record):
    """One layer's part in a routing decision (absent from the audit if the layer did not run)."""

    layer: str  # rules | reward_model | judge
    value: float | None  # None when the layer failed
    confidence: float
    rationale: str = ""
    latency_ms: float
    error: str | None = None


class RewardAudit(Record):
    """How the router reached one reward: every layer that ran, the weights, and which layer decided."""

    mode: str  # cascade | blend
    level: Literal["step", "trajectory"] = "step"
    layers: list[LayerResult]
    weights: dict[str, float] = {}  # blend weights (cascade: empty)
    value: float
    decided_by: str  # a layer name, or "blend"
    latency_ms: float
    note: str = ""

    def untimed(self) -> dict[str, Any]:
        """The audit as JSON without its latencies: what the same seed and actions reproduce (env infos)."""
        return self.model_dump(mode="json", exclude={"latency_ms": True, "layers": {"__all__": {"latency_ms"}}})


# ---------------------------------------------------------------- trajectories
class StepRecord(Record):
    t: int
    action: str  # the raw action text the agent sent
    parsed: str | None  # canonical form of the parsed action, None when unparseable
    error: str | None  # why the action could not be parsed or carried out
    observation: str  # the observation text after the step
    url: str
    reward: float
    milestones: list[MilestoneEvent] = []
    events: list[Event] = []
    terminated: bool = False
    truncated: bool = False
    truncation_reason: str | None = None
    screenshot: str | None = None  # path relative to the run dir
    latency_ms: float = 0.0
    timings: dict[str, float] = {}  # act_ms, settle_ms, observe_ms, detect_ms
    audit: RewardAudit | None = None  # how the reward router reached `reward` (None: rules only, unrouted)
    #: what was cut to keep the record within the env's budget (`max_record_chars`): field -> its length
    #: before (characters; for ``events``, how many there were)
    cut: dict[str, int] = {}


# ---------------------------------------------------------------- episodes: one record family
class EpisodeOutcome(Record):
    """How one episode of one task variant ended: what every record of an episode says.

    The family: `EpisodeSummary` (the env's, last line of ``trajectory.jsonl``), `EpisodeResult` (the
    evaluator's, a line of ``results.jsonl``), `EpisodeTrace` (an episode's steps read back, the
    preference store's `Episode`) and a learner trajectory, converted with `outcome_of`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    task_id: str
    seed: int
    success: bool
    return_: float = Field(alias="return")
    steps: int
    milestones: list[str] | None = None  # ids of completed milestones in firing order; None: not recorded
    terminated: bool = False
    truncated: bool = False
    truncation_reason: str | None = None


class EpisodeSummary(EpisodeOutcome):
    milestones: list[str]
    instruction: str
    answer: str | None = None


class MilestoneStep(Record):
    """A milestone completed at step `step` (1-based)."""

    id: str
    step: int


class Timings(Record):
    reset_ms: float = 0.0
    step_ms_median: float = 0.0
    total_s: float = 0.0


class EpisodeResult(EpisodeOutcome):
    """One episode as the evaluator records it: ``to_json()`` is its ``results.jsonl`` line, ``from_json``
    reads one back (``EpisodeResult.from_json(r.to_json()) == r``)."""

    task_id: str = Field(alias="task")
    milestones: list[str] = []
    category: str = ""
    tier: int | None = None
    milestone_steps: list[MilestoneStep] = []  # as completed
    rewards: list[float] = []  # per step
    audits: list[dict[str, Any] | None] | None = Field(default=None, alias="audit")  # per step, None: no router
    error: str | None = None  # the agent or the env failed: a failed, recorded episode
    timings: Timings = Timings()
    episode_dir: str = ""  # relative to the run dir once written
    actions: list[str] = []
    worker_pid: int = 0  # the process that ran it

    @property
    def seconds(self) -> float:
        return self.timings.total_s

    def to_json(self, run_dir: Path | None = None) -> dict[str, Any]:
        ep = Path(self.episode_dir) if self.episode_dir else None
        if ep is not None and run_dir is not None and ep.is_relative_to(run_dir):
            ep = ep.relative_to(run_dir)  # relative: a run dir can be moved or shared with its report
        out = self.model_dump(mode="json", by_alias=True)
        out["episode_dir"] = ep.as_posix() if ep is not None else ""
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EpisodeResult:
        return cls.model_validate(d)


class EpisodeTrace(Record):
    """An episode's steps read back from its ``trajectory.jsonl`` (finished or not), with its variant."""

    dir: Path
    task_id: str
    seed: int
    goal: str
    steps: list[StepRecord]
    agent: str = ""

    @property
    def return_(self) -> float:
        return round(sum(s.reward for s in self.steps), 6)


def outcome_of(trajectory: Any) -> EpisodeOutcome:
    """The outcome of a learner trajectory (duck-typed: ``task_id``, ``seed``, ``turns[].reward``,
    ``success``, ``terminated``, ``truncated``, ``truncation_reason``), in the family's terms. Its
    `milestones` stay None: a turn lists the milestones that fired, partial credit included, not those
    completed."""
    turns = list(trajectory.turns)
    return EpisodeOutcome(
        task_id=trajectory.task_id, seed=trajectory.seed, success=bool(trajectory.success),
        return_=round(sum(float(t.reward) for t in turns), 6), steps=len(turns),
        terminated=bool(trajectory.terminated), truncated=bool(trajectory.truncated),
        truncation_reason=trajectory.truncation_reason,
    )
