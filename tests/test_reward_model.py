"""R_phi: the Bradley-Terry loss by hand, learning from pairs and generalising to goals it never saw, ties,
ensemble confidence, save/load, and the packaged MiniLM encoder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from agentrl.rewards.prefs import Pair, step_text
from agentrl.rewards.reward_model import (
    Encoder,
    RewardModel,
    RMConfig,
    bt_loss,
    evaluate_pairs,
    resolve_encoder,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # torch's intra-op threads spin against each other on a small shared machine; one is plenty here
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised one-layer BERT (32 wide) with MiniLM's tokenizer, saved like any HF model."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-encoder")
    tok = AutoTokenizer.from_pretrained(resolve_encoder("minilm"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def pairs_for(goals: list[str]) -> list[Pair]:
    """Per goal: the step whose page confirms it beats the one that lands on an error page."""
    out = []
    for i, g in enumerate(goals):
        good = step_text(g, f'click button "{g.split()[-1]}"', f"- heading \"Done\"\n- status: saved {g.split()[-1]}")
        bad = step_text(g, 'click link "Help"', "- heading \"Error\"\n- alert: something went wrong, try again")
        out.append(Pair(task_id=f"task-{i}", seed=0, level="step", chosen=good, rejected=bad))
    return out


TRAIN_GOALS = [f"Save the {w} {n}" for w in ("draft", "form", "note", "order") for n in ("alpha", "beta", "gamma")]
HELD_OUT = [f"Submit the {w} {n}" for w in ("invoice", "ticket", "survey") for n in ("delta", "omega")]


def test_bradley_terry_loss_by_hand() -> None:
    r_w, r_l = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 0.0])
    win = bt_loss(r_w[:1], r_l[:1], torch.tensor([False]))
    assert math.isclose(float(win), math.log1p(math.exp(-1.0)), rel_tol=1e-6)  # -log sigmoid(1) = 0.3133
    tie_equal = bt_loss(r_w[1:2], r_l[1:2], torch.tensor([True]))
    assert math.isclose(float(tie_equal), math.log(2.0), rel_tol=1e-6)  # a tie at equal rewards: log 2, its minimum
    tie_apart = bt_loss(r_w[2:], r_l[2:], torch.tensor([True]))
    assert math.isclose(float(tie_apart), 0.5 * (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))), rel_tol=1e-6)
    assert float(tie_apart) > float(tie_equal)
    both = bt_loss(r_w, r_l, torch.tensor([False, True, True]))
    assert math.isclose(float(both), (float(win) + float(tie_equal) + float(tie_apart)) / 3, rel_tol=1e-6)


@pytest.fixture(scope="module")
def trained(tiny_encoder: str) -> RewardModel:
    rm = RewardModel(RMConfig(encoder=tiny_encoder, heads=3, epochs=150, hidden=32))
    rm.stats = rm.fit(pairs_for(TRAIN_GOALS))  # type: ignore[attr-defined]
    return rm


def test_learns_from_pairs_and_generalises_to_unseen_goals(trained: RewardModel, tmp_path: Path) -> None:
    rm = trained
    assert rm.stats["train_accuracy"] == 1.0 and rm.stats["pairs"] == len(TRAIN_GOALS)  # type: ignore[attr-defined]
    report = evaluate_pairs(rm, pairs_for(HELD_OUT), threshold=0.6)
    assert report["accuracy"] >= 0.9, report
    assert 0.0 <= report["ece"] <= 1.0 and sum(b["n"] for b in report["reliability"]) == len(HELD_OUT)
    assert set(report["per_task"]) == {f"task-{i}/step" for i in range(len(HELD_OUT))}
    good, bad = pairs_for(HELD_OUT[:1])[0].chosen, pairs_for(HELD_OUT[:1])[0].rejected
    assert rm.score(good).value > 0.5 > rm.score(bad).value

    # save / load: same scores from the directory alone
    rm.save(tmp_path / "rm")
    again = RewardModel.load(tmp_path / "rm", encoder=rm.encoder)
    assert torch.allclose(again.rewards([good, bad]), rm.rewards([good, bad]))
    assert again.config.offset == rm.config.offset != 0.0
    assert again.config.encoder == rm.config.encoder
    with pytest.raises(FileNotFoundError, match="not a reward model directory"):
        RewardModel.load(tmp_path)


def test_confidence_is_ensemble_disagreement(trained: RewardModel) -> None:
    rm = trained
    text = pairs_for(HELD_OUT[:1])[0].chosen
    s = rm.score(text)
    per_head = torch.sigmoid(rm.rewards([text])[:, 0])
    assert math.isclose(s.confidence, max(0.0, 1 - 2 * float(per_head.std(unbiased=False))), rel_tol=1e-5)
    assert math.isclose(s.value, float(torch.sigmoid(rm.rewards([text])[:, 0].mean())), rel_tol=1e-5)
    # heads trained on different bootstrap resamples disagree a little, more on text unlike the training data
    odd = rm.score("OBSERVATION: zebra quantum violin " * 20)
    assert 0.0 <= odd.confidence < 1.0


def test_ties_pull_rewards_together(tiny_encoder: str, trained: RewardModel) -> None:
    enc = trained.encoder
    strict = pairs_for(TRAIN_GOALS)
    ties = [p.model_copy(update={"tie": True}) for p in strict]
    a, b = strict[0].chosen, strict[0].rejected
    gap = {}
    for name, data in (("strict", strict), ("tie", ties)):
        rm = RewardModel(RMConfig(encoder=tiny_encoder, heads=1, epochs=150, hidden=32), encoder=enc)
        rm.fit(data)
        r = rm.rewards([a, b])[0]
        gap[name] = float(r[0] - r[1])
    assert gap["strict"] > 1.0 and abs(gap["tie"]) < 0.2 * gap["strict"], gap


def test_default_encoder_is_the_packaged_minilm() -> None:
    path = Path(resolve_encoder("minilm"))
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    enc = Encoder("minilm")
    e = enc.embed(["open the sales report", "show the sales report", "reset my password"])
    assert e.shape == (3, 384)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])  # a real sentence encoder, not random weights
