"""Trajectories as datasets: a run dir's episodes as Parquet rows (`export_run`), and those rows read back as
episodes (`read_export`) so the offline paths (SFT demonstrations, R_phi preference pairs) take them as input.

Two granularities:

* ``"step"``: one row per step: ``episode_id, task_id, seed, agent, goal, t, prev_observation, action, parsed,
  error, observation, url, reward, milestones`` (ids completed at this step), ``milestone_events`` / ``events``
  / ``audit`` (JSON text of the records), ``terminated, truncated, truncation_reason, screenshot`` (path
  relative to the run dir) and, with ``images="bytes"``, ``screenshot_png`` (the PNG itself);
* ``"episode"``: one row per episode, the same fields as lists (``actions``, ``observations``, ``rewards``,
  ``step_milestones``, ``audits``, ``screenshots``...) plus ``return``, ``success``, ``steps``, ``milestones``.

``observation`` is the page after the action (the trajectory file's ``observation``); ``prev_observation``
is the one the agent acted on, None on the first step (the file does not hold the start page).

Two layouts: ``"parquet"``, one file; ``"hf"``, a folder laid out as a Hugging Face dataset repository
(``data/train-00000-of-00001.parquet`` and a ``README.md`` card), which ``datasets.load_dataset(folder)``
reads and ``huggingface-cli upload`` publishes. Unfinished episodes (no end line) are exported with
``finished`` false; episodes without a step are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentrl.trajectory import read_trajectory
from agentrl.types import EpisodeSummary, StepRecord

FORMATS = ("parquet", "hf")
GRANULARITIES = ("step", "episode")
IMAGES = ("path", "bytes")
HF_DATA_FILE = "data/train-00000-of-00001.parquet"


def _dumps(x: Any) -> str | None:
    return None if x is None else json.dumps(x)


def _episodes(run_dir: Path) -> Iterator[tuple[str, dict[str, Any], list[StepRecord], EpisodeSummary | None, Path]]:
    files = sorted(run_dir.rglob("trajectory.jsonl"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no episodes (no trajectory.jsonl below it)")
    for f in files:
        meta, steps, summary = read_trajectory(f)
        if "task_id" not in meta or not steps:
            continue
        yield f.parent.relative_to(run_dir).as_posix(), meta, steps, summary, f.parent


def _shot(ep_dir: Path, run_dir: Path, s: StepRecord) -> tuple[str | None, Path | None]:
    if not s.screenshot:
        return None, None
    p = ep_dir / s.screenshot  # the env writes it relative to the episode dir
    return p.relative_to(run_dir).as_posix(), p


def _png(p: Path | None) -> bytes | None:
    return p.read_bytes() if p is not None and p.exists() else None


def step_rows(run_dir: Path, *, images: str = "path") -> list[dict[str, Any]]:
    rows = []
    for eid, meta, steps, summary, ep_dir in _episodes(run_dir):
        prev = None
        for s in steps:
            shot, shot_file = _shot(ep_dir, run_dir, s)
            row = {
                "episode_id": eid, "task_id": meta["task_id"], "seed": int(meta.get("seed", 0)),
                "agent": str(meta.get("agent", "")), "goal": meta.get("instruction", ""), "t": s.t,
                "prev_observation": prev, "action": s.action, "parsed": s.parsed, "error": s.error,
                "observation": s.observation, "url": s.url, "reward": s.reward,
                "milestones": [m.id for m in s.milestones],
                "milestone_events": json.dumps([m.model_dump(mode="json") for m in s.milestones]),
                "events": json.dumps([e.model_dump(mode="json") for e in s.events]),
                "audit": _dumps(s.audit.model_dump(mode="json") if s.audit else None),
                "terminated": s.terminated, "truncated": s.truncated, "truncation_reason": s.truncation_reason,
                "finished": summary is not None, "screenshot": shot,
            }
            if images == "bytes":
                row["screenshot_png"] = _png(shot_file)
            rows.append(row)
            prev = s.observation
    return rows


def episode_rows(run_dir: Path, *, images: str = "path") -> list[dict[str, Any]]:
    rows = []
    for eid, meta, steps, summary, ep_dir in _episodes(run_dir):
        shots = [_shot(ep_dir, run_dir, s) for s in steps]
        last = steps[-1]
        row = {
            "episode_id": eid, "task_id": meta["task_id"], "seed": int(meta.get("seed", 0)),
            "agent": str(meta.get("agent", "")), "goal": meta.get("instruction", ""),
            "actions": [s.action for s in steps], "parsed": [s.parsed for s in steps],
            "errors": [s.error for s in steps], "observations": [s.observation for s in steps],
            "urls": [s.url for s in steps], "rewards": [s.reward for s in steps],
            "step_milestones": [json.dumps([m.model_dump(mode="json") for m in s.milestones]) for s in steps],
            "step_events": [json.dumps([e.model_dump(mode="json") for e in s.events]) for s in steps],
            "audits": [_dumps(s.audit.model_dump(mode="json") if s.audit else None) for s in steps],
            "screenshots": [p for p, _ in shots],
            "return": round(sum(s.reward for s in steps), 6), "steps": len(steps),
            "success": bool(summary.success) if summary else False,
            "milestones": list(summary.milestones) if summary else [m.id for s in steps for m in s.milestones],
            "terminated": last.terminated, "truncated": last.truncated, "truncation_reason": last.truncation_reason,
            "finished": summary is not None,
        }
        if images == "bytes":
            row["screenshot_png"] = [_png(f) for _, f in shots]
        rows.append(row)
    return rows


_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: {data}
---
# agentrl trajectories

Exported by `agentrl export` from `{run}`: {n} rows, one per {per}. Columns: see agentrl's docs/interop.md.
"""


