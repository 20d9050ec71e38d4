"""GRPO / Dr. GRPO / DAPO / PPO / RLOO training of an LLM policy in the real browser env, top to bottom.

    agentrl train configs/tiny-click-button.yaml                  # or:
    summary = train(TrainConfig.load("configs/tiny-click-button.yaml"), Path("runs/x"))
    summary = train(None, Path("runs/x"), resume=True)            # continue after a kill -9

One step: sample ``groups_per_step`` (task, train seed) groups, run ``group_size`` episodes of each through
the real env with the current policy (`rollout.RolloutEngine`), compute advantages and update the policy
(`update.Learner`), push the new weights into the generator and check that its scores changed. Every
``eval_every`` steps the policy plays held-out seeds (``eval_seed_start`` + i, never trained on); the best
checkpoint by held-out success is kept. Everything goes into the run dir:

    config.yaml  metrics.jsonl  trajectories.jsonl  checkpoints/{last,best}/  reward_curve.png
    success_curve.png  summary.json  base-model/ (the tiny model's initial weights and tokenizer)
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from agentrl.envs.browser import BrowserEnvConfig
from agentrl.learner.algos import get_algorithm
from agentrl.learner.checkpoint import (
    TrainState,
    copy_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from agentrl.learner.config import TrainConfig
from agentrl.learner.plots import plot_run, read_metrics
from agentrl.learner.rollout import GroupJob, RolloutEngine, Trajectory
from agentrl.learner.update import Learner, group_stats
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.model import build_tiny_policy, load_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.rewards.router import RouterConfig
from agentrl.taskspec import TaskSpec, discover, load_task


class UpdateNotSyncedError(RuntimeError):
    """An optimizer step changed the policy but the generator's scores did not change."""


# ---------------------------------------------------------------- setup helpers
def load_tasks(paths: list[str]) -> list[TaskSpec]:
    """Task files, or every task in suite folders."""
    specs = [load_task(f) for f in discover(paths)]
    if not specs:
        raise ValueError(f"no task files in {paths}")
    return specs


def build_policy(cfg: TrainConfig, run_dir: Path) -> tuple[Any, Any]:
    """``model: tiny`` -> the tiny policy, built locally once into ``run_dir/base-model``; else load_policy."""
    if cfg.model == "tiny":
        base = run_dir / "base-model"
        if (base / "config.json").exists():
            model, tok = load_policy(base, device=cfg.device)
        else:
            model, tok = build_tiny_policy(base, seed=cfg.model_seed)
            model.to(cfg.device)
    else:
        model, tok = load_policy(cfg.model, device=cfg.device)
    return model, tok


def weights_probe(generator: HFGenerator, trajs: list[Trajectory]) -> tuple[list[int], list[str]] | None:
    """A (prompt, candidates) pair from the batch whose scores must move after an update."""
    for tr in trajs:
        for t in tr.turns:
            if len(t.candidates) > 1:
                return t.prompt_ids, t.candidates
    return None


def check_sync(generator: HFGenerator, probe: tuple[list[int], list[str]] | None, before: tuple | None) -> float:
    """Guard: after load_weights the generator's candidate scores must differ from before the update."""
    if probe is None or before is None:
        return float("nan")
    after = generator.score_candidates([probe[0]], [probe[1]])[0].seq_logprobs
    delta = max(abs(a - b) for a, b in zip(after, before, strict=True))
    if delta == 0.0:
        raise UpdateNotSyncedError("the optimizer step did not reach the generator (identical candidate scores)")
    return delta


def evaluate(engine: RolloutEngine, cfg: TrainConfig, specs: list[TaskSpec]) -> dict[str, float]:
    """Held-out success: ``eval_episodes`` seeds per task from ``eval_seed_start``, one episode each."""
    jobs = [
        GroupJob(s.id, cfg.eval_seed_start + i, 1, group=j * cfg.eval_episodes + i)
        for j, s in enumerate(specs)
        for i in range(cfg.eval_episodes)
    ]
    temp = 0.0 if cfg.eval_greedy else cfg.temperature
    res = engine.collect(jobs, temperature=temp, seed=cfg.seed + 12345)
    out = {"success": res.stats["success"], "eval_episodes_per_s": res.stats["episodes_per_s"]}
    for s in specs:
        mine = [t.success for t in res.trajectories if t.task_id == s.id]
        out[f"success/{s.id}"] = float(np.mean(mine)) if mine else 0.0
    out["eval_errors"] = res.stats["errors"]
    return out


