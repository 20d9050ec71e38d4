"""From a TrainConfig to the parts of a run: the policy on its device and dtype (LoRA, checkpointing, attention),
its generator, and the constants the learner needs (Dr. GRPO's L, overlong lengths, the IS cap).

>>> model, tok = build_policy(cfg, run_dir)          # doctest: +SKIP
>>> generator = build_generator(cfg, model, tok, run_dir)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agentrl.envs.browser import BrowserEnvConfig
from agentrl.learner.algos import AlgorithmPreset
from agentrl.learner.config import TrainConfig
from agentrl.learner.rollout import RolloutEngine
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.lora import LoraSpec, apply_lora
from agentrl.policy.model import build_tiny_policy, load_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.rewards.router import RouterConfig
from agentrl.taskspec import TaskSpec

DEFAULT_TIS_CAP = 2.0  # TRL's vllm_importance_sampling_cap default


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but torch sees no CUDA GPU (device: auto picks the CPU)")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def build_policy(cfg: TrainConfig, run_dir: Path) -> tuple[nn.Module, Any]:
    """The policy in the config's dtype on its device, with its attention kernel, LoRA adapters and gradient
    checkpointing. ``model: tiny`` is built once into ``run_dir/base-model`` (then reloaded from there)."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.model == "tiny":
        base = run_dir / "base-model"
        if (base / "config.json").exists():
            model, tok = load_policy(base, dtype=dtype, attn_implementation=cfg.attn_implementation)
        else:
            model, tok = build_tiny_policy(base, seed=cfg.model_seed)
            model.set_attn_implementation(cfg.attn_implementation)
            model.to(dtype)
    else:
        model, tok = load_policy(cfg.model, dtype=dtype, attn_implementation=cfg.attn_implementation)
    model.to(device)
    if cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cfg.model != "tiny":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # the generator passes its own cache; training forwards need none
    if cfg.lora is not None:
        spec = LoraSpec(**{k: tuple(v) if k == "target_modules" else v for k, v in cfg.lora.items()})
        model = apply_lora(model, spec)
    model.eval()
    return model, tok


def check_generator(cfg: TrainConfig) -> None:
    """Refuse a generator this machine cannot run before anything is built (a 8B model loads for minutes)."""
    if cfg.generator == "vllm":
        from agentrl.policy.vllm_backend import require_vllm

        require_vllm()


def build_generator(cfg: TrainConfig, model: nn.Module, tok: Any, run_dir: Path) -> Any:
    """``hf``: an HFGenerator on the learner's own model (same weights and numerics, no copy; with
    ``async_rollouts`` a copy, synced after every update). ``vllm``: an
    in-process engine started from a saved folder of the current weights (merged from LoRA)."""
    if cfg.generator == "hf":  # async: its own copy, so rollouts can go on while the learner's weights move
        return HFGenerator(copy.deepcopy(model) if cfg.async_rollouts else model, tok)
    from agentrl.policy.vllm_backend import VLLMGenerator

    return VLLMGenerator.from_model(model, tok, run_dir / "vllm-weights", **cfg.vllm)


def tis_cap(cfg: TrainConfig) -> float | None:
    """The truncated-IS cap: the config's, else on only where generator and learner differ (vLLM)."""
    if cfg.tis_cap is not None:
        return cfg.tis_cap
    return DEFAULT_TIS_CAP if cfg.generator == "vllm" or cfg.async_rollouts else None


def norm_length(cfg: TrainConfig, specs: list[TaskSpec]) -> int:
    """Dr. GRPO's constant L: loss units an episode may have: one per candidate turn, one per generated
    token in free-form mode (the largest max_steps, times max_new_tokens)."""
    if cfg.norm_length is not None:
        return cfg.norm_length
    return max(s.max_steps for s in specs) * (cfg.max_new_tokens if cfg.actions == "free" else 1)


def overlong_lengths(cfg: TrainConfig, algo: AlgorithmPreset) -> tuple[int, int] | None:
    return algo.overlong.resolve(cfg.max_new_tokens) if algo.overlong is not None else None


def make_engine(cfg: TrainConfig, specs: list[TaskSpec], generator: Any) -> RolloutEngine:
    """The rollout engine of a config: its prompt, action space, env settings and reward router. Training,
    held-out evaluation and the offline learners' evaluation all run through it."""
    builder = PromptBuilder(generator.tokenizer, system=cfg.system_prompt, max_prompt_tokens=cfg.max_prompt_tokens,
                            history_k=cfg.history_k)
    return RolloutEngine(
        specs, generator, builder, num_envs=cfg.num_envs, click_roles=cfg.click_roles,
        extra_actions=cfg.extra_actions, observation=cfg.observation, described=cfg.described_actions,
        typing=cfg.typing_candidates, answers=cfg.answer_candidates, actions=cfg.actions,
        max_new_tokens=cfg.max_new_tokens, parse_error_penalty=cfg.parse_error_penalty, pool=cfg.pool_config(),
        env_config=BrowserEnvConfig(
            record=False, keep_episode_dirs=False, action_timeout_ms=20_000, settle_timeout_ms=20_000,
            isolation=cfg.isolation,
            router=RouterConfig.model_validate(cfg.reward_router) if cfg.reward_router else None,
        ),
    )
