"""`agentrl run` (one episode, step by step), `agentrl train` and `agentrl sandbox`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from agentrl.cli.common import console, err, fail, resolve_task
from agentrl.yamlpos import TaskFileError


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(train)
    app.command()(sandbox)


def run(
    task: str = typer.Argument(..., help="Task file or bundled task id."),
    agent: str = typer.Option("scripted", help="scripted | random | miniwob-heuristic | hf:PATH | openai:MODEL | ckpt:RUN_DIR | py:MODULE:CLASS"),
    seed: int = typer.Option(0),
    screenshot: bool = typer.Option(False, help="Record a screenshot per step."),
    obs_boxes: bool = typer.Option(False, "--obs-boxes", help="Add [box=x,y,w,h] (CSS pixels) to each element line, for pointer actions without vision (desktop observations always carry [at=x,y])."),
    out: Path | None = typer.Option(None, help="Where the episode directory goes (default: a temp dir)."),
) -> None:
    """Run one episode, printing each step and the milestone events it fired."""
    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.envs.factory import make_env
    from agentrl.evaluate import make_agent, run_episode

    try:
        # the task's env: the browser, or a desktop for an `env: desktop` task
        env = make_env(resolve_task(task), BrowserEnvConfig(screenshot=screenshot, root_dir=out, obs_boxes=obs_boxes))
    except TaskFileError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1) from None

    def show(t: int, action: str, info: dict) -> None:
        line = f"[bold]{t:>3}[/bold] {action}"
        if info["action_error"]:
            line += f"  [red]error: {info['action_error']}[/red]"
        for m in info["milestones"]:
            line += f"\n      [green]+{m.reward:.2f} {m.id}[/green] ({m.category}) {m.evidence.detail}"
        console.print(line, highlight=False)

    try:
        r = run_episode(env, make_agent(agent, seed), seed, on_step=show)
        console.print(f"goal: {env.variant.instruction if env.variant else ''}", highlight=False)
    finally:
        env.close()
    color = "green" if r.success else "red"
    console.print(
        f"[{color}]success={r.success}[/{color}] return={r.return_:.2f} steps={r.steps} "
        f"milestones={r.milestones} episode dir: {r.episode_dir}"
    )
    if r.error:
        err.print(f"agent error: {r.error}", markup=False)


def train(
    config: Path = typer.Argument(None, help="Training config YAML (e.g. configs/tiny-click-button.yaml)."),
    resume: Path = typer.Option(None, help="Continue this run dir from its last checkpoint (config from it)."),
    out: Path = typer.Option(None, help="Run directory (default: the config's out_dir)."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps in total."),
    ray_address: str = typer.Option(None, help="Run the rollout envs on Ray actors: 'local' (a Ray started "
                                    "here), 'auto' or a cluster address (ray://HOST:10001); sets the config's rollout."),
) -> None:
    """Train a policy with RL in the browser env: held-out success before and after, curves in the run dir."""
    from agentrl.learner.build import check_generator
    from agentrl.learner.config import TrainConfig
    from agentrl.learner.trainer import train as run_train

    if resume is None and config is None:
        err.print("give a CONFIG.yaml, or --resume RUN_DIR")
        raise typer.Exit(2)
    try:  # a config or a machine that cannot run it: one clear line, before anything is built
        cfg = TrainConfig.load(resume / "config.yaml" if resume is not None else config)
        rollout = None
        if ray_address is not None:
            rollout = {**(cfg.rollout or {}), "backend": "ray", "address": None if ray_address == "local" else ray_address}
            cfg.rollout = rollout
            cfg.pool_config()
        check_generator(cfg)
    except (ValueError, ImportError, RuntimeError, FileNotFoundError) as e:
        raise fail(f"{resume / 'config.yaml' if resume is not None else config}: {e}") from None
    run_dir = resume or out or Path(cfg.out_dir)
    cfg = None if resume is not None else cfg
    s = run_train(cfg, run_dir, resume=resume is not None, max_steps=max_steps, progress=sys.stderr.isatty(),
                  rollout=rollout)
    console.print(
        f"[bold]{s['algorithm']}[/bold]: held-out success ({s['eval_mode']}) {s['success_before']:.1%} -> "
        f"{s['success_after']:.1%} (best {s['best_success']:.1%} at step {s['best_step']}) after {s['steps']} steps, "
        f"{s['episodes']} episodes, {s['elapsed_s']:.0f} s"
    )
    console.print(f"report: {run_dir / 'summary.json'}  metrics: {run_dir / 'metrics.jsonl'}  curves: {', '.join(s['curves'])}")


def sandbox(port: int = typer.Option(8000, help="Port on 127.0.0.1 (0 = any free port).")) -> None:
    """Serve the sandbox apps on 127.0.0.1 for a person to browse (Ctrl-C to stop)."""
    from agentrl.sandbox.server import main

    sys.exit(main(["--port", str(port)]))