def export_run(run_dir: str | Path, out: str | Path, *, fmt: str = "parquet", per: str = "step",
               images: str = "path") -> dict[str, Any]:
    """Write the episodes of ``run_dir`` to ``out`` (a ``.parquet`` file, or the folder of an ``"hf"`` dataset).
    Returns {"rows", "episodes", "path"}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, value, allowed in (("format", fmt, FORMATS), ("per", per, GRANULARITIES), ("images", images, IMAGES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    rows = step_rows(run_dir, images=images) if per == "step" else episode_rows(run_dir, images=images)
    if not rows:
        raise ValueError(f"{run_dir}: no episode with a step to export")
    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({"agentrl.per": per, "agentrl.run_dir": str(run_dir)})
    if fmt == "hf":
        (out / "data").mkdir(parents=True, exist_ok=True)
        path = out / HF_DATA_FILE
        (out / "README.md").write_text(_CARD.format(data=HF_DATA_FILE, run=run_dir.name, n=len(rows), per=per))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        path = out
    pq.write_table(table, path)
    return {"rows": len(rows), "episodes": len({r["episode_id"] for r in rows}), "path": str(path)}


# ---------------------------------------------------------------- reading an export back
def is_export(path: str | Path) -> bool:
    """A ``.parquet`` file, or a folder written by ``export_run(fmt="hf")``."""
    p = Path(path)
    return (p.is_file() and p.suffix == ".parquet") or (p / HF_DATA_FILE).is_file()


def _step(row: dict[str, Any], i: int | None) -> StepRecord:
    def get(key: str, list_key: str | None = None) -> Any:
        return row[key] if i is None else row[list_key or key][i]

    milestones = get("milestone_events", "step_milestones")
    audit = get("audit", "audits")
    last = i is None or i == len(row["actions"]) - 1
    return StepRecord(
        t=row["t"] if i is None else i + 1, action=get("action", "actions"), parsed=get("parsed"),
        error=get("error", "errors"), observation=get("observation", "observations"), url=get("url", "urls"),
        reward=get("reward", "rewards"), milestones=json.loads(milestones), events=json.loads(get("events", "step_events")),
        audit=json.loads(audit) if audit else None, screenshot=get("screenshot", "screenshots"),
        terminated=bool(row["terminated"]) and last, truncated=bool(row["truncated"]) and last,
        truncation_reason=row["truncation_reason"] if last else None,
    )


def read_export(path: str | Path) -> list[tuple[dict[str, Any], list[StepRecord], bool]]:
    """The episodes of an export, as (reset metadata, steps, finished), in the shape `read_trajectory` gives
    (metadata: ``task_id, seed, instruction, agent, episode_id``)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not is_export(p):
        raise FileNotFoundError(f"{p}: not an agentrl export (a .parquet file or a folder with {HF_DATA_FILE})")
    table = pq.read_table(p if p.is_file() else p / HF_DATA_FILE)
    rows = table.to_pylist()
    per_step = "actions" not in table.column_names
    need = {"episode_id", "task_id", "seed", "goal", "reward" if per_step else "rewards"}
    missing = need - set(table.column_names)
    if missing:
        raise ValueError(f"{p}: not an agentrl export: no column(s) {sorted(missing)}")
    out: dict[str, tuple[dict[str, Any], list[StepRecord], bool]] = {}
    for n, row in enumerate(rows):
        try:
            steps = [_step(row, None)] if per_step else [_step(row, i) for i in range(len(row["actions"]))]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{p}: row {n}: {e}") from None
        meta = {"task_id": row["task_id"], "seed": int(row["seed"]), "instruction": row["goal"],
                "agent": row.get("agent", ""), "episode_id": row["episode_id"]}
        got = out.setdefault(row["episode_id"], (meta, [], bool(row.get("finished", True))))
        got[1].extend(steps)
    return list(out.values())
