"""Trajectories as datasets: `agentrl export RUN_DIR` (Parquet, or a Hugging Face dataset folder)."""

from __future__ import annotations

from pathlib import Path

import typer

from agentrl.cli.common import console, fail


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run_dir: Path = typer.Argument(..., help="A run dir holding episodes (any depth: */trajectory.jsonl)."),
    out: Path = typer.Option(None, help="Output: a .parquet file (--format parquet) or a folder (--format hf). "
                                        "Default: RUN_DIR/export.parquet or RUN_DIR/hf."),
    format: str = typer.Option("parquet", "--format", help="parquet (one file) or hf (a Hugging Face dataset folder)."),
    per: str = typer.Option("step", help="One row per 'step' or per 'episode'."),
    images: str = typer.Option("path", help="Screenshots as a 'path' (relative to RUN_DIR) or the PNG 'bytes'."),
) -> None:
    """Export a run's episodes (goal, observation, action, reward, milestones, audit, screenshot) as a dataset
    that `datasets.load_dataset` reads and `agentrl sft` (demo_runs) / `agentrl rm prefs` take as input."""
    from agentrl.dataset import export_run

    target = out or (run_dir / ("export.parquet" if format == "parquet" else "hf"))
    try:
        got = export_run(run_dir, target, fmt=format, per=per, images=images)
    except (ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    console.print(f"{got['rows']} rows ({got['episodes']} episodes, one row per {per}) -> {got['path']}",
                  markup=False, highlight=False)
