"""Every entry point gets a desktop env for a desktop task (`agentrl.envs.factory.make_env`): `agentrl run`,
`agentrl evaluate` (through worker processes), `agentrl replay`, `agentrl tasks coverage`, `agentrl rm
collect` and the trainer's rollouts. Each runs a real episode of `xterm-exit` (one oracle step) and shows
it ran on a desktop: the scripted agent succeeds (in the browser its oracle finds no terminal), and the
episode directory holds the apps' home and the trajectory's header names the X display."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agentrl.suites import SUITES_DIR
from typer.testing import CliRunner

from agentrl.cli import app
from agentrl.taskspec import load_task
from agentrl.trajectory import read_trajectory

pytestmark = pytest.mark.skipif(
    not all(Path(p).exists() for p in ("/usr/bin/Xvfb", "/usr/bin/xdotool", "/usr/bin/openbox", "/usr/bin/xterm")),
    reason="the desktop packages are not installed (bash scripts/setup.sh installs them)",
)

TASK = SUITES_DIR / "desktop" / "xterm-exit.yaml"


def ran_on_a_desktop(episode_dir: Path) -> None:
    assert (episode_dir / "home").is_dir(), f"{episode_dir}: no apps' home: not a desktop episode"
    meta, steps, summary = read_trajectory(episode_dir / "trajectory.jsonl")
    assert meta["display"].startswith(":"), meta
    assert steps and "Windows:" in steps[0].observation


def cli(*args: str) -> str:
    r = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_factory_dispatches_on_the_tasks_env() -> None:
    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.envs.desktop import DesktopEnv, DesktopEnvConfig
    from agentrl.envs.factory import AsyncDesktopEnv, env_config, make_async_env, make_env

    cfg = env_config("desktop", BrowserEnvConfig(max_steps=7, screenshot=True, viewport=(800, 600), isolation="storage"))
    assert isinstance(cfg, DesktopEnvConfig)
    assert (cfg.max_steps, cfg.screenshot, cfg.size) == (7, True, (800, 600))
    assert cfg.max_obs_chars == DesktopEnvConfig().max_obs_chars  # left at the browser's default: not carried
    env = make_env(TASK, BrowserEnvConfig(max_steps=3))
    try:
        assert isinstance(env, DesktopEnv) and env.max_steps == 3
    finally:
        env.close()
    assert isinstance(make_async_env(load_task(TASK)), AsyncDesktopEnv)


def test_desktop_task_from_run(tmp_path: Path) -> None:
    out = cli("run", "xterm-exit", "--out", str(tmp_path))
    assert "success=True" in out, out
    (episode,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    ran_on_a_desktop(episode)


def test_desktop_task_from_evaluate_workers_and_replay(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cli("evaluate", "--suite", "desktop", "--task", "xterm-exit", "--seeds", "2", "--workers", "2",
        "--agent", "scripted", "--out", str(out), "--no-report")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0 and summary["errors"] == 0, summary
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    assert len({r["worker_pid"] for r in rows}) == 2  # both workers ran one
    for r in rows:
        ran_on_a_desktop(out / r["episode_dir"])
    replayed = cli("replay", str(out), "0")
    assert "match" in replayed and "mismatch" not in replayed, replayed


def test_desktop_task_from_tasks_coverage(tmp_path: Path) -> None:
    md = tmp_path / "coverage.md"
    cli("tasks", "coverage", "desktop", "--task", "xterm-exit", "--seeds", "1", "--random-seeds", "0", "--out", str(md))
    row = next(ln for ln in md.read_text().splitlines() if ln.startswith("| xterm-exit"))
    assert "1/1" in row, row


def test_desktop_task_from_rm_collect(tmp_path: Path) -> None:
    cli("rm", "collect", "--suite", "desktop", "--task", "xterm-exit", "--seeds", "1", "--random-episodes", "0",
        "--out", str(tmp_path))
    log = [json.loads(ln) for ln in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    scripted = next(e for e in log if e["agent"] == "scripted")
    assert scripted["error"] is None and scripted["return"] > 0, scripted
    ran_on_a_desktop(tmp_path / "episodes" / scripted["episode"])


def test_desktop_task_from_the_trainers_rollouts(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from agentrl.envs.browser import BrowserEnvConfig

    from agentrl.learner.config import SHORT_SYSTEM_PROMPT
    from agentrl.learner.rollout import GroupJob, RolloutEngine
    from agentrl.policy.hf_backend import HFGenerator
    from agentrl.policy.model import build_tiny_policy
    from agentrl.policy.prompt import PromptBuilder

    torch.set_num_threads(1)
    model, tok = build_tiny_policy(tmp_path / "tiny", seed=0)
    engine = RolloutEngine(
        [load_task(TASK)], HFGenerator(model, tok), PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT, max_prompt_tokens=1024),
        num_envs=1, extra_actions=('type("exit\\n")',),
        env_config=BrowserEnvConfig(root_dir=tmp_path / "episodes", max_steps=1),
    )
    try:
        result = engine.collect([GroupJob("xterm-exit", seed=0, size=1)], temperature=1.0, seed=0)
    finally:
        engine.close()
    (traj,) = result.trajectories
    assert traj.error is None and traj.turns, traj
    (episode,) = [p for p in (tmp_path / "episodes").iterdir() if p.is_dir()]
    ran_on_a_desktop(episode)
