"""Policy / value losses, KL estimators and loss aggregations, each looked up by name.

One signature per family:

    KL.get(name)(logp, ref_logp) -> Tensor                                         elementwise
    AGGREGATIONS.get(name)(values, mask, *, norm_tokens=None, global_tokens=None, global_seqs=None) -> scalar
    LOSSES.get(name)(LossInputs(...), *, agg="token-mean", agg_kwargs=None, **hparams) -> LossOutputs

Gradient accumulation: an aggregation normally divides by counts of the tensor it is given, so averaging
micro-batch losses is NOT the full-batch loss (token-mean weights micro-batches by 1/#micro-batches instead of
by their token counts; seq-mean-* likewise for sequences). Pass ``global_normalisers(full_minibatch_mask)`` as
``agg_kwargs`` to every micro-batch: each aggregation then returns (micro-batch sum) / (global count), so
SUMMING the micro-batch losses (``loss.backward()`` on each, no division by the number of micro-batches)
gives exactly the full-batch loss and gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from agentrl.learner.advantages import masked_mean
from agentrl.registry import Registry

Count = int | float | Tensor | None

KL: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("kl estimator")
AGGREGATIONS: Registry[Callable[..., Tensor]] = Registry("loss aggregation")
LOSSES: Registry[Callable[..., LossOutputs]] = Registry("policy loss")

__all__ = [
    "AGGREGATIONS",
    "KL",
    "LOSSES",
    "LossInputs",
    "LossOutputs",
    "aggregate",
    "clip",
    "global_normalisers",
    "k1",
    "k2",
    "k3",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
    "token_mean",
    "value",
]


# ---------------------------------------------------------------- KL estimators
# Samples come from the current policy p; each estimates KL(p || ref) (Schulman, "Approximating KL").
@KL.register("k1")
def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log p - log ref. Unbiased, high variance, can be negative."""
    return logp - ref_logp


@KL.register("k2")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (log p - log ref)^2. Biased, low variance, >= 0."""
    return 0.5 * (logp - ref_logp) ** 2


@KL.register("k3")
def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(d) - d - 1 with d = log ref - log p. Unbiased, low variance, >= 0 (verl's ``low_var_kl``).

    As in verl, d is clamped to [-20, 20] and the result to [-10, 10] so one outlier token cannot blow up.
    """
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


# ---------------------------------------------------------------- aggregations
def _masked(values: Tensor, mask: Tensor) -> Tensor:
    """values with masked-out entries replaced by 0 (selected away, so inf/nan there cannot leak)."""
    return torch.where(mask.bool(), values, torch.zeros_like(values))


def _num_seqs(mask: Tensor) -> Tensor:
    """Number of sequences with at least one valid token (empty rows are not counted by any aggregation)."""
    return (mask.bool().sum(-1) > 0).sum()


def _div(total: Tensor, count: Count, fallback: Tensor) -> Tensor:
    denom = fallback if count is None else torch.as_tensor(count, dtype=total.dtype, device=total.device)
    return total / denom.to(total.dtype).clamp_min(1e-8)


@AGGREGATIONS.register("token-mean")
def token_mean(
    values: Tensor,
    mask: Tensor,
    *,
    norm_tokens: float | None = None,
    global_tokens: Count = None,
    global_seqs: Count = None,
    row_tokens: Tensor | None = None,
) -> Tensor:
    """DAPO token-level mean: sum_{b,t} m*v / N_tok, N_tok = ``global_tokens`` or sum(m).

    Every token weighs the same, whatever the length of its sequence.
    """
    total = _masked(values, mask).sum()  # ()
    return _div(total, global_tokens, mask.bool().sum())


@AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(
    values: Tensor,
    mask: Tensor,
    *,
    norm_tokens: float | None = None,
    global_tokens: Count = None,
    global_seqs: Count = None,
    row_tokens: Tensor | None = None,
) -> Tensor:
    """Original GRPO: mean over sequences of the per-sequence token mean.

        (1 / N_seq) * sum_b [ sum_t m*v / sum_t m ],   N_seq = ``global_seqs`` or #non-empty sequences

    Every sequence weighs the same, so tokens of short sequences weigh more (the length bias that
    Dr. GRPO removes). ``row_tokens`` (B,): each sequence's token count over the whole batch, for a
    micro-batch whose mask holds only part of a sequence's tokens.
    """
    per_tok = mask.bool().sum(-1) if row_tokens is None else row_tokens  # (B,)
    seq = _masked(values, mask).sum(-1) / per_tok.clamp_min(1).to(values.dtype)  # (B,) empty rows -> 0
    return _div(seq.sum(), global_seqs, _num_seqs(mask))


@AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(
    values: Tensor,
    mask: Tensor,
    *,
    norm_tokens: float | None = None,
    global_tokens: Count = None,
    global_seqs: Count = None,
    row_tokens: Tensor | None = None,
) -> Tensor:
    """Mean over sequences of the per-sequence token SUM: (1 / N_seq) * sum_b sum_t m*v."""
    seq = _masked(values, mask).sum(-1)  # (B,)
    return _div(seq.sum(), global_seqs, _num_seqs(mask))


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(
    values: Tensor,
    mask: Tensor,
    *,
    norm_tokens: float | None = None,
    global_tokens: Count = None,
    global_seqs: Count = None,
    row_tokens: Tensor | None = None,
) -> Tensor:
    """Dr. GRPO: sum_{b,t} m*v / (N_seq * L), L a CONSTANT (``norm_tokens``, e.g. the max generation length).

    Unlike a per-sequence mean, long and short answers are not re-weighted by their length. ``norm_tokens``
    defaults to the padded width T, which is only constant if every batch is padded to the same width; with
    ``global_seqs`` (gradient accumulation) it is therefore required.
    """
    if norm_tokens is None:
        if global_seqs is not None:
            raise ValueError("seq-mean-token-sum-norm with global_seqs needs a constant norm_tokens")
        norm_tokens = float(mask.shape[-1])
    total = _masked(values, mask).sum()  # ()
    return _div(total, global_seqs, _num_seqs(mask)) / float(norm_tokens)


def global_normalisers(mask: Tensor) -> dict[str, float | Tensor]:
    """Counts over a whole mini-batch, to pass as ``agg_kwargs`` to each of its micro-batches.

    {"global_tokens": #valid tokens, "global_seqs": #sequences with >= 1 valid token, "row_tokens": (B,)
    valid tokens per sequence: a micro-batch of rows takes its slice}. With data parallelism, all-reduce (sum) the first two over ranks and
    multiply each rank's loss by the world size (DDP averages grads).
    """
    m = mask.bool()
    return {"global_tokens": float(m.sum()), "global_seqs": float(_num_seqs(m)), "row_tokens": m.sum(-1)}


def aggregate(name: str, values: Tensor, mask: Tensor, **kwargs: Any) -> Tensor:
    """AGGREGATIONS.get(name)(values, mask, **kwargs)."""
    return AGGREGATIONS.get(name)(values, mask, **kwargs)


