"""Agents that type: typing candidates, free-form replies through the REAL browser env, and the typing drill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from agentrl.envs.actions import ActionError, parse_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.apps.drill import DrillApp

from agentrl.agents import ScriptedAgent
from agentrl.learner.action_space import ActionSpace, goal_values
from agentrl.learner.algos import get_algorithm
from agentrl.learner.config import SHORT_SYSTEM_PROMPT, TrainConfig
from agentrl.learner.rollout import GroupJob, RolloutEngine
from agentrl.learner.trainer import train
from agentrl.learner.update import Learner
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.taskspec import load_task

REPO = Path(__file__).resolve().parents[1]
TYPE_WORD = REPO / "tasks/train/type-word.yaml"


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_policy(tmp_path_factory.mktemp("tiny"), seed=0)


def test_goal_values_quoted_first_then_content_words() -> None:
    assert goal_values('Send feedback: rating "Very good" with the comment "Fast, kind".') == [
        "Very good", "Fast, kind", "Send", "feedback", "rating", "comment",
    ]
    assert goal_values("Subscribe ann.lee@example.com to the newsletter.") == ["Subscribe", "ann.lee@example.com", "newsletter"]


def test_typing_candidates_offer_fills_selects_and_answers() -> None:
    tree = parse_snapshot(
        '- main [ref=e1]:\n  - textbox "City" [ref=e2]\n  - combobox "Size" [ref=e3]:\n'
        '    - option "Small" [selected]\n    - option "Large"\n  - cell "42"\n  - button "Go" [ref=e4]'
    )
    space = ActionSpace(click_roles=("button",), typing=True, answers=True)
    cands = space.candidates(tree, 'Enter "Oslo" and pick Large')
    assert 'fill(e2, "Oslo")' in cands and 'fill(e2, "Large")' in cands
    assert cands.count('select(e3, "Small")') == 1 and 'select(e3, "Large")' in cands
    assert 'done("42")' in cands and "click(e4)" in cands
    assert all(not isinstance(parse_action(c), ActionError) for c in cands)
    assert ActionSpace(click_roles=("button",)).candidates(tree, "Enter Oslo") == ["click(e4)"]  # clicks only
    with pytest.raises(ValueError, match="actions must be one of"):
        ActionSpace(mode="typed")


def test_type_word_drill_oracle_is_among_typing_candidates_and_near_misses_fail() -> None:
    """Every oracle step of the typing drill is one of the typing candidates (so a candidate policy can solve
    it), the oracle succeeds, and each near-miss (empty submit, the label typed, no submit) does not."""
    spec = load_task(TYPE_WORD)
    space = ActionSpace(click_roles=("button", "link", "heading"), typing=True, described=True)
    env = BrowserEnv(spec, BrowserEnvConfig(record=False, keep_episode_dirs=False))
    try:
        for seed in (0, 1, 100_000):
            obs, info = env.reset(seed=seed)
            agent = ScriptedAgent(env.variant.oracle)
            agent.reset(obs, info, env.variant)
            done = False
            while not done:
                action = agent.act(obs)
                cands = space.candidates(parse_snapshot(obs["axtree"]), obs["goal"])
                assert parse_action(action) in [parse_action(c) for c in cands], (seed, action)
                obs, _, term, trunc, info = env.step(action)
                done = term or trunc
            assert info["success"], seed
            for near in env.variant.near_misses:
                obs, info = env.reset(seed=seed)
                agent = ScriptedAgent(near.steps)
                agent.reset(obs, info, env.variant)
                for _ in near.steps:
                    obs, _, term, trunc, info = env.step(agent.act(obs))
                    if term or trunc:
                        break
                assert not info["success"], (seed, near.name)
    finally:
        env.close()
    facts = [DrillApp().facts(DrillApp().new_state(s)) for s in range(200)]
    assert len({f["word"] for f in facts}) >= 30 and len({f["field"] for f in facts}) == 8  # varied per seed


def _engine(tiny, **kw) -> RolloutEngine:
    model, tok = tiny
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT, max_prompt_tokens=512)
    return RolloutEngine([load_task(TYPE_WORD)], HFGenerator(model, tok), builder, num_envs=4,
                         click_roles=("button", "link", "heading"), observation="compact", **kw)


def test_free_form_rollout_records_sampled_ids_and_penalises_parse_errors(tiny) -> None:
    """Free-form: the random tiny policy writes its replies; each turn keeps the exact sampled ids and their
    log-probs, a reply that is not an action is an error observation (never an exception), counted and
    given the penalty."""
    eng = _engine(tiny, actions="free", max_new_tokens=12, parse_error_penalty=-0.25)
    try:
        res = eng.collect([GroupJob("type-word", 3, 4)], temperature=1.0, seed=0)
    finally:
        eng.close()
    turns = [t for tr in res.trajectories for t in tr.turns]
    assert len(res.trajectories) == 4 and not any(tr.infra_failure for tr in res.trajectories)
    assert all(t.candidates == [] and 0 < len(t.completion_ids) == len(t.logprobs) <= 12 for t in turns)
    tok = tiny[1]
    assert all(tok.decode(t.completion_ids, skip_special_tokens=True).strip() == t.action.strip() for t in turns)
    bad = [t for t in turns if t.parse_error]
    assert res.stats["parse_errors"] == len(bad) > 0  # a random policy rarely writes a valid call
    assert all(isinstance(parse_action(t.action), ActionError) for t in bad)
    assert all(t.reward == pytest.approx(-0.25) for t in bad)  # the drill's milestones cannot fire on junk
    assert all(t.action_error for t in bad)  # the env answered with an error observation


def test_free_form_learner_trains_on_the_sampled_ids_on_policy(tiny) -> None:
    """The learner's first-pass log-probs of the sampled reply tokens equal the behaviour log-probs (ratio 1):
    it scores exactly the ids that were sampled, at the sampling temperature, one unit per token."""
    model, tok = tiny
    eng = _engine(tiny, actions="free", max_new_tokens=10, parse_error_penalty=-0.5)
    try:
        res = eng.collect([GroupJob("type-word", 5, 4), GroupJob("type-word", 6, 4, group=1)], temperature=1.3, seed=1)
    finally:
        eng.close()
    learner = Learner(model, get_algorithm("drgrpo"), lr=1e-3, lr_schedule="constant", warmup_steps=0, temperature=1.3,
                      norm_length=3 * 10)
    batch, _ = learner.prepare(res.trajectories)
    units = sum(len(t.completion_ids) for tr in res.trajectories for t in tr.turns)
    assert batch is not None and int(batch.token_mask.sum()) == units  # a unit per sampled token, none for the prompt
    m = learner.update(res.trajectories)
    assert m["optimizer_steps"] == 1 and m["ratio_mean"] == pytest.approx(1.0, abs=1e-4)


def test_free_form_trains_end_to_end_through_the_cli_config(tmp_path: Path) -> None:
    """`actions: free` through `train`: steps run, the loss is finite, parse errors are logged per step."""
    cfg = TrainConfig(
        tasks=[str(TYPE_WORD)], model="tiny", algorithm="drgrpo", actions="free", max_new_tokens=10,
        parse_error_penalty=-0.1, observation="compact", click_roles=("button", "link", "heading"), lr=1e-3,
        lr_schedule="constant", warmup_steps=0, group_size=2, groups_per_step=2, num_envs=4, total_steps=2,
        eval_every=0, eval_episodes=2, checkpoint_every=1, max_prompt_tokens=512, out_dir=str(tmp_path),
    )
    summary = train(cfg, tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "rollout/parse_errors" in r]
    assert len(steps) == 2 and all(np.isfinite(r["loss_total"]) for r in steps)
    assert sum(r["rollout/parse_errors"] for r in steps) > 0
    assert (tmp_path / "checkpoints" / "last" / "model").is_dir() and summary["steps"] == 2
