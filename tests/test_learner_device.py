"""The learner on the model a user brings: any device, bf16 weights, LoRA, the sampling distribution's
log-probs, DAPO / Dr. GRPO as the papers mean them. Real tiny models of real architectures (random init)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import REPO
from transformers import Qwen2Config, Qwen2ForCausalLM

from agentrl.learner.algos import get_algorithm
from agentrl.learner.batch import make_batch
from agentrl.learner.build import norm_length, overlong_lengths
from agentrl.learner.config import SHORT_SYSTEM_PROMPT, TrainConfig
from agentrl.learner.forward import check_attention
from agentrl.learner.rollout import Trajectory, Turn
from agentrl.learner.synthetic import PAGE
from agentrl.learner.synthetic import scored_trajectories as synthetic_batch
from agentrl.learner.update import Learner
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.lora import LoraSpec, apply_lora
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.policy.records import SamplingParams

PRESETS = ["drgrpo", "grpo", "dapo", "ppo", "rloo"]


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_policy(tmp_path_factory.mktemp("tiny"), seed=0)


def qwen2(tok, seed: int = 0, dtype: torch.dtype = torch.float32) -> Qwen2ForCausalLM:
    """A Qwen2-architecture model (GQA, q/k/v biases) with the tiny tokenizer's vocabulary, random init."""
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).to(dtype).eval()


def learner(model, algo: str, **kw) -> Learner:
    over = {"loss_kwargs": {"kl_coef": 0.05}} if algo == "grpo" else {}
    preset = get_algorithm(algo, **over)
    kw.setdefault("overlong", (64, 16) if preset.overlong else None)
    return Learner(model, preset, norm_length=2, lr=1e-3, **kw)


# ---------------------------------------------------------------- device
@pytest.mark.parametrize("algo", PRESETS)
def test_device_every_preset_updates_a_model_on_the_meta_device(tiny, algo: str) -> None:
    """Every tensor of the update lives on the model's device: a CPU tensor anywhere in the batch, the
    advantages, the loss or the optimizer meets the meta model and raises."""
    model, tok = tiny
    trajs = synthetic_batch(model, tok)  # recorded on the CPU, as a rollout would
    meta = copy.deepcopy(model).to("meta")
    m = learner(meta, algo, entropy_coef=0.05).update(trajs)
    assert m["optimizer_steps"] == 1
    assert math.isnan(m["loss_total"])  # the meta device holds no values, and says so
    assert next(meta.parameters()).device.type == "meta"


def test_device_lora_update_on_the_meta_device(tiny) -> None:
    model, tok = tiny
    trajs = synthetic_batch(model, tok, groups=2)
    meta = apply_lora(copy.deepcopy(model), LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))).to("meta")
    assert learner(meta, "grpo").update(trajs)["optimizer_steps"] == 1  # KL to the base: adapters disabled


# ---------------------------------------------------------------- precision: ratio 1 on policy
def on_policy_ratios(model, tok, temperature: float = 1.0) -> tuple[float, float]:
    trajs = synthetic_batch(model, tok, temperature=temperature)
    m = learner(model, "drgrpo", temperature=temperature).update(trajs)
    return m["ratio_min"], m["ratio_max"]


def test_precision_first_on_policy_ratio_is_one_in_fp32_and_bf16(tiny) -> None:
    model, tok = tiny
    lo, hi = on_policy_ratios(copy.deepcopy(model), tok)
    assert 1 - 1e-5 < lo <= hi < 1 + 1e-5
    for build in (lambda: copy.deepcopy(model).to(torch.bfloat16), lambda: qwen2(tok, dtype=torch.bfloat16)):
        bf16 = build()
        lo, hi = on_policy_ratios(bf16, tok)  # generator and learner on the same bf16 weights
        assert 0.99 < lo <= hi < 1.01, (lo, hi)
        assert next(bf16.parameters()).dtype == torch.bfloat16  # the update kept the weights' dtype


def test_precision_candidate_ratio_uses_the_sampling_temperature(tiny) -> None:
    model, tok = tiny
    trajs = synthetic_batch(model, tok, temperature=0.5)
    lo, hi = (learner(copy.deepcopy(model), "drgrpo", temperature=0.5).update(trajs)[k] for k in ("ratio_min", "ratio_max"))
    assert 1 - 1e-5 < lo <= hi < 1 + 1e-5
    lo, hi = (learner(copy.deepcopy(model), "drgrpo", temperature=1.0).update(trajs)[k] for k in ("ratio_min", "ratio_max"))
    assert hi - lo > 1e-3  # scored at the wrong temperature the ratio is off: T is part of the policy


