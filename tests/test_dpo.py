"""DPO / IPO / SimPO: the losses, the frozen reference, exact micro-batched gradients, pairs from the
preference store replayed through the real env."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from agentrl.learner.config import SHORT_SYSTEM_PROMPT
from agentrl.learner.demos import record_demos
from agentrl.learner.dpo import DPOConfig, PrefPair, Reference, dpo_step, pair_loss, pair_metrics, run_dpo
from agentrl.learner.offline import action_key, sequence_logprobs, token_logprobs
from agentrl.learner.trainer import load_tasks
from agentrl.policy.model import build_tiny_policy

REPO = Path(__file__).resolve().parents[1]
TASK = str(REPO / "tasks/train/click-named-button.yaml")


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_policy(tmp_path_factory.mktemp("tiny"), seed=0)


def _cfg(**kw) -> DPOConfig:
    return DPOConfig(tasks=[TASK], click_roles=("button", "link", "heading"), described_actions=True,
                     system_prompt=SHORT_SYSTEM_PROMPT, num_envs=4, **kw)


@pytest.fixture(scope="module")
def pairs(tiny) -> list[PrefPair]:
    """Step pairs on real-env prompts: the oracle's candidate chosen, another candidate of the same turn
    rejected (the named-button family's near-miss: the wrong button)."""
    _, tok = tiny
    cfg = _cfg()
    demos, stats = record_demos(cfg, tok, load_tasks([TASK]), range(6))
    assert stats.used == 6
    out = []
    for d in demos:
        t = d.turns[0]
        j = (t.candidate_index + 1) % len(t.candidates)
        bad = dataclasses.replace(t, completion_ids=list(t.candidate_ids[j]), candidate_index=j, action=t.candidates[j])
        out.append(PrefPair(d.task_id, d.seed, [t], [bad]))
    return out


def test_dpo_ipo_simpo_losses_match_their_formulas() -> None:
    pc, pr, rc, rr = torch.tensor([-2.0]), torch.tensor([-5.0]), torch.tensor([-3.0]), torch.tensor([-4.0])
    lc, lr = torch.tensor([4.0]), torch.tensor([2.0])
    d = (-2 + 3) - (-5 + 4)  # 2
    loss, m = pair_loss("dpo", pc, pr, rc, rr, lc, lr, beta=0.5)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.5 * d))) and float(m) == pytest.approx(0.5 * d)
    loss, _ = pair_loss("ipo", pc, pr, rc, rr, lc, lr, beta=0.5)
    di = (-2 + 3) / 4 - (-5 + 4) / 2
    assert float(loss) == pytest.approx((di - 1.0) ** 2)
    loss, m = pair_loss("simpo", pc, pr, rc, rr, lc, lr, beta=2.0, gamma=0.5)
    ms = 2.0 * (-2 / 4 - -5 / 2)
    assert float(m) == pytest.approx(ms) and float(loss) == pytest.approx(math.log1p(math.exp(-(ms - 0.5))))


def test_dpo_reference_stays_the_starting_policy_while_the_policy_moves(tiny, pairs) -> None:
    """After DPO steps the reference's log-probs are still those of the starting weights (a reference that
    moved with the policy would give a reward margin of exactly 0), the policy's are not, and the
    training pairs' DPO loss fell below log 2 with a positive margin."""
    model, _ = tiny
    start = copy.deepcopy(model)
    model = copy.deepcopy(model)
    cfg = _cfg(beta=0.5)
    keys = [action_key(t) for p in pairs for t in (*p.chosen, *p.rejected)]
    ref = Reference(model, keys, cfg.micro_batch_tokens)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(6):
        opt.zero_grad()
        dpo_step(model, pairs, ref, cfg)
        opt.step()
    uniq = list(dict.fromkeys(keys))
    assert [ref.logp[k] for k in uniq] == pytest.approx(sequence_logprobs(start, uniq, 16_384), abs=1e-4)
    now = sequence_logprobs(model, uniq, 16_384)
    assert max(abs(a - ref.logp[k]) for a, k in zip(now, uniq, strict=True)) > 0.1
    m = pair_metrics(model, pairs, ref, cfg)
    assert m["loss"] < math.log(2) - 0.05 and m["reward_margin"] > 0.1 and m["accuracy"] == 1.0


