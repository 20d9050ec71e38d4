"""The learner maths: pure tensor functions registered by name, plus the algorithm preset table.

This module is the one the trainer imports. The families live in two sibling modules and are re-exported:

- ``agentrl.learner.advantages``: ``ADVANTAGES`` (grpo, drgrpo, rloo, gae), ``AdvantageInputs/Outputs``,
  ``masked_mean/var/whiten``, ``turn_to_token``, ``token_to_turn_sum``.
- ``agentrl.learner.losses``: ``LOSSES`` (clip, value), ``KL`` (k1, k2, k3), ``AGGREGATIONS`` (token-mean,
  seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm), ``LossInputs/Outputs``,
  ``global_normalisers``.

Here: the data helpers the trainer applies to a batch before the maths (DAPO dynamic sampling and overlong
shaping, PPO KL-in-reward) and ``ALGORITHMS``, a plain table of presets saying which registered functions and
hyper-parameters make up each named algorithm. A training step is the same code for every algorithm::

    algo = get_algorithm(cfg.algorithm)
    adv = ADVANTAGES.get(algo.advantage)(AdvantageInputs(...), **algo.advantage_kwargs)
    out = LOSSES.get(algo.loss)(LossInputs(...), agg=algo.agg, agg_kwargs=norms, **algo.loss_kwargs)
    if algo.value_loss:
        out_v = LOSSES.get(algo.value_loss)(LossInputs(...), agg=algo.agg, agg_kwargs=norms,
                                            **algo.value_kwargs)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from agentrl.learner.advantages import (
    ADVANTAGES,
    AdvantageInputs,
    AdvantageOutputs,
    group_index,
    group_stats,
    masked_mean,
    masked_var,
    masked_whiten,
    token_to_turn_sum,
    turn_to_token,
)
from agentrl.learner.losses import (
    AGGREGATIONS,
    KL,
    LOSSES,
    LossInputs,
    LossOutputs,
    aggregate,
    global_normalisers,
)
from agentrl.registry import did_you_mean

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "ALGORITHMS",
    "KL",
    "LOSSES",
    "AdvantageInputs",
    "AdvantageOutputs",
    "AlgorithmPreset",
    "LossInputs",
    "LossOutputs",
    "OverlongShaping",
    "aggregate",
    "dynamic_sampling_mask",
    "get_algorithm",
    "global_normalisers",
    "group_index",
    "group_stats",
    "kl_in_reward",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "overlong_penalty",
    "token_to_turn_sum",
    "turn_to_token",
]


# ---------------------------------------------------------------- data helpers
def dynamic_sampling_mask(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """DAPO dynamic sampling: (B,) bool, False for every member of a group whose rewards are all equal.

    Such groups have zero group-relative advantage, so they add no gradient but dilute the batch; the trainer
    samples more groups until the batch is full (bounded, ``TrainConfig.dynamic_sampling_rounds``) and the
    learner drops any that remain. Singleton groups are constant, hence False.
    """
    *_, constant = group_stats(rewards.to(torch.float64), group_ids)  # (B,) "all rewards in my group equal"
    return ~constant  # (B,)


def overlong_penalty(lengths: Tensor, *, max_len: int, buffer: int) -> Tensor:
    """DAPO soft overlong punishment, added to the outcome reward. (B,) float in [-1, 0].

        0                               if L <= max_len - buffer
        (max_len - buffer - L) / buffer if max_len - buffer < L <= max_len   (linear from 0 down to -1)
        -1                              if L > max_len

    ``buffer=0`` degenerates to a hard -1 for L > max_len. Scale by a coefficient in the trainer if wanted.
    """
    if buffer < 0 or buffer > max_len:
        raise ValueError(f"need 0 <= buffer <= max_len, got buffer={buffer}, max_len={max_len}")
    length = lengths.to(torch.float32)  # (B,)
    if buffer == 0:
        return torch.where(length > max_len, -1.0, 0.0).to(torch.float32)
    soft = (max_len - buffer - length) / buffer  # (B,)
    return soft.clamp(min=-1.0, max=0.0)


def kl_in_reward(
    turn_rewards: Tensor, kl_per_turn: Tensor, coef: float, turn_mask: Tensor | None = None
) -> Tensor:
    """PPO KL-in-reward shaping: r'_k = r_k - coef * KL_k, per turn. (B, K) -> (B, K).

    ``kl_per_turn`` is typically ``token_to_turn_sum(KL.get("k1")(logp, ref_logp), turn_index, K)``.
    Padding turns (turn_mask == 0) are set to 0.
    """
    shaped = turn_rewards - coef * kl_per_turn.detach()  # (B, K)
    if turn_mask is not None:
        shaped = torch.where(turn_mask.bool(), shaped, torch.zeros_like(shaped))
    return shaped


# ---------------------------------------------------------------- presets
def _frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class OverlongShaping:
    """DAPO soft overlong punishment of a GENERATED turn: reward += coef * overlong_penalty(L, max_len, buffer).

    ``max_len`` None: the run's generation budget per turn (``TrainConfig.max_new_tokens``); ``buffer`` None:
    a quarter of ``max_len`` (DAPO: 4,096 of 20,480). Candidate turns (constrained decoding) are never
    shaped: the length of an offered action is not the policy's choice.
    """

    max_len: int | None = None
    buffer: int | None = None
    coef: float = 1.0

    def resolve(self, max_new_tokens: int) -> tuple[int, int]:
        """(max_len, buffer) for a run whose turns generate at most ``max_new_tokens`` tokens."""
        max_len = self.max_len if self.max_len is not None else max_new_tokens
        buffer = self.buffer if self.buffer is not None else max_len // 4
        if not 0 <= buffer <= max_len:
            raise ValueError(f"overlong shaping needs 0 <= buffer <= max_len, got buffer={buffer}, max_len={max_len}")
        return max_len, buffer


@dataclass(frozen=True)
class AlgorithmPreset:
    """Which registered functions and hyper-parameters make up a named algorithm (data, not code).

    advantage / loss / value_loss: names in ADVANTAGES / LOSSES;  agg: name in AGGREGATIONS, used by every
    loss term. The trainer passes ``norm_tokens`` (its max generation length) and ``global_normalisers`` in
    ``agg_kwargs`` for every aggregation; the ones that do not need them ignore them.
    kl_in_reward_coef: PPO-style KL penalty folded into per-turn rewards (0 = off), estimated with
    ``kl_in_reward_estimator``. KL-in-loss lives in ``loss_kwargs`` (kl_coef, kl_estimator).
    """

    name: str
    advantage: str
    loss: str = "clip"
    agg: str = "token-mean"
    advantage_kwargs: Mapping[str, Any] = field(default_factory=_frozen)
    loss_kwargs: Mapping[str, Any] = field(default_factory=_frozen)
    value_loss: str | None = None
    value_kwargs: Mapping[str, Any] = field(default_factory=_frozen)
    vf_coef: float = 0.0
    dynamic_sampling: bool = False
    overlong: OverlongShaping | None = None
    kl_in_reward_coef: float = 0.0
    kl_in_reward_estimator: str = "k1"

    def __post_init__(self) -> None:
        ADVANTAGES.get(self.advantage)
        LOSSES.get(self.loss)
        AGGREGATIONS.get(self.agg)
        if self.value_loss is not None:
            LOSSES.get(self.value_loss)
        KL.get(self.kl_in_reward_estimator)
        for name in ("advantage_kwargs", "loss_kwargs", "value_kwargs"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def uses_critic(self) -> bool:
        return self.value_loss is not None


ALGORITHMS: dict[str, AlgorithmPreset] = {
    p.name: p
    for p in (
        AlgorithmPreset(
            name="grpo",
            advantage="grpo",
            advantage_kwargs={"scale_by_std": True, "eps": 1e-6},
            loss_kwargs={"clip_low": 0.2, "clip_high": 0.2, "kl_coef": 0.04, "kl_estimator": "k3"},
            agg="seq-mean-token-mean",
        ),
        AlgorithmPreset(
            name="drgrpo",
            advantage="drgrpo",
            loss_kwargs={"clip_low": 0.2, "clip_high": 0.2, "kl_coef": 0.0},
            agg="seq-mean-token-sum-norm",
        ),
        AlgorithmPreset(
            name="dapo",
            advantage="grpo",
            advantage_kwargs={"scale_by_std": True, "eps": 1e-6},
            loss_kwargs={"clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.0},
            agg="token-mean",
            dynamic_sampling=True,
            overlong=OverlongShaping(coef=1.0),
        ),
        AlgorithmPreset(
            name="ppo",
            advantage="gae",
            advantage_kwargs={"gamma": 1.0, "lam": 0.95, "whiten": True},
            loss_kwargs={"clip_low": 0.2, "clip_high": 0.2, "kl_coef": 0.0},
            agg="token-mean",
            value_loss="value",
            value_kwargs={"cliprange_value": 0.2},
            vf_coef=0.5,
            kl_in_reward_coef=0.001,
            kl_in_reward_estimator="k1",
        ),
        AlgorithmPreset(
            name="rloo",
            advantage="rloo",
            loss_kwargs={"clip_low": 0.2, "clip_high": 0.2, "kl_coef": 0.0},
            agg="token-mean",
        ),
    )
}


def get_algorithm(name: str, **overrides: Any) -> AlgorithmPreset:
    """The preset ``name`` (KeyError with "did you mean") with fields replaced by ``overrides``.

    Mapping fields are merged, not replaced: ``get_algorithm("grpo", loss_kwargs={"kl_coef": 0.0})`` keeps the
    other loss hparams. Overriding a function name (``advantage="rloo"``) drops the preset's hparams for the
    old function, since they may not apply to the new one.
    """
    try:
        base = ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm '{name}'{did_you_mean(name, tuple(ALGORITHMS))}") from None
    for fn_key, kw_key in (
        ("advantage", "advantage_kwargs"),
        ("loss", "loss_kwargs"),
        ("value_loss", "value_kwargs"),
    ):
        same_fn = overrides.get(fn_key, getattr(base, fn_key)) == getattr(base, fn_key)
        inherited = dict(getattr(base, kw_key)) if same_fn else {}
        if kw_key in overrides or not same_fn:
            overrides[kw_key] = {**inherited, **overrides.get(kw_key, {})}
    if isinstance(overrides.get("overlong"), Mapping):  # from a YAML config: {max_len, buffer, coef}
        overrides["overlong"] = OverlongShaping(**overrides["overlong"])
    return dataclasses.replace(base, **overrides)
