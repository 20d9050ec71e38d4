"""What every command module shares: the consoles, one-line failures, suite and task names resolved."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console(width=160) if not sys.stdout.isatty() else Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole: file:line: field: message


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, markup=False, highlight=False)
    return typer.Exit(code)


def resolve_suite(suite: str) -> Path:
    """A suite folder: a path, or the name of a bundled suite (e.g. `core`)."""
    from agentrl.suites import SUITES_DIR

    p = Path(suite)
    if p.exists():
        return p
    if (SUITES_DIR / suite).is_dir():
        return SUITES_DIR / suite
    names = sorted(d.name for d in SUITES_DIR.iterdir() if d.is_dir() and not d.name.startswith("_"))
    raise fail(f"no suite folder {suite!r} (bundled suites: {', '.join(names)})")


def resolve_task(task: str) -> Path:
    """A task file path, or the id of a bundled task."""
    from agentrl.registration import bundled_tasks

    p = Path(task)
    if p.exists():
        return p
    found = bundled_tasks()
    if task in found:
        return found[task]
    from agentrl.registry import did_you_mean

    raise fail(f"no task file or bundled task {task!r}{did_you_mean(task, tuple(found))}")
