"""Run an agent on task x seed episodes (in parallel worker processes) and summarise them with intervals.

    summary = evaluate(tasks, "scripted", seeds=[0, 1, 2], out_dir=Path("runs/eval"), workers=2)

The run directory gets, as the run goes:

- ``run.json``: what was run (agent, suite, split, seeds, tasks, the sites they run on, env config, git
  commit), written first;
- ``results.jsonl``: one line per episode **as it finishes** (task, category, tier, seed, success, return,
  completed milestones with the step each completed at, per-step rewards and reward audits, errors,
  truncation reason, timings, the episode dir relative to the run dir, the actions);
- ``episodes/<episode-id>/``: each episode's ``trajectory.jsonl`` (+ ``screenshots/`` when recorded);
- ``summary.json``: overall and per task / category / tier: success rate with its 95% Wilson interval,
  mean return with a bootstrap interval, mean steps, milestone hit rates and funnels;
- ``report.html`` (`agentrl.report`).

Workers are spawned processes; each owns its agent and one env per task, the one the task runs in
(`agentrl.envs.factory.make_env`: a `BrowserEnv`, or a `DesktopEnv` for an ``env: desktop`` task; so one
Chromium and one sandbox server per process, one Xvfb per desktop task). A worker that dies takes only its current episode with it: that episode
is recorded with the error and the others go on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentrl.agents import Agent, make_agent
from agentrl.envs.browser import BrowserEnvConfig
from agentrl.envs.episode import EpisodeEnv
from agentrl.envs.factory import make_env
from agentrl.envs.workers import EnvCache, PoolConfig
from agentrl.report import write_report
from agentrl.sandbox.sites import SiteError, run_sites, sites_up
from agentrl.stats import bootstrap_mean_ci, wilson_ci
from agentrl.taskspec import TaskSpec, load_suite
from agentrl.trajectory import load_results
from agentrl.types import EpisodeResult, Timings

__all__ = ["EpisodeResult", "evaluate", "load_results", "load_tasks", "make_agent", "run_episode", "summarise"]


def _config_value(v: Any) -> Any:
    """An env-config value for run.json: paths as text, the reward router's config as its mapping."""
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    if hasattr(v, "config") and hasattr(v.config, "model_dump"):  # a built RewardRouter
        return v.config.model_dump(mode="json")
    return v


def _jsonable(x: Any) -> Any:
    """A reward audit as plain JSON (the router gives a pydantic record; a dict passes through)."""
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    return json.loads(json.dumps(x, default=str))


def run_episode(
    env: EpisodeEnv, agent: Agent, seed: int, on_step: Callable[[int, str, dict[str, Any]], None] | None = None
) -> EpisodeResult:
    """One episode of `agent` in `env`. An agent that cannot act (an oracle step that finds no element, an
    endpoint that stays down) ends the episode as a failure with the error recorded; it does not stop the run."""
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed)
    reset_ms = (time.perf_counter() - t0) * 1000
    agent.reset(obs, info, env.variant)
    actions: list[str] = []
    rewards: list[float] = []
    audits: list[Any] = []
    step_ms: list[float] = []
    completed: list[dict[str, Any]] = []
    error = None
    terminated = truncated = False
    while not (terminated or truncated):
        try:
            action = agent.act(obs)
        except Exception as e:  # noqa: BLE001 - a failing agent is a failed episode, recorded with its error
            error = f"{type(e).__name__}: {e}"
            break
        actions.append(action)
        t1 = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        step_ms.append((time.perf_counter() - t1) * 1000)
        rewards.append(float(reward))
        audits.append(_jsonable(info["audit"]) if info.get("audit") is not None else None)
        completed += [{"id": m.id, "step": m.step} for m in info["milestones"] if m.complete]
        if on_step:
            on_step(len(actions), action, info)
    s = env.summary()
    return EpisodeResult(
        task_id=env.task.id, seed=seed, success=s.success, return_=s.return_, steps=s.steps,
        milestones=list(s.milestones), terminated=terminated, truncated=truncated,
        truncation_reason=info.get("truncation_reason"), error=error, episode_dir=str(env.episode_dir),
        actions=actions, milestone_steps=completed, rewards=rewards,
        audits=audits if any(a is not None for a in audits) else None,
        timings=Timings(reset_ms=reset_ms, step_ms_median=statistics.median(step_ms) if step_ms else 0.0,
                        total_s=time.perf_counter() - t0),
        category=env.task.category or "", tier=env.task.tier,
    )


