"""The policy update: trajectories -> batch (on the model's device) -> advantages -> clipped loss -> grads.

Every turn's sequence is its recorded ``prompt_ids`` followed by its candidates (or its generated
completion): the recorded ids, never re-tokenised (``agentrl.learner.batch``). One forward per distinct
prompt, in padded micro-batches chosen by a token budget (``micro_batch_tokens``), gives
(``agentrl.learner.forward``):

* each candidate turn's log-prob under the distribution it was sampled from, ``log_softmax(seq_logp / T)``
  over the turn's candidates, and each generated token's log-prob at temperature T: the ratio's numerator,
  against the recorded behaviour log-prob, so a fresh on-policy ratio is 1;
* the entropy of the candidate distribution (the entropy bonus covers the ALLOWED actions only);
* the hidden state after the prompt, read by the PPO value head.

Every loss term is divided by counts over the whole batch (``Batch.normalisers``) and the Dr. GRPO
normaliser is a constant of the run (``norm_length``), so the summed micro-batch gradients equal the
full-batch gradient for any token budget. Metrics stay on the device until the end of the update: one host
sync per update, not per micro-batch.

>>> learner = Learner(model, get_algorithm("drgrpo"), lr=1e-6, norm_length=8)     # doctest: +SKIP
>>> metrics = learner.update(trajectories)                                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence

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
    kl_in_reward,
    masked_mean,
    overlong_penalty,
    token_to_turn_sum,
    turn_to_token,
)
from agentrl.learner.batch import Batch, make_batch, plan_micro_batches
from agentrl.learner.forward import KeyOutputs, check_attention, key_forward
from agentrl.learner.optim import MasterAdamW, make_scheduler
from agentrl.learner.rollout import Trajectory
from agentrl.policy.lora import is_peft_model
from agentrl.policy.sampling import truncated_is_weights


def group_stats(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Share of groups whose rewards differ at all (the ones that carry a learning signal)."""
    groups: dict[tuple, list[float]] = {}
    for tr in trajs:
        groups.setdefault((tr.task_id, tr.seed, tr.group), []).append(tr.ret)
    diff = [max(v) > min(v) for v in groups.values()]
    return {"groups": len(groups), "groups_with_reward_diff": sum(diff) / max(1, len(diff))}


