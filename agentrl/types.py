"""Records that cross module boundaries. All frozen pydantic models that round-trip to JSON.

`Event` is what the sandbox observed (the env reports it and never judges it); a `MilestoneEvent` is a
milestone of the task that fired, with the evidence that made it fire.
"""

from __future__ import annotations

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
    """A request to an origin outside the sandbox: aborted before it left the browser."""

    kind: Literal["blocked_request"] = "blocked_request"
    method: str
    url: str


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
    name: str  # click | fill | select | press | scroll | goto | back | wait | done
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


class EpisodeSummary(Record):
    task_id: str
    seed: int
    instruction: str
    success: bool
    return_: float = Field(alias="return")
    steps: int
    milestones: list[str]  # ids of completed milestones, in the order they fired
    terminated: bool
    truncated: bool
    truncation_reason: str | None = None
    answer: str | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