# ---------------------------------------------------------------- workers
@dataclass(frozen=True)
class _Job:
    index: int
    task: TaskSpec
    seed: int
    category: str


class _Runner:
    """Runs jobs with one agent and one env per task; used in-process (1 worker) and in each worker.

    With `staging` (a Ray worker), episodes are written under ``root_dir/staging`` and each is moved up into
    ``root_dir`` once it has ended, so a worker that dies leaves its unfinished episode in its own staging
    folder (removed by the caller), never among the run's episodes."""

    def __init__(self, agent: str, options: dict[str, Any], config: BrowserEnvConfig, staging: str | None = None,
                 max_envs: int | None = None) -> None:
        self.agent = make_agent(agent, seed=0, **options)
        self.final_root = config.root_dir
        self.staging = Path(config.root_dir) / staging if staging and config.root_dir else None
        self.config = dataclasses.replace(config, root_dir=self.staging) if self.staging else config
        self.envs = EnvCache(max_envs)  # one env per task, at most max_envs kept

    def run(self, job: _Job) -> EpisodeResult:
        t0 = time.perf_counter()
        try:
            env = self.envs.get(job.task.id, lambda: make_env(job.task, self.config))
            r = run_episode(env, self.agent, job.seed)
            if self.staging is not None and r.episode_dir:
                r = r.model_copy(update={"episode_dir": str(settle(Path(r.episode_dir), Path(self.final_root)))})
        except SiteError as e:  # the site's reset contract failed: the episode ends truncated with the reason
            r = _failed(job, f"{type(e).__name__}: {e}", time.perf_counter() - t0, reason=str(e))
        except Exception as e:  # noqa: BLE001 - the env failed to start or reset: a failed, recorded episode
            r = _failed(job, f"{type(e).__name__}: {e}", time.perf_counter() - t0)
        return r.model_copy(update={"category": job.category, "worker_pid": os.getpid()})

    def close(self) -> None:
        """Close the envs (the next job makes them again)."""
        self.envs.close()


def settle(episode_dir: Path, root: Path) -> Path:
    """Move a finished episode's directory from a worker's staging folder into `root` (a rename: files the
    env still holds open stay valid); returns where it is now."""
    dest = root / episode_dir.name
    if episode_dir.exists() and episode_dir != dest:
        episode_dir.rename(dest)
    return dest


def _ray_runner(agent: str, options: dict[str, Any], config: BrowserEnvConfig, max_envs: int, index: int) -> _Runner:
    return _Runner(agent, options, config, staging=f".worker-{index}", max_envs=max_envs)


def _failed(job: _Job, error: str, seconds: float = 0.0, reason: str = "error") -> EpisodeResult:
    return EpisodeResult(
        task_id=job.task.id, seed=job.seed, success=False, return_=0.0, steps=0, milestones=[], truncated=True,
        truncation_reason=reason, error=error, timings=Timings(total_s=seconds), category=job.category,
        tier=job.task.tier,
    )


def _worker(wid: int, agent: str, options: dict[str, Any], config: BrowserEnvConfig, jobs: Any, out: Any) -> None:
    try:
        runner = _Runner(agent, options, config)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which stops the run with it
        out.put(("fatal", wid, f"could not make agent {agent!r}: {type(e).__name__}: {e}"))
        return
    try:
        while (job := jobs.get()) is not None:
            out.put(("start", wid, job.index))
            out.put(("done", wid, (job.index, runner.run(job))))
    finally:
        runner.close()
        out.put(("exit", wid, None))


def _run_parallel(jobs: list[_Job], workers: int, agent: str, options: dict[str, Any], config: BrowserEnvConfig,
                  on_result: Callable[[EpisodeResult], None]) -> None:
    ctx = mp.get_context("spawn")  # fork would copy the parent's Playwright threads and event loop
    job_q, out_q = ctx.Queue(), ctx.Queue()
    for j in jobs:
        job_q.put(j)
    for _ in range(workers):
        job_q.put(None)
    procs = [ctx.Process(target=_worker, args=(w, agent, options, config, job_q, out_q), daemon=True)
             for w in range(workers)]
    for p in procs:
        p.start()
    running: dict[int, int] = {}  # worker -> job index it is on
    finished: set[int] = set()
    exited: set[int] = set()
    try:
        while len(finished) < len(jobs):
            try:
                kind, wid, payload = out_q.get(timeout=1.0)
            except queue.Empty:
                for w, p in enumerate(procs):  # a worker killed mid-episode: record its episode, go on
                    if w not in exited and not p.is_alive():
                        exited.add(w)
                        if w in running and running[w] not in finished:
                            idx = running.pop(w)
                            finished.add(idx)
                            on_result(_failed(jobs[idx], f"worker process died (exit code {p.exitcode})"))
                if len(exited) == workers:
                    for j in jobs:
                        if j.index not in finished:
                            finished.add(j.index)
                            on_result(_failed(j, "no worker process left to run this episode"))
                continue
            if kind == "fatal":
                raise RuntimeError(payload)
            if kind == "start":
                running[wid] = payload
            elif kind == "done":
                idx, result = payload
                running.pop(wid, None)
                finished.add(idx)
                on_result(result)
            elif kind == "exit":
                exited.add(wid)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


