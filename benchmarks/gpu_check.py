#!/usr/bin/env python
"""One script for a GPU machine (no browser, no vLLM, no network needed): is the learner right and fast there?

1. every preset (grpo, drgrpo, dapo, ppo, rloo) updates the tiny policy in bf16 on the device: the first
   on-policy ratio within bf16 noise of 1 (behaviour log-probs from the real HFGenerator), finite loss,
   weights moved, weights still bf16;
2. LoRA (peft) on a tiny Qwen2 in bf16 with KL to the base: only adapters move;
3. scale: Qwen2.5-0.5B- and 1.5B-shaped models (random init, bf16, vocab 151,936), 8 groups x 4 episodes
   x 3 turns, 1,000-token prompts, 40 candidates of 12 tokens, the default TrainConfig settings
   (micro_batch_tokens, gradient checkpointing, sdpa): peak memory and update tokens/s, against the floor, a
   plain Hugging Face forward + backward + AdamW of 8 x 1,480-token rows on the same model.

    python benchmarks/gpu_check.py --out /tmp/gpu                 # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --scale tiny     # the same code paths on a CPU, small shapes

Writes ``gpu_check.json`` and ``gpu_check.md`` (the BENCHMARKS.md table) into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from agentrl.learner.algos import get_algorithm  # noqa: E402
from agentrl.learner.config import TrainConfig  # noqa: E402
from agentrl.learner.synthetic import scored_trajectories, shaped_trajectories  # noqa: E402
from agentrl.learner.update import Learner  # noqa: E402
from agentrl.policy.lora import LoraSpec, apply_lora  # noqa: E402
from agentrl.policy.model import build_tiny_policy  # noqa: E402

SHAPES = {  # Qwen2.5 configs (hidden, layers, heads, kv heads, intermediate), real vocab
    "0.5B": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864),
    "1.5B": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def check_presets(device: torch.device) -> list[dict]:
    base, tok = build_tiny_policy(Path(tempfile.mkdtemp(prefix="tiny-")), seed=0)
    rows = []
    for name in ("grpo", "drgrpo", "dapo", "ppo", "rloo"):
        model = copy.deepcopy(base).to(device=device, dtype=torch.bfloat16)
        trajs = scored_trajectories(model, tok)
        algo = get_algorithm(name, **({"loss_kwargs": {"kl_coef": 0.05}} if name == "grpo" else {}))
        before = [p.detach().clone() for p in model.parameters()]
        lrn = Learner(model, algo, lr=1e-3, norm_length=2, overlong=(64, 16) if algo.overlong else None)
        t0 = time.perf_counter()
        m = lrn.update(trajs)
        sync(device)
        moved = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        ok = (0.99 < m["ratio_min"] <= m["ratio_max"] < 1.01 and torch.isfinite(torch.tensor(m["loss_total"]))
              and moved > 0 and next(model.parameters()).dtype == torch.bfloat16)
        rows.append({"check": f"preset {name}", "ok": bool(ok), "ratio_min": m["ratio_min"], "ratio_max": m["ratio_max"],
                     "params_moved": moved, "update_s": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def check_lora(device: torch.device) -> dict:
    _, tok = build_tiny_policy(Path(tempfile.mkdtemp(prefix="tiny-")), seed=0)
    cfg = Qwen2Config(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True, **SHAPES["tiny"])
    torch.manual_seed(0)
    model = apply_lora(Qwen2ForCausalLM(cfg).to(device=device, dtype=torch.bfloat16), LoraSpec(r=8, alpha=16))
    trajs = scored_trajectories(model, tok)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    m = Learner(model, get_algorithm("grpo"), lr=1e-3, norm_length=2).update(trajs)  # KL to the base
    sync(device)
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    ok = bool(moved) and moved <= names and all("lora_" in n for n in moved) and 0.99 < m["ratio_min"] <= m["ratio_max"] < 1.01
    row = {"check": "lora (qwen2, bf16, KL to base)", "ok": bool(ok), "adapters_moved": len(moved),
           "ratio_min": m["ratio_min"], "ratio_max": m["ratio_max"]}
    print(json.dumps(row), flush=True)
    return row


def scale_run(shape: str, device: torch.device, dims: dict, cfg: TrainConfig) -> dict:
    vocab = 151_936 if shape != "tiny" else 512
    qcfg = Qwen2Config(vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=True, **SHAPES[shape])
    qcfg._attn_implementation = cfg.attn_implementation
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qcfg).to(device=device, dtype=torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trajs = shaped_trajectories(vocab, **dims)
    lrn = Learner(model, get_algorithm(cfg.algorithm), lr=cfg.learning_rate, micro_batch_tokens=cfg.micro_batch_tokens,
                  norm_length=dims["turns"], lr_schedule="constant", warmup_steps=0)
    # behaviour log-probs from the policy itself (a no-grad pass), so the update sees on-policy ratios
    batch, _ = lrn.prepare(trajs)
    assert batch is not None
    with torch.no_grad():
        for plan in lrn._plans(batch):
            lp, hit = lrn._units(batch, plan, lrn._forward(batch, plan))
            batch.old_logp = torch.where(hit, lp, batch.old_logp)
    olds = batch.old_logp.cpu()
    for b, tr in enumerate(trajs):
        for k, t in enumerate(tr.turns):
            t.seq_logprob_restricted = float(olds[b, k])
    lrn.update(trajs)  # warm-up (allocator, kernels)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    m = lrn.update(trajs)
    sync(device)
    wall = time.perf_counter() - t0
    learner = {"peak_gib": peak_gib(device), "update_s": wall, "tokens": m["update_tokens"],
               "tokens_per_s": m["update_tokens"] / wall, "micro_batches": m["micro_batches"],
               "ratio_min": m["ratio_min"], "ratio_max": m["ratio_max"]}
    del lrn, batch
    floor = floor_run(model, device, rows=8, length=dims["prompt_len"] + dims["cands"] * dims["cand_len"],
                      steps=max(1, round(m["update_tokens"] / (8 * (dims["prompt_len"] + dims["cands"] * dims["cand_len"])))))
    row = {"check": f"scale {shape}", "shape": shape, "learner": learner, "floor": floor,
           "ratio_to_floor": learner["tokens_per_s"] / floor["tokens_per_s"]}
    print(json.dumps(row), flush=True)
    del model
    return row


def floor_run(model, device: torch.device, rows: int, length: int, steps: int) -> dict:
    """Plain HF training of the same model: forward + backward + AdamW on (rows, length) batches."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    ids = torch.randint(10, model.config.vocab_size, (rows, length), device=device)
    model.train()

    def step() -> None:
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    wall = time.perf_counter() - t0
    model.eval()
    return {"peak_gib": peak_gib(device), "tokens": rows * length * steps, "tokens_per_s": rows * length * steps / wall}


