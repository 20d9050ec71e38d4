"""Run agents on task suites and summarise: success rate, mean return, per-milestone hit rates."""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrl.agents import AGENTS, Agent, OracleStepError
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.taskspec import TaskSpec, load_suite


@dataclass
class EpisodeResult:
    task_id: str
    seed: int
    success: bool
    return_: float
    steps: int
    milestones: list[str]  # completed, in firing order
    truncated: bool
    truncation_reason: str | None
    error: str | None
    episode_dir: str
    seconds: float
    actions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["return"] = d.pop("return_")
        return d


def run_episode(
    env: BrowserEnv, agent: Agent, seed: int, on_step: Callable[[int, str, dict[str, Any]], None] | None = None
) -> EpisodeResult:
    """One episode of `agent` in `env`. An agent that cannot act (e.g. an oracle step that finds no
    element) ends the episode as a failure with the error recorded; it does not stop the run."""
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed)
    agent.reset(obs, info, env.variant)
    actions: list[str] = []
    error = None
    terminated = truncated = False
    while not (terminated or truncated):
        try:
            action = agent.act(obs)
        except OracleStepError as e:
            error = str(e)
            break
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if on_step:
            on_step(len(actions), action, info)
    s = env.summary()
    return EpisodeResult(
        task_id=env.task.id, seed=seed, success=s.success, return_=s.return_, steps=s.steps,
        milestones=list(s.milestones), truncated=truncated, truncation_reason=info.get("truncation_reason"),
        error=error, episode_dir=str(env.episode_dir), seconds=time.perf_counter() - t0, actions=actions,
    )


def make_agent(name: str, seed: int = 0) -> Agent:
    return AGENTS.get(name)(seed=seed)


def evaluate(
    tasks: list[TaskSpec],
    agent_name: str,
    seeds: list[int],
    out_dir: Path,
    *,
    config: BrowserEnvConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every task x seed; writes out_dir/results.jsonl (as it goes) and out_dir/summary.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = config or BrowserEnvConfig()
    cfg.root_dir = out_dir / "episodes"
    results: list[EpisodeResult] = []
    agent = make_agent(agent_name)
    with (out_dir / "results.jsonl").open("w") as f, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not progress, transient=False,
    ) as bar:
        job = bar.add_task(f"evaluating {agent_name}", total=len(tasks) * len(seeds))
        for spec in tasks:
            env = BrowserEnv(spec, cfg)
            try:
                for seed in seeds:
                    bar.update(job, description=f"{spec.id} seed {seed}")
                    r = run_episode(env, agent, seed)
                    results.append(r)
                    f.write(json.dumps(r.to_json()) + "\n")
                    f.flush()
                    bar.advance(job)
            finally:
                env.close()
    summary = summarise(results, tasks, agent=agent_name, seeds=seeds)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summarise(results: list[EpisodeResult], tasks: list[TaskSpec], **meta: Any) -> dict[str, Any]:
    by_task: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        by_task[r.task_id].append(r)
    per_task = {}
    for spec in tasks:
        rs = by_task.get(spec.id, [])
        if not rs:
            continue
        hits = {m.id: sum(m.id in r.milestones for r in rs) / len(rs) for m in spec.milestones}
        per_task[spec.id] = {
            "episodes": len(rs),
            "success_rate": sum(r.success for r in rs) / len(rs),
            "mean_return": statistics.fmean(r.return_ for r in rs),
            "mean_steps": statistics.fmean(r.steps for r in rs),
            "milestone_hit_rate": hits,
            "errors": [r.error for r in rs if r.error],
        }
    n = len(results)
    return {
        **meta,
        "episodes": n,
        "success_rate": sum(r.success for r in results) / n if n else 0.0,
        "mean_return": statistics.fmean(r.return_ for r in results) if n else 0.0,
        "mean_steps": statistics.fmean(r.steps for r in results) if n else 0.0,
        "truncated": sum(r.truncated for r in results),
        "errors": sum(r.error is not None for r in results),
        "per_task": per_task,
    }


def load_tasks(suite: str | Path, task_ids: list[str] | None = None) -> list[TaskSpec]:
    tasks = load_suite(suite)
    if task_ids:
        known = {t.id for t in tasks}
        missing = [t for t in task_ids if t not in known]
        if missing:
            raise KeyError(f"unknown task(s) {missing} in {suite}")
        tasks = [t for t in tasks if t.id in task_ids]
    return tasks
