"""The episode record family (agentrl.types): frozen, and every member round-trips through JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentrl.learner.rollout import Trajectory, Turn
from agentrl.types import (
    ActionEvent,
    EpisodeOutcome,
    EpisodeResult,
    EpisodeSummary,
    EpisodeTrace,
    MilestoneStep,
    StepRecord,
    Timings,
    outcome_of,
)


def _result(**kw: object) -> EpisodeResult:
    base = dict(task_id="t", seed=3, success=True, return_=0.75, steps=2, milestones=["a", "b"], terminated=True,
                milestone_steps=[MilestoneStep(id="a", step=1), MilestoneStep(id="b", step=2)], rewards=[0.25, 0.5],
                audits=[None, {"mode": "rules", "value": 0.5, "decided_by": "rules"}], actions=['fill(e1, "x\\n")', "click(e2)"],
                timings=Timings(reset_ms=1.5, step_ms_median=2.0, total_s=0.1), episode_dir="/runs/x/episodes/ep1",
                category="form", tier=2, worker_pid=7)
    return EpisodeResult(**{**base, **kw})


def test_episode_result_round_trips_json_and_is_frozen() -> None:
    r = _result()
    line = json.dumps(r.to_json())
    assert EpisodeResult.from_json(json.loads(line)) == r
    d = json.loads(line)  # the results.jsonl keys the report, replay and compare read
    assert d["task"] == "t" and d["return"] == 0.75 and d["audit"][1]["decided_by"] == "rules"
    assert d["milestone_steps"] == [{"id": "a", "step": 1}, {"id": "b", "step": 2}] and d["timings"]["total_s"] == 0.1
    assert r.to_json(Path("/runs/x"))["episode_dir"] == "episodes/ep1"
    with pytest.raises(ValidationError):
        r.success = False  # type: ignore[misc]
    with pytest.raises(ValidationError, match="unknown_key"):
        EpisodeResult.from_json({**d, "unknown_key": 1})


def test_episode_family_members_are_outcomes_and_round_trip() -> None:
    s = EpisodeSummary(task_id="t", seed=1, instruction="do it", success=False, return_=0.2, steps=4,
                       milestones=["a"], terminated=False, truncated=True, truncation_reason="max_steps reached")
    assert EpisodeSummary.model_validate_json(s.model_dump_json(by_alias=True)) == s
    step = StepRecord(t=1, action='done("é\\n")', parsed='done("é\\n")', error=None, observation="o", url="u",
                      reward=0.2, events=[ActionEvent(name="done", value="é\n")])
    tr = EpisodeTrace(dir=Path("/r/e1"), task_id="t", seed=1, goal="do it", steps=[step], agent="scripted")
    assert EpisodeTrace.model_validate_json(tr.model_dump_json()) == tr and tr.return_ == 0.2
    for record in (s, _result()):
        assert isinstance(record, EpisodeOutcome)
        assert EpisodeOutcome.model_validate(record.model_dump(include=set(EpisodeOutcome.model_fields))).return_ == record.return_


def test_outcome_of_a_learner_trajectory() -> None:
    def turn(reward: float) -> Turn:
        return Turn(prompt_ids=[1], completion_ids=[2], logprobs=[-0.1], action="click(e1)", candidates=["click(e1)"],
                    candidate_ids=[[2]], candidate_index=0, candidate_entropy=0.0, seq_logprob_restricted=0.0,
                    reward=reward, milestones=["half"])
    traj = Trajectory(task_id="t", seed=5, group=0, sample=1, turns=[turn(0.5), turn(0.25)], success=True,
                      terminated=True)
    o = outcome_of(traj)
    assert (o.task_id, o.seed, o.steps, o.return_, o.success, o.terminated, o.truncated) == ("t", 5, 2, 0.75, True, True, False)
    assert o.milestones is None  # a turn's milestones include partial credit: not claimed as completed
    assert EpisodeOutcome.model_validate_json(o.model_dump_json(by_alias=True)) == o


def test_hostile_step_record_fits_its_budget_whatever_the_characters() -> None:
    """`fit_record` measures the line as the trajectory writer writes it (ASCII-escaped JSON): text whose
    characters escape long (non-ASCII, control characters) still fits, the cut marked and named."""
    from agentrl.envs.episode import fit_record

    from agentrl.types import BlockedRequestEvent, StepRecord

    events = [BlockedRequestEvent(method="GET", url=f"http://outside.test/{i}") for i in range(2000)]
    rec = StepRecord(t=1, action="click(e1)", parsed="click(e1)", error="\x01" * 30_000, observation="é" * 50_000,
                     url="http://127.0.0.1/" + "ü" * 5000, reward=0.0, events=events)
    for budget in (100_000, 20_000, 3_000):
        fitted = fit_record(rec, budget)
        line = json.dumps({"type": "step", **fitted.model_dump(mode="json")})
        assert len(line) <= budget, (budget, len(line))
        assert fitted.cut["events"] == 2000 and fitted.cut["observation"] == 50_000
        assert fitted.observation.endswith("characters: max_record_chars]") and fitted.action == "click(e1)"
    assert fit_record(rec, None) is rec and fit_record(rec, 10**9) is rec
