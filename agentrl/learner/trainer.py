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

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from agentrl.learner.algos import AlgorithmPreset, get_algorithm
from agentrl.learner.build import (
    build_generator,
    build_policy,
    check_generator,
    make_engine,
    norm_length,
    overlong_lengths,
    tis_cap,
)
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
from agentrl.taskspec import TaskSpec, discover, load_task


class UpdateNotSyncedError(RuntimeError):
    """An optimizer step changed the policy but the generator's scores did not change."""


# ---------------------------------------------------------------- setup helpers
def load_tasks(paths: list[str], num_envs: int = 1) -> list[TaskSpec]:
    """Task files, or every task in suite folders. With several concurrent envs, a task's own site must let
    parallel episodes share its backend (a static folder or the header reset contract)."""
    specs = [load_task(f) for f in discover(paths)]
    if not specs:
        raise ValueError(f"no task files in {paths}")
    for s in specs:
        if num_envs > 1 and s.site is not None and not s.site.parallel:
            raise ValueError(
                f"{s.where(('start',))}: task {s.id} runs on site '{s.site.name}' ({s.site.where or s.site.origin}),"
                f" whose episodes cannot run in parallel (num_envs: {num_envs}): set num_envs: 1, or give the site "
                "`reset: {header: true}` (docs/own-sites.md)"
            )
    return specs


def weights_probe(generator: Any, trajs: list[Trajectory]) -> tuple[list[int], list[str]] | None:
    """A (prompt, candidates) pair from the batch whose scores must move after an update (free-form: the
    sampled reply, whose log-prob moves)."""
    for tr in trajs:
        for t in tr.turns:
            if len(t.candidates) > 1 or (not t.candidates and t.action.strip()):
                return t.prompt_ids, t.candidates or [t.action]
    return None


def check_sync(generator: Any, probe: tuple[list[int], list[str]] | None, before: tuple | None) -> float:
    """Guard: after load_weights the generator's candidate scores must differ from before the update."""
    if probe is None or before is None:
        return float("nan")
    after = generator.score_candidates([probe[0]], [probe[1]])[0].seq_logprobs
    delta = max(abs(a - b) for a, b in zip(after, before, strict=True))
    if delta == 0.0:
        raise UpdateNotSyncedError("the optimizer step did not reach the generator (identical candidate scores)")
    return delta


def moved_policy(upd: dict[str, float]) -> bool:
    """Whether an update moved the policy's weights, so the generator's scores must change (the sync guard
    applies). A batch without signal for the policy (every group's rewards equal, no KL or entropy term),
    or steps below bf16's resolution, leave the weights as they were: that is not a missed sync."""
    return bool(upd["optimizer_steps"]) and upd.get("policy_moved", 0.0) > 0.0


def evaluate(engine: RolloutEngine, cfg: TrainConfig, specs: list[TaskSpec]) -> dict[str, float]:
    """Held-out success: ``eval_episodes`` seeds per task from ``eval_seed_start``, one episode each.

    Episodes lost to the infrastructure are not failures of the policy: success is over the others, and
    ``eval_infra_failures`` says how many were left out (a run whose evals lose episodes says so).
    """
    jobs = [
        GroupJob(s.id, cfg.eval_seed_start + i, 1, group=j * cfg.eval_episodes + i)
        for j, s in enumerate(specs)
        for i in range(cfg.eval_episodes)
    ]
    temp = 0.0 if cfg.eval_greedy else cfg.temperature
    res = engine.collect(jobs, temperature=temp, seed=cfg.seed + 12345)
    scored = [t for t in res.trajectories if not t.infra_failure]
    out = {"success": float(np.mean([t.success for t in scored])) if scored else 0.0,
           "eval_episodes_per_s": res.stats["episodes_per_s"]}
    for s in specs:
        mine = [t.success for t in scored if t.task_id == s.id]
        out[f"success/{s.id}"] = float(np.mean(mine)) if mine else 0.0
    out["eval_errors"] = res.stats["errors"]
    out["eval_infra_failures"] = res.stats["infra_failures"]
    return out


