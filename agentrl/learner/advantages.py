"""Advantage estimators: one input record in, token-level advantages out.

Every estimator has the same signature so the trainer never special-cases an algorithm::

    out = ADVANTAGES.get(name)(AdvantageInputs(...), **hparams)   # -> AdvantageOutputs

Shapes: B trajectories, T tokens per (padded) trajectory, K turns per (padded) trajectory. A multi-turn
trajectory is one token sequence in which the policy-generated tokens (``token_mask == 1``) are interleaved
with observation / prompt tokens (``token_mask == 0``); ``turn_index`` says which action (turn) each generated
token belongs to. Advantages are always zero on tokens the policy did not generate.

Outcome estimators (``grpo``, ``drgrpo``, ``rloo``) give one scalar per trajectory and broadcast it to all of
that trajectory's action tokens. ``gae`` works over turns (one action = one step of the MDP) and broadcasts
each turn's advantage to that turn's tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from agentrl.registry import Registry

ADVANTAGES: Registry[Callable[..., AdvantageOutputs]] = Registry("advantage estimator")

__all__ = [
    "ADVANTAGES",
    "AdvantageInputs",
    "AdvantageOutputs",
    "drgrpo",
    "gae",
    "grpo",
    "group_index",
    "group_stats",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "rloo",
    "token_to_turn_sum",
    "turn_to_token",
]


# ---------------------------------------------------------------- records
@dataclass(frozen=True)
class AdvantageInputs:
    """Everything any advantage estimator may need. Fields an estimator does not use may be None.

    rewards:      (B,)   float  trajectory return (outcome reward), used by grpo / drgrpo / rloo
    group_ids:    (B,)   long   trajectories with the same id were sampled from the same prompt/task
    token_mask:   (B, T)        1 on policy-generated (action) tokens, 0 on observation / padding tokens
    turn_rewards: (B, K) float  per-turn rewards (gae); None -> ``rewards`` is put on the last valid turn
    turn_mask:    (B, K)        1 on real turns, 0 on padding turns; None -> derived from ``turn_index``
    values:       (B, K) float  critic value estimate of the state before each turn (gae)
    turn_index:   (B, T) long   turn each token belongs to, -1 for non-action tokens (gae)
    num_groups:   int           when given, ``group_ids`` are already dense 0..num_groups-1 (the learner's
                                batches): no ``torch.unique``, so no host sync on an accelerator
    """

    rewards: Tensor
    group_ids: Tensor
    token_mask: Tensor
    turn_rewards: Tensor | None = None
    turn_mask: Tensor | None = None
    values: Tensor | None = None
    turn_index: Tensor | None = None
    num_groups: int | None = None

    def __post_init__(self) -> None:
        if self.rewards.dim() != 1:
            raise ValueError(f"rewards must be (B,), got {tuple(self.rewards.shape)}")
        b = self.rewards.shape[0]
        if tuple(self.group_ids.shape) != (b,):
            raise ValueError(f"group_ids must be ({b},), got {tuple(self.group_ids.shape)}")
        if self.token_mask.dim() != 2 or self.token_mask.shape[0] != b:
            raise ValueError(f"token_mask must be ({b}, T), got {tuple(self.token_mask.shape)}")
        if self.turn_index is not None and self.turn_index.shape != self.token_mask.shape:
            raise ValueError(
                f"turn_index must match token_mask {tuple(self.token_mask.shape)}, "
                f"got {tuple(self.turn_index.shape)}"
            )
        for name in ("turn_rewards", "turn_mask", "values"):
            t = getattr(self, name)
            if t is not None and (t.dim() != 2 or t.shape[0] != b):
                raise ValueError(f"{name} must be ({b}, K), got {tuple(t.shape)}")


@dataclass(frozen=True)
class AdvantageOutputs:
    """advantages: (B, T), zero where token_mask == 0.  returns: (B, T) value targets (gae only) or None."""

    advantages: Tensor
    returns: Tensor | None = None


# ---------------------------------------------------------------- masked statistics
def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(x * m) / sum(m) over ``dim`` (all elements when None); 0 where the mask is empty.

    Masked-out entries of ``x`` are ignored even when they are inf/nan (selected away, not multiplied by 0).
    """
    m = mask.to(x.dtype)
    xs = torch.where(mask.bool(), x, torch.zeros_like(x))
    if dim is None:
        return xs.sum() / m.sum().clamp_min(1e-8)
    return xs.sum(dim) / m.sum(dim).clamp_min(1e-8)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the valid entries of ``x`` (scalar): sum(m (x - mean)^2) / (n - 1) (Bessel-corrected).

    Returns 0 when fewer than two entries are valid (unbiased) or none are (biased).
    """
    mean = masked_mean(x, mask)
    sq = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        sq = torch.where(n > 1, sq * n / (n - 1).clamp_min(1.0), torch.zeros_like(sq))
    return sq


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) with mean and (unbiased) var over the valid entries only.

    With ``shift_mean=False`` the mean is added back (scale only). Masked-out entries are returned as 0.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    w = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        w = w + mean
    return torch.where(mask.bool(), w, torch.zeros_like(w))


# ---------------------------------------------------------------- group / turn plumbing
def group_index(group_ids: Tensor, num_groups: int | None = None) -> tuple[Tensor, int]:
    """Map arbitrary group ids to 0..G-1: returns (inverse (B,) long, G). Dense ids with a known
    ``num_groups`` are returned as they are."""
    if num_groups is not None:
        return group_ids, num_groups
    _, inverse = torch.unique(group_ids, return_inverse=True)  # (B,)
    return inverse, int(inverse.max().item()) + 1 if inverse.numel() else 0


def group_stats(
    x: Tensor, group_ids: Tensor, num_groups: int | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-trajectory view of its group's statistics.

    Returns, each (B,): group size n_g, group sum, group mean, unbiased group std (0 when n_g < 2),
    and a bool "all rewards in the group are exactly equal" (so zero-variance groups give exactly 0,
    not a float residual divided by eps).
    """
    inv, g = group_index(group_ids, num_groups)  # (B,), G
    counts = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, inv, torch.ones_like(x))  # (G,)
    sums = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, inv, x)  # (G,)
    mean = sums / counts  # (G,)
    sq = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, inv, (x - mean[inv]) ** 2)  # (G,)
    std = torch.where(counts > 1, (sq / (counts - 1).clamp_min(1.0)).sqrt(), torch.zeros_like(sq))  # (G,)
    gmax = torch.full((g,), -torch.inf, dtype=x.dtype, device=x.device).scatter_reduce(0, inv, x, "amax")
    gmin = torch.full((g,), torch.inf, dtype=x.dtype, device=x.device).scatter_reduce(0, inv, x, "amin")
    constant = gmax == gmin  # (G,)
    return counts[inv], sums[inv], mean[inv], std[inv], constant[inv]


