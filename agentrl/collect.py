"""The trajectories R_phi learns from (`agentrl rm collect`): per task variant, the scripted agent, its
prefixes (oracle steps 1..k, then done), the task's near-misses and the random agent, run in the real env.

>>> collect(load_suite("tasks/core"), seeds=[0, 1], out_dir=Path("runs/prefs"))   # doctest: +SKIP

`agentrl.rewards.prefs` then pairs them (`auto_pairs`) from the files alone; this module sits above
evaluation (it runs episodes with `evaluate.run_episode`), the preference store below it.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.agents import RandomAgent, ScriptedAgent
from agentrl.envs.factory import make_env
from agentrl.envs.workers import EnvCache, PoolConfig
from agentrl.evaluate import run_episode, settle


class _VariantSteps:
    """Scripted agent over steps picked from the variant: the oracle's first k steps, or a near-miss."""

    def __init__(self, pick: Any, name: str) -> None:
        self.pick, self.name, self._inner = pick, name, ScriptedAgent(steps=[])

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: Any) -> None:
        self._inner = ScriptedAgent(steps=self.pick(variant))
        self._inner.reset(obs, info, variant)

    def act(self, obs: dict[str, Any]) -> str:
        return self._inner.act(obs)


@dataclass(frozen=True)
class _Job:
    spec: Any
    seed: int
    name: str
    agent: Any
    max_steps: int | None


class _Runner:
    """Plays jobs in one env per (task, max_steps), writing episodes under ``out_dir/episodes`` (through a
    worker's own staging folder on Ray: a dead worker's unfinished episode never reaches the pairs)."""

    def __init__(self, out_dir: Path, screenshot: bool, staging: str | None = None, max_envs: int | None = None) -> None:
        self.root = out_dir / "episodes"
        self.staging = self.root / staging if staging else None
        self.screenshot = screenshot
        self.envs = EnvCache(max_envs)  # one env per (task, max_steps), at most max_envs kept

    def run(self, job: _Job) -> dict[str, Any]:
        # the task's env: the browser, or a desktop for an `env: desktop` task
        env = self.envs.get((job.spec.id, job.max_steps), lambda: make_env(
            job.spec, root_dir=self.staging or self.root, max_steps=job.max_steps, screenshot=self.screenshot))
        r = run_episode(env, job.agent, job.seed)
        episode = Path(r.episode_dir)
        if self.staging is not None:
            episode = settle(episode, self.root)
        return {"episode": episode.name, "task_id": job.spec.id, "seed": job.seed, "agent": job.name,
                "return": r.return_, "error": r.error}

    def close(self) -> None:
        self.envs.close()


def _ray_runner(out_dir: Path, screenshot: bool, max_envs: int, index: int) -> _Runner:
    return _Runner(out_dir, screenshot, staging=f".worker-{index}", max_envs=max_envs)


def _failed(job: _Job, reason: str) -> dict[str, Any]:
    return {"episode": None, "task_id": job.spec.id, "seed": job.seed, "agent": job.name, "return": None, "error": reason}


def collect(
    tasks: Sequence[Any], seeds: Sequence[int], out_dir: Path, *, random_episodes: int = 2,
    prefixes: int = 3, near_misses: bool = True, random_max_steps: int = 6, screenshot: bool = False,
    progress: bool = True, pool: PoolConfig | None = None,
) -> Path:
    """Run, per task and seed, the scripted agent, up to `prefixes` oracle prefixes (first k steps, evenly
    spaced k), each near-miss and `random_episodes`
    random episodes in the real env; trajectories go to `out_dir/episodes/*/trajectory.jsonl` (the agent's
    name is added to `out_dir/episodes.jsonl`). `pool` with ``backend="ray"``: on Ray actors
    (`agentrl.envs.ray_pool.run_episodes`; an episode that could not be run is logged with its error and no
    episode). Returns `out_dir`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = []
    for spec in tasks:
        for seed in seeds:
            jobs.append(_Job(spec, seed, "scripted", ScriptedAgent(), None))
            if prefixes:
                n = len(spec.oracle)
                cuts = sorted({round(i * n / (prefixes + 1)) for i in range(1, prefixes + 1)} - {0, n})
                jobs += [_Job(spec, seed, f"prefix-{k}", _VariantSteps(functools.partial(_prefix, k=k), f"prefix-{k}"), None)
                         for k in cuts]
            if near_misses:
                jobs += [_Job(spec, seed, f"near-miss-{j}", _VariantSteps(functools.partial(_near_miss, j=j), n.name), None)
                         for j, n in enumerate(spec.near_misses)]
            jobs += [_Job(spec, seed, f"random-{r}", RandomAgent(seed=1000 * seed + r), random_max_steps)
                     for r in range(random_episodes)]
    with (out_dir / "episodes.jsonl").open("a") as log, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("collecting", total=len(jobs))

        def on_result(row: dict[str, Any]) -> None:
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.update(task, advance=1, description=f"{row['task_id']} seed {row['seed']} {row['agent']}")

        if pool is not None and pool.backend == "ray":
            from agentrl.envs.ray_pool import run_episodes

            episodes = out_dir / "episodes"
            run_episodes(jobs, functools.partial(_ray_runner, out_dir, screenshot, pool.max_envs), pool, on_result, _failed,
                         on_lost=lambda i: shutil.rmtree(episodes / f".worker-{i}", ignore_errors=True))
            for leftover in episodes.glob(".worker-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            return out_dir
        runner = _Runner(out_dir, screenshot)
        try:
            for job in jobs:
                on_result(runner.run(job))
        finally:
            runner.close()
    return out_dir


def _prefix(variant: Any, k: int) -> list[Any]:
    return variant.oracle[:k]


def _near_miss(variant: Any, j: int) -> list[Any]:
    return variant.near_misses[j].steps
