"""What the offline learners (`sft`, `dpo`) share with `agentrl train`: the config, the run directory, held-out
success in the real env, the optimiser, checkpoints, and the action tokens' log-probs in micro-batches.

An offline run writes what a training run writes (``config.yaml  metrics.jsonl  checkpoints/{last,best}/
summary.json  reward_curve.png  success_curve.png  base-model/``); ``metrics.jsonl`` has ``kind: train`` rows
(one per optimizer step, with ``loss``) and ``kind: eval`` rows (held-out greedy success before, every
``eval_every`` steps, and after). ``checkpoints/best/model`` is a Hugging Face folder: ``model: <that
folder>`` in a train config starts RL from it.

A turn's log-prob is the sum over its completion (action) tokens only, from the recorded ids: the prompt
and its completion are one row of `forward.key_forward` (prompt ids, then the completion as one segment), so
the prompt's tokens are context and never targets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from agentrl.learner.batch import Key, plan_micro_batches
from agentrl.learner.build import build_policy, make_engine
from agentrl.learner.checkpoint import TrainState, copy_checkpoint, save_checkpoint
from agentrl.learner.config import TrainConfig
from agentrl.learner.forward import check_attention, key_forward
from agentrl.learner.optim import MasterAdamW, make_scheduler
from agentrl.learner.plots import plot_run
from agentrl.learner.rollout import RolloutEngine, Turn
from agentrl.learner.trainer import evaluate, load_tasks
from agentrl.policy.hf_backend import HFGenerator


@dataclass
class OfflineConfig(TrainConfig):
    """A TrainConfig (policy, prompt, actions, eval, optimiser, out_dir) plus the offline loop's own fields.
    ``total_steps`` is not read: an offline run makes ``epochs`` passes over its data."""

    epochs: int = 3
    batch_size: int = 32  # SFT: demonstration turns per optimizer step; DPO: preference pairs per step

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.generator != "hf":
            raise ValueError("offline runs evaluate with the transformers generator: generator must be 'hf'")


# ---------------------------------------------------------------- action log-probs
def action_key(turn: Turn) -> Key:
    """The forward of one turn: its prompt ids, then its completion ids as the one scored segment."""
    return Key(tuple(turn.prompt_ids), (tuple(turn.completion_ids),), generated=True)


def token_logprobs(model: nn.Module, keys: Sequence[Key], *, chunk: int = 1024) -> list[Tensor]:
    """Per key, (len(completion),) log-probs of its completion tokens (temperature 1), with autograd."""
    return key_forward(model, keys, temperature=1.0, chunk=chunk).outputs


def micro_batches(keys: Sequence[Key], token_budget: int) -> list[list[int]]:
    """Key indices per micro-batch (the learner's token-budget plan)."""
    return plan_micro_batches(keys, token_budget)


@torch.no_grad()
def sequence_logprobs(model: nn.Module, keys: Sequence[Key], token_budget: int) -> list[float]:
    """Summed completion log-prob of every key (no grad), micro-batched."""
    out = [0.0] * len(keys)
    was = model.training
    model.eval()
    try:
        for plan in micro_batches(keys, token_budget):
            for i, lp in zip(plan, token_logprobs(model, [keys[i] for i in plan]), strict=True):
                out[i] = float(lp.sum())
    finally:
        model.train(was)
    return out


# ---------------------------------------------------------------- the run
class _OptimState:
    """What `save_checkpoint` stores as ``learner.pt`` for an offline run: optimiser and schedule."""

    def __init__(self, optimizer: MasterAdamW, scheduler: Any) -> None:
        self.optimizer, self.scheduler = optimizer, scheduler

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}


