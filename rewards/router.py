"""The layered reward router: rules (milestone weights), R_phi (a learned reward) and an LLM judge, combined
per task by a `RouterConfig`, with an audit of every decision.

>>> router = RewardRouter.from_config(RouterConfig())        # no config: exactly the rule reward
>>> reward, audit = router.step(StepInput(task=spec, variant=variant, action="click(e3)",
...                                       obs_after=obs["text"], milestones=info["milestones"]))  # doctest: +SKIP
>>> audit.decided_by, audit.layers[0].latency_ms                                                   # doctest: +SKIP
('rules', 0.004)

Modes:
- **cascade** (default): on a task whose milestones cover it (`judge: false`, the default) the rules decide.
  On a `judge: true` task: R_phi decides when its confidence >= `rm_threshold`, else the judge, else (no
  learned layer configured, or all failed) the rules, with a note in the audit.
- **blend**: r = a*r_rules + b*R_phi + c*r_judge, a+b+c = 1. A layer that fails is left out and the weights
  of the others are renormalised; the audit says so.
A layer that raises records its error in the audit and the router falls through: never a silent 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agentrl.rewards.inputs import StepInput, TrajectoryInput
from agentrl.rewards.judge import JudgeConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentrl.registry import Registry
from agentrl.types import LayerResult, RewardAudit, Score
from agentrl.yamlpos import load_mapping

if TYPE_CHECKING:
    pass

RULES, RM, JUDGE = "rules", "reward_model", "judge"


# ---------------------------------------------------------------- sources
class RewardSource(Protocol):
    name: str

    def score(self, x: StepInput) -> Score: ...

    def score_trajectory(self, x: TrajectoryInput) -> Score: ...


class RulesSource:
    """The milestone weight the env already computed: sum of `m.reward` of the milestones fired."""

    name = RULES

    def score(self, x: StepInput) -> Score:
        value = float(sum(m.reward for m in x.milestones))
        why = ", ".join(f"{m.id} +{m.reward:.2f}" for m in x.milestones) or "no milestone fired"
        return Score(value=value, confidence=1.0, rationale=why)

    def score_trajectory(self, x: TrajectoryInput) -> Score:
        done = ", ".join(m.id for m in x.milestones if m.complete) or "none"
        return Score(value=float(x.rule_return), confidence=1.0, rationale=f"milestones completed: {done}")


class RewardModelSource:
    """R_phi (`agentrl.rewards.reward_model.RewardModel`) over the step / trajectory text."""

    name = RM

    def __init__(self, model: Any) -> None:
        self.model = model

    def score(self, x: StepInput) -> Score:
        return self.model.score(x.text())

    def score_trajectory(self, x: TrajectoryInput) -> Score:
        return self.model.score(x.text())


SOURCES: Registry[Any] = Registry("reward source")
SOURCES.register(RULES)(lambda cfg: RulesSource())
SOURCES.register(RM)(lambda cfg: RewardModelSource(_load_rm(str(cfg.reward_model))))


@SOURCES.register(JUDGE)
def _judge_source(cfg: RouterConfig) -> Any:
    from agentrl.rewards.judge import JudgeClient

    return JudgeClient(cfg.judge)


@lru_cache(maxsize=4)
def _load_rm(path: str) -> Any:
    # many envs of one process share one R_phi (the encoder is the expensive part)
    from agentrl.rewards.reward_model import RewardModel

    return RewardModel.load(path)


# ---------------------------------------------------------------- configuration
class BlendWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: float = Field(default=1.0, ge=0)
    reward_model: float = Field(default=0.0, ge=0)
    judge: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> BlendWeights:
        total = self.rules + self.reward_model + self.judge
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"blend weights must sum to 1: rules {self.rules} + reward_model {self.reward_model} + judge "
                f"{self.judge} = {total:g}"
            )
        return self


class RouterConfig(BaseModel):
    """How a task's reward is computed; a suite may carry it as `router:` in suite.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["cascade", "blend"] = "cascade"
    reward_model: str | None = None  #: directory of a trained R_phi (`agentrl rm train --out`)
    rm_threshold: float = Field(default=0.8, ge=0, le=1)  #: cascade: R_phi decides at confidence >= this
    judge: JudgeConfig | None = None  #: the LLM judge (None: no judge layer)
    weights: BlendWeights | None = None  #: blend mode only

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        if self.mode == "blend":
            if self.weights is None:
                raise ValueError("mode 'blend' needs weights: {rules: a, reward_model: b, judge: c} with a+b+c = 1")
            if self.weights.reward_model > 0 and self.reward_model is None:
                raise ValueError("blend weight reward_model > 0 but no reward_model directory is configured")
            if self.weights.judge > 0 and self.judge is None:
                raise ValueError("blend weight judge > 0 but no judge is configured")
        elif self.weights is not None:
            raise ValueError("weights are for mode 'blend'; mode is 'cascade'")
        return self

    @classmethod
    def from_suite(cls, suite_dir: str | Path) -> RouterConfig:
        """The `router:` mapping of `<suite>/suite.yaml` (the default config when there is none)."""
        f = Path(suite_dir) / "suite.yaml"
        data = load_mapping(f, "suite file") if f.is_file() else {}
        try:
            return cls.model_validate(data.get("router") or {})
        except ValidationError as e:
            lines = [f"{f}: router.{'.'.join(map(str, err['loc']))}: {err['msg'].removeprefix('Value error, ')}"
                     for err in e.errors()]
            raise ValueError("\n".join(lines)) from None


