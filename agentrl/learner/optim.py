"""The optimiser side of the learner: AdamW on fp32 master weights, and the learning-rate schedule.

Low-precision weights (bf16 on a GPU) keep the learner and the generator in the same numerics, so a
fresh on-policy step has ratio 1; but an AdamW step of ``lr * update`` is below bf16's resolution for most
weights at the learning rates used on pretrained models (1e-6 changes a weight of 0.01 by 1e-8, under the
4e-5 spacing of bf16 there), so stepping bf16 weights directly loses the update. ``MasterAdamW`` keeps an
fp32 copy of every low-precision trainable parameter, steps AdamW on the copies and writes them back
(rounded) into the model. fp32 parameters (the tiny model, LoRA adapters, the value head) are their own
masters.

>>> opt = MasterAdamW([{"params": model_params, "lr": 1e-6}], weight_decay=0.0)    # doctest: +SKIP
>>> loss.backward(); opt.clip_grad_norm(1.0); opt.step(); opt.zero_grad()          # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

SCHEDULES = ("constant", "linear", "cosine")


class MasterAdamW:
    """AdamW over fp32 masters of the given parameter groups (``[{"params": [...], "lr": x}, ...]``)."""

    def __init__(self, groups: list[dict[str, Any]], *, weight_decay: float = 0.0) -> None:
        self.pairs: list[tuple[nn.Parameter, Tensor]] = []
        master_groups = []
        for g in groups:
            masters = []
            for p in g["params"]:
                m = p if p.dtype == torch.float32 else p.detach().float().clone().requires_grad_(True)
                self.pairs.append((p, m))
                masters.append(m)
            master_groups.append({**g, "params": masters})
        self.optimizer = torch.optim.AdamW(master_groups, weight_decay=weight_decay)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def low_precision(self) -> int:
        """How many parameters have an fp32 master copy."""
        return sum(p is not m for p, m in self.pairs)

    def zero_grad(self) -> None:
        for p, m in self.pairs:
            p.grad = None
            m.grad = None

    def clip_grad_norm(self, max_norm: float) -> Tensor:
        """Move the model's grads onto the masters (fp32), then clip them; returns the total norm (a tensor)."""
        for p, m in self.pairs:
            if p is not m:
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        masters = [m for _, m in self.pairs if m.grad is not None]
        if not masters:
            return torch.zeros(())
        return torch.nn.utils.clip_grad_norm_(masters, max_norm)

    @torch.no_grad()
    def step(self) -> None:
        self.optimizer.step()
        for p, m in self.pairs:
            if p is not m:
                p.copy_(m)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "masters": [m for p, m in self.pairs if p is not m]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        low = [(p, m) for p, m in self.pairs if p is not m]
        if len(low) != len(state["masters"]):
            raise ValueError(f"checkpoint has {len(state['masters'])} fp32 masters, the model needs {len(low)}")
        with torch.no_grad():
            for (p, m), saved in zip(low, state["masters"], strict=True):
                m.copy_(saved)
                p.copy_(m)


def lr_lambda(kind: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0):
    """The multiplier of the base learning rate at optimizer step s (0-based): linear warmup over
    ``warmup_steps``, then constant, linear or cosine decay to ``min_ratio`` at ``total_steps``.

    >>> f = lr_lambda("cosine", total_steps=10, warmup_steps=2, min_ratio=0.1)
    >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if kind not in SCHEDULES:
        raise ValueError(f"lr schedule must be one of {SCHEDULES}, not {kind!r}")

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 1.0 - frac if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
        return min_ratio + (1.0 - min_ratio) * decay

    return f


def make_scheduler(
    opt: MasterAdamW, kind: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt.optimizer, lr_lambda(kind, total_steps, warmup_steps, min_ratio))