class OfflineRun:
    """The run dir, the policy (build_policy: dtype, device, LoRA), its optimiser, held-out evaluation and
    checkpoints. ``echo`` gets one readable line per event (the CLI prints them: progress in a log)."""

    def __init__(self, cfg: OfflineConfig, run_dir: Path, *, echo: Callable[[str], None] | None = None) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if self.metrics_path.exists():
            raise FileExistsError(f"{self.run_dir} already holds a run (metrics.jsonl); give another out dir")
        cfg.save(self.run_dir / "config.yaml")
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.echo = echo or (lambda _line: None)
        self.specs = load_tasks(list(cfg.tasks))
        self.model, self.tok = build_policy(cfg, self.run_dir)
        check_attention(self.model)
        self.generator = HFGenerator(self.model, self.tok)
        self.engine: RolloutEngine | None = None
        self.state = TrainState()
        self.t0 = time.perf_counter()
        self.optimizer: MasterAdamW | None = None
        self.scheduler: Any = None

    def make_optimizer(self, total_steps: int) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = MasterAdamW([{"params": params, "lr": self.cfg.learning_rate}], weight_decay=self.cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, self.cfg.lr_schedule, total_steps, self.cfg.warmup_steps,
                                        self.cfg.min_lr_ratio)

    def step_optimizer(self) -> dict[str, float]:
        """Clip, step, schedule; the generator follows (it shares the model). Returns lr and grad norm."""
        assert self.optimizer is not None
        norm = float(self.optimizer.clip_grad_norm(self.cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.generator.load_weights(self.model)  # the same module: a version bump
        self.state.step += 1
        return {"grad_norm": norm, "lr": self.scheduler.get_last_lr()[0]}

    def log(self, record: dict[str, Any]) -> None:
        self.state.elapsed_s = time.perf_counter() - self.t0
        row = {"run": self.run_dir.name, "step": self.state.step, "episodes": self.state.episodes,
               "elapsed_s": self.state.elapsed_s, **record}
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def evaluate(self, **extra: float) -> dict[str, float]:
        """Held-out greedy success through the real env (`trainer.evaluate`); keeps the best checkpoint.
        ``extra``: more held-out numbers for the same ``eval`` row (DPO: the held-out pairs' margins)."""
        if self.engine is None:
            self.engine = make_engine(self.cfg, self.specs, self.generator)
        t0 = time.perf_counter()
        ev = {**evaluate(self.engine, self.cfg, self.specs), **extra}
        mode = "greedy" if self.cfg.eval_greedy else "sampled"
        self.log({"kind": "eval", "eval_mode": mode, "eval_s": time.perf_counter() - t0, **ev})
        self.echo(f"eval step {self.state.step}: held-out success ({mode}) {ev['success']:.1%} "
                  f"({ev['eval_infra_failures']:.0f} episodes lost to the infrastructure)")
        if ev["success"] > self.state.best_success:
            self.state.best_success, self.state.best_step = ev["success"], self.state.step
            self.checkpoint()
            copy_checkpoint(self.run_dir / "checkpoints" / "last", self.run_dir / "checkpoints" / "best")
        return ev

    def checkpoint(self) -> None:
        assert self.optimizer is not None
        save_checkpoint(self.run_dir / "checkpoints" / "last", self.model, self.tok,
                        _OptimState(self.optimizer, self.scheduler), self.state)  # type: ignore[arg-type]

    def finish(self, kind: str, before: dict[str, float], after: dict[str, float], **extra: Any) -> dict[str, Any]:
        """Last checkpoint, curves and ``summary.json``; closes the envs."""
        self.checkpoint()
        self.close()
        curves = plot_run(self.run_dir)
        summary = {
            "run_dir": str(self.run_dir), "algorithm": kind, "steps": self.state.step,
            "elapsed_s": time.perf_counter() - self.t0, "eval_mode": "greedy" if self.cfg.eval_greedy else "sampled",
            "success_before": before["success"], "success_after": after["success"],
            "best_success": self.state.best_success, "best_step": self.state.best_step,
            "checkpoint": str(self.run_dir / "checkpoints" / "best" / "model"),
            **extra, "curves": [str(p) for p in curves],
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