# ---------------------------------------------------------------- loss records
@dataclass(frozen=True)
class LossInputs:
    """All per-token tensors any loss may need, each (B, T). Optional fields are None when unused.

    logp: log-prob of the taken tokens under the current policy (requires grad)
    old_logp: under the behaviour policy that sampled them;  advantages: from an advantage estimator
    mask: 1 on policy-generated tokens (the loss is computed on these only)
    ref_logp: reference policy (KL-in-loss);  entropy: current policy's token entropy (entropy bonus)
    values / old_values / returns: critic outputs now / at sampling time, and value targets (value loss)
    is_weights: truncated importance weights pi_learner_old / pi_behaviour (capped, detached) when the
    tokens were sampled by an engine whose numerics differ from the learner's (vLLM); multiply the policy term
    """

    logp: Tensor
    old_logp: Tensor
    advantages: Tensor
    mask: Tensor
    ref_logp: Tensor | None = None
    entropy: Tensor | None = None
    values: Tensor | None = None
    old_values: Tensor | None = None
    returns: Tensor | None = None
    is_weights: Tensor | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.mask.shape)
        if len(shape) != 2:
            raise ValueError(f"mask must be (B, T), got {shape}")
        for name in (
            "logp",
            "old_logp",
            "advantages",
            "ref_logp",
            "entropy",
            "values",
            "old_values",
            "returns",
            "is_weights",
        ):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"LossInputs.{name} must be {shape} like mask, got {tuple(t.shape)}")