def markdown(rows: list[dict], device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [f"Device: {name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}", "",
             "| check | result |", "|---|---|"]
    for r in rows:
        if "shape" in r:
            lrn, fl = r["learner"], r["floor"]
            lines.append(
                f"| {r['check']} | learner {lrn['tokens_per_s']:,.0f} tok/s, peak {lrn['peak_gib']:.1f} GiB, "
                f"{lrn['micro_batches']:.0f} micro-batches, ratio {lrn['ratio_min']:.4f}-{lrn['ratio_max']:.4f}; floor "
                f"{fl['tokens_per_s']:,.0f} tok/s, peak {fl['peak_gib']:.1f} GiB; **{r['ratio_to_floor']:.2f}x the floor** |")
        else:
            extra = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items() if k not in ("check", "ok"))
            lines.append(f"| {r['check']} | {'ok' if r['ok'] else 'FAILED'} ({extra}) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--scale", nargs="*", default=None, help="shapes: 0.5B 1.5B (default on cuda) or tiny (cpu)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    device = torch.device(args.device)
    shapes = args.scale if args.scale is not None else (["0.5B", "1.5B"] if device.type == "cuda" else ["tiny"])
    cfg = TrainConfig()  # the defaults a user gets
    dims = dict(groups=8, size=4, turns=3, prompt_len=1000, cands=40, cand_len=12)
    if shapes == ["tiny"]:
        dims.update(groups=2, size=2, prompt_len=100, cands=8, cand_len=6)
    rows = check_presets(device) + [check_lora(device)]
    for shape in shapes:
        rows.append(scale_run(shape, device, dims, cfg))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"device": str(device), "dims": dims, "rows": rows}, indent=2))
    md = markdown(rows, device)
    (args.out / "gpu_check.md").write_text(md)
    print(md)
    return 0 if all(r.get("ok", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