# ---------------------------------------------------------------- the run
def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has local changes), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def evaluate(
    tasks: list[TaskSpec],
    agent: str,
    seeds: list[int],
    out_dir: Path,
    *,
    config: BrowserEnvConfig | None = None,
    progress: bool = True,
    workers: int = 1,
    agent_options: dict[str, Any] | None = None,
    categories: dict[str, str] | None = None,
    meta: dict[str, Any] | None = None,
    report: bool = True,
    pool: PoolConfig | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run every task x seed with `workers` processes; returns the summary (also in out_dir/summary.json).

    `pool`: with ``backend="ray"`` the episodes run on ``pool.workers`` Ray actors instead (each its agent,
    browser and sandbox server; `agentrl.envs.ray_pool.run_episodes`): a dead actor's episode is re-run on
    another from its seed, and one past ``pool.episode_timeout_s`` is recorded as an error, never a score.

    `resume`: keep the episodes already in out_dir/results.jsonl (a run that was stopped or killed) and run
    only the (task, seed) episodes it lacks.

    `categories`: task id -> category (from `Suite.category`; default the task's own field). `meta` (suite,
    split, ...) goes into run.json and summary.json. `report`: also write out_dir/report.html.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    sites = run_sites(tasks, workers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = BrowserEnvConfig(**{**(config.__dict__ if config else {}), "root_dir": (out_dir / "episodes").resolve(),
                              "record": True, "keep_episode_dirs": True})
    options = {k: v for k, v in (agent_options or {}).items() if v is not None}
    cats = {t.id: (categories or {}).get(t.id) or t.category or "uncategorised" for t in tasks}
    jobs = [_Job(i, t, s, cats[t.id]) for i, (t, s) in enumerate((t, s) for t in tasks for s in seeds)]
    order = {(j.task.id, j.seed): j.index for j in jobs}
    results: list[EpisodeResult] = []
    if resume and (out_dir / "results.jsonl").exists():
        results = [r for r in load_results(out_dir) if (r.task_id, r.seed) in order]
        done = {(r.task_id, r.seed) for r in results}
        jobs = [j for j in jobs if (j.task.id, j.seed) not in done]
    on_ray = pool is not None and pool.backend == "ray"
    workers = max(1, min(pool.workers if on_ray else workers, len(jobs)))
    started = time.perf_counter()
    run_meta = {
        "agent": agent, "agent_options": options, **(meta or {}), "seeds": list(seeds),
        "task_files": {t.id: str(t.path) for t in tasks}, "workers": workers,
        "backend": "ray" if on_ray else "local", "git_commit": git_commit(),
        "sites": {s.name: s.origin or f"static {s.folder()}" for s in sites},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), **({"resumed_with": len(results)} if resume else {}),
        "env_config": {k: _config_value(v) for k, v in asdict(cfg).items()},
    }
    (out_dir / "run.json").write_text(json.dumps(run_meta, indent=2))
    # the tasks' own sites run for the whole run (started here, before any worker; stopped at its end)
    with sites_up(sites), (out_dir / "results.jsonl").open("a" if resume else "w") as f, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not progress, transient=False,
    ) as bar:
        job = bar.add_task(f"{agent}: starting {workers} worker(s)", total=len(jobs))

        def on_result(r: EpisodeResult) -> None:
            results.append(r)
            f.write(json.dumps(r.to_json(out_dir.resolve())) + "\n")
            f.flush()
            ok = sum(x.success for x in results)
            mark = "ok" if r.success else ("error" if r.error else "fail")
            bar.update(job, advance=1, description=f"{agent}: {ok}/{len(results)} solved · last {r.task_id} s{r.seed} {mark}")

        if not jobs:
            pass  # a resumed run that had recorded every episode
        elif on_ray:
            from agentrl.envs.ray_pool import run_episodes

            episodes = Path(cfg.root_dir)
            run_meta["ray"] = run_episodes(
                jobs, functools.partial(_ray_runner, agent, options, cfg, pool.max_envs), pool, on_result,
                on_failed=lambda j, reason: _failed(j, reason),
                on_lost=lambda i: shutil.rmtree(episodes / f".worker-{i}", ignore_errors=True),
            )
            for leftover in episodes.glob(".worker-*"):  # staging folders of closed workers (empty when all ended)
                shutil.rmtree(leftover, ignore_errors=True)
        elif workers == 1:
            runner = _Runner(agent, options, cfg)
            try:
                for j in jobs:
                    on_result(runner.run(j))
            finally:
                runner.close()
        else:
            _run_parallel(jobs, workers, agent, options, cfg, on_result)
    results.sort(key=lambda r: order[(r.task_id, r.seed)])
    summary = summarise(results, tasks, **{k: v for k, v in run_meta.items() if k != "env_config"},
                        wall_s=time.perf_counter() - started)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if report:

        write_report(out_dir)
    return summary


