"""Preference optimisation on trajectories: ``agentrl dpo CONFIG`` (a `DPOConfig` YAML); DPO, IPO or SimPO.

A pair is two episodes of one task variant (task + seed), the preferred one ``chosen``, each a list of turns
(prompt ids + action ids, `agentrl.learner.demos`). A trajectory's log-prob is the sum over its turns of the
action tokens' log-probs (the prompts are context, never targets). Sources:

* ``pref_store``: the preference store (`agentrl rm prefs` auto pairs, `agentrl label` human labels; ties
  are left out). A pair holds text, so its two episodes (``meta.episodes``, found under ``pref_episodes``:
  the run dirs they were recorded in) are replayed through the real env with this config and tokenizer.
  Trajectory-level pairs use every turn; step-level pairs the turn ``meta.t`` of each, which must have the
  same prompt (the same state);
* ``pair_runs``: run dirs (a learner run's ``trajectories.jsonl``, `agentrl evaluate` episodes): the
  episodes of one variant with different returns, the higher return chosen (``max_pairs_per_variant``).

The losses (``dpo_loss``), with ``d = (log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))``:
``dpo``: ``-log sigmoid(beta d)``; ``ipo``: ``(d - 1/(2 beta))^2`` on per-token mean log-probs (as TRL);
``simpo``: ``-log sigmoid(beta (mean log pi(c) - mean log pi(r)) - gamma)``, no reference; ``nll_coef`` adds
the chosen episode's mean action-token NLL (RPO). The reference is
the starting policy, frozen: its log-probs for every pair are computed once, before the first step.

The gradient of a batch of pairs is exact under any micro-batch split: a no-grad pass gives each turn's
log-prob, the loss's derivative with respect to each is taken on those scalars, then one micro-batched
backward of ``sum_k dL/dlogp_k * logp_k`` carries it into the weights.

Pairs whose seed is a multiple of ``heldout_mod`` are held out: their log-ratio margin ``log pi(c) -
log pi(r)`` (and ``d``, and the share of pairs with ``d > 0``) is reported before and after, with held-out
success through the real env.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agentrl.learner.batch import Key
from agentrl.learner.demos import EpisodeJob, play_jobs, read_recorded
from agentrl.learner.offline import (
    OfflineConfig,
    OfflineRun,
    action_key,
    micro_batches,
    sequence_logprobs,
    token_logprobs,
)
from agentrl.learner.rollout import Trajectory, Turn
from agentrl.learner.update import train_mode
from agentrl.trajectory import read_trajectory

DPO_LOSSES = ("dpo", "ipo", "simpo")


@dataclass
class DPOConfig(OfflineConfig):
    pref_store: str | None = None  # SQLite preference store (agentrl rm prefs / agentrl label)
    pref_episodes: list[str] = field(default_factory=list)  # run dirs holding the store's episodes (rm collect --out)
    pair_runs: list[str] = field(default_factory=list)  # run dirs: one variant's episodes with different returns
    dpo_loss: str = "dpo"
    beta: float = 0.1
    simpo_gamma: float = 0.5
    # + nll_coef * the chosen episode's mean action-token NLL (RPO; TRL's rpo_alpha): keeps DPO from lowering
    # the chosen actions' likelihood along with the rejected ones'
    nll_coef: float = 0.0
    heldout_mod: int = 5  # pairs whose seed % heldout_mod == 0 are held out (0: none)
    max_pairs_per_variant: int = 8
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dpo_loss not in DPO_LOSSES:
            raise ValueError(f"dpo_loss must be one of {DPO_LOSSES}, not {self.dpo_loss!r}")
        if self.beta <= 0:
            raise ValueError("beta must be > 0")


@dataclass
class PrefPair:
    """Two turn lists of one task variant; ``chosen`` is preferred."""

    task_id: str
    seed: int
    chosen: list[Turn]
    rejected: list[Turn]
    source: str = ""


# ---------------------------------------------------------------- the loss
def pair_loss(kind: str, pol_c: Tensor, pol_r: Tensor, ref_c: Tensor, ref_r: Tensor, len_c: Tensor, len_r: Tensor,
              *, beta: float, gamma: float = 0.5) -> tuple[Tensor, Tensor]:
    """(P,) losses and (P,) implicit reward margins from (P,) summed action log-probs of the policy and the
    reference, and the action-token counts.

    >>> z = torch.zeros(1)
    >>> round(float(pair_loss("dpo", z, z, z, z, z + 1, z + 1, beta=0.1)[0]), 4)   # log 2 at the start
    0.6931
    """
    if kind == "dpo":
        d = (pol_c - ref_c) - (pol_r - ref_r)
        return -F.logsigmoid(beta * d), beta * d
    if kind == "ipo":
        d = (pol_c - ref_c) / len_c - (pol_r - ref_r) / len_r
        return (d - 1.0 / (2.0 * beta)) ** 2, beta * d
    if kind == "simpo":
        m = beta * (pol_c / len_c - pol_r / len_r)
        return -F.logsigmoid(m - gamma), m
    raise ValueError(f"dpo_loss must be one of {DPO_LOSSES}, not {kind!r}")


class Reference:
    """The frozen reference: summed action log-probs of every turn under the starting policy, computed once."""

    def __init__(self, model: nn.Module, keys: Sequence[Key], token_budget: int) -> None:
        uniq = list(dict.fromkeys(keys))
        self.logp: dict[Key, float] = dict(zip(uniq, sequence_logprobs(model, uniq, token_budget), strict=True))

    def __call__(self, turns: Sequence[Turn]) -> float:
        return sum(self.logp[action_key(t)] for t in turns)


def _pair_tensors(pairs: Sequence[PrefPair], seq: dict[Key, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    pc = torch.tensor([sum(float(seq[action_key(t)]) for t in p.chosen) for p in pairs])
    pr = torch.tensor([sum(float(seq[action_key(t)]) for t in p.rejected) for p in pairs])
    lc = torch.tensor([float(sum(len(t.completion_ids) for t in p.chosen)) for p in pairs])
    lr = torch.tensor([float(sum(len(t.completion_ids) for t in p.rejected)) for p in pairs])
    return pc, pr, lc, lr


def pair_metrics(model: nn.Module, pairs: Sequence[PrefPair], ref: Reference, cfg: DPOConfig) -> dict[str, float]:
    """Loss, log-ratio margin ``log pi(c) - log pi(r)``, implicit reward margin and accuracy over ``pairs``."""
    if not pairs:
        return {}
    keys = list(dict.fromkeys(action_key(t) for p in pairs for t in (*p.chosen, *p.rejected)))
    seq = dict(zip(keys, sequence_logprobs(model, keys, cfg.micro_batch_tokens), strict=True))
    pc, pr, lc, lr = _pair_tensors(pairs, seq)
    rc, rr, _, _ = _pair_tensors(pairs, ref.logp)
    loss, margin = pair_loss(cfg.dpo_loss, pc, pr, rc, rr, lc, lr, beta=cfg.beta, gamma=cfg.simpo_gamma)
    loss = loss - cfg.nll_coef * pc / lc
    return {"loss": float(loss.mean()), "logratio_margin": float((pc - pr).mean()),
            "reward_margin": float(margin.mean()), "accuracy": float((margin > 0).float().mean())}


def dpo_step(model: nn.Module, pairs: Sequence[PrefPair], ref: Reference, cfg: DPOConfig) -> dict[str, float]:
    """Backpropagate the mean pair loss of ``pairs`` (exact for any micro-batch split; see the module doc)."""
    keys = list(dict.fromkeys(action_key(t) for p in pairs for t in (*p.chosen, *p.rejected)))
    seq = dict(zip(keys, sequence_logprobs(model, keys, cfg.micro_batch_tokens), strict=True))
    pc, pr, lc, lr = _pair_tensors(pairs, seq)
    rc, rr, _, _ = _pair_tensors(pairs, ref.logp)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    loss, margin = pair_loss(cfg.dpo_loss, pc, pr, rc, rr, lc, lr, beta=cfg.beta, gamma=cfg.simpo_gamma)
    loss = loss - cfg.nll_coef * pc / lc
    loss.mean().backward()
    assert pc.grad is not None and pr.grad is not None
    weight: dict[Key, float] = defaultdict(float)  # dL/d(log-prob of the key's action)
    for i, p in enumerate(pairs):
        for t in p.chosen:
            weight[action_key(t)] += float(pc.grad[i])
        for t in p.rejected:
            weight[action_key(t)] += float(pr.grad[i])
    with train_mode(model):
        for plan in micro_batches(keys, cfg.micro_batch_tokens):
            outs = token_logprobs(model, [keys[i] for i in plan])
            w = torch.tensor([weight[keys[i]] for i in plan], device=outs[0].device)
            (torch.stack([o.sum() for o in outs]) * w).sum().backward()
    loss, margin = loss.detach(), margin.detach()
    return {"loss": float(loss.mean()), "reward_margin": float(margin.mean()),
            "accuracy": float((margin > 0).float().mean()), "logratio_margin": float((pc - pr).detach().mean()),
            "pairs": float(len(pairs))}


# ---------------------------------------------------------------- pairs
def _usable(o: Any) -> bool:
    return not o.traj.infra_failure and o.problem is None and bool(o.traj.turns)


def pairs_from_runs(run: OfflineRun, cfg: DPOConfig, run_dirs: Sequence[Path]) -> tuple[list[PrefPair], dict[str, int]]:
    """Episodes of one variant with different returns (replayed), the higher return chosen."""
    jobs = read_recorded(run_dirs)
    outs = play_jobs(cfg, run.tok, run.specs, jobs)
    by_variant: dict[tuple[str, int], dict[tuple[str, ...], Trajectory]] = defaultdict(dict)
    for o in outs:
        if _usable(o):
            by_variant[(o.traj.task_id, o.traj.seed)].setdefault(tuple(t.action for t in o.traj.turns), o.traj)
    pairs = []
    for (task, seed), trajs in sorted(by_variant.items()):
        ranked = sorted(trajs.values(), key=lambda t: -t.ret)
        made = [PrefPair(task, seed, a.turns, b.turns, "runs") for a, b in itertools.combinations(ranked, 2) if a.ret > b.ret]
        pairs += made[: cfg.max_pairs_per_variant]
    return pairs, {"episodes": len(jobs), "replayed": sum(map(_usable, outs)), "pairs": len(pairs)}


def pairs_from_store(run: OfflineRun, cfg: DPOConfig) -> tuple[list[PrefPair], dict[str, int]]:
    """The store's pairs of the config's tasks, their episodes replayed (see the module docstring)."""
    from agentrl.rewards.prefs import PrefStore

    assert cfg.pref_store is not None
    if not Path(cfg.pref_store).exists():
        raise FileNotFoundError(f"no preference store {cfg.pref_store}")
    store = PrefStore(cfg.pref_store)
    try:
        ids = {s.id for s in run.specs}
        stored = [p for p in store.pairs() if p.task_id in ids and not p.tie]
    finally:
        store.close()
    dirs: dict[str, Path] = {}
    for root in cfg.pref_episodes:
        if not Path(root).exists():
            raise FileNotFoundError(f"no run directory {root} (pref_episodes)")
        for f in Path(root).rglob("trajectory.jsonl"):
            dirs.setdefault(f.parent.name, f)
    counts = {"stored": len(stored), "missing_episodes": 0, "not_replayable": 0, "different_states": 0}
    wanted: dict[str, EpisodeJob] = {}
    order: list[tuple[Any, str, str]] = []
    for p in stored:
        names = list(p.meta.get("episodes", []))
        if len(names) != 2 or any(n not in dirs for n in names):
            counts["missing_episodes"] += 1
            continue
        chosen, rejected = names[::-1] if p.meta.get("choice") == "right" else names
        for n in (chosen, rejected):
            if n not in wanted:
                meta, steps, summary = read_trajectory(dirs[n])
                wanted[n] = EpisodeJob(p.task_id, p.seed, tuple(s.action for s in steps),
                                       round(sum(s.reward for s in steps), 6))
        order.append((p, chosen, rejected))
    names = list(wanted)
    outs = dict(zip(names, play_jobs(cfg, run.tok, run.specs, [wanted[n] for n in names]), strict=True))
    pairs = []
    for p, c, r in order:
        oc, orj = outs[c], outs[r]
        if not (_usable(oc) and _usable(orj)):
            counts["not_replayable"] += 1
            continue
        if p.level == "trajectory":
            pairs.append(PrefPair(p.task_id, p.seed, oc.traj.turns, orj.traj.turns, f"store/{p.source}"))
            continue
        t = int(p.meta.get("t", 0))
        tc, tr = oc.traj.turns[t - 1 : t], orj.traj.turns[t - 1 : t]
        if not tc or not tr or tc[0].prompt_ids != tr[0].prompt_ids:
            counts["different_states"] += 1
            continue
        pairs.append(PrefPair(p.task_id, p.seed, tc, tr, f"store/{p.source}"))
    counts["pairs"] = len(pairs)
    return pairs, counts


def split_pairs(pairs: Sequence[PrefPair], heldout_mod: int) -> tuple[list[PrefPair], list[PrefPair]]:
    """(train, held-out): a pair is held out when its seed is a multiple of ``heldout_mod`` (a whole variant
    goes to one side)."""
    held = [p for p in pairs if heldout_mod and p.seed % heldout_mod == 0]
    return [p for p in pairs if not (heldout_mod and p.seed % heldout_mod == 0)], held


# ---------------------------------------------------------------- the run
def run_dpo(cfg: DPOConfig, run_dir: Path, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Preference optimisation from the config's pairs; returns the summary written to ``summary.json``."""
    run = OfflineRun(cfg, run_dir, echo=echo)
    try:
        pairs: list[PrefPair] = []
        sources: dict[str, Any] = {}
        if cfg.pref_store:
            got, sources["store"] = pairs_from_store(run, cfg)
            pairs += got
        if cfg.pair_runs:
            got, sources["runs"] = pairs_from_runs(run, cfg, [Path(p) for p in cfg.pair_runs])
            pairs += got
        for name, c in sources.items():
            run.echo(f"pairs from {name}: {c}")
        train_pairs, held = split_pairs(pairs, cfg.heldout_mod)
        if not train_pairs:
            raise ValueError(f"no training pairs (sources: {sources}); set pref_store + pref_episodes or pair_runs")
        ref = Reference(run.model, [action_key(t) for p in pairs for t in (*p.chosen, *p.rejected)], cfg.micro_batch_tokens)
        per_epoch = -(-len(train_pairs) // cfg.batch_size)
        total = cfg.epochs * per_epoch
        run.make_optimizer(total)
        run.echo(f"{len(train_pairs)} training pairs, {len(held)} held out; {total} steps of {cfg.batch_size} pairs")

        def held_metrics() -> dict[str, float]:
            return {f"heldout_{k}": v for k, v in pair_metrics(run.model, held, ref, cfg).items()}

        h0 = held_metrics()
        before = run.evaluate(**h0)
        rng = np.random.default_rng(cfg.seed)
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(train_pairs))
            for b in range(per_epoch):
                batch = [train_pairs[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
                assert run.optimizer is not None
                run.optimizer.zero_grad()
                m = dpo_step(run.model, batch, ref, cfg)
                m.update(run.step_optimizer())
                run.log({"kind": "train", "epoch": epoch, **m})
                run.echo(f"step {run.state.step}/{total} epoch {epoch + 1}: {cfg.dpo_loss} loss {m['loss']:.4f} "
                         f"reward margin {m['reward_margin']:.3f} accuracy {m['accuracy']:.2f} lr {m['lr']:.2e}")
                if cfg.eval_every and run.state.step % cfg.eval_every == 0 and run.state.step < total:
                    run.evaluate(**held_metrics())
                if cfg.checkpoint_every and run.state.step % cfg.checkpoint_every == 0:
                    run.checkpoint()
        h1 = held_metrics()
        after = run.evaluate(**h1)
        for k in ("logratio_margin", "reward_margin", "accuracy"):
            if f"heldout_{k}" in h0:
                run.echo(f"held-out pairs {k}: {h0[f'heldout_{k}']:.4f} -> {h1[f'heldout_{k}']:.4f}")
        return run.finish(cfg.dpo_loss, before, after, pairs=sources, train_pairs=len(train_pairs),
                          heldout_pairs=len(held), heldout_before=h0, heldout_after=h1)
    finally:
        run.close()