def test_dpo_step_gradient_is_exact_under_any_micro_batch_split(tiny, pairs) -> None:
    """The two-pass gradient (no-grad log-probs, dL/dlogp, weighted backward) equals autograd through the
    whole loss (DPO + the RPO NLL term); token budget 1 (one turn per forward) gives the same."""
    model, _ = tiny
    model = copy.deepcopy(model)
    ref_model = copy.deepcopy(model)
    with torch.no_grad():  # a reference different from the policy, so the margin is not 0
        for p in ref_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    cfg = _cfg(beta=0.3, nll_coef=0.5)
    keys = [action_key(t) for p in pairs for t in (*p.chosen, *p.rejected)]
    ref = Reference(ref_model, keys, 16_384)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads() -> list[torch.Tensor]:
        g = [p.grad.clone() for p in params]
        model.zero_grad()
        return g

    pc = torch.stack([token_logprobs(model, [action_key(p.chosen[0])])[0].sum() for p in pairs])
    pr = torch.stack([token_logprobs(model, [action_key(p.rejected[0])])[0].sum() for p in pairs])
    rc = torch.tensor([ref(p.chosen) for p in pairs])
    rr = torch.tensor([ref(p.rejected) for p in pairs])
    ln = torch.ones(len(pairs))
    lc = torch.tensor([float(len(p.chosen[0].completion_ids)) for p in pairs])
    (pair_loss("dpo", pc, pr, rc, rr, ln, ln, beta=0.3)[0] - 0.5 * pc / lc).mean().backward()
    want = grads()
    dpo_step(model, pairs, ref, cfg)
    whole = grads()
    dpo_step(model, pairs, ref, dataclasses.replace(cfg, micro_batch_tokens=1))
    split = grads()
    for a, b, c in zip(want, whole, split, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)  # fp32 summation order
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-6)


def test_dpo_from_the_preference_store_raises_the_margin_and_reports_heldout(tmp_path: Path) -> None:
    """`agentrl rm collect` + `rm prefs` pairs (scripted vs near-miss, real env), replayed into turns; DPO
    raises the pairs' log-ratio margin and reports the held-out pairs'; the run dir is a train run dir."""
    from agentrl.rewards.prefs import PrefStore, auto_pairs

    from agentrl.collect import collect

    spec = load_tasks([TASK])[0]
    collect([spec], list(range(6)), tmp_path / "prefs", random_episodes=0, prefixes=0, progress=False)
    store = PrefStore(tmp_path / "prefs.sqlite")
    store.add_many(auto_pairs([tmp_path / "prefs"]))
    assert store.count() == {"trajectory/auto": 6, "step/auto": 6}
    store.close()
    cfg = _cfg(pref_store=str(tmp_path / "prefs.sqlite"), pref_episodes=[str(tmp_path / "prefs")], heldout_mod=3,
               beta=0.5, lr=1e-3, lr_schedule="constant", warmup_steps=0, epochs=4, batch_size=4,
               eval_every=0, eval_episodes=4, checkpoint_every=0)
    s = run_dpo(cfg, tmp_path / "dpo")
    assert s["pairs"]["store"]["pairs"] == 12 and s["heldout_pairs"] == 4 and s["train_pairs"] == 8  # seeds 0, 3 held out
    rows = [json.loads(x) for x in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert train[-1]["logratio_margin"] > train[0]["logratio_margin"] + 0.1  # DPO raises the pairs' margin
    # held-out margins are measured and reported (4 pairs here are too few to generalise from 8: the
    # measured held-out run is in docs/training.md)
    assert all(map(math.isfinite, (s["heldout_before"]["heldout_logratio_margin"], s["heldout_after"]["heldout_logratio_margin"])))
    assert [r["kind"] for r in rows].count("train") == s["steps"] == 8
    assert all("heldout_logratio_margin" in r for r in rows if r["kind"] == "eval")
    assert (tmp_path / "dpo" / "checkpoints/best/model/config.json").exists()
