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

from agentrl.envs.workers import PoolConfig
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
    # weights of the learner AND the generator (same numerics: a fresh on-policy ratio is 1): "auto" is
    # bfloat16 on CUDA, float32 on the CPU. Low-precision weights are stepped through fp32 masters.
    dtype: str = "auto"
    device: str = "auto"  # "auto": cuda when available, else cpu; or "cpu", "cuda", "cuda:1"
    attn_implementation: str = "sdpa"  # "sdpa" or "eager": the packed candidate mask needs a 4D-mask kernel
    gradient_checkpointing: bool | None = None  # None: on for every model but "tiny"
    # LoRA adapters instead of all weights (peft): {r: 16, alpha: 32, dropout: 0.0, target_modules: [...]};
    # the reference for KL is the base model (adapters off), checkpoints hold merged weights + adapter/
    lora: dict[str, Any] | None = None
    # "hf": transformers, sharing the learner's model (no copy); "vllm": in-process vLLM (CUDA), slept
    # during the update, weights synced after every update (merged from LoRA), truncated IS correction
    generator: str = "hf"
    vllm: dict[str, Any] = field(default_factory=dict)  # extra vllm.LLM arguments (gpu_memory_utilization, ...)
    tis_cap: float | None = None  # truncated importance-sampling cap; None: 2.0 with vllm, off with hf
    max_new_tokens: int = 64  # generation budget of a generated turn (DAPO's overlong shaping reads it)
    system_prompt: str = SHORT_SYSTEM_PROMPT
    # "axtree": the ARIA snapshot; "text": goal, URL, title, last action + snapshot; "compact": one
    # `role ref "name"` line per element with a role in click_roles (short prompts; what the tiny recipe uses)
    observation: str = "axtree"
    max_prompt_tokens: int = 1024
    history_k: int = 4  # last k actions in the prompt
    click_roles: tuple[str, ...] = ("button", "link", "heading", "checkbox", "radio", "tab", "menuitem")
    described_actions: bool = False  # candidates as `role "name" -> click(ref)` (see learner.action_space)
    extra_actions: tuple[str, ...] = ()  # always-offered actions, e.g. ("back()", 'scroll("down")')
    # "candidates": the policy samples among the page's valid actions; "free": it writes its reply (up to
    # max_new_tokens) and the env parses it, a reply that is not an action scores parse_error_penalty
    actions: str = "candidates"
    typing_candidates: bool = False  # also fill(box, value) for every text box x goal value, select(option)
    answer_candidates: bool = False  # also done("value") for each value of the goal and the page
    parse_error_penalty: float = 0.0  # free-form: reward added to a turn whose reply does not parse (e.g. -0.1)
    # --- the reward: a RouterConfig mapping (agentrl.rewards.router; mode, reward_model, judge, ...); None: the
    # rules (milestone weights). Every step's audit is in the env's info and trajectory.
    reward_router: dict[str, Any] | None = None
    # --- the algorithm (presets in agentrl.learner.algos.ALGORITHMS)
    algorithm: str = "drgrpo"
    algorithm_overrides: dict[str, Any] = field(default_factory=dict)  # passed to get_algorithm(name, **...)
    entropy_coef: float = 0.0  # bonus on the entropy of the distribution over ALLOWED candidates (tiny: 0.02)
    kl_coef: float | None = None  # None: the preset's KL-in-loss coefficient
    # --- rollouts
    group_size: int = 8  # G rollouts per (task, seed) group, same seeded start state
    groups_per_step: int = 16
    num_envs: int = 32  # concurrent browser envs of the local pool (one Chromium, one event loop)
    # where the envs run (agentrl.envs.workers.PoolConfig): {backend: local | ray, address, workers,
    # cpus_per_worker, max_envs (per worker; local: num_envs), episode_timeout_s, restart_after,
    # restart_above_mb, retries, replace_actor_after, replace_actor_above_mb}; None: the local pool.
    # `agentrl train --ray-address` sets backend and address.
    rollout: dict[str, Any] | None = None
    # "context": a new browser context per episode; "storage": two per env taking turns, wiped in the
    # background (faster; BrowserEnvConfig.isolation)
    isolation: str = "context"
    temperature: float = 1.0
    # rollouts for step k+1 run while the learner updates on step k (a generator with its own copy of the
    # weights, synced after each update); a turn sampled more than max_staleness weight versions before the
    # update it is trained in is dropped with its episode; off-policy turns get the truncated-IS correction
    # (tis_cap, on by default here). hf generator, no LoRA; not across an evaluation or a checkpoint.
    async_rollouts: bool = False
    max_staleness: int = 1
    # --- optimisation. The defaults suit a pretrained 0.5B-8B model (docs/training.md); the tiny recipes
    # (configs/tiny-*.yaml) set their own.
    lr: float | None = None  # None: 1e-6 for all weights, 1e-5 with LoRA
    lr_schedule: str = "cosine"  # "constant", "linear" or "cosine" (to min_lr_ratio * lr at the last step)
    warmup_steps: int = 10  # optimizer steps of linear warmup
    min_lr_ratio: float = 0.1
    value_lr: float = 1e-3  # PPO value head
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    update_epochs: int = 1  # passes over each batch (ratios != 1 from the second pass on)
    # padded tokens per learner forward (gradient accumulation; the loss is split-invariant): bounds memory
    micro_batch_tokens: int = 16_384
    norm_length: int | None = None  # Dr. GRPO's constant L; None: the tasks' largest max_steps (units/episode)
    dynamic_sampling_rounds: int = 3  # DAPO: extra rollout rounds to refill the batch with informative groups
    infra_retries: int = 1  # re-runs of a group that lost an episode to the infrastructure, then it is dropped
    total_steps: int = 100
    max_minutes: float | None = None  # stop after this much wall time (checkpointed, resumable)
    seed: int = 0
    # --- evaluation and bookkeeping
    eval_every: int = 10  # optimizer steps between held-out evaluations (0: only before and after)
    eval_episodes: int = 64  # held-out episodes per task
    eval_greedy: bool = True  # greedy (argmax over candidates) or sampled at `temperature`
    checkpoint_every: int = 5
    threads: int = 1  # torch.set_num_threads
    tensorboard: bool = False  # also log to TensorBoard when torch.utils.tensorboard imports
    out_dir: str = "runs/train"

    def __post_init__(self) -> None:
        checks = [
            ("isolation", ("context", "storage")),
            ("dtype", ("auto", "float32", "bfloat16", "float16")),
            ("attn_implementation", ("sdpa", "eager")),
            ("generator", ("hf", "vllm")),
            ("lr_schedule", ("constant", "linear", "cosine")),
            ("actions", ("candidates", "free")),
        ]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {getattr(self, name)!r}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 for training rollouts (greedy is for evaluation: eval_greedy)")
        if self.micro_batch_tokens < 1 or self.max_new_tokens < 1:
            raise ValueError("micro_batch_tokens and max_new_tokens must be >= 1")
        self.pool_config()  # a bad rollout mapping is an error now, naming the key
        if self.async_rollouts and (self.generator != "hf" or self.lora is not None):
            raise ValueError("async_rollouts needs generator: hf without lora (vLLM sleeps through the update)")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, not {self.max_staleness}")
        if self.lora is not None:
            unknown = set(self.lora) - {"r", "alpha", "dropout", "target_modules", "bias"}
            if unknown:
                raise ValueError(f"lora: unknown keys {sorted(unknown)} (known: r, alpha, dropout, target_modules, bias)")

    def pool_config(self) -> PoolConfig:
        """The rollout pool: ``rollout`` over the defaults, the local pool's max_envs being ``num_envs``."""
        rollout = dict(self.rollout or {})
        if rollout.get("backend", "local") == "local":
            rollout.setdefault("max_envs", self.num_envs)
        return PoolConfig.of(rollout)

    @property
    def learning_rate(self) -> float:
        """``lr``, or its default: 1e-6 for full fine-tuning, 1e-5 for LoRA adapters."""
        return self.lr if self.lr is not None else (1e-5 if self.lora is not None else 1e-6)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key in _RENAMED:
                raise ValueError(f"config key {key!r} was replaced: {_RENAMED[key]}")
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
_RENAMED = {"micro_batch_groups": "use micro_batch_tokens (padded tokens per learner forward, e.g. 16384)"}
