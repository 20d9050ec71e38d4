"""Curves from a run's ``metrics.jsonl`` (matplotlib, Agg backend: no display needed).

>>> plot_run(Path("runs/tiny-click-button"))   # doctest: +SKIP
[PosixPath('runs/tiny-click-button/reward_curve.png'), PosixPath('runs/tiny-click-button/success_curve.png')]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _smooth(xs: list[float], k: int = 5) -> list[float]:
    return [sum(xs[max(0, i - k + 1) : i + 1]) / len(xs[max(0, i - k + 1) : i + 1]) for i in range(len(xs))]


def plot_run(run_dir: Path) -> list[Path]:
    """Write reward_curve.png (train reward, success, candidate entropy or an offline run's loss per step) and success_curve.png
    (held-out success against wall time and episodes); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    out = []
    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        steps = [r["step"] for r in train]
        series = [("reward", "C0", "train reward (sampled)"), ("groups_with_reward_diff", "C2", "groups with reward diff"),
                  ("candidate_entropy", "C1", "candidate entropy (nats)"), ("loss", "C4", "loss (offline: sft, dpo)")]
        for key, color, label in series:  # a series is drawn when the run logs it (RL runs: reward; offline: loss)
            if all(key in r for r in train):
                ys = [r[key] for r in train]
                ax.plot(steps, ys, alpha=0.3, color=color)
                ax.plot(steps, _smooth(ys), color=color, label=label)
        if evals:
            ax.plot([r["step"] for r in evals], [r["success"] for r in evals], "o-", color="C3", label="held-out success")
        ax.set_xlabel("optimizer step")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(train[-1].get("run", ""))
        fig.tight_layout()
        out.append(Path(run_dir) / "reward_curve.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    if evals:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
        axes[0].plot([r["elapsed_s"] for r in evals], [r["success"] for r in evals], "o-", color="C3")
        axes[0].set_xlabel("wall time (s, rollouts + updates + evals)")
        # an offline run (SFT, DPO) has all its data from the start: its progress is in optimizer steps
        by = "episodes" if len({r.get("episodes") for r in evals}) > 1 else "step"
        axes[1].plot([r[by] for r in evals], [r["success"] for r in evals], "o-", color="C3")
        axes[1].set_xlabel("training episodes" if by == "episodes" else "optimizer steps")
        axes[0].set_ylabel("held-out success")
        for a in axes:
            a.set_ylim(0, 1)
            a.grid(alpha=0.3)
        fig.suptitle(f"held-out success ({evals[-1].get('eval_mode', '')})")
        fig.tight_layout()
        out.append(Path(run_dir) / "success_curve.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    return out