@dataclass(frozen=True)
class LossOutputs:
    """loss: scalar to backward.  metrics: detached 0-d tensors (``float()`` them to log), means over THIS
    (micro-)batch's valid tokens; they stay on the loss's device so a micro-batch costs no host sync."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def _require(x: LossInputs, *names: str, loss: str) -> None:
    missing = [n for n in names if getattr(x, n) is None]
    if missing:
        raise ValueError(f"loss '{loss}' needs LossInputs.{', '.join(missing)}")


def _metric(t: Tensor) -> Tensor:
    """A detached fp32 0-d tensor: metrics stay on the device (no host sync per micro-batch)."""
    return t.detach().float()


# ---------------------------------------------------------------- policy loss
@LOSSES.register("clip")
def clip(
    x: LossInputs,
    *,
    agg: str = "token-mean",
    agg_kwargs: Mapping[str, Any] | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy_coef: float = 0.0,
) -> LossOutputs:
    """PPO / GRPO / DAPO clipped surrogate, with optional dual clip, KL-in-loss and entropy bonus.

        rho_t  = exp(logp_t - old_logp_t)
        pg_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - clip_low, 1 + clip_high))
        pg_t   = min(pg_t, -A_t * clip_c)        if clip_c is set and A_t < 0     (dual clip, clip_c > 1)
        pg_t   = w_t * pg_t                      if is_weights w are given (truncated IS, detached)
        l_t    = pg_t + kl_coef * KL_t(logp, ref_logp) - entropy_coef * H_t
        loss   = AGG(l, mask)

    ``clip_high > clip_low`` is DAPO's clip-higher. Masked-out tokens get rho = 1 and contribute nothing (not
    even nan/inf). Metrics: pg_loss, pg_clipfrac (and pg_clipfrac_lower with dual clip), approx_kl
    (k3 estimate of KL(old || new)), kl_ref, kl_loss, entropy, ratio_mean, ratio_min, ratio_max, loss.
    """
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"dual-clip clip_c must be > 1, got {clip_c}")
    if kl_coef:
        _require(x, "ref_logp", loss="clip with kl_coef > 0")
    if entropy_coef:
        _require(x, "entropy", loss="clip with entropy_coef > 0")
    kw = dict(agg_kwargs or {})
    m = x.mask.bool()  # (B, T)
    a = x.advantages.detach()  # (B, T)
    log_ratio = torch.where(m, x.logp - x.old_logp.detach(), torch.zeros_like(x.logp)).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg1 = -a * ratio  # (B, T)
    pg2 = -a * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    pg = torch.maximum(pg1, pg2)  # (B, T)
    metrics: dict[str, Tensor] = {"pg_clipfrac": _metric(masked_mean((pg2 > pg1).to(pg.dtype), m))}
    if clip_c is not None:
        pg3 = -a * clip_c  # (B, T)
        lower = (a < 0) & (pg3 < pg)  # (B, T)
        pg = torch.where(a < 0, torch.minimum(pg, pg3), pg)
        metrics["pg_clipfrac_lower"] = _metric(masked_mean(lower.to(pg.dtype), m))
    if x.is_weights is not None:  # truncated importance sampling: behaviour engine != learner numerics
        pg = pg * x.is_weights.detach()  # (B, T)
        metrics["is_weight_mean"] = _metric(masked_mean(x.is_weights, m))

    per_token = pg  # (B, T)
    pg_loss = aggregate(agg, pg, m, **kw)
    metrics["pg_loss"] = _metric(pg_loss)
    if x.ref_logp is not None:
        ref = x.ref_logp.detach()
        kl = KL.get(kl_estimator)(torch.where(m, x.logp, ref), ref)  # (B, T), 0 on masked tokens
        metrics["kl_ref"] = _metric(masked_mean(kl, m))
        if kl_coef:
            per_token = per_token + kl_coef * kl
            metrics["kl_loss"] = _metric(aggregate(agg, kl, m, **kw))
    if x.entropy is not None:
        ent = torch.where(m, x.entropy, torch.zeros_like(x.entropy))  # (B, T)
        metrics["entropy"] = _metric(masked_mean(ent, m))
        if entropy_coef:
            per_token = per_token - entropy_coef * ent
    loss = pg_loss if per_token is pg else aggregate(agg, per_token, m, **kw)

    with torch.no_grad():
        metrics["approx_kl"] = _metric(masked_mean(k3(x.old_logp, torch.where(m, x.logp, x.old_logp)), m))
        metrics["ratio_mean"] = _metric(masked_mean(ratio, m))
        top = torch.where(m, ratio, torch.full_like(ratio, -torch.inf)).amax()
        low = torch.where(m, ratio, torch.full_like(ratio, torch.inf)).amin()
        metrics["ratio_max"] = _metric(torch.where(m.any(), top, torch.ones_like(top)))
        metrics["ratio_min"] = _metric(torch.where(m.any(), low, torch.ones_like(low)))
    metrics["loss"] = _metric(loss)
    return LossOutputs(loss=loss, metrics=metrics)


# ---------------------------------------------------------------- value loss
@LOSSES.register("value")
def value(
    x: LossInputs,
    *,
    agg: str = "token-mean",
    agg_kwargs: Mapping[str, Any] | None = None,
    cliprange_value: float | None = 0.2,
) -> LossOutputs:
    """PPO clipped value loss (needs values, old_values, returns):

        V_clip = V_old + clip(V - V_old, -cv, cv)
        l_t    = 0.5 * max((V - R)^2, (V_clip - R)^2)          (0.5 * (V - R)^2 when cliprange_value is None)
        loss   = AGG(l, mask)

    Metrics: vf_loss, vf_clipfrac (fraction of tokens where the clipped term is the larger), vpred_mean.
    """
    _require(x, "values", "old_values", "returns", loss="value")
    assert x.values is not None and x.old_values is not None and x.returns is not None
    m = x.mask.bool()  # (B, T)
    v = torch.where(m, x.values, torch.zeros_like(x.values))  # (B, T)
    v_old = torch.where(m, x.old_values.detach(), torch.zeros_like(v))  # (B, T)
    ret = torch.where(m, x.returns.detach(), torch.zeros_like(v))  # (B, T)
    vf1 = (v - ret) ** 2  # (B, T)
    if cliprange_value is None:
        vf = vf1
        clipfrac = torch.zeros((), dtype=v.dtype)
    else:
        v_clip = v_old + (v - v_old).clamp(-cliprange_value, cliprange_value)  # (B, T)
        vf2 = (v_clip - ret) ** 2  # (B, T)
        vf = torch.maximum(vf1, vf2)
        clipfrac = masked_mean((vf2 > vf1).to(v.dtype), m)
    loss = aggregate(agg, 0.5 * vf, m, **dict(agg_kwargs or {}))
    metrics = {"vf_loss": _metric(loss), "vf_clipfrac": _metric(clipfrac), "vpred_mean": _metric(masked_mean(v, m))}
    return LossOutputs(loss=loss, metrics=metrics)
