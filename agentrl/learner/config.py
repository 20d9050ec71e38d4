"""The typed training config: one dataclass, loaded from YAML (unknown keys are errors), saved into the run dir.

>>> cfg = TrainConfig(tasks=["tasks/train/click-button.yaml"], algorithm="drgrpo", total_steps=5)
>>> TrainConfig.from_dict({"tasks": ["x.yaml"], "group_size": 4}).group_size
4
>>> TrainConfig.from_dict({"grop_size": 4})
Traceback (most recent call last):
ValueError: unknown config key 'grop_size' (did you mean 'group_size'?)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentrl.registry import did_you_mean
from agentrl.yamlpos import load_mapping

SHORT_SYSTEM_PROMPT = "You are a web agent. Reply with one action, e.g. click(e12)."


@dataclass
class TrainConfig:
    """Everything a training run needs. Paths are relative to the current directory."""

    # --- what to train on
    tasks: list[str] = field(default_factory=list)  # task files or suite folders (all their tasks)
    train_seeds: tuple[int, int] = (0, 9_999)  # inclusive range the training seeds are drawn from
    eval_seed_start: int = 100_000  # held-out seeds: eval_seed_start, +1, ... (never trained on)
    # --- the policy
    model: str = "tiny"  # "tiny": build the tiny policy locally (no hub); else a path or HF id
    model_seed: int = 0  # init seed of the tiny model
    system_prompt: str = SHORT_SYSTEM_PROMPT
    # "axtree": the ARIA snapshot; "text": goal, URL, title, last action + snapshot; "compact": one
    # `role ref "name"` line per element with a role in click_roles (short prompts; what the tiny recipe uses)
    observation: str = "axtree"
    max_prompt_tokens: int = 1024
    history_k: int = 4  # last k actions in the prompt
    click_roles: tuple[str, ...] = ("button", "link", "heading", "checkbox", "radio", "tab", "menuitem")
    described_actions: bool = False  # clicks as `role "name" -> click(ref)` (see rollout.candidate_actions)
    extra_actions: tuple[str, ...] = ()  # always-offered actions, e.g. ("back()", 'scroll("down")')
    # --- the reward: a RouterConfig mapping (agentrl.rewards.router; mode, reward_model, judge, ...); None: the
    # rules (milestone weights). Every step's audit is in the env's info and trajectory.
    reward_router: dict[str, Any] | None = None
    # --- the algorithm (presets in agentrl.learner.algos.ALGORITHMS)
    algorithm: str = "drgrpo"
    algorithm_overrides: dict[str, Any] = field(default_factory=dict)  # passed to get_algorithm(name, **...)
    entropy_coef: float = 0.05  # bonus on the entropy of the distribution over ALLOWED candidates
    kl_coef: float | None = None  # None: the preset's KL-in-loss coefficient
    # --- rollouts
    group_size: int = 8  # G rollouts per (task, seed) group, same seeded start state
    groups_per_step: int = 16
    num_envs: int = 32  # concurrent browser envs (one Chromium, one event loop)
    # "context": a new browser context per episode; "storage": two per env taking turns, wiped in the
    # background (faster; BrowserEnvConfig.isolation)
    isolation: str = "context"
    temperature: float = 1.0
    # --- optimisation
    lr: float = 3e-4
    value_lr: float = 1e-3  # PPO value head
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    update_epochs: int = 1  # passes over each batch (ratios != 1 from the second pass on)
    micro_batch_groups: int = 8  # groups per micro-batch (gradient accumulation; the loss is split-invariant)
    total_steps: int = 100
    max_minutes: float | None = None  # stop after this much wall time (checkpointed, resumable)
    seed: int = 0
    # --- evaluation and bookkeeping
    eval_every: int = 10  # optimizer steps between held-out evaluations (0: only before and after)
    eval_episodes: int = 64  # held-out episodes per task
    eval_greedy: bool = True  # greedy (argmax over candidates) or sampled at `temperature`
    checkpoint_every: int = 5
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16" on GPU (autocast)
    threads: int = 1  # torch.set_num_threads
    tensorboard: bool = False  # also log to TensorBoard when torch.utils.tensorboard imports
    out_dir: str = "runs/train"

    def __post_init__(self) -> None:
        if self.isolation not in ("context", "storage"):
            raise ValueError(f"isolation must be 'context' or 'storage', not {self.isolation!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ValueError(f"unknown config key {key!r}{did_you_mean(key, tuple(names))}")
        kw = {k: tuple(v) if isinstance(v, list) and k in _TUPLES else v for k, v in data.items()}
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Load a YAML file (a mapping of field names to values); a bad or hostile file is a ValueError
        naming file and line (`agentrl.yamlpos.load_mapping`)."""
        return cls.from_dict(load_mapping(Path(path), "train config"))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_TUPLES = {"train_seeds", "click_roles", "extra_actions"}