def _broadcast_to_tokens(per_traj: Tensor, token_mask: Tensor) -> Tensor:
    """(B,) -> (B, T): the trajectory's scalar on every action token, 0 elsewhere."""
    full = per_traj[:, None].expand(token_mask.shape)  # (B, T)
    return torch.where(token_mask.bool(), full, torch.zeros_like(full))


def turn_to_token(turn_values: Tensor, turn_index: Tensor) -> Tensor:
    """(B, K) per-turn values -> (B, T) per-token values via ``turn_index`` (0 where turn_index == -1)."""
    k = turn_values.shape[1]
    # checked on the CPU only: reading the max back from an accelerator would stall it every call
    if turn_index.device.type == "cpu" and turn_index.numel() and int(turn_index.max()) >= k:
        raise ValueError(f"turn_index refers to turn {int(turn_index.max())} but only K={k} turns are given")
    idx = turn_index.clamp(min=0)  # (B, T)
    out = torch.gather(turn_values, 1, idx)  # (B, T)
    return torch.where(turn_index >= 0, out, torch.zeros_like(out))


def token_to_turn_sum(token_values: Tensor, turn_index: Tensor, num_turns: int) -> Tensor:
    """(B, T) per-token values -> (B, K) per-turn sums (e.g. token KL -> per-turn KL for kl_in_reward)."""
    valid = turn_index >= 0  # (B, T)
    vals = torch.where(valid, token_values, torch.zeros_like(token_values))  # (B, T)
    out = torch.zeros(token_values.shape[0], num_turns, dtype=token_values.dtype, device=token_values.device)
    return out.scatter_add_(1, turn_index.clamp(min=0), vals)  # (B, K)


def _turn_mask_from_index(x: AdvantageInputs, k: int) -> Tensor:
    """(B, K) bool: a turn exists iff at least one action token points at it."""
    assert x.turn_index is not None
    present = ((x.turn_index >= 0) & x.token_mask.bool()).to(torch.long)  # (B, T)
    counts = torch.zeros(x.turn_index.shape[0], k, dtype=torch.long, device=x.turn_index.device)
    return counts.scatter_add_(1, x.turn_index.clamp(min=0), present) > 0  # (B, K)


# ---------------------------------------------------------------- outcome estimators
@ADVANTAGES.register("grpo")
@torch.no_grad()
def grpo(x: AdvantageInputs, *, scale_by_std: bool = True, eps: float = 1e-6) -> AdvantageOutputs:
    """GRPO group-normalised outcome advantage, broadcast to every action token of the trajectory.

        A_i = (r_i - mean_{j in g(i)} r_j) / (std_{j in g(i)} r_j + eps)      (std: unbiased, as torch.std)

    ``scale_by_std=False`` drops the division (= ``drgrpo``). Groups of size 1 and groups whose rewards
    are all equal get exactly 0.
    """
    r = x.rewards  # (B,)
    n, _, mean, std, constant = group_stats(r, x.group_ids, x.num_groups)  # (B,) each
    adv = r - mean  # (B,)
    if scale_by_std:
        adv = adv / (std + eps)
    adv = torch.where((n > 1) & ~constant, adv, torch.zeros_like(adv))  # (B,)
    return AdvantageOutputs(advantages=_broadcast_to_tokens(adv, x.token_mask))


