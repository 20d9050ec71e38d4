"""The policy update: trajectories -> batch tensors -> advantages -> clipped loss (+ value, + entropy) -> grads.

Every turn is one sequence ``prompt_ids + completion_ids`` (the recorded ids, concatenated, never
re-tokenised). The loss sits on the completion tokens only. The turn's other candidates ride along in the
same row: the prompt is run once and all candidates are packed after it behind a block-causal mask (the
generator's "packed" scoring, with gradients), so one forward per distinct prompt gives

* the token log-probs of the chosen completion (for the ratio / policy gradient),
* the sequence log-prob of every allowed candidate, hence the entropy of the candidate distribution
  (the entropy bonus covers the ALLOWED actions only, not the whole vocabulary),
* the hidden state after the prompt, read by the PPO value head.

The G samples of a group share their prompt, so they share that forward. Micro-batches hold whole groups;
every loss term is normalised by counts over the whole batch (``global_normalisers``), so the summed
micro-batch gradients equal the full-batch gradient for any split.

>>> learner = Learner(model, tokenizer, get_algorithm("drgrpo"), lr=3e-4)       # doctest: +SKIP
>>> metrics = learner.update(trajectories)                                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from agentrl.learner.algos import (
    ADVANTAGES,
    KL,
    LOSSES,
    AdvantageInputs,
    AlgorithmPreset,
    LossInputs,
    dynamic_sampling_mask,
    global_normalisers,
    kl_in_reward,
    masked_mean,
    overlong_penalty,
    token_to_turn_sum,
    turn_to_token,
)
from agentrl.learner.rollout import Trajectory

Key = tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]  # (prompt ids, candidate ids)


# ---------------------------------------------------------------- one packed forward per distinct prompt
@dataclass
class Packed:
    """Scores of one prompt's candidates. token_logps[c]: (L_c,); seq_logps: (C,); value: () or None."""

    token_logps: list[Tensor]
    seq_logps: Tensor
    value: Tensor | None


def packed_forward(model: nn.Module, key: Key, value_head: nn.Module | None = None) -> Packed:
    """Run ``prompt + cand_0 + cand_1 + ...`` as ONE row; each candidate sees the prompt and itself only.

    Positions restart at len(prompt) for every candidate, as if each followed the prompt alone. The
    vocabulary projection runs only on the rows that predict candidate tokens.
    """
    prompt, cands = key
    dev = next(model.parameters()).device
    Tp, S = len(prompt), sum(len(c) for c in cands)
    flat = torch.tensor([t for c in cands for t in c], device=dev)  # (S,)
    seg = torch.repeat_interleave(torch.arange(len(cands)), torch.tensor([len(c) for c in cands]))  # (S,)
    offs = torch.cat([torch.arange(len(c)) for c in cands])  # (S,)
    causal = torch.ones((Tp, Tp), dtype=torch.bool).tril()  # (Tp, Tp)
    block = (seg[:, None] == seg[None, :]) & (offs[None, :] <= offs[:, None])  # (S, S)
    allowed = torch.cat(
        [
            torch.cat([causal, torch.zeros((Tp, S), dtype=torch.bool)], dim=1),
            torch.cat([torch.ones((S, Tp), dtype=torch.bool), block], dim=1),
        ]
    )  # (Tp+S, Tp+S)
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    ids = torch.cat([torch.tensor(prompt, device=dev), flat])[None]  # (1, Tp+S)
    pos = torch.cat([torch.arange(Tp), offs + Tp])[None].to(dev)  # (1, Tp+S)
    base = getattr(model, model.base_model_prefix)
    hidden = base(input_ids=ids, attention_mask=mask[None, None].to(dev), position_ids=pos).last_hidden_state[0]
    # the row predicting candidate token j: the last prompt token for j = 0, else the candidate's token j-1
    starts = torch.cumsum(torch.tensor([0] + [len(c) for c in cands[:-1]]), 0)  # (C,)
    pred_rows = torch.where(offs == 0, torch.full_like(offs, Tp - 1), Tp + torch.arange(S) - 1).to(dev)  # (S,)
    logits = model.get_output_embeddings()(hidden[pred_rows]).float()  # (S, V)
    tok_lp = torch.log_softmax(logits, dim=-1).gather(-1, flat[:, None])[:, 0]  # (S,)
    token_logps = [tok_lp[s : s + len(c)] for s, c in zip(starts.tolist(), cands, strict=True)]
    seq = torch.stack([x.sum() for x in token_logps])  # (C,)
    value = value_head(hidden[Tp - 1].detach().float())[0] if value_head is not None else None
    return Packed(token_logps, seq, value)


