"""The trajectories R_phi learns from (`agentrl rm collect`): per task variant, the scripted agent, its
prefixes (oracle steps 1..k, then done), the task's near-misses and the random agent, run in the real env.

>>> collect(load_suite("tasks/core"), seeds=[0, 1], out_dir=Path("runs/prefs"))   # doctest: +SKIP

`agentrl.rewards.prefs` then pairs them (`auto_pairs`) from the files alone; this module sits above
evaluation (it runs episodes with `evaluate.run_episode`), the preference store below it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentrl.agents import RandomAgent, ScriptedAgent
from agentrl.envs.episode import EpisodeEnv
from agentrl.envs.factory import make_env
from agentrl.evaluate import run_episode


class _VariantSteps:
    """Scripted agent over steps picked from the variant: the oracle's first k steps, or a near-miss."""

    def __init__(self, pick: Any, name: str) -> None:
        self.pick, self.name, self._inner = pick, name, ScriptedAgent(steps=[])

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: Any) -> None:
        self._inner = ScriptedAgent(steps=self.pick(variant))
        self._inner.reset(obs, info, variant)

    def act(self, obs: dict[str, Any]) -> str:
        return self._inner.act(obs)


def collect(
    tasks: Sequence[Any], seeds: Sequence[int], out_dir: Path, *, random_episodes: int = 2,
    prefixes: int = 3, near_misses: bool = True, random_max_steps: int = 6, screenshot: bool = False,
    progress: bool = True,
) -> Path:
    """Run, per task and seed, the scripted agent, up to `prefixes` oracle prefixes (first k steps, evenly
    spaced k), each near-miss and `random_episodes`
    random episodes in the real env; trajectories go to `out_dir/episodes/*/trajectory.jsonl` (the agent's
    name is added to `out_dir/episodes.jsonl`). Returns `out_dir`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[Any, int, str, Any, int | None]] = []
    for spec in tasks:
        for seed in seeds:
            jobs.append((spec, seed, "scripted", ScriptedAgent(), None))
            if prefixes:
                n = len(spec.oracle)
                cuts = sorted({round(i * n / (prefixes + 1)) for i in range(1, prefixes + 1)} - {0, n})
                jobs += [(spec, seed, f"prefix-{k}", _VariantSteps(lambda v, k=k: v.oracle[:k], f"prefix-{k}"), None)
                         for k in cuts]
            if near_misses:
                jobs += [(spec, seed, f"near-miss-{j}", _VariantSteps(lambda v, j=j: v.near_misses[j].steps, n.name), None)
                         for j, n in enumerate(spec.near_misses)]
            jobs += [(spec, seed, f"random-{r}", RandomAgent(seed=1000 * seed + r), random_max_steps)
                     for r in range(random_episodes)]
    envs: dict[tuple[str, int | None], EpisodeEnv] = {}
    try:
        with (out_dir / "episodes.jsonl").open("a") as log, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            disable=not progress,
        ) as bar:
            job = bar.add_task("collecting", total=len(jobs))
            for spec, seed, name, agent, max_steps in jobs:
                key = (spec.id, max_steps)
                if key not in envs:
                    # the task's env: the browser, or a desktop for an `env: desktop` task
                    envs[key] = make_env(spec, root_dir=out_dir / "episodes", max_steps=max_steps, screenshot=screenshot)
                bar.update(job, description=f"{spec.id} seed {seed} {name}")
                r = run_episode(envs[key], agent, seed)
                log.write(json.dumps({"episode": Path(r.episode_dir).name, "task_id": spec.id, "seed": seed,
                                      "agent": name, "return": r.return_, "error": r.error}) + "\n")
                bar.advance(job)
    finally:
        for env in envs.values():
            env.close()
    return out_dir
