"""Replay one recorded episode: same task, same seed, the recorded actions, in a fresh env; check that it
reproduces the same milestones (in the same order, at the same steps) and the same return.

    result = replay(Path("runs/eval"), "reports-open:1")     # or an index into results.jsonl, or a dir name
    result.match, result.divergence

A mismatch means the env, the task or the sandbox app is not deterministic given (task, seed, actions):
a reward that cannot be reproduced cannot be trusted for training either.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrl.envs.browser import BrowserEnvConfig
from agentrl.envs.episode import EpisodeEnv
from agentrl.envs.factory import make_env
from agentrl.taskspec import load_task
from agentrl.trajectory import load_results, read_trajectory
from agentrl.types import EpisodeResult, StepRecord

_ENV_KEYS = ("viewport", "max_steps", "action_timeout_ms", "settle_timeout_ms", "browser_timeout_ms", "max_obs_chars",
             "max_obs_elements", "max_download_bytes", "max_downloads")


@dataclass(frozen=True)
class ReplayResult:
    match: bool
    episode: str
    task_id: str
    seed: int
    steps: int  # actions replayed
    expected_return: float
    replayed_return: float
    expected_milestones: list[str]
    replayed_milestones: list[str]
    divergence: str | None = None  # the first difference, with its step
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def find_episode(run_dir: Path, episode: str) -> tuple[int, EpisodeResult]:
    """An episode of the run by index in results.jsonl (``3``), ``TASK:SEED``, or its episode dir name."""
    results = load_results(run_dir)
    if episode.isdigit():
        i = int(episode)
        if i >= len(results):
            raise KeyError(f"episode index {i} out of range: {run_dir} has {len(results)} episodes (0..{len(results) - 1})")
        return i, results[i]
    for i, r in enumerate(results):
        if f"{r.task_id}:{r.seed}" == episode or (r.episode_dir and Path(r.episode_dir).name == episode):
            return i, r
    examples = ", ".join(f"{r.task_id}:{r.seed}" for r in results[:4])
    raise KeyError(f"no episode {episode!r} in {run_dir}/results.jsonl (use an index, TASK:SEED like {examples}, "
                   "or an episode dir name)")


def _fired(step: StepRecord) -> list[tuple[str, float]]:
    return [(m.id, round(m.progress, 6)) for m in step.milestones]


def replay(run_dir: str | Path, episode: str) -> ReplayResult:
    """Re-run the episode's recorded actions in a fresh env and compare step by step (see module doc)."""
    run_dir = Path(run_dir)
    _, rec = find_episode(run_dir, episode)
    name = f"{rec.task_id}:{rec.seed}"
    if not rec.episode_dir or not (run_dir / rec.episode_dir / "trajectory.jsonl").exists():
        raise FileNotFoundError(f"{name}: no trajectory.jsonl recorded (episode dir {rec.episode_dir!r})")
    meta, steps, summary = read_trajectory(run_dir / rec.episode_dir / "trajectory.jsonl")
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    task_file = run.get("task_files", {}).get(rec.task_id)
    if task_file is None:
        raise FileNotFoundError(f"{run_dir}/run.json does not say which file task {rec.task_id!r} came from")
    recorded = {k: v for k, v in run.get("env_config", {}).items() if k in _ENV_KEYS}
    if "viewport" in recorded:
        recorded["viewport"] = tuple(recorded["viewport"])
    notes = []
    if rec.error:
        notes.append(f"the recorded episode ended with an agent error after {len(steps)} steps: {rec.error}")
    with tempfile.TemporaryDirectory(prefix="agentrl-replay-") as tmp:
        env = make_env(load_task(task_file), BrowserEnvConfig(**recorded, root_dir=Path(tmp)))
        try:
            divergence, got = _compare(env, rec.seed, steps)
            replayed = env.summary()
        finally:
            env.close()
    expected_ms = list(summary.milestones) if summary else list(rec.milestones)
    expected_ret = summary.return_ if summary else rec.return_
    if divergence is None and replayed.milestones != expected_ms:
        divergence = f"completed milestones differ: expected {expected_ms}, replay {replayed.milestones}"
    if divergence is None and abs(replayed.return_ - expected_ret) > 1e-6:
        divergence = f"return differs: expected {expected_ret:.6f}, replay {replayed.return_:.6f}"
    return ReplayResult(
        match=divergence is None, episode=name, task_id=rec.task_id, seed=rec.seed, steps=got,
        expected_return=expected_ret, replayed_return=replayed.return_, expected_milestones=expected_ms,
        replayed_milestones=list(replayed.milestones), divergence=divergence, notes=notes,
    )


def _compare(env: EpisodeEnv, seed: int, steps: list[StepRecord]) -> tuple[str | None, int]:
    """Step through the recorded actions; the first step whose outcome differs, and how many were replayed."""
    env.reset(seed=seed)
    for i, s in enumerate(steps):
        _, reward, terminated, truncated, info = env.step(s.action)
        got = [(m.id, round(m.progress, 6)) for m in info["milestones"]]
        where = f"step {s.t} ({s.action[:80]!r})"
        if got != _fired(s):
            return f"{where}: expected milestones {_fired(s)}, replay fired {got}", i + 1
        if abs(reward - s.reward) > 1e-6:
            return f"{where}: expected reward {s.reward:.6f}, replay {reward:.6f}", i + 1
        if (info["action_error"] is None) != (s.error is None):
            return f"{where}: expected action error {s.error!r}, replay {info['action_error']!r}", i + 1
        ended, was_ended = terminated or truncated, s.terminated or s.truncated
        if ended != was_ended:
            return (f"{where}: the recorded episode {'ended' if was_ended else 'went on'} here, the replay "
                    f"{'ended' if ended else 'went on'} ({info.get('truncation_reason') or 'terminated'})"), i + 1
        if ended:
            return None, i + 1
    return None, len(steps)
