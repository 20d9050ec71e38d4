"""Checkpoints that survive ``kill -9``: written to a temp dir, fsynced, then renamed into place.

A checkpoint directory holds ``model.pt`` (policy weights), ``learner.pt`` (optimizer, value head, frozen
reference), ``rng.pt`` (python / numpy / torch RNG states) and ``state.json`` (step, data-sampler state,
best held-out success, episodes and seconds so far). ``runs/X/checkpoints/last`` is replaced atomically at
every save; ``best`` is a copy of the checkpoint with the best held-out success.

>>> save_checkpoint(run_dir / "checkpoints" / "last", model, learner, state)    # doctest: +SKIP
>>> state = load_checkpoint(run_dir / "checkpoints" / "last", model, learner)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agentrl.learner.update import Learner


@dataclass
class TrainState:
    """Where a run is: restored on ``--resume`` so the run continues, not restarts."""

    step: int = 0
    episodes: int = 0
    elapsed_s: float = 0.0
    best_success: float = -1.0
    best_step: int = -1
    sampler: dict[str, Any] = field(default_factory=dict)  # numpy bit-generator state of the seed sampler


def rng_states() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def save_checkpoint(path: Path, model: nn.Module, learner: Learner, state: TrainState) -> None:
    """Write the checkpoint next to ``path`` and swap it in with renames (a kill leaves the old one intact)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "model.pt")
    torch.save(learner.state_dict(), tmp / "learner.pt")
    torch.save(rng_states(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state)))
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """``last``, or ``last.old`` if a kill hit between the two renames of a save."""
    for name in ("last", "last.old"):
        p = Path(checkpoints) / name
        if (p / "state.json").exists():
            return p
    return None


def load_checkpoint(path: Path, model: nn.Module, learner: Learner | None = None) -> TrainState:
    """Load weights (and the learner's optimizer etc. and the RNG states when ``learner`` is given)."""
    path = Path(path)
    model.load_state_dict(torch.load(path / "model.pt", weights_only=True))
    if learner is not None:
        learner.load_state_dict(torch.load(path / "learner.pt", weights_only=False))
        set_rng_states(torch.load(path / "rng.pt", weights_only=False))
    return TrainState(**json.loads((path / "state.json").read_text()))


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint (e.g. ``last`` to ``best``) with the same temp-then-rename safety."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
