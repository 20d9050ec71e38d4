"""`agentrl serve`: a suite or tasks as an OpenEnv server (openenv-core's app; TRL, SkyRL, ... connect to it)."""

from __future__ import annotations

import typer

from agentrl.cli.common import console, fail, resolve_suite, resolve_task


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    suite: str = typer.Option(None, help="Suite folder or bundled suite name (e.g. web)."),
    task: list[str] = typer.Option(None, help="Task files or bundled task ids (repeatable; with or without --suite)."),
    port: int = typer.Option(8000, help="Port on 127.0.0.1."),
    max_sessions: int = typer.Option(64, help="Concurrent WebSocket sessions (all on one Chromium)."),
    max_steps: int = typer.Option(None, help="Steps per episode (default: each task's own)."),
    obs_boxes: bool = typer.Option(False, "--obs-boxes", help="Add [box=x,y,w,h] (CSS pixels) to each element line "
                                   "of the observation, for pointer actions without vision."),
) -> None:
    """Serve tasks over OpenEnv's HTTP/WebSocket protocol on 127.0.0.1 (see docs/interop.md)."""
    try:
        from agentrl.openenv_server import create_server
    except ImportError as e:
        raise fail(f"agentrl serve needs openenv-core: pip install 'agentrl[interop]' ({e})") from None
    import uvicorn

    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.learner.trainer import load_tasks

    if not suite and not task:
        raise fail("give --suite or --task")
    paths = ([str(resolve_suite(suite))] if suite else []) + [str(resolve_task(t)) for t in task or []]
    try:
        specs = load_tasks(paths)
    except (ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    cfg = BrowserEnvConfig(record=False, keep_episode_dirs=False, obs_boxes=obs_boxes,
                           **({"max_steps": max_steps} if max_steps else {}))
    app = create_server(specs, config=cfg, max_sessions=max_sessions)
    console.print(f"serving {len(specs)} task(s) on http://127.0.0.1:{port} (ws: /ws, up to {max_sessions} sessions)",
                  markup=False, highlight=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