def generated_batch(model, tok, temperature: float, n: int = 4) -> list[Trajectory]:
    """Free-form turns sampled by the generator at ``temperature``: loss units are the sampled tokens."""
    gen = HFGenerator(model, tok)
    prompt = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT).build("Click the button.", PAGE.format(b="Go"), []).ids
    comps = gen.generate([prompt], SamplingParams(temperature=temperature, n=n, seed=1, max_new_tokens=12, stop=()))[0]
    out = []
    for i, c in enumerate(comps):
        tr = Trajectory("t", seed=0, group=0, sample=i)
        tr.turns.append(Turn(
            prompt_ids=prompt, completion_ids=list(c.token_ids), logprobs=list(c.logprobs), action=c.text,
            candidates=[], candidate_ids=[], candidate_index=0, candidate_entropy=0.0, seq_logprob_restricted=c.logprob,
            reward=float(i % 2),
        ))
        out.append(tr)
    return out


def test_precision_generated_tokens_ratio_one_with_logits_divided_by_temperature(tiny) -> None:
    model, tok = tiny
    trajs = generated_batch(model, tok, temperature=0.7)
    batch = make_batch(trajs)
    assert batch.n_units == sum(len(t.completion_ids) for tr in trajs for t in tr.turns)
    m = learner(copy.deepcopy(model), "drgrpo", temperature=0.7).update(trajs)
    assert 1 - 1e-4 < m["ratio_min"] <= m["ratio_max"] < 1 + 1e-4


# ---------------------------------------------------------------- DAPO / Dr. GRPO as the papers mean them
def test_overlong_shaping_reads_the_configured_lengths_and_skips_candidate_turns(tiny) -> None:
    model, tok = tiny
    dapo = get_algorithm("dapo")
    assert overlong_lengths(TrainConfig(max_new_tokens=64), dapo) == (64, 16)
    custom = get_algorithm("dapo", overlong={"max_len": 40, "buffer": 8})
    assert overlong_lengths(TrainConfig(max_new_tokens=64), custom) == (40, 8)
    with pytest.raises(ValueError, match="buffer <= max_len"):
        overlong_lengths(TrainConfig(max_new_tokens=8), get_algorithm("dapo", overlong={"buffer": 16}))

    gen = generated_batch(model, tok, temperature=1.0)
    for tr, n in zip(gen, (12, 48, 60, 70), strict=True):  # lengths around max_len - buffer = 48 and 64
        t = tr.turns[0]
        t.completion_ids, t.logprobs = (t.completion_ids * 10)[:n], (t.logprobs * 10)[:n]
    cand = synthetic_batch(model, tok, groups=1, size=4)  # 12-token candidates: never shaped
    lrn = Learner(copy.deepcopy(model), dapo, norm_length=2, overlong=(64, 16))
    batch, _ = lrn.prepare([*gen, *cand])
    assert batch is not None
    shaped = (batch.rewards - torch.tensor([tr.ret for tr in batch.trajs])).tolist()
    expected = {12: 0.0, 48: 0.0, 60: -0.75, 70: -1.0}
    for tr, pen in zip(batch.trajs, shaped, strict=True):
        want = expected[len(tr.turns[0].completion_ids)] if not tr.turns[0].candidates else 0.0
        assert pen == pytest.approx(want)


def test_overlong_drgrpo_normaliser_is_the_configured_constant(tiny) -> None:
    """Dr. GRPO divides by N_seq * L with L a constant of the run (the tasks' max_steps by default), not by
    the batch's padded width: the loss of the same trajectories scales as 1 / L and nothing else."""
    from agentrl.taskspec import load_task

    specs = [load_task(REPO / "tasks/train/click-button.yaml"), load_task(REPO / "tasks/core/accounts-login.yaml")]
    assert norm_length(TrainConfig(), specs) == max(s.max_steps for s in specs)
    assert norm_length(TrainConfig(norm_length=7), specs) == 7
    model, tok = tiny
    trajs = synthetic_batch(model, tok)
    losses = []
    for L in (2, 4):
        lrn = Learner(copy.deepcopy(model), get_algorithm("drgrpo"), norm_length=L)
        batch, _ = lrn.prepare(trajs)
        losses.append(float(lrn.accumulate(batch)["loss_total"]))
    assert losses[1] == pytest.approx(losses[0] / 2, rel=1e-6)
    # by hand: at ratio 1 the Dr. GRPO pg loss is -sum(A) / (N_seq * L) over the loss units
    lrn = Learner(copy.deepcopy(model), get_algorithm("drgrpo"), norm_length=3)
    batch, _ = lrn.prepare(trajs)
    want = -float((batch.advantages * batch.token_mask).sum()) / (batch.n_seqs * 3)
    assert float(lrn.accumulate(batch)["loss_total"]) == pytest.approx(want, abs=1e-6)


