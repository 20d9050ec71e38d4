"""Episode files: one trajectory JSONL per episode, written as the episode happens (a crash loses nothing),
and a run's ``results.jsonl`` (one `EpisodeResult` per line).

Trajectory lines: ``{"type": "reset", ...}``, one ``{"type": "step", ...}`` per step (a `StepRecord`), and
``{"type": "end", ...}`` (an `EpisodeSummary`) when the episode ends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from agentrl.types import EpisodeResult, EpisodeSummary, StepRecord


class TrajectoryWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: TextIO | None = path.open("a", encoding="utf-8")

    def _write(self, obj: dict[str, Any]) -> None:
        if self._f is None:
            raise RuntimeError(f"trajectory {self.path} is closed")
        # ASCII-escaped: agent output may hold lone surrogates, which UTF-8 cannot encode
        self._f.write(json.dumps(obj) + "\n")
        self._f.flush()

    def reset(self, **meta: Any) -> None:
        self._write({"type": "reset", **meta})

    def step(self, record: StepRecord) -> None:
        self._write({"type": "step", **record.model_dump(mode="json")})

    def end(self, summary: EpisodeSummary) -> None:
        self._write({"type": "end", **summary.model_dump(mode="json", by_alias=True)})

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_trajectory(path: str | Path) -> tuple[dict[str, Any], list[StepRecord], EpisodeSummary | None]:
    """(reset metadata, steps, summary or None if the episode did not finish)."""
    meta: dict[str, Any] = {}
    steps: list[StepRecord] = []
    summary = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        kind = obj.pop("type")
        if kind == "reset":
            meta = obj
        elif kind == "step":
            steps.append(StepRecord.model_validate(obj))
        elif kind == "end":
            summary = EpisodeSummary.model_validate(obj)
    return meta, steps, summary


def load_results(run_dir: str | Path) -> list[EpisodeResult]:
    """The episodes of a run dir's results.jsonl (a run killed midway gives the episodes it finished)."""
    path = Path(run_dir) / "results.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no results.jsonl (is it a run dir of `agentrl evaluate`?)")
    return [EpisodeResult.from_json(json.loads(ln)) for ln in path.read_text().splitlines() if ln.strip()]
