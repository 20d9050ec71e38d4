"""SFT: demonstrations rendered like the rollout (real env), the loss on action tokens only, the run dir."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from agentrl.envs.actions import parse_action

from agentrl.learner.config import SHORT_SYSTEM_PROMPT, TrainConfig
from agentrl.learner.demos import read_demos, read_recorded, record_demos, replay_episodes, write_demos
from agentrl.learner.rollout import GroupJob, RolloutEngine
from agentrl.learner.sft import SFTConfig, run_sft, sft_loss
from agentrl.learner.trainer import load_tasks
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder, join_turns

REPO = Path(__file__).resolve().parents[1]
TASK = str(REPO / "tasks/train/click-named-button.yaml")


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_policy(tmp_path_factory.mktemp("tiny"), seed=0)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(tasks=[TASK], click_roles=("button", "link", "heading"), described_actions=True,
                       system_prompt=SHORT_SYSTEM_PROMPT, num_envs=4, **kw)


@pytest.fixture(scope="module")
def demos(tiny):
    _, tok = tiny
    cfg = _cfg()
    got, stats = record_demos(cfg, tok, load_tasks(list(cfg.tasks)), range(6))
    assert stats.used == 6 and stats.infra_failures == stats.unmatched == stats.unsuccessful == 0, stats
    return got


def test_sft_demos_are_rendered_exactly_as_the_rollout_renders_the_policys_turns(tiny, demos) -> None:
    """Same seed, same config: the demo's prompt ids and candidate ids are those the rollout engine gives the
    policy (real env, real generator); its completion is the candidate the oracle's action parses to."""
    model, tok = tiny
    cfg = _cfg()
    spec = load_tasks(list(cfg.tasks))[0]
    eng = RolloutEngine([spec], HFGenerator(copy.deepcopy(model).eval(), tok),
                        PromptBuilder(tok, system=cfg.system_prompt, max_prompt_tokens=cfg.max_prompt_tokens,
                                      history_k=cfg.history_k),
                        num_envs=4, click_roles=cfg.click_roles, described=True)
    try:
        res = eng.collect([GroupJob(spec.id, s, 1, group=s) for s in range(3)], temperature=1.0, seed=0)
    finally:
        eng.close()
    for tr in res.trajectories:
        d = next(x for x in demos if x.seed == tr.seed)
        rolled, shown = tr.turns[0], d.turns[0]
        assert shown.prompt_ids == rolled.prompt_ids
        assert shown.candidates == rolled.candidates and shown.candidate_ids == rolled.candidate_ids
        assert shown.completion_ids == shown.candidate_ids[shown.candidate_index]
        goal = tok.decode(shown.prompt_ids).split('Click the "')[1].split('"')[0]
        assert shown.action.startswith(f'button "{goal}" -> click(')
        assert d.success and d.turns[0].reward == pytest.approx(1.0)


def test_sft_free_form_demos_are_the_parsed_action_then_end_of_turn(tiny) -> None:
    _, tok = tiny
    cfg = _cfg()
    got, stats = record_demos(cfg, tok, load_tasks(list(cfg.tasks)), range(2), actions="free")
    assert stats.used == 2
    for d in got:
        t = d.turns[0]
        text = tok.decode(t.completion_ids)
        assert text.endswith("<|im_end|>") and t.candidates == []
        assert text[: -len("<|im_end|>")] == str(parse_action(t.action)) and t.action.startswith("click(e")
        assert d.success


def test_sft_demos_from_a_run_dir_replay_to_the_same_turns(tiny, demos, tmp_path: Path) -> None:
    """A learner run's trajectories.jsonl (here: the demos written as such rows, plus a failed episode)
    replays through the real env into the same turns; the failed episode is counted, not used."""
    _, tok = tiny
    run = tmp_path / "run"
    run.mkdir()
    write_demos(run / "trajectories.jsonl", demos[:3], step=1)
    t = demos[3].turns[0]
    j = (t.candidate_index + 1) % len(t.candidates)  # another button: the episode fails (return 0)
    wrong = json.loads(demos[3].to_json())
    wrong["turns"][0]["action"], wrong["success"] = t.candidates[j], False
    wrong["turns"][0]["reward"] = 0.0
    with (run / "trajectories.jsonl").open("a") as fh:
        fh.write(json.dumps(wrong) + "\n")
    jobs = read_recorded([run])
    assert len(jobs) == 4
    got, stats = replay_episodes(_cfg(), tok, load_tasks([TASK]), jobs)
    assert stats.used == 3 and stats.unsuccessful == 1 and stats.diverged == 0
    for a, b in zip(got, demos[:3], strict=True):
        assert a.turns[0].prompt_ids == b.turns[0].prompt_ids and a.turns[0].completion_ids == b.turns[0].completion_ids