def _truncate_jsonl(path: Path, max_step: int) -> None:
    """After a kill: drop records of steps the checkpoint does not contain (they will be redone)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= max_step]
        path.write_text("".join(ln + "\n" for ln in lines))


def collect_groups(
    engine: RolloutEngine,
    cfg: TrainConfig,
    specs: list[TaskSpec],
    algo: AlgorithmPreset,
    sampler: np.random.Generator,
    *,
    writer: Path | None = None,
    tag: dict[str, Any] | None = None,
) -> tuple[list[Trajectory], dict[str, float]]:
    """``groups_per_step`` groups of ``group_size`` episodes that are fit to train on.

    A group that lost an episode to the infrastructure (dead browser, page that failed, exception: see
    ``Trajectory.infra_failure``) is never trained on as reward 0: it is re-run with the same task and seed
    up to ``infra_retries`` times, then dropped. DAPO (dynamic sampling) keeps only groups whose rewards
    differ and samples more groups, up to ``dynamic_sampling_rounds`` extra rounds, until the batch is full.
    """
    kept: list[list[Trajectory]] = []
    stats: Counter[str] = Counter(dict.fromkeys(_COUNTS, 0))  # logged every step, 0 when nothing happened
    next_group = 0

    def fresh(n: int) -> list[tuple[str, int]]:
        tasks = sampler.integers(len(specs), size=n)
        seeds = sampler.integers(cfg.train_seeds[0], cfg.train_seeds[1] + 1, size=n)
        return [(specs[int(t)].id, int(s)) for t, s in zip(tasks, seeds, strict=True)]

    todo = fresh(cfg.groups_per_step)
    retries: dict[tuple[str, int], int] = {}
    rounds = 0
    while todo:
        jobs = [GroupJob(t, s, cfg.group_size, group=next_group + i) for i, (t, s) in enumerate(todo)]
        next_group += len(jobs)
        roll = engine.collect(jobs, temperature=cfg.temperature, seed=int(sampler.integers(2**62)), writer=writer, tag=tag)
        for k, v in roll.stats.items():
            if k not in _RATES:
                stats[k] += v
        stats["successes"] += roll.stats["success"] * roll.stats["episodes"]
        stats["groups_sampled"] += len(jobs)
        by_group: dict[int, list[Trajectory]] = {}
        for tr in roll.trajectories:
            by_group.setdefault(tr.group, []).append(tr)
        todo = []
        for job in jobs:
            group = by_group.get(job.group, [])
            failed = sum(t.infra_failure for t in group)
            if failed:
                stats["infra_failed_episodes"] += failed
                key = (job.task_id, job.seed)
                retries[key] = retries.get(key, 0) + 1
                if retries[key] <= cfg.infra_retries:
                    stats["groups_rerun"] += 1
                    todo.append(key)
                else:
                    stats["groups_dropped_infra"] += 1
                continue
            informative = max(t.ret for t in group) > min(t.ret for t in group)
            if algo.dynamic_sampling and not informative:
                stats["groups_dropped_constant"] += 1
                continue
            kept.append(group)
        missing = cfg.groups_per_step - len(kept) - len(todo)
        if algo.dynamic_sampling and missing > 0 and rounds < cfg.dynamic_sampling_rounds:
            rounds += 1
            todo += fresh(missing)
    stats["dynamic_sampling_rounds"] = rounds
    trajs = [t for g in kept[: cfg.groups_per_step] for t in g]
    out = {k: float(v) for k, v in stats.items()}
    out["success"] = stats["successes"] / max(1, stats["episodes"])  # over every episode sampled
    out["episodes_per_s"] = stats["episodes"] / max(stats["rollout_s"], 1e-9)
    return trajs, out


_RATES = {"success", "episodes_per_s", "scored_tokens_per_s"}  # per-round rates: not summed over rounds
_COUNTS = ("groups_sampled", "groups_rerun", "groups_dropped_infra", "groups_dropped_constant", "infra_failed_episodes")


# ---------------------------------------------------------------- the run
def train(
    cfg: TrainConfig | None,
    run_dir: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    rollout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run; returns the summary also written to ``run_dir/summary.json``. `rollout`:
    where the envs run from now on (the config's ``rollout``, e.g. a resumed run moved onto a Ray cluster)."""
    run_dir = Path(run_dir)
    if resume:
        cfg = TrainConfig.load(run_dir / "config.yaml")
    assert cfg is not None
    if rollout is not None:
        cfg.rollout = rollout
        cfg.pool_config()
    check_generator(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    metrics_path, traj_path = run_dir / "metrics.jsonl", run_dir / "trajectories.jsonl"
    total_steps = min(cfg.total_steps, max_steps) if max_steps else cfg.total_steps
    specs = load_tasks(list(cfg.tasks), cfg.num_envs)

    # --- policy (dtype, device, LoRA), learner (fp32 masters, schedule), generator (same weights)
    model, tok = build_policy(cfg, run_dir)
    kl_override = {"loss_kwargs": {"kl_coef": cfg.kl_coef}} if cfg.kl_coef is not None else {}
    algo = get_algorithm(cfg.algorithm, **{**kl_override, **cfg.algorithm_overrides})
    learner = Learner(
        model, algo, lr=cfg.learning_rate, value_lr=cfg.value_lr, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, entropy_coef=cfg.entropy_coef, temperature=cfg.temperature,
        update_epochs=cfg.update_epochs, micro_batch_tokens=cfg.micro_batch_tokens,
        norm_length=norm_length(cfg, specs), overlong=overlong_lengths(cfg, algo), tis_cap=tis_cap(cfg),
        lr_schedule=cfg.lr_schedule, warmup_steps=cfg.warmup_steps,
        total_optimizer_steps=cfg.total_steps * cfg.update_epochs, min_lr_ratio=cfg.min_lr_ratio,
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
    generator = build_generator(cfg, model, tok, run_dir)
    engine = make_engine(cfg, specs, generator)
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

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir / "last", model, tok, learner, _with_sampler(state, sampler))

    def run_eval() -> dict[str, float]:
        t0 = time.perf_counter()
        ev = evaluate(engine, cfg, specs)
        state.elapsed_s += time.perf_counter() - t0
        log({"kind": "eval", "eval_mode": "greedy" if cfg.eval_greedy else "sampled", "eval_s": time.perf_counter() - t0, **ev})
        if ev["success"] > state.best_success:
            state.best_success, state.best_step = ev["success"], state.step
            checkpoint()
            copy_checkpoint(ckpt_dir / "last", ckpt_dir / "best")
        return ev

    started = time.perf_counter()
    elapsed_at_start = state.elapsed_s
    ahead = ThreadPoolExecutor(1, thread_name_prefix="rollouts-ahead") if cfg.async_rollouts else None
    prefetched = None
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
                # 1. rollouts: G episodes per group from the same seeded start state (refilled, never infra);
                # async: those prefetched during the last update, within the staleness bound
                if prefetched is not None:
                    trajs, roll = prefetched.result()
                    prefetched = None
                else:
                    trajs, roll = collect_groups(
                        engine, cfg, specs, algo, sampler, writer=traj_path, tag={"step": state.step + 1}
                    )
                stale: dict[str, float] = {}
                if ahead is not None:
                    trajs, stale = within_staleness(trajs, generator.weights_version, cfg.max_staleness)
                    nxt = state.step + 1  # the step this update completes: no overlap with its eval or checkpoint
                    if nxt < total_steps and not (cfg.eval_every and nxt % cfg.eval_every == 0) and nxt % cfg.checkpoint_every:
                        prefetched = ahead.submit(collect_groups, engine, cfg, specs, algo, sampler, writer=traj_path,
                                                  tag={"step": nxt + 1})
                # 2. update (advantages, loss, optimizer step) and 3. weight sync with its guard
                probe = weights_probe(generator, trajs)
                with engine.policy_lock:
                    before = generator.score_candidates([probe[0]], [probe[1]])[0].seq_logprobs if probe else None
                upd = update_and_sync(learner, generator, model, trajs, engine if ahead is not None else None)
                with engine.policy_lock:
                    sync_delta = check_sync(generator, probe, before) if moved_policy(upd) else float("nan")
                state.step += 1
                state.episodes += int(roll["episodes"])
                state.elapsed_s += time.perf_counter() - t_step
                step_s = time.perf_counter() - t_step
                rewards = [t.ret for t in trajs]
                log({
                    "kind": "train",
                    "reward": float(np.mean(rewards)) if rewards else 0.0,
                    "success": roll["success"],
                    **group_stats(trajs),
                    "candidate_entropy_rollout": float(np.mean([t.candidate_entropy for tr in trajs for t in tr.turns] or [0.0])),
                    **upd,
                    **{f"rollout/{k}": v for k, v in roll.items()},
                    "rollout_s": roll["rollout_s"],
                    "step_s": step_s,
                    "episodes_per_s": roll["episodes"] / step_s,
                    "sync_delta": sync_delta,
                    "weights_version": generator.weights_version,
                    **stale,
                })
                bar.update(task, completed=state.step,
                           description=f"train r={np.mean(rewards) if rewards else 0:.2f} best={state.best_success:.2f}")
                if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < total_steps:
                    run_eval()
                if state.step % cfg.checkpoint_every == 0:
                    checkpoint()
        final_eval = run_eval()
        checkpoint()
    finally:
        if prefetched is not None:  # stopped early (max_minutes, an error): let the rollouts end first
            try:
                prefetched.result()
            except Exception:  # noqa: BLE001 - the run is ending; its own error (if any) goes up
                pass
        if ahead is not None:
            ahead.shutdown()
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


def update_and_sync(learner: Learner, generator: Any, model: Any, trajs: list[Trajectory],
                    engine: RolloutEngine | None = None) -> dict[str, float]:
    """The learner's update, then the new weights into the generator. A vLLM generator sleeps through the
    update (weights offloaded, KV cache freed) so both fit on one GPU, and wakes up with the new weights
    (merged from LoRA, read back and checked; a failed sync raises WeightSyncError, never goes stale).
    `engine`: rollouts may be running (async): the copy waits for a pause between decision batches."""
    sleeps = hasattr(generator, "sleep")
    if sleeps:
        generator.sleep()
    try:
        upd = learner.update(trajs)
    except BaseException:
        if sleeps:
            generator.wake_up()  # level-1 sleep kept the old weights: valid, and the error goes up
        raise
    if sleeps:
        generator.wake_up(model if upd["optimizer_steps"] else None)
    elif upd["optimizer_steps"] and engine is not None:
        with engine.policy_lock:
            generator.load_weights(model)
            engine.weights_changed()
    elif upd["optimizer_steps"]:
        generator.load_weights(model)
    return upd


def within_staleness(trajs: list[Trajectory], version: int, max_staleness: int) -> tuple[list[Trajectory], dict[str, float]]:
    """Episodes whose every turn was sampled at most `max_staleness` weight versions before `version` (the
    weights about to be updated), and the counts: turns behind, the most behind, episodes dropped."""
    behind = [version - t.weights_version for tr in trajs for t in tr.turns]
    too_old = {tr.group for tr in trajs if any(version - t.weights_version > max_staleness for t in tr.turns)}
    kept = [tr for tr in trajs if tr.group not in too_old]  # whole groups: an advantage needs its group
    return kept, {"stale_turns": float(sum(b > 0 for b in behind)), "max_staleness_seen": float(max(behind, default=0)),
                  "stale_episodes_dropped": float(len(trajs) - len(kept))}


def _with_sampler(state: TrainState, sampler: np.random.Generator) -> TrainState:
    state.sampler = dict(sampler.bit_generator.state)
    return TrainState(**asdict(state))