# ---------------------------------------------------------------- batch layout
@dataclass
class Batch:
    """B trajectories, K turns max, T completion tokens max (all turns of a trajectory, concatenated)."""

    trajs: list[Trajectory]
    keys: list[Key]  # distinct (prompt, candidates)
    turn_key: list[list[int]]  # [b][k] -> index into keys
    rewards: Tensor  # (B,) trajectory returns (after shaping)
    group_ids: Tensor  # (B,) long
    turn_rewards: Tensor  # (B, K)
    turn_mask: Tensor  # (B, K)
    token_mask: Tensor  # (B, T)
    turn_index: Tensor  # (B, T) long, -1 on padding
    old_logp: Tensor  # (B, T) recorded log-probs of the sampled tokens
    advantages: Tensor | None = None  # (B, T)
    returns: Tensor | None = None  # (B, T)  value targets (critic algorithms)
    old_values: Tensor | None = None  # (B, K)
    ref_logp: Tensor | None = None  # (B, T)


def make_batch(trajs: Sequence[Trajectory]) -> Batch:
    """Lay trajectories out as (B, K) turn tensors and (B, T) completion-token tensors."""
    keys: dict[Key, int] = {}
    turn_key: list[list[int]] = []
    for tr in trajs:
        row = []
        for t in tr.turns:
            if t.candidate_ids[t.candidate_index] != t.completion_ids:
                raise ValueError("a turn's completion ids are not its chosen candidate's ids")
            k = (tuple(t.prompt_ids), tuple(tuple(c) for c in t.candidate_ids))
            row.append(keys.setdefault(k, len(keys)))
        turn_key.append(row)
    B = len(trajs)
    K = max(1, max(len(tr.turns) for tr in trajs))
    T = max(1, max(sum(len(t.completion_ids) for t in tr.turns) for tr in trajs))
    turn_rewards, turn_mask = torch.zeros(B, K), torch.zeros(B, K)
    token_mask, old_logp = torch.zeros(B, T), torch.zeros(B, T)
    turn_index = torch.full((B, T), -1, dtype=torch.long)
    for b, tr in enumerate(trajs):
        pos = 0
        for k, t in enumerate(tr.turns):
            n = len(t.completion_ids)
            turn_rewards[b, k], turn_mask[b, k] = t.reward, 1.0
            token_mask[b, pos : pos + n] = 1.0
            turn_index[b, pos : pos + n] = k
            old_logp[b, pos : pos + n] = torch.tensor(t.logprobs)
            pos += n
    group_names: dict[tuple[str, int, int], int] = {}
    gids = [group_names.setdefault((tr.task_id, tr.seed, tr.group), len(group_names)) for tr in trajs]
    return Batch(
        trajs=list(trajs), keys=list(keys), turn_key=turn_key, rewards=turn_rewards.sum(1),
        group_ids=torch.tensor(gids), turn_rewards=turn_rewards, turn_mask=turn_mask, token_mask=token_mask,
        turn_index=turn_index, old_logp=old_logp,
    )