@ADVANTAGES.register("drgrpo")
@torch.no_grad()
def drgrpo(x: AdvantageInputs) -> AdvantageOutputs:
    """Dr. GRPO advantage: A_i = r_i - mean_{j in g(i)} r_j.

    No std scaling (which up-weights groups that are nearly all solved or all failed).

    Dr. GRPO's other half (no per-sequence length normalisation) is the ``seq-mean-token-sum-norm``
    aggregation. Groups of size 1 get 0.
    """
    return grpo(x, scale_by_std=False)


@ADVANTAGES.register("rloo")
@torch.no_grad()
def rloo(x: AdvantageInputs) -> AdvantageOutputs:
    """REINFORCE leave-one-out: A_i = r_i - (1 / (n_g - 1)) * sum_{j in g(i), j != i} r_j.

    Equivalently n_g / (n_g - 1) * (r_i - mean_g). Groups of size 1 (no baseline) get 0.
    """
    r = x.rewards  # (B,)
    n, sums, _, _, constant = group_stats(r, x.group_ids, x.num_groups)  # (B,) each
    baseline = (sums - r) / (n - 1).clamp_min(1.0)  # (B,)
    adv = torch.where((n > 1) & ~constant, r - baseline, torch.zeros_like(r))  # (B,)
    return AdvantageOutputs(advantages=_broadcast_to_tokens(adv, x.token_mask))


# ---------------------------------------------------------------- GAE over turns
@ADVANTAGES.register("gae")
@torch.no_grad()
def gae(
    x: AdvantageInputs, *, gamma: float = 1.0, lam: float = 0.95, whiten: bool = True
) -> AdvantageOutputs:
    """PPO generalised advantage estimation over the TURNS of a multi-turn trajectory.

        delta_k = r_k + gamma * V_{k+1} - V_k           (V_{K} = 0 after the last valid turn)
        A_k     = delta_k + gamma * lam * A_{k+1}
        R_k     = A_k + V_k                              (value targets, from the un-whitened A)

    Turns with ``turn_mask == 0`` are skipped: V_{k+1} and A_{k+1} refer to the next *valid* turn, so holes
    and right padding are both fine. ``whiten=True`` normalises A over all valid turns of the batch to zero
    mean / unit variance. Per-turn A and R are broadcast to the turn's action tokens via ``turn_index``.
    Without ``turn_rewards`` the outcome reward ``rewards`` is placed on each trajectory's last valid turn.
    """
    if x.values is None or x.turn_index is None:
        raise ValueError("gae needs AdvantageInputs.values (B, K) and turn_index (B, T)")
    v_raw = x.values  # (B, K)
    b, k = v_raw.shape
    valid = x.turn_mask.bool() if x.turn_mask is not None else _turn_mask_from_index(x, k)  # (B, K)
    zeros = torch.zeros_like(v_raw)
    v = torch.where(valid, v_raw, zeros)  # (B, K) padding values may be garbage
    if x.turn_rewards is not None:
        r = torch.where(valid, x.turn_rewards.to(v.dtype), zeros)  # (B, K)
    else:
        pos = torch.arange(k, device=v.device).expand(b, k)  # (B, K)
        last = torch.where(valid, pos, torch.full_like(pos, -1)).max(dim=1).values  # (B,)
        r = torch.where((pos == last[:, None]) & valid, x.rewards[:, None].to(v.dtype), zeros)  # (B, K)

    adv = torch.zeros_like(v)  # (B, K)
    next_v = torch.zeros(b, dtype=v.dtype, device=v.device)  # (B,)
    next_a = torch.zeros(b, dtype=v.dtype, device=v.device)  # (B,)
    for t in reversed(range(k)):
        delta = r[:, t] + gamma * next_v - v[:, t]  # (B,)
        a_t = delta + gamma * lam * next_a  # (B,)
        ok = valid[:, t]  # (B,)
        adv[:, t] = torch.where(ok, a_t, adv[:, t])
        next_v = torch.where(ok, v[:, t], next_v)  # skip padding turns
        next_a = torch.where(ok, a_t, next_a)
    returns = torch.where(valid, adv + v, zeros)  # (B, K)
    if whiten:
        adv = masked_whiten(adv, valid)  # (B, K)

    action = x.token_mask.bool() & (x.turn_index >= 0)  # (B, T)
    tok_adv = turn_to_token(adv, x.turn_index)  # (B, T)
    tok_ret = turn_to_token(returns, x.turn_index)  # (B, T)
    tok_adv = torch.where(action, tok_adv, torch.zeros_like(tok_adv))
    tok_ret = torch.where(action, tok_ret, torch.zeros_like(tok_ret))
    return AdvantageOutputs(advantages=tok_adv, returns=tok_ret)