def test_attention_kernels_that_ignore_the_packing_mask_are_refused(tiny) -> None:
    model, _ = tiny
    m = copy.deepcopy(model)
    m.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="cannot take the learner's block-causal packing mask"):
        check_attention(m)


# ---------------------------------------------------------------- LoRA end to end
def test_lora_qwen2_trains_through_the_real_env_and_its_checkpoint_loads(tiny, tmp_path) -> None:
    """A Qwen2-architecture model from a local folder (as a user's would be), LoRA adapters, KL to the base
    (adapters off), gradient checkpointing, bf16-free CPU run: two steps through the real browser env.
    The entropy bonus gives every step a gradient: with two episodes per group a random policy often earns
    equal rewards in every group, and the first step's KL to the base is zero, so the update would not move."""
    import json

    from transformers import AutoModelForCausalLM

    from agentrl.agents import make_agent
    from agentrl.learner.trainer import train

    _, tok = tiny
    base = qwen2(tok, seed=3)
    folder = tmp_path / "qwen2-tiny"
    base.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = TrainConfig(
        tasks=[str(REPO / "tasks/train/click-button.yaml")], model=str(folder), algorithm="grpo", kl_coef=0.05,
        entropy_coef=0.02, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        gradient_checkpointing=True, lr=5e-3, warmup_steps=1, group_size=2, groups_per_step=2, num_envs=4,
        total_steps=2, eval_every=0, eval_episodes=2, checkpoint_every=1, click_roles=("button", "link", "heading"),
        described_actions=True, isolation="storage",
    )
    run = tmp_path / "run"
    summary = train(cfg, run, progress=False)
    assert summary["steps"] == 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "train"]
    assert all(r["optimizer_steps"] == 1 and r["sync_delta"] > 0 for r in steps)  # the generator saw each update
    assert steps[0]["lr"] < steps[1]["lr"] or steps[0]["lr"] == pytest.approx(5e-3)  # warmup, then the schedule
    ckpt = run / "checkpoints" / "last" / "model"
    assert (ckpt / "adapter" / "adapter_model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(ckpt)  # a plain HF folder: merged weights, no LoRA keys
    assert not any("lora" in k for k in merged.state_dict())
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(any(m in k for m in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed)
    agent = make_agent(f"ckpt:{run}")  # evaluation loads the merged folder
    assert agent.mode == "choose"


def test_precision_truncated_is_when_the_behaviour_engine_differs(tiny) -> None:
    """vLLM's numerics differ from the learner's: the ratio is taken against the learner's own log-probs
    before the update, and the loss weighted by min(pi_learner / pi_behaviour, cap)."""
    model, tok = tiny
    trajs = synthetic_batch(model, tok, groups=2)
    true = [t.seq_logprob_restricted for tr in trajs for t in tr.turns]
    shifts = [(-2.0, 0.5, 0.0)[i % 3] for i in range(len(true))]  # behaviour thought: likelier / less / same
    for t, d in zip((t for tr in trajs for t in tr.turns), shifts, strict=True):
        t.seq_logprob_restricted += d
    lrn = learner(copy.deepcopy(model), "drgrpo", tis_cap=2.0)
    batch, _ = lrn.prepare(trajs)
    assert batch is not None and batch.is_weights is not None
    mask = batch.token_mask.bool()
    got_w, got_old = batch.is_weights[mask].tolist(), batch.old_logp[mask].tolist()
    assert got_old == pytest.approx(true, abs=1e-5)  # the ratio's denominator: the learner's own numerics
    assert got_w == pytest.approx([min(math.exp(-d), 2.0) for d in shifts], rel=1e-4)
    m = lrn.update(trajs)
    assert 1 - 1e-5 < m["ratio_min"] <= m["ratio_max"] < 1 + 1e-5 and m["is_weight_mean"] > 0