def _hf_masked_loss(model, turns) -> torch.Tensor:
    """The reference: Hugging Face's own causal-LM loss with the prompt positions labelled -100."""
    total, n = 0.0, 0
    for t in turns:
        j = join_turns(t.prompt_ids, t.completion_ids)
        ids = torch.tensor([j.input_ids])
        labels = torch.tensor([[x if m else -100 for x, m in zip(j.input_ids, j.completion_mask, strict=True)]])
        k = sum(j.completion_mask)
        total = total + model(input_ids=ids, labels=labels).loss * k
        n += k
    return total / n


def test_sft_loss_is_the_nll_of_the_action_tokens_only(tiny, demos) -> None:
    """Value and gradient equal HF's loss with the prompt masked out; with the prompt in the loss (or a mask
    shifted by one) they would not. Any micro-batch split gives the same loss and gradient."""
    model, _ = tiny
    model = copy.deepcopy(model)
    turns = [t for d in demos for t in d.turns]
    params = [p for p in model.parameters() if p.requires_grad]

    def grads() -> list[torch.Tensor]:
        g = [p.grad.clone() for p in params]
        model.zero_grad()
        return g

    ref = _hf_masked_loss(model, turns)
    ref.backward()
    g_ref = grads()
    got = sft_loss(model, turns, token_budget=100_000)
    g_one = grads()
    split = sft_loss(model, turns, token_budget=1)  # one key per micro-batch
    g_split = grads()
    assert got["loss"] == pytest.approx(float(ref.detach()), rel=1e-5)
    assert split["loss"] == pytest.approx(got["loss"], rel=1e-5)
    for a, b, c in zip(g_ref, g_one, g_split, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-6)
    # the check has teeth: the loss over prompt + completion tokens is a different number
    t = turns[0]
    ids = torch.tensor([t.prompt_ids + t.completion_ids])
    whole = float(model(input_ids=ids, labels=ids).loss)
    assert abs(whole - float(_hf_masked_loss(model, [t]))) > 1e-3


def test_sft_candidates_loss_is_cross_entropy_among_the_candidates(tiny, demos) -> None:
    model, tok = tiny
    gen = HFGenerator(model, tok)
    t = demos[0].turns[0]
    s = gen.score_candidates([t.prompt_ids], [t.candidates])[0]
    want = -float(torch.log_softmax(torch.tensor(s.seq_logprobs), 0)[t.candidate_index])
    got = sft_loss(model, [t], objective="candidates", backward=False)
    assert got["loss"] == pytest.approx(want, rel=1e-4)


def test_sft_run_writes_the_train_run_dir_and_its_checkpoint_starts_rl(tmp_path: Path) -> None:
    """`run_sft` end to end (real env): demos, held-out success before/after, metrics, curves, checkpoints;
    the SFT'd policy puts more mass on held-out oracle actions; `model: <checkpoint>` loads it for RL."""
    from agentrl.learner.build import build_policy

    cfg = SFTConfig(tasks=[TASK], click_roles=("button", "link", "heading"), described_actions=True, num_envs=4,
                    lr=3e-3, lr_schedule="constant", warmup_steps=0, eval_every=0, eval_episodes=4, demo_seeds=24,
                    epochs=3, batch_size=8, checkpoint_every=0)
    s = run_sft(cfg, tmp_path / "sft")
    run = tmp_path / "sft"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == s["steps"] == 9 and len([r for r in rows if r["kind"] == "eval"]) == 2
    assert train[-1]["loss"] < train[0]["loss"]
    assert s["demos"]["oracle"]["used"] == 24 and len(read_demos(run / "demos.jsonl")) == 24
    for f in ("config.yaml", "summary.json", "reward_curve.png", "success_curve.png",
              "checkpoints/last/model/config.json", "checkpoints/best/model/config.json"):
        assert (run / f).exists(), f
    # the checkpoint is a plain HF folder that a train config's `model:` loads (the RL starting point)
    rl = TrainConfig(tasks=[TASK], model=str(run / "checkpoints/last/model"), gradient_checkpointing=False)
    model, tok = build_policy(rl, tmp_path / "rl")
    base, _ = build_policy(TrainConfig(tasks=[TASK]), run)  # run/base-model: the weights SFT started from
    held, _ = record_demos(_cfg(), tok, load_tasks([TASK]), range(100_000, 100_006))
    turns = [t for d in held for t in d.turns]
    nll_sft = sft_loss(model, turns, backward=False)["loss"]
    nll_base = sft_loss(base, turns, backward=False)["loss"]
    assert nll_sft < nll_base - 0.5, (nll_sft, nll_base)