# ---------------------------------------------------------------- summaries
def _group_stats(rs: list[EpisodeResult]) -> dict[str, Any]:
    n, k = len(rs), sum(r.success for r in rs)
    returns = [r.return_ for r in rs]
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "success_ci": list(wilson_ci(k, n)),
        "mean_return": statistics.fmean(returns) if n else 0.0,
        "return_ci": list(bootstrap_mean_ci(returns)) if n else [0.0, 0.0],
        "mean_steps": statistics.fmean(r.steps for r in rs) if n else 0.0,
        "truncated": sum(r.truncated for r in rs),
        "errors": sum(r.error is not None for r in rs),
    }


def milestone_rates(spec: TaskSpec, rs: list[EpisodeResult]) -> tuple[dict[str, float], dict[str, float]]:
    """(hit rate, funnel) per milestone in the task's order. Funnel: the fraction of episodes that
    completed this milestone *and every one listed before it* (so it never rises along the list)."""
    n = len(rs) or 1
    ids = [m.id for m in spec.milestones]
    hits = {m: sum(m in r.milestones for r in rs) / n for m in ids}
    funnel = {m: sum(all(x in r.milestones for x in ids[: i + 1]) for r in rs) / n for i, m in enumerate(ids)}
    return hits, funnel


def summarise(results: list[EpisodeResult], tasks: list[TaskSpec], **meta: Any) -> dict[str, Any]:
    """Overall, per task, per category and per tier statistics (success with a 95% Wilson interval, mean
    return with a 95% bootstrap interval) plus `meta` (agent, suite, ...)."""
    by_task: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        by_task[r.task_id].append(r)
    per_task = {}
    for spec in tasks:
        rs = by_task.get(spec.id, [])
        if not rs:
            continue
        hits, funnel = milestone_rates(spec, rs)
        per_task[spec.id] = {
            "category": rs[0].category or spec.category or "uncategorised", "tier": spec.tier,
            **_group_stats(rs), "milestone_hit_rate": hits, "milestone_funnel": funnel,
            "error_messages": sorted({r.error for r in rs if r.error}),
        }

    def grouped(key: Callable[[EpisodeResult], Any]) -> dict[str, Any]:
        groups: dict[str, list[EpisodeResult]] = defaultdict(list)
        for r in results:
            groups[str(key(r))].append(r)
        return {g: _group_stats(rs) for g, rs in sorted(groups.items())}

    return {
        **meta,
        **_group_stats(results),
        "per_task": per_task,
        "per_category": grouped(lambda r: r.category or "uncategorised"),
        "per_tier": grouped(lambda r: r.tier),
    }


def load_tasks(suite: str | Path, task_ids: Iterable[str] | None = None) -> list[TaskSpec]:
    """The tasks of a suite folder, optionally only `task_ids` (unknown ids are an error naming them)."""
    tasks = load_suite(suite)
    if task_ids:
        wanted = list(task_ids)
        known = {t.id for t in tasks}
        missing = [t for t in wanted if t not in known]
        if missing:
            from agentrl.registry import did_you_mean

            raise KeyError(f"unknown task(s) {missing} in {suite}{did_you_mean(missing[0], tuple(known))}")
        tasks = [t for t in tasks if t.id in wanted]
    return tasks
