"""The offline learners' commands: `agentrl sft CONFIG`, `agentrl dpo CONFIG`.

Progress goes to stdout one line per step and per held-out evaluation, so a log file shows it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from agentrl.cli.common import console, err


def register(app: typer.Typer) -> None:
    app.command("sft")(sft)
    app.command("dpo")(dpo)


def _echo(line: str) -> None:
    console.print(line, markup=False, highlight=False)
    sys.stdout.flush()


def _load(kind: type, config: Path) -> Any:
    try:
        return kind.load(config)
    except (ValueError, FileNotFoundError, TypeError) as e:
        err.print(f"{config}: {e}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _report(s: dict[str, Any], run_dir: Path) -> None:
    console.print(
        f"[bold]{s['algorithm']}[/bold]: held-out success ({s['eval_mode']}) {s['success_before']:.1%} -> "
        f"{s['success_after']:.1%} (best {s['best_success']:.1%} at step {s['best_step']}) after {s['steps']} steps, "
        f"{s['elapsed_s']:.0f} s"
    )
    console.print(f"checkpoint: {s['checkpoint']}  (model: <that folder> in a train config starts RL from it)")
    console.print(f"report: {run_dir / 'summary.json'}  metrics: {run_dir / 'metrics.jsonl'}  curves: {', '.join(s['curves'])}")


def _run(kind: type, runner: Any, config: Path, out: Path | None) -> dict[str, Any]:
    """Load the config, run the offline learner into its run dir, print the summary; returns it."""
    cfg = _load(kind, config)
    run_dir = out or Path(cfg.out_dir)
    try:
        s = runner(cfg, run_dir, echo=_echo)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        err.print(f"{config}: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    _report(s, run_dir)
    return s


def sft(
    config: Path = typer.Argument(..., help="SFT config YAML (a train config plus demo_seeds, demo_runs, epochs...)."),
    out: Path = typer.Option(None, help="Run directory (default: the config's out_dir)."),
) -> None:
    """Supervised fine-tuning on demonstrations (the oracle's, or replayed run dirs): loss on action tokens only,
    held-out success before and after; the checkpoint is where `agentrl train` can start RL."""
    from agentrl.learner.sft import SFTConfig, run_sft

    _run(SFTConfig, run_sft, config, out)


def dpo(
    config: Path = typer.Argument(..., help="DPO config YAML (a train config plus pref_store, pair_runs, dpo_loss, beta...)."),
    out: Path = typer.Option(None, help="Run directory (default: the config's out_dir)."),
) -> None:
    """Preference optimisation (DPO, IPO or SimPO) on trajectory pairs from the preference store or run dirs,
    against the frozen starting policy; held-out pair margins and held-out success before and after."""
    from agentrl.learner.dpo import DPOConfig, run_dpo

    s = _run(DPOConfig, run_dpo, config, out)
    hb, ha = s["heldout_before"], s["heldout_after"]
    if hb:
        console.print(f"held-out pairs ({s['heldout_pairs']}): log-ratio margin {hb['heldout_logratio_margin']:.3f} -> "
                      f"{ha['heldout_logratio_margin']:.3f}, accuracy {hb['heldout_accuracy']:.2f} -> {ha['heldout_accuracy']:.2f}")