# ---------------------------------------------------------------- the router
@dataclass
class RewardRouter:
    """Routes each step (or finished trajectory) through the layers its config asks for.

    Build it once per process (`from_config`); it is shared by every task: the task's `judge:` flag travels
    in the `StepInput`.
    """

    config: RouterConfig = field(default_factory=RouterConfig)
    sources: dict[str, RewardSource] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sources.setdefault(RULES, RulesSource())
        self._learned = [n for n in (RM, JUDGE) if n in self.sources]

    @classmethod
    def of(cls, router: RewardRouter | RouterConfig | None) -> RewardRouter:
        """A ready router as is; a config (or None: rules only) built with `from_config`."""
        return router if isinstance(router, RewardRouter) else cls.from_config(router)

    @classmethod
    def from_config(cls, config: RouterConfig | None = None, **sources: RewardSource) -> RewardRouter:
        """Builds the layers the config names (loads R_phi, makes the judge client); `sources` overrides
        any of them by name (`rules`, `reward_model`, `judge`)."""
        cfg = config or RouterConfig()
        built: dict[str, RewardSource] = {}
        if cfg.reward_model is not None and RM not in sources:
            built[RM] = SOURCES.get(RM)(cfg)
        if cfg.judge is not None and JUDGE not in sources:
            built[JUDGE] = SOURCES.get(JUDGE)(cfg)
        return cls(cfg, {**built, **sources})

    def step(self, x: StepInput) -> tuple[float, RewardAudit]:
        return self._route(x, "step", {})

    def trajectory(self, x: TrajectoryInput) -> tuple[float, RewardAudit]:
        return self._route(x, "trajectory", {})

    def trajectories(self, xs: Sequence[TrajectoryInput]) -> list[tuple[float, RewardAudit]]:
        """A GRPO group: when the judge is needed for several, it scores them in one call (group mode)."""
        judge = self.sources.get(JUDGE)
        # cascade with R_phi: the judge may not be needed at all, so it is asked per trajectory, if at all
        cascade_rm = self.config.mode == "cascade" and RM in self.sources
        need = [] if cascade_rm else [x for x in xs if self.config.mode == "blend" or x.task.judge]
        pre: dict[int, Score] = {}
        if judge is not None and len(need) > 1 and hasattr(judge, "score_group"):
            try:
                pre = {id(x): s for x, s in zip(need, judge.score_group(need), strict=True)}
            except Exception as e:  # the per-trajectory path below records its own errors
                pre = {id(x): Score(value=0.0, confidence=0.0, error=f"group call failed: {type(e).__name__}: {e}") for x in need}
        return [self._route(x, "trajectory", {JUDGE: pre[id(x)]} if id(x) in pre else {}) for x in xs]

    # ------------------------------------------------------------------
    def _run(self, name: str, x: Any, level: str, given: dict[str, Score]) -> tuple[Score, LayerResult]:
        t0 = time.perf_counter()
        if name in given:
            s = given[name]
        else:
            src = self.sources[name]
            try:
                s = src.score(x) if level == "step" else src.score_trajectory(x)
            except Exception as e:  # a failing layer is data: recorded, and the router falls through
                s = Score(value=0.0, confidence=0.0, error=f"{type(e).__name__}: {e}")
        ms = (time.perf_counter() - t0) * 1e3
        return s, LayerResult(layer=name, value=None if s.error else s.value, confidence=s.confidence,
                              rationale=s.rationale, latency_ms=ms, error=s.error)

    def _route(self, x: Any, level: Literal["step", "trajectory"], given: dict[str, Score]) -> tuple[float, RewardAudit]:
        t0 = time.perf_counter()
        rules, rules_res = self._run(RULES, x, level, given)
        layers = [rules_res]
        note, weights = "", {}
        if self.config.mode == "blend":
            w = self.config.weights or BlendWeights()
            weights = w.model_dump()
            parts = [(w.rules, rules.value)]
            for name in (RM, JUDGE):
                if getattr(w, name) > 0:
                    s, res = self._run(name, x, level, given)
                    layers.append(res)
                    if s.error is None:
                        parts.append((getattr(w, name), s.value))
                    else:
                        note += f"{name} failed, left out of the blend; "
            total = sum(p[0] for p in parts)
            value = sum(p[0] * p[1] for p in parts) / total if total > 0 else rules.value
            if total <= 0:
                note += "every weighted layer failed: rules decide; "
            decided = "blend" if total > 0 else RULES
        elif not x.task.judge or not self._learned:
            value, decided = rules.value, RULES
            if x.task.judge:
                note = "task is judge: true but no reward model or judge is configured: rules decide"
        else:
            value, decided = rules.value, RULES
            for name in self._learned:
                s, res = self._run(name, x, level, given)
                layers.append(res)
                if s.error is not None:
                    note += f"{name} failed; "
                elif name == RM and s.confidence < self.config.rm_threshold:
                    note += f"reward_model confidence {s.confidence:.2f} < {self.config.rm_threshold}; "
                else:
                    value, decided = s.value, name
                    break
            else:
                note += "no learned layer decided: rules decide"
        audit = RewardAudit(mode=self.config.mode, level=level, layers=layers, weights=weights, value=value,
                            decided_by=decided, latency_ms=(time.perf_counter() - t0) * 1e3, note=note.strip("; "))
        return value, audit