class Learner:
    """Optimizer (fp32 masters), value head and frozen reference around a policy; ``update`` is one step.

    ``norm_length``: Dr. GRPO's constant L (loss units a trajectory may have: its turns in candidate mode,
    its generated tokens otherwise); the trainer derives it from the tasks' max_steps. ``overlong``:
    ``(max_len, buffer)`` for the preset's overlong shaping of generated turns. ``tis_cap``: when the
    behaviour log-probs come from another engine (vLLM), the ratio is taken against the learner's own
    log-probs before the update and the loss is weighted by min(pi_learner / pi_behaviour, tis_cap).
    """

    def __init__(
        self,
        model: nn.Module,
        algo: AlgorithmPreset,
        *,
        lr: float = 1e-6,
        value_lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        entropy_coef: float = 0.0,
        temperature: float = 1.0,
        update_epochs: int = 1,
        micro_batch_tokens: int = 16_384,
        norm_length: int = 1,
        overlong: tuple[int, int] | None = None,
        tis_cap: float | None = None,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        total_optimizer_steps: int = 1,
        min_lr_ratio: float = 0.0,
        logprob_chunk: int = 1024,
    ) -> None:
        if temperature <= 0:
            raise ValueError("the learner trains on sampled turns: temperature must be > 0 (0 is greedy, eval only)")
        if algo.overlong is not None and overlong is None:
            raise ValueError(f"{algo.name} shapes overlong generations: pass overlong=(max_len, buffer)")
        check_attention(model)
        self.model, self.algo = model, algo
        self.entropy_coef, self.temperature = entropy_coef, temperature
        self.max_grad_norm, self.update_epochs = max_grad_norm, update_epochs
        self.micro_batch_tokens, self.norm_length, self.overlong = micro_batch_tokens, norm_length, overlong
        self.tis_cap, self.logprob_chunk = tis_cap, logprob_chunk
        self.device = next(model.parameters()).device
        self.value_head = None
        if algo.uses_critic:
            self.value_head = nn.Linear(model.config.hidden_size, 1).to(self.device)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.ref: nn.Module | None = None  # a frozen copy; a LoRA policy's reference is its base (adapter off)
        self.needs_ref = float(algo.loss_kwargs.get("kl_coef", 0.0)) > 0 or algo.kl_in_reward_coef > 0
        if self.needs_ref and not is_peft_model(model):
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
        if self.value_head is not None:
            groups.append({"params": list(self.value_head.parameters()), "lr": value_lr})
        self.optimizer = MasterAdamW(groups, weight_decay=weight_decay)
        self.scheduler = make_scheduler(self.optimizer, lr_schedule, total_optimizer_steps, warmup_steps, min_lr_ratio)

    # ------------------------------------------------------------ forwards
    def _forward(self, batch: Batch, plan: list[int], *, ref: bool = False, value: bool = False) -> KeyOutputs:
        keys = [batch.keys[i] for i in plan]
        kw = {"temperature": self.temperature, "chunk": self.logprob_chunk}
        if not ref:
            return key_forward(self.model, keys, value_head=self.value_head if value else None, **kw)
        if self.ref is not None:
            return key_forward(self.ref, keys, **kw)
        with self.model.disable_adapter():
            return key_forward(self.model, keys, **kw)

    def _plans(self, batch: Batch) -> list[list[int]]:
        return plan_micro_batches(batch.keys, self.micro_batch_tokens)

    def _units(self, batch: Batch, plan: list[int], out: KeyOutputs) -> tuple[Tensor, Tensor]:
        """(B, U) current log-probs of the units whose key is in ``plan`` (old log-probs elsewhere), and the
        (B, U) bool mask of those units."""
        sizes = [batch.keys[i].outputs for i in plan]
        starts = torch.tensor([0, *sizes[:-1]]).cumsum(0)
        offset = torch.full((len(batch.keys),), -1, dtype=torch.long)
        offset[torch.tensor(plan)] = starts
        off_u = offset.to(self.device)[batch.unit_key.clamp(min=0)]  # (B, U)
        in_plan = (batch.unit_key >= 0) & (off_u >= 0)  # (B, U)
        flat = torch.cat(out.outputs)  # (sum outputs,)
        idx = torch.where(in_plan, off_u + batch.unit_out, torch.zeros_like(off_u))
        return torch.where(in_plan, flat[idx], batch.old_logp), in_plan

    def _turn_values(self, batch: Batch, plan: list[int], per_key: Tensor) -> Tensor:
        """(B, K): a per-key scalar of ``plan`` for every turn that uses one of its keys, 0 elsewhere."""
        full = per_key.new_zeros(len(batch.keys))
        full = full.index_copy(0, torch.tensor(plan, device=self.device), per_key)
        tk = batch.turn_key
        in_plan = torch.zeros(len(batch.keys), dtype=torch.bool, device=self.device)
        in_plan[torch.tensor(plan, device=self.device)] = True
        hit = (tk >= 0) & in_plan[tk.clamp(min=0)]
        return torch.where(hit, full[tk.clamp(min=0)], torch.zeros_like(full[tk.clamp(min=0)]))

    # ------------------------------------------------------------ preparing a batch
    @torch.no_grad()
    def prepare(self, trajs: Sequence[Trajectory]) -> tuple[Batch | None, dict[str, float]]:
        """Batch + advantages (DAPO: zero-variance groups dropped; PPO: old values, KL in reward)."""
        trajs = [t for t in trajs if t.turns]
        metrics: dict[str, float] = {}
        if not trajs:
            return None, metrics
        if self.algo.dynamic_sampling:
            rewards = make_batch(trajs)
            keep = dynamic_sampling_mask(rewards.rewards, rewards.group_ids).tolist()
            metrics["dynamic_sampling_kept"] = sum(keep) / len(keep)
            trajs = [t for t, k in zip(trajs, keep, strict=True) if k]
            if not trajs:
                return None, metrics
        batch = make_batch(trajs)
        if self.algo.overlong is not None:
            self._shape_overlong(batch)
            metrics["overlong_penalty"] = float(batch.turn_rewards.sum() - sum(t.reward for tr in trajs for t in tr.turns))
        batch = batch.to(self.device)
        plans = self._plans(batch)
        want_old = self.value_head is not None or self.tis_cap is not None
        old_logp = batch.old_logp.clone() if self.tis_cap is not None else None
        ref_logp = batch.old_logp.clone() if self.needs_ref else None
        old_values = torch.zeros_like(batch.turn_rewards) if self.value_head is not None else None
        for plan in plans:
            if ref_logp is not None:
                lp, hit = self._units(batch, plan, self._forward(batch, plan, ref=True))
                ref_logp = torch.where(hit, lp, ref_logp)
            if want_old:
                out = self._forward(batch, plan, value=self.value_head is not None)
                if old_logp is not None:
                    lp, hit = self._units(batch, plan, out)
                    old_logp = torch.where(hit, lp, old_logp)
                if old_values is not None:
                    old_values = old_values + self._turn_values(batch, plan, out.value)
        batch.ref_logp, batch.old_values = ref_logp, old_values
        if old_logp is not None:  # truncated IS: ratio against the learner's own numerics, weighted
            assert self.tis_cap is not None
            batch.is_weights = truncated_is_weights(old_logp, batch.old_logp, self.tis_cap)
            batch.old_logp = old_logp
        if self.algo.kl_in_reward_coef > 0 and batch.ref_logp is not None:
            kl_tok = KL.get(self.algo.kl_in_reward_estimator)(batch.old_logp, batch.ref_logp)  # (B, U)
            kl_tok = torch.where(batch.token_mask.bool(), kl_tok, torch.zeros_like(kl_tok))
            kl_turn = token_to_turn_sum(kl_tok, batch.turn_index, batch.turn_rewards.shape[1])  # (B, K)
            batch.turn_rewards = kl_in_reward(batch.turn_rewards, kl_turn, self.algo.kl_in_reward_coef, batch.turn_mask)
            metrics["kl_in_reward"] = masked_mean(kl_turn, batch.turn_mask)
        out = ADVANTAGES.get(self.algo.advantage)(
            AdvantageInputs(
                rewards=batch.rewards, group_ids=batch.group_ids, token_mask=batch.token_mask,
                turn_rewards=batch.turn_rewards, turn_mask=batch.turn_mask, values=batch.old_values,
                turn_index=batch.turn_index, num_groups=batch.num_groups,
            ),
            **self.algo.advantage_kwargs,
        )
        batch.advantages, batch.returns = out.advantages, out.returns
        return batch, metrics

    def _shape_overlong(self, batch: Batch) -> None:
        """DAPO overlong shaping on generated turns only (candidate turns are never shaped)."""
        assert self.algo.overlong is not None and self.overlong is not None
        max_len, buffer = self.overlong
        for b, tr in enumerate(batch.trajs):
            for k, t in enumerate(tr.turns):
                if not t.candidates:
                    pen = overlong_penalty(torch.tensor([len(t.completion_ids)]), max_len=max_len, buffer=buffer)
                    batch.turn_rewards[b, k] += self.algo.overlong.coef * float(pen[0])
        batch.rewards = batch.turn_rewards.sum(1)

    # ------------------------------------------------------------ gradients
    def accumulate(self, batch: Batch, token_budget: int | None = None) -> dict[str, Tensor]:
        """Zero the grads, then backward every micro-batch's loss; the grads are the full-batch gradient."""
        assert batch.advantages is not None
        self.optimizer.zero_grad()
        norms = {**batch.normalisers, "norm_tokens": float(self.norm_length)}
        loss_kwargs = {**self.algo.loss_kwargs, "entropy_coef": 0.0}  # the candidate-entropy bonus is below
        key_turns = torch.tensor(batch.key_turns, dtype=torch.float32, device=self.device)
        totals: dict[str, Tensor] = {}
        extremes: dict[str, Tensor] = {}
        weight_sum = torch.zeros((), device=self.device)
        loss_total = torch.zeros((), device=self.device)
        ent_total = torch.zeros((), device=self.device)
        plans = plan_micro_batches(batch.keys, token_budget or self.micro_batch_tokens)
        for plan in plans:
            out = self._forward(batch, plan, value=self.value_head is not None)
            logp, hit = self._units(batch, plan, out)
            mask = batch.token_mask * hit
            ent_sum = (out.entropy * key_turns[torch.tensor(plan, device=self.device)]).sum()
            x = LossInputs(
                logp=logp, old_logp=batch.old_logp, advantages=batch.advantages, mask=mask,
                ref_logp=batch.ref_logp, is_weights=batch.is_weights,
            )
            res = LOSSES.get(self.algo.loss)(x, agg=self.algo.agg, agg_kwargs=norms, **loss_kwargs)
            loss = res.loss - self.entropy_coef * ent_sum / max(1, batch.n_turns)
            metrics = dict(res.metrics)
            if self.value_head is not None:
                assert out.value is not None and batch.old_values is not None
                values = self._turn_values(batch, plan, out.value)  # (B, K)
                vx = LossInputs(
                    logp=logp.detach(), old_logp=batch.old_logp, advantages=batch.advantages, mask=mask,
                    values=turn_to_token(values, batch.turn_index),
                    old_values=turn_to_token(batch.old_values, batch.turn_index), returns=batch.returns,
                )
                vout = LOSSES.get(self.algo.value_loss)(vx, agg=self.algo.agg, agg_kwargs=norms, **self.algo.value_kwargs)
                loss = loss + self.algo.vf_coef * vout.loss
                metrics.update(vout.metrics)
            loss.backward()
            w = mask.sum()
            for k, v in metrics.items():
                if k.endswith(("_max", "_min")):  # extremes over the batch, not weighted means
                    pick = torch.maximum if k.endswith("_max") else torch.minimum
                    extremes[k] = v if k not in extremes else pick(extremes[k], v)
                else:
                    totals[k] = totals.get(k, 0.0) + v * w
            weight_sum = weight_sum + w
            loss_total = loss_total + loss.detach()
            ent_total = ent_total + ent_sum.detach()
        out_metrics = {k: v / weight_sum.clamp_min(1.0) for k, v in totals.items()} | extremes
        out_metrics["loss_total"] = loss_total
        out_metrics["candidate_entropy"] = ent_total / max(1, batch.n_turns)  # per turn, over the batch
        return out_metrics

    def update(self, trajs: Sequence[Trajectory]) -> dict[str, float]:
        """Prepare the batch, then ``update_epochs`` optimizer steps over it. Returns metrics + timings."""
        t0 = time.perf_counter()
        batch, prep = self.prepare(trajs)
        metrics: dict[str, float | Tensor] = {**prep, "reward_s": time.perf_counter() - t0, "optimizer_steps": 0.0}
        if batch is None:
            metrics["update_s"] = 0.0
            return to_floats(metrics)
        t1 = time.perf_counter()
        before = self._fingerprint()
        with train_mode(self.model):
            for _ in range(self.update_epochs):
                metrics.update(self.accumulate(batch))
                metrics["grad_norm"] = self.optimizer.clip_grad_norm(self.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                metrics["optimizer_steps"] += 1
        # whether the weights the generator runs moved at all: a batch without signal for the policy (every
        # group's rewards equal, no KL or entropy term), or steps below bf16's resolution, leave them as they were
        metrics["policy_moved"] = (self._fingerprint() != before).any().float()
        out = to_floats(metrics)  # the one host sync of the update
        out["lr"] = self.scheduler.get_last_lr()[0]
        out["update_s"] = time.perf_counter() - t1
        tokens = sum(k.tokens for k in batch.keys) * self.update_epochs
        out["update_tokens"] = float(tokens)
        out["update_tokens_per_s"] = tokens / max(out["update_s"], 1e-9)
        out["batch_trajectories"] = float(len(batch.trajs))
        out["micro_batches"] = float(len(self._plans(batch)))
        return out

    def _fingerprint(self) -> Tensor:
        """(P,) fp32 sums of the policy's trainable weights, as the model holds them (bf16 included)."""
        return torch.stack([p.detach().float().sum() for p in self.model.parameters() if p.requires_grad])

    # ------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "value_head": self.value_head.state_dict() if self.value_head is not None else None,
            "ref": self.ref.state_dict() if self.ref is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])
        if self.ref is not None and state.get("ref") is not None:
            self.ref.load_state_dict(state["ref"])


@contextlib.contextmanager
def train_mode(model: nn.Module) -> Iterator[None]:
    model.train()
    try:
        yield
    finally:
        model.eval()


def to_floats(metrics: dict[str, float | Tensor]) -> dict[str, float]:
    """Metrics as floats, with one device read for all tensors (the meta device has no values: NaN)."""
    tensors = {k: v for k, v in metrics.items() if isinstance(v, Tensor)}
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, Tensor)}
    if tensors:
        stacked = torch.stack([v.detach().float().reshape(()) for v in tensors.values()])
        values = [float("nan")] * len(tensors) if stacked.is_meta else stacked.cpu().tolist()
        out.update(zip(tensors, values, strict=True))
    return out