def _truncate_jsonl(path: Path, max_step: int) -> None:
    """After a kill: drop records of steps the checkpoint does not contain (they will be redone)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= max_step]
        path.write_text("".join(ln + "\n" for ln in lines))


# ---------------------------------------------------------------- the run
def train(
    cfg: TrainConfig | None,
    run_dir: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) a run; returns the summary also written to ``run_dir/summary.json``."""
    run_dir = Path(run_dir)
    if resume:
        cfg = TrainConfig.load(run_dir / "config.yaml")
    assert cfg is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    metrics_path, traj_path = run_dir / "metrics.jsonl", run_dir / "trajectories.jsonl"
    total_steps = min(cfg.total_steps, max_steps) if max_steps else cfg.total_steps

    # --- policy, learner, generator (its own copy of the weights, synced after every optimizer step)
    model, tok = build_policy(cfg, run_dir)
    kl_override = {"loss_kwargs": {"kl_coef": cfg.kl_coef}} if cfg.kl_coef is not None else {}
    algo = get_algorithm(cfg.algorithm, **{**kl_override, **cfg.algorithm_overrides})
    autocast = torch.bfloat16 if cfg.dtype == "bfloat16" else None
    learner = Learner(
        model, algo, lr=cfg.lr, value_lr=cfg.value_lr, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, entropy_coef=cfg.entropy_coef, temperature=cfg.temperature,
        update_epochs=cfg.update_epochs, micro_batch_groups=cfg.micro_batch_groups, autocast_dtype=autocast,
    )
    state = TrainState()
    sampler = np.random.default_rng(cfg.seed)
    ckpt_dir = run_dir / "checkpoints"
    last = latest_checkpoint(ckpt_dir) if resume else None
    if last is not None:
        state = load_checkpoint(last, model, learner)
        sampler.bit_generator.state = state.sampler
        _truncate_jsonl(metrics_path, state.step)
        _truncate_jsonl(traj_path, state.step)
    generator = HFGenerator(copy.deepcopy(model).eval(), tok)
    builder = PromptBuilder(tok, system=cfg.system_prompt, max_prompt_tokens=cfg.max_prompt_tokens, history_k=cfg.history_k)
    specs = load_tasks(list(cfg.tasks))
    engine = RolloutEngine(
        specs, generator, builder, num_envs=cfg.num_envs, click_roles=cfg.click_roles,
        extra_actions=cfg.extra_actions, observation=cfg.observation, described=cfg.described_actions,
        env_config=BrowserEnvConfig(
            record=False, keep_episode_dirs=False, action_timeout_ms=20_000, settle_timeout_ms=20_000,
            isolation=cfg.isolation,
            router=RouterConfig.model_validate(cfg.reward_router) if cfg.reward_router else None,
        ),
    )
    writer = None
    if cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            writer = None

    def log(record: dict[str, Any]) -> None:
        record = {"run": run_dir.name, "step": state.step, "episodes": state.episodes, "elapsed_s": state.elapsed_s, **record}
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(f"{record['kind']}/{k}", v, state.step)

    def run_eval() -> dict[str, float]:
        t0 = time.perf_counter()
        ev = evaluate(engine, cfg, specs)
        state.elapsed_s += time.perf_counter() - t0
        log({"kind": "eval", "eval_mode": "greedy" if cfg.eval_greedy else "sampled", "eval_s": time.perf_counter() - t0, **ev})
        if ev["success"] > state.best_success:
            state.best_success, state.best_step = ev["success"], state.step
            save_checkpoint(ckpt_dir / "last", model, learner, _with_sampler(state, sampler))
            copy_checkpoint(ckpt_dir / "last", ckpt_dir / "best")
        return ev

    started = time.perf_counter()
    elapsed_at_start = state.elapsed_s
    try:
        first_eval = run_eval() if last is None else None
        bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TimeElapsedColumn(), disable=not progress)
        with bar:
            task = bar.add_task("train", total=total_steps, completed=state.step)
            while state.step < total_steps:
                if cfg.max_minutes and state.elapsed_s > cfg.max_minutes * 60:
                    break
                t_step = time.perf_counter()
                # 1. rollouts: G episodes per group from the same seeded start state
                tasks = sampler.integers(len(specs), size=cfg.groups_per_step)
                seeds = sampler.integers(cfg.train_seeds[0], cfg.train_seeds[1] + 1, size=cfg.groups_per_step)
                jobs = [
                    GroupJob(specs[int(t)].id, int(s), cfg.group_size, group=i)
                    for i, (t, s) in enumerate(zip(tasks, seeds, strict=True))
                ]
                roll = engine.collect(
                    jobs, temperature=cfg.temperature, seed=int(sampler.integers(2**62)), writer=traj_path,
                    tag={"step": state.step + 1},
                )
                trajs = roll.trajectories
                # 2. update (advantages, loss, optimizer step) and 3. weight sync with its guard
                probe = weights_probe(generator, trajs)
                before = generator.score_candidates([probe[0]], [probe[1]])[0].seq_logprobs if probe else None
                upd = learner.update(trajs)
                sync_delta = float("nan")
                if upd["optimizer_steps"]:
                    generator.load_weights(model)
                    sync_delta = check_sync(generator, probe, before)
                state.step += 1
                state.episodes += len(trajs)
                state.elapsed_s += time.perf_counter() - t_step
                step_s = time.perf_counter() - t_step
                rewards = [t.ret for t in trajs]
                log({
                    "kind": "train",
                    "reward": float(np.mean(rewards)) if rewards else 0.0,
                    "success": roll.stats["success"],
                    **group_stats(trajs),
                    "candidate_entropy_rollout": float(np.mean([t.candidate_entropy for tr in trajs for t in tr.turns] or [0.0])),
                    **{k: v for k, v in upd.items()},
                    **{f"rollout/{k}": v for k, v in roll.stats.items()},
                    "rollout_s": roll.stats["rollout_s"],
                    "step_s": step_s,
                    "episodes_per_s": len(trajs) / step_s,
                    "sync_delta": sync_delta,
                    "weights_version": generator.weights_version,
                })
                bar.update(task, completed=state.step,
                           description=f"train r={np.mean(rewards) if rewards else 0:.2f} best={state.best_success:.2f}")
                if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < total_steps:
                    run_eval()
                if state.step % cfg.checkpoint_every == 0:
                    save_checkpoint(ckpt_dir / "last", model, learner, _with_sampler(state, sampler))
        final_eval = run_eval()
        save_checkpoint(ckpt_dir / "last", model, learner, _with_sampler(state, sampler))
    finally:
        engine.close()
        if writer is not None:
            writer.close()
    curves = plot_run(run_dir)
    evals = [r for r in read_metrics(metrics_path) if r.get("kind") == "eval"]
    summary = {
        "run_dir": str(run_dir),
        "algorithm": cfg.algorithm,
        "steps": state.step,
        "episodes": state.episodes,
        "elapsed_s": state.elapsed_s,
        "this_session_s": time.perf_counter() - started,
        "resumed_from_elapsed_s": elapsed_at_start,
        "success_before": evals[0]["success"] if evals else None,
        "success_after": final_eval["success"],
        "best_success": state.best_success,
        "best_step": state.best_step,
        "eval_mode": "greedy" if cfg.eval_greedy else "sampled",
        "first_eval_this_session": first_eval,
        "curves": [str(p) for p in curves],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _with_sampler(state: TrainState, sampler: np.random.Generator) -> TrainState:
    state.sampler = dict(sampler.bit_generator.state)
    return TrainState(**asdict(state))