def group_stats(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Share of groups whose rewards differ at all (the ones that carry a learning signal)."""
    groups: dict[tuple, list[float]] = {}
    for tr in trajs:
        groups.setdefault((tr.task_id, tr.seed, tr.group), []).append(tr.ret)
    diff = [max(v) > min(v) for v in groups.values()]
    return {"groups": len(groups), "groups_with_reward_diff": sum(diff) / max(1, len(diff))}


# ---------------------------------------------------------------- the learner
class Learner:
    """Optimizer, value head and frozen reference around a policy model; ``update`` is one training step."""

    def __init__(
        self,
        model: nn.Module,
        algo: AlgorithmPreset,
        *,
        lr: float = 3e-4,
        value_lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        entropy_coef: float = 0.05,
        temperature: float = 1.0,
        update_epochs: int = 1,
        micro_batch_groups: int = 8,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.model, self.algo = model, algo
        self.entropy_coef, self.temperature = entropy_coef, temperature if temperature > 0 else 1.0
        self.max_grad_norm, self.update_epochs, self.micro_batch_groups = max_grad_norm, update_epochs, micro_batch_groups
        self.autocast_dtype = autocast_dtype
        dev = next(model.parameters()).device
        hidden = model.config.hidden_size
        self.value_head = nn.Linear(hidden, 1).to(dev) if algo.uses_critic else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        kl_in_loss = float(algo.loss_kwargs.get("kl_coef", 0.0))
        self.ref = None
        if kl_in_loss > 0 or algo.kl_in_reward_coef > 0:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
        if self.value_head is not None:
            groups.append({"params": list(self.value_head.parameters()), "lr": value_lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        dev = next(self.model.parameters()).device.type
        return torch.autocast(dev, dtype=self.autocast_dtype)

    # ------------------------------------------------------------ preparing a batch
    @torch.no_grad()
    def prepare(self, trajs: Sequence[Trajectory]) -> tuple[Batch | None, dict[str, float]]:
        """Batch + advantages (DAPO: zero-variance groups dropped; PPO: old values, KL in reward)."""
        trajs = [t for t in trajs if t.turns]
        metrics = {"dropped_no_turns": 0.0}
        if not trajs:
            return None, metrics
        if self.algo.dynamic_sampling:
            full = make_batch(trajs)
            keep = dynamic_sampling_mask(full.rewards, full.group_ids)
            metrics["dynamic_sampling_kept"] = float(keep.float().mean())
            trajs = [t for t, k in zip(trajs, keep.tolist(), strict=True) if k]
            if not trajs:
                return None, metrics
        batch = make_batch(trajs)
        T = batch.token_mask.shape[1]
        if self.algo.overlong is not None:
            lengths = batch.token_mask.sum(1)
            buffer = min(self.algo.overlong.buffer, T)
            batch.rewards = batch.rewards + self.algo.overlong.coef * overlong_penalty(lengths, max_len=T, buffer=buffer)
        if self.ref is not None:
            with self._autocast():
                ref = [packed_forward(self.ref, k) for k in batch.keys]
            batch.ref_logp = self._gather_tokens(batch, [p.token_logps for p in ref])
        if self.algo.kl_in_reward_coef > 0 and batch.ref_logp is not None:
            kl_tok = KL.get(self.algo.kl_in_reward_estimator)(batch.old_logp, batch.ref_logp)  # (B, T)
            kl_tok = torch.where(batch.token_mask.bool(), kl_tok, torch.zeros_like(kl_tok))
            kl_turn = token_to_turn_sum(kl_tok, batch.turn_index, batch.turn_rewards.shape[1])  # (B, K)
            batch.turn_rewards = kl_in_reward(batch.turn_rewards, kl_turn, self.algo.kl_in_reward_coef, batch.turn_mask)
            metrics["kl_in_reward"] = float(masked_mean(kl_turn, batch.turn_mask))
        if self.value_head is not None:
            with self._autocast():
                vals = [packed_forward(self.model, k, self.value_head).value for k in batch.keys]
            batch.old_values = self._gather_turns(batch, vals)
        out = ADVANTAGES.get(self.algo.advantage)(
            AdvantageInputs(
                rewards=batch.rewards, group_ids=batch.group_ids, token_mask=batch.token_mask,
                turn_rewards=batch.turn_rewards, turn_mask=batch.turn_mask, values=batch.old_values,
                turn_index=batch.turn_index,
            ),
            **self.algo.advantage_kwargs,
        )
        batch.advantages, batch.returns = out.advantages, out.returns
        return batch, metrics

    def _gather_tokens(self, batch: Batch, per_key: list[list[Tensor]]) -> Tensor:
        """(B, T): the chosen candidate's token log-probs of every turn, laid out like ``batch.token_mask``."""
        rows = []
        T = batch.token_mask.shape[1]
        for b, tr in enumerate(batch.trajs):
            parts = [per_key[batch.turn_key[b][k]][t.candidate_index] for k, t in enumerate(tr.turns)]
            row = torch.cat(parts)
            rows.append(torch.cat([row, row.new_zeros(T - row.shape[0])]))
        return torch.stack(rows)

    def _gather_turns(self, batch: Batch, per_key: Sequence[Tensor | None]) -> Tensor:
        """(B, K): a per-key scalar (value, entropy) for every turn, 0 on padding turns."""
        K = batch.turn_mask.shape[1]
        rows = []
        for b, tr in enumerate(batch.trajs):
            vals = [per_key[batch.turn_key[b][k]] for k in range(len(tr.turns))]
            row = torch.stack(vals) if vals else torch.zeros(0)
            rows.append(torch.cat([row, row.new_zeros(K - row.shape[0])]))
        return torch.stack(rows)

    # ------------------------------------------------------------ gradients
    def micro_batches(self, batch: Batch, groups_per_micro: int) -> Iterator[list[int]]:
        """Row indices of each micro-batch: whole groups, ``groups_per_micro`` at a time."""
        order: dict[int, list[int]] = {}
        for b, g in enumerate(batch.group_ids.tolist()):
            order.setdefault(g, []).append(b)
        groups = list(order.values())
        for i in range(0, len(groups), max(1, groups_per_micro)):
            yield [b for g in groups[i : i + groups_per_micro] for b in g]

    def accumulate(self, batch: Batch, groups_per_micro: int | None = None) -> dict[str, float]:
        """Zero the grads, then backward every micro-batch's loss; the grads are the full-batch gradient."""
        assert batch.advantages is not None
        self.optimizer.zero_grad(set_to_none=True)
        norms = {**global_normalisers(batch.token_mask), "norm_tokens": float(batch.token_mask.shape[1])}
        n_turns = float(batch.turn_mask.sum())
        loss_kwargs = {**self.algo.loss_kwargs, "entropy_coef": 0.0}  # the candidate-entropy bonus is below
        totals: dict[str, float] = {}
        weight_sum = 0.0
        for rows in self.micro_batches(batch, groups_per_micro or self.micro_batch_groups):
            sub = _select(batch, rows)
            with self._autocast():
                packed = [packed_forward(self.model, k, self.value_head) for k in sub.keys]
            logp = self._gather_tokens(sub, [p.token_logps for p in packed])  # (b, T)
            # entropy of softmax(seq_logp / temperature) over each turn's allowed candidates
            ent_key = [_entropy(p.seq_logps / self.temperature) for p in packed]
            ent_turn = self._gather_turns(sub, ent_key)  # (b, K)
            x = LossInputs(
                logp=logp, old_logp=sub.old_logp, advantages=sub.advantages, mask=sub.token_mask,
                ref_logp=sub.ref_logp,
            )
            out = LOSSES.get(self.algo.loss)(x, agg=self.algo.agg, agg_kwargs=norms, **loss_kwargs)
            ent_sum = (ent_turn * sub.turn_mask).sum()
            loss = out.loss - self.entropy_coef * ent_sum / n_turns
            metrics = dict(out.metrics)
            if self.value_head is not None:
                values = self._gather_turns(sub, [p.value for p in packed])  # (b, K)
                vx = LossInputs(
                    logp=logp.detach(), old_logp=sub.old_logp, advantages=sub.advantages, mask=sub.token_mask,
                    values=turn_to_token(values, sub.turn_index), old_values=turn_to_token(sub.old_values, sub.turn_index),
                    returns=sub.returns,
                )
                vout = LOSSES.get(self.algo.value_loss)(vx, agg=self.algo.agg, agg_kwargs=norms, **self.algo.value_kwargs)
                loss = loss + self.algo.vf_coef * vout.loss
                metrics.update(vout.metrics)
            loss.backward()
            w = float(sub.token_mask.sum())
            metrics["candidate_entropy"] = float(ent_sum.detach()) / max(1.0, float(sub.turn_mask.sum()))
            metrics["loss_total"] = float(loss.detach())
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + (v * w if k != "loss_total" else v)
            weight_sum += w
        return {k: (v if k == "loss_total" else v / max(weight_sum, 1.0)) for k, v in totals.items()}

    def update(self, trajs: Sequence[Trajectory]) -> dict[str, float]:
        """Prepare the batch, then ``update_epochs`` optimizer steps over it. Returns metrics + timings."""
        t0 = time.perf_counter()
        batch, metrics = self.prepare(trajs)
        metrics["reward_s"] = time.perf_counter() - t0
        metrics["optimizer_steps"] = 0.0
        if batch is None:
            metrics["update_s"] = 0.0
            return metrics
        t1 = time.perf_counter()
        self.model.train()
        for _ in range(self.update_epochs):
            metrics.update(self.accumulate(batch))
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
            self.optimizer.step()
            metrics["optimizer_steps"] += 1
        self.model.eval()
        metrics["update_s"] = time.perf_counter() - t1
        tokens = sum(len(t.prompt_ids) + sum(map(len, t.candidate_ids)) for tr in batch.trajs for t in tr.turns)
        metrics["update_tokens_per_s"] = tokens * self.update_epochs / max(metrics["update_s"], 1e-9)
        metrics["batch_trajectories"] = float(len(batch.trajs))
        return metrics

    # ------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "value_head": self.value_head.state_dict() if self.value_head is not None else None,
            "ref": self.ref.state_dict() if self.ref is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])
        if self.ref is not None and state.get("ref") is not None:
            self.ref.load_state_dict(state["ref"])


def _entropy(logits: Tensor) -> Tensor:
    lp = torch.log_softmax(logits, dim=-1)
    return -(lp.exp() * lp).sum()


def _select(batch: Batch, rows: list[int]) -> Batch:
    """The sub-batch of ``rows`` (same padded widths, so global normalisers stay valid)."""
    idx = torch.tensor(rows)
    keys = sorted({k for r in rows for k in batch.turn_key[r]})
    remap = {k: i for i, k in enumerate(keys)}

    def pick(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[idx]

    return Batch(
        trajs=[batch.trajs[r] for r in rows], keys=[batch.keys[k] for k in keys],
        turn_key=[[remap[k] for k in batch.turn_key[r]] for r in rows], rewards=batch.rewards[idx],
        group_ids=batch.group_ids[idx], turn_rewards=batch.turn_rewards[idx], turn_mask=batch.turn_mask[idx],
        token_mask=batch.token_mask[idx], turn_index=batch.turn_index[idx], old_logp=batch.old_logp[idx],
        advantages=pick(batch.advantages), returns=pick(batch.returns), old_values=pick(batch.old_values),
        ref_logp=pick(batch.ref_logp),
    )
