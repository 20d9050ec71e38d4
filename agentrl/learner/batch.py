"""Trajectories laid out for the learner: distinct forwards ("keys"), loss units, and micro-batch plans.

A **unit** is one term of the policy loss, with its behaviour log-prob (the log-prob of what was sampled,
under the distribution it was sampled from):

* a *candidate turn* (constrained decoding: the policy sampled one of the offered actions from
  ``softmax(seq_logprob / T)``) is ONE unit; its behaviour log-prob is ``Turn.seq_logprob_restricted``;
* a *generated turn* (free sampling, ``Turn.candidates == []``) has one unit per sampled token; its behaviour
  log-probs are ``Turn.logprobs`` (the tempered token distribution the generator sampled from).

A **key** is one distinct forward: a prompt followed by either all of a turn's candidates (packed behind a
block-causal mask) or the one generated completion. The G samples of a group share their first prompt, so
they share its key. Micro-batches are sets of keys chosen by a token budget (``plan_micro_batches``); every
loss term is divided by counts over the whole batch, so any partition gives the full-batch gradient.

Everything here is built on the CPU from Python values (no host syncs later) and moved to the model's device
once (``Batch.to``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from agentrl.learner.rollout import Trajectory, Turn


@dataclass(frozen=True)
class Key:
    """One distinct forward: ``prompt`` then ``segments`` (candidates, or the single generated completion)."""

    prompt: tuple[int, ...]
    segments: tuple[tuple[int, ...], ...]
    generated: bool  # True: one sampled completion, scored token by token at temperature T

    @property
    def tokens(self) -> int:
        return len(self.prompt) + sum(len(s) for s in self.segments)

    @property
    def outputs(self) -> int:
        """Length of this key's output vector: one log-prob per candidate, or per generated token."""
        return len(self.segments[0]) if self.generated else len(self.segments)


def turn_key(t: Turn) -> Key:
    if t.candidates:
        if t.candidate_ids[t.candidate_index] != t.completion_ids:
            raise ValueError("a turn's completion ids are not its chosen candidate's ids")
        return Key(tuple(t.prompt_ids), tuple(tuple(c) for c in t.candidate_ids), generated=False)
    if len(t.logprobs) != len(t.completion_ids):
        raise ValueError(f"a generated turn has {len(t.completion_ids)} tokens but {len(t.logprobs)} log-probs")
    return Key(tuple(t.prompt_ids), (tuple(t.completion_ids),), generated=True)


def turn_units(t: Turn) -> int:
    return len(t.completion_ids) if not t.candidates else 1


@dataclass
class Batch:
    """B trajectories, K turns max, U loss units max (all turns of a trajectory, concatenated).

    Tensors are (B,), (B, K) or (B, U). ``unit_key``/``unit_out`` say where each unit's current log-prob
    comes from: output ``unit_out`` of key ``unit_key`` (-1 on padding). Counts are Python numbers, known
    without reading a device.
    """

    trajs: list[Trajectory]
    keys: list[Key]
    turn_key: Tensor  # (B, K) long, -1 on padding turns
    key_turns: list[int]  # how many turns use each key (entropy bonus weights)
    rewards: Tensor  # (B,) trajectory returns (after shaping)
    group_ids: Tensor  # (B,) long, dense 0..G-1
    num_groups: int
    turn_rewards: Tensor  # (B, K)
    turn_mask: Tensor  # (B, K)
    token_mask: Tensor  # (B, U) 1 on loss units
    turn_index: Tensor  # (B, U) long, -1 on padding
    unit_key: Tensor  # (B, U) long, -1 on padding
    unit_out: Tensor  # (B, U) long
    old_logp: Tensor  # (B, U) behaviour log-probs
    n_units: int
    n_seqs: int
    n_turns: int
    row_units: Tensor  # (B,) units per trajectory (per-sequence means)
    advantages: Tensor | None = None  # (B, U)
    returns: Tensor | None = None  # (B, U) value targets (critic algorithms)
    old_values: Tensor | None = None  # (B, K)
    ref_logp: Tensor | None = None  # (B, U)
    is_weights: Tensor | None = None  # (B, U) truncated importance weights (generator != learner numerics)

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    @property
    def normalisers(self) -> dict[str, float | Tensor]:
        """Counts over the whole batch for every micro-batch's aggregation (split-invariant loss)."""
        return {"global_tokens": float(self.n_units), "global_seqs": float(self.n_seqs), "row_tokens": self.row_units}


def make_batch(trajs: Sequence[Trajectory]) -> Batch:
    """Lay trajectories out as (B, K) turn tensors and (B, U) unit tensors, with their distinct keys."""
    keys: dict[Key, int] = {}
    B = len(trajs)
    K = max(1, max(len(tr.turns) for tr in trajs))
    U = max(1, max(sum(turn_units(t) for t in tr.turns) for tr in trajs))
    turn_rewards, turn_mask = torch.zeros(B, K), torch.zeros(B, K)
    tkey = torch.full((B, K), -1, dtype=torch.long)
    token_mask, old_logp = torch.zeros(B, U), torch.zeros(B, U)
    turn_index = torch.full((B, U), -1, dtype=torch.long)
    unit_key = torch.full((B, U), -1, dtype=torch.long)
    unit_out = torch.zeros((B, U), dtype=torch.long)
    key_turns: list[int] = []
    for b, tr in enumerate(trajs):
        pos = 0
        for k, t in enumerate(tr.turns):
            key = turn_key(t)
            ki = keys.setdefault(key, len(keys))
            if ki == len(key_turns):
                key_turns.append(0)
            key_turns[ki] += 1
            n = turn_units(t)
            turn_rewards[b, k], turn_mask[b, k], tkey[b, k] = t.reward, 1.0, ki
            sl = slice(pos, pos + n)
            token_mask[b, sl] = 1.0
            turn_index[b, sl] = k
            unit_key[b, sl] = ki
            if t.candidates:
                unit_out[b, pos] = t.candidate_index
                old_logp[b, pos] = t.seq_logprob_restricted
            else:
                unit_out[b, sl] = torch.arange(n)
                old_logp[b, sl] = torch.tensor(t.logprobs)
            pos += n
    group_names: dict[tuple[str, int, int], int] = {}
    gids = [group_names.setdefault((tr.task_id, tr.seed, tr.group), len(group_names)) for tr in trajs]
    row_units = token_mask.sum(1)
    return Batch(
        trajs=list(trajs), keys=list(keys), turn_key=tkey, key_turns=key_turns, rewards=turn_rewards.sum(1),
        group_ids=torch.tensor(gids), num_groups=len(group_names), turn_rewards=turn_rewards, turn_mask=turn_mask,
        token_mask=token_mask, turn_index=turn_index, unit_key=unit_key, unit_out=unit_out, old_logp=old_logp,
        n_units=int(row_units.sum()), n_seqs=int((row_units > 0).sum()), n_turns=int(turn_mask.sum()),
        row_units=row_units,
    )


def plan_micro_batches(keys: Sequence[Key], token_budget: int) -> list[list[int]]:
    """Key indices of each micro-batch: keys sorted by length, each batch at most ``token_budget`` padded
    tokens (``len(batch) * longest``). A key longer than the budget runs alone."""
    order = sorted(range(len(keys)), key=lambda i: -keys[i].tokens)
    plans: list[list[int]] = []
    for i in order:
        if plans and (len(plans[-1]) + 1) * keys[plans[-1][0]].tokens <= token_budget:
            plans[-1].append(i)
        else:
            plans.append([i])
    return plans
