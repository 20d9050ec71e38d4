"""Supervised fine-tuning on demonstrations: ``agentrl sft CONFIG`` (an `SFTConfig` YAML).

The demonstrations (`agentrl.learner.demos`): the oracle on ``demo_seeds`` train seeds per task, recorded
through the real env, and/or the successful episodes of ``demo_runs`` (replayed), and/or a ``demo_file``
written by an earlier run. They are saved as ``demos.jsonl`` in the run dir.

The loss is on the action tokens only (``sft_loss``):

* ``tokens``: the mean negative log-likelihood of the completion tokens (the candidate's text and its
  ``<|im_end|>``, or the free-form action), over all completion tokens of the optimizer batch;
* ``candidates`` (candidate mode only): the cross-entropy of the expert's candidate among the turn's
  candidates (``log_softmax`` of their sequence log-probs), the distribution the rollout samples from.

Batches of ``batch_size`` turns, ``epochs`` passes, each batch split into micro-batches by
``micro_batch_tokens`` (the sum of the micro-batch losses is the batch loss, so the gradient does not depend
on the split). Held-out greedy success through the real env before, every ``eval_every`` steps, and after.

    summary = run_sft(SFTConfig.load("configs/sft-named-button.yaml"), Path("runs/sft-named-button"))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agentrl.learner.batch import Key
from agentrl.learner.demos import (
    DemoStats,
    read_demos,
    read_recorded,
    record_demos,
    replay_episodes,
    write_demos,
)
from agentrl.learner.forward import key_forward
from agentrl.learner.offline import OfflineConfig, OfflineRun, action_key, micro_batches, token_logprobs
from agentrl.learner.rollout import Trajectory, Turn
from agentrl.learner.update import train_mode

SFT_LOSSES = ("tokens", "candidates")


@dataclass
class SFTConfig(OfflineConfig):
    demo_seeds: int = 256  # oracle demonstrations per task, on train seeds train_seeds[0] .. +N-1 (0: none)
    demo_runs: list[str] = field(default_factory=list)  # run dirs whose successful episodes are replayed
    demo_file: str | None = None  # a demos.jsonl of an earlier run (ids as recorded: same model and config)
    sft_loss: str = "tokens"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sft_loss not in SFT_LOSSES:
            raise ValueError(f"sft_loss must be one of {SFT_LOSSES}, not {self.sft_loss!r}")


# ---------------------------------------------------------------- the loss
def candidate_key(turn: Turn) -> Key:
    """The forward of a candidate turn: the prompt, then every candidate (packed, block-causal)."""
    return Key(tuple(turn.prompt_ids), tuple(tuple(c) for c in turn.candidate_ids), generated=False)


def sft_loss(model: nn.Module, turns: Sequence[Turn], *, objective: str = "tokens", token_budget: int = 16_384,
             backward: bool = True) -> dict[str, float]:
    """The SFT loss of ``turns`` (backpropagated micro-batch by micro-batch when ``backward``); returns the
    loss and the action-token count. Equal turns share one forward (counted with their multiplicity)."""
    if objective == "candidates" and any(not t.candidates for t in turns):
        raise ValueError("sft_loss 'candidates' needs candidate turns (the demonstrations are free-form)")
    make = candidate_key if objective == "candidates" else action_key
    counts: Counter[tuple[Key, int]] = Counter((make(t), t.candidate_index if objective == "candidates" else 0) for t in turns)
    items = list(counts.items())
    keys = [k for (k, _), _ in items]
    n_tokens = sum(len(t.completion_ids) for t in turns)
    denom = float(len(turns) if objective == "candidates" else n_tokens)
    total = 0.0
    for plan in micro_batches(keys, token_budget):
        with torch.set_grad_enabled(backward):
            if objective == "candidates":
                outs = key_forward(model, [keys[i] for i in plan], temperature=1.0).outputs
                picked = [outs[j][items[i][0][1]] for j, i in enumerate(plan)]
            else:
                picked = [lp.sum() for lp in token_logprobs(model, [keys[i] for i in plan])]
            w = torch.tensor([float(items[i][1]) for i in plan], device=picked[0].device)
            loss: Tensor = -(torch.stack(picked) * w).sum() / denom
            if backward:
                loss.backward()
        total += float(loss.detach())
    return {"loss": total, "action_tokens": float(n_tokens), "turns": float(len(turns))}


# ---------------------------------------------------------------- demonstrations
def gather_demos(run: OfflineRun, cfg: SFTConfig) -> tuple[list[Trajectory], dict[str, Any]]:
    """Every configured source; the demos go to ``run_dir/demos.jsonl``; stats per source."""
    demos: list[Trajectory] = []
    stats: dict[str, Any] = {}
    out = run.run_dir / "demos.jsonl"

    def add(name: str, got: list[Trajectory], st: DemoStats | None) -> None:
        demos.extend(got)
        write_demos(out, got, source=name)
        stats[name] = st.as_dict() if st is not None else {"used": len(got)}
        line = f"demos from {name}: {len(got)} episodes, {sum(len(t.turns) for t in got)} turns"
        if st is not None:
            line += (f" (of {st.episodes}: {st.infra_failures} lost to the infrastructure, {st.unsuccessful} "
                     f"unsuccessful, {st.unmatched} with an action no candidate matches, {st.diverged} diverged)")
        run.echo(line)
        for e in (st.errors if st is not None else [])[:3]:
            run.echo(f"  not used: {e}")

    if cfg.demo_seeds:
        first = cfg.train_seeds[0]
        seeds = range(first, min(first + cfg.demo_seeds, cfg.train_seeds[1] + 1))
        n = len(seeds) * len(run.specs)
        tick = max(1, n // 10)
        got, st = record_demos(cfg, run.tok, run.specs, seeds,
                               on_episode=lambda i: run.echo(f"oracle demos: {i}/{n} episodes") if i % tick == 0 else None)
        add("oracle", got, st)
    if cfg.demo_runs:
        got, st = replay_episodes(cfg, run.tok, run.specs, read_recorded([Path(p) for p in cfg.demo_runs]))
        add("runs", got, st)
    if cfg.demo_file:
        add("file", read_demos(Path(cfg.demo_file)), None)
    if not demos:
        raise ValueError("no demonstrations: set demo_seeds, demo_runs or demo_file (see the counts above)")
    return demos, stats


# ---------------------------------------------------------------- the run
def run_sft(cfg: SFTConfig, run_dir: Path, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """SFT from the config's demonstrations; returns the summary written to ``run_dir/summary.json``."""
    run = OfflineRun(cfg, run_dir, echo=echo)
    try:
        demos, demo_stats = gather_demos(run, cfg)
        turns = [t for d in demos for t in d.turns]
        per_epoch = -(-len(turns) // cfg.batch_size)
        total = cfg.epochs * per_epoch
        run.make_optimizer(total)
        run.state.episodes = len(demos)
        before = run.evaluate()
        rng = np.random.default_rng(cfg.seed)
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(turns))
            for b in range(per_epoch):
                batch = [turns[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
                assert run.optimizer is not None
                run.optimizer.zero_grad()
                with train_mode(run.model):
                    m = sft_loss(run.model, batch, objective=cfg.sft_loss, token_budget=cfg.micro_batch_tokens)
                m.update(run.step_optimizer())
                run.log({"kind": "train", "epoch": epoch, **m})
                run.echo(f"step {run.state.step}/{total} epoch {epoch + 1}: loss {m['loss']:.4f} "
                         f"lr {m['lr']:.2e} grad norm {m['grad_norm']:.3f}")
                if cfg.eval_every and run.state.step % cfg.eval_every == 0 and run.state.step < total:
                    run.evaluate()
                if cfg.checkpoint_every and run.state.step % cfg.checkpoint_every == 0:
                    run.checkpoint()
        after = run.evaluate()
        return run.finish("sft", before, after, demos=demo_stats, demo_turns=len(turns))
    finally:
        run.close()
