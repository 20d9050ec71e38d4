"""Checkpoints that survive ``kill -9`` and load anywhere a Hugging Face model folder does.

A checkpoint directory holds:

* ``model/``: a Hugging Face model folder (``config.json``, safetensors weights, tokenizer). For a LoRA run
  the weights are merged (base + adapters) and ``model/adapter/`` holds the adapters alone, so the folder
  loads with ``AutoModelForCausalLM.from_pretrained``, vLLM and ``agentrl evaluate --agent hf:.../model``;
* ``learner.pt`` (optimizer with its fp32 masters, LR scheduler, value head), ``rng.pt`` (python / numpy /
  torch RNG states) and ``state.json`` (step, data-sampler state, best held-out success, episodes, seconds).

The frozen reference is not saved: it is the initial policy, rebuilt from the run's base model on resume.
``runs/X/checkpoints/last`` is written to a temp dir, fsynced, then swapped in by renames; ``best`` is a
copy of the checkpoint with the best held-out success.

>>> save_checkpoint(run_dir / "checkpoints" / "last", model, tok, learner, state)    # doctest: +SKIP
>>> state = load_checkpoint(run_dir / "checkpoints" / "last", model, learner)         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agentrl.learner.update import Learner
from agentrl.policy.lora import load_adapter_weights, save_hf_folder


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


def save_checkpoint(path: Path, model: nn.Module, tokenizer: Any, learner: Learner, state: TrainState) -> None:
    """Write the checkpoint next to ``path`` and swap it in with renames (a kill leaves the old one intact)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with _quiet_saving():
        save_hf_folder(model, tokenizer, tmp / "model")
    torch.save(learner.state_dict(), tmp / "learner.pt")
    torch.save(rng_states(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state)))
    for f in tmp.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _quiet_saving() -> Iterator[None]:
    """No "Writing model shards" bar per checkpoint in the run's log (restored after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """``last``, or ``last.old`` if a kill hit between the two renames of a save."""
    for name in ("last", "last.old"):
        p = Path(checkpoints) / name
        if (p / "state.json").exists():
            return p
    return None


def load_checkpoint(path: Path, model: nn.Module, learner: Learner | None = None) -> TrainState:
    """Load the policy's weights (LoRA: its adapters), and with ``learner`` its optimizer etc. and the RNGs."""
    path = Path(path)
    load_policy_weights(model, path / "model")
    if learner is not None:
        learner.load_state_dict(torch.load(path / "learner.pt", weights_only=False, map_location=learner.device))
        set_rng_states(torch.load(path / "rng.pt", weights_only=False))
    return TrainState(**json.loads((path / "state.json").read_text()))


def load_policy_weights(model: nn.Module, folder: Path) -> None:
    """Weights of a saved model folder into ``model`` in place (a LoRA policy takes ``adapter/``)."""
    if hasattr(model, "get_base_model"):
        load_adapter_weights(model, Path(folder) / "adapter")
        return
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint (e.g. ``last`` to ``best``) with the same temp-then-rename safety."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
