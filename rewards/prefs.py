"""Preference pairs for the learned reward R_phi: a SQLite store, the text R_phi reads, automatic pairs.

>>> store = PrefStore("prefs.sqlite")                                   # doctest: +SKIP
>>> store.add_many(auto_pairs([Path("runs/prefs")]))                    # doctest: +SKIP

Automatic pairs come from rule-labelled trajectories of one task variant (task id + seed):
- trajectory level: two episodes whose rule return differs; the higher return is `chosen`;
- step level: two steps taken from the same state (same variant, same earlier actions) where one earned
  milestone weight and the other did not.
People add pairs with `agentrl label` (source "human"). The trajectories to learn from are collected by
`agentrl.collect` (`agentrl rm collect`).
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agentrl.types import ActionEvent, EpisodeTrace, Event

Level = Literal["step", "trajectory"]
MAX_OBS_CHARS = 1500  # R_phi reads ~256 tokens; the observation is the part that gets cut

_REF = re.compile(r"\s*\[(?:ref|cursor)=[^\]]*\]")
_ORIGIN = re.compile(r"https?://(?:127\.0\.0\.1|localhost)(?::\d+)?")  # the sandbox port changes per run
_SKIP_LINE = re.compile(r"^(Goal|Step|Last action|Page):")
_BARE_LINE = re.compile(r"^- (?:[a-z]+(?: \[[^\]]*\])*:?|/url: .*)$")  # a container with no name, a link target


# ---------------------------------------------------------------- the text R_phi (and a person) reads
def compact_observation(text: str, max_chars: int = MAX_OBS_CHARS) -> str:
    """The observation without element refs, the goal line and the step counter (they carry no preference
    signal and would use up the encoder's tokens), indentation collapsed."""
    lines = []
    for line in text.splitlines():
        if _SKIP_LINE.match(line):
            continue
        line = _ORIGIN.sub("", _REF.sub("", line)).strip()
        if line and not _BARE_LINE.match(line):
            lines.append(line)
    return "\n".join(lines)[:max_chars]


def describe_action(action: str, events: Sequence[Event] = (), error: str | None = None) -> str:
    """An action as a person reads it: `click link "Q3 sales"` rather than `click(e12)` (the ref means
    nothing outside its page). Uses the env's ActionEvent for the target's role and name."""
    act = next((e for e in events if isinstance(e, ActionEvent)), None)
    if act is None:
        out = action
    else:
        out = act.name
        if act.role or act.label:
            out += f" {act.role or 'element'}" + (f' "{act.label}"' if act.label else "")
        if act.value is not None:
            out += f' "{act.value}"'
    return out + (f" (error: {error})" if error else "")


def step_text(goal: str, action: str, observation_after: str) -> str:
    """Step-level text: goal, the action, the page after it. Sections are parsed back by `split_text`."""
    return f"GOAL: {goal}\nACTIONS: {action}\nOBSERVATION: {compact_observation(observation_after)}"


def trajectory_text(goal: str, actions: Sequence[str], final_observation: str) -> str:
    """Trajectory-level text: goal, the action history (numbered), the final page."""
    history = " ; ".join(f"{i + 1}. {a}" for i, a in enumerate(actions)) or "(none)"
    return f"GOAL: {goal}\nACTIONS: {history}\nOBSERVATION: {compact_observation(final_observation)}"


def split_text(text: str) -> tuple[str, str, str]:
    """(goal, actions, observation) of a text made by `step_text` / `trajectory_text`; a free text is all
    observation."""
    m = re.match(r"GOAL: (.*?)\nACTIONS: (.*?)\nOBSERVATION: (.*)\Z", text, re.S)
    return (m.group(1), m.group(2), m.group(3)) if m else ("", "", text)


# ---------------------------------------------------------------- records and the store
class Pair(BaseModel):
    """One preference: `chosen` is better than `rejected` (or, with `tie`, neither is)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    task_id: str
    seed: int
    level: Level
    chosen: str
    rejected: str
    tie: bool = False
    source: Literal["auto", "human"] = "auto"
    labeller: str = ""
    meta: dict[str, Any] = {}  # e.g. the two returns, the episode ids
    created: float = 0.0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL, seed INTEGER NOT NULL, level TEXT NOT NULL CHECK (level IN ('step', 'trajectory')),
  chosen TEXT NOT NULL, rejected TEXT NOT NULL, tie INTEGER NOT NULL DEFAULT 0,
  source TEXT NOT NULL CHECK (source IN ('auto', 'human')), labeller TEXT NOT NULL DEFAULT '',
  meta TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL,
  UNIQUE (task_id, seed, level, chosen, rejected, source, labeller)
);
CREATE INDEX IF NOT EXISTS pairs_task ON pairs (task_id, level);
"""
_COLS = ("task_id", "seed", "level", "chosen", "rejected", "tie", "source", "labeller", "meta", "created")


class PrefStore:
    """The `pairs` table in a SQLite file. Adding the same auto pair twice keeps one row."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the labelling server writes from its request threads
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript(_SCHEMA)

    def add(self, pair: Pair) -> bool:
        """Store one pair; False when an identical one was already there."""
        return self.add_many([pair]) == 1

    def add_many(self, pairs: Iterable[Pair]) -> int:
        rows = [
            (p.task_id, p.seed, p.level, p.chosen, p.rejected, int(p.tie), p.source, p.labeller,
             json.dumps(p.meta), p.created or time.time())
            for p in pairs
        ]
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany(f"INSERT OR IGNORE INTO pairs ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})", rows)
            return self._db.total_changes - before

    def pairs(self, *, level: Level | None = None, tasks: str | None = None, source: str | None = None) -> list[Pair]:
        """Stored pairs, optionally of one level, of task ids matching a glob (`reports-*`), of one source."""
        q, args = f"SELECT {', '.join(_COLS)} FROM pairs WHERE 1=1", []
        if level:
            q, args = q + " AND level = ?", [*args, level]
        if source:
            q, args = q + " AND source = ?", [*args, source]
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        out = []
        for r in rows:
            d = dict(zip(_COLS, r, strict=True))
            if tasks and not any(fnmatch.fnmatch(d["task_id"], g) for g in tasks.split(",")):
                continue
            out.append(Pair(**{**d, "tie": bool(d["tie"]), "meta": json.loads(d["meta"])}))
        return out

    def count(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT level || '/' || source, COUNT(*) FROM pairs GROUP BY 1").fetchall()
        return dict(rows)

    def close(self) -> None:
        self._db.close()


# ---------------------------------------------------------------- episodes on disk -> pairs
class Episode(EpisodeTrace):
    """A finished or unfinished episode read back from `<episode dir>/trajectory.jsonl`, as R_phi reads it."""

    def actions(self) -> list[str]:
        return [describe_action(s.action, s.events, s.error) for s in self.steps]

    def text(self) -> str:
        final = self.steps[-1].observation if self.steps else ""
        return trajectory_text(self.goal, self.actions(), final)


def read_episodes(run_dirs: Iterable[Path]) -> list[Episode]:
    """Every episode under the run dirs (any depth: `<run>/episodes/*/trajectory.jsonl` and the like), or in
    an `agentrl export` (a .parquet file or an hf folder) given instead of a run dir."""
    from agentrl.dataset import is_export, read_export
    from agentrl.trajectory import read_trajectory

    out = []
    for run in run_dirs:
        if not Path(run).exists():
            raise FileNotFoundError(f"no run directory {run}")
        if is_export(run):
            out += [Episode(dir=Path(meta["episode_id"]), task_id=meta["task_id"], seed=meta["seed"],
                            goal=meta["instruction"], steps=steps, agent=str(meta["agent"] or ""))
                    for meta, steps, _ in read_export(run)]
            continue
        for f in sorted(Path(run).rglob("trajectory.jsonl")):
            meta, steps, _ = read_trajectory(f)
            if "task_id" in meta and steps:
                out.append(Episode(dir=f.parent, task_id=meta["task_id"], seed=int(meta.get("seed", 0)),
                                   goal=meta.get("instruction", ""), steps=steps, agent=str(meta.get("agent", ""))))
    return out


def auto_pairs(run_dirs: Iterable[Path], *, max_per_variant: int = 60) -> list[Pair]:
    """Trajectory- and step-level pairs from the rule rewards of the episodes under `run_dirs`."""
    by_variant: dict[tuple[str, int], list[Episode]] = defaultdict(list)
    for ep in read_episodes(run_dirs):
        by_variant[(ep.task_id, ep.seed)].append(ep)
    pairs: list[Pair] = []
    for (task, seed), eps in sorted(by_variant.items()):
        # trajectory level: one episode per distinct text (random episodes repeat themselves)
        uniq = {e.text(): e for e in eps}
        traj = []
        for a, b in itertools.combinations(uniq.values(), 2):
            if a.return_ != b.return_:
                w, lo = (a, b) if a.return_ > b.return_ else (b, a)
                traj.append(Pair(task_id=task, seed=seed, level="trajectory", chosen=w.text(), rejected=lo.text(),
                                 meta={"returns": [w.return_, lo.return_], "episodes": [w.dir.name, lo.dir.name]}))
        pairs += traj[:max_per_variant]
        # step level: steps from the same state (same earlier actions), one earned weight, one did not
        by_state: dict[tuple[str, ...], dict[str, tuple[float, str]]] = defaultdict(dict)
        for e in eps:
            for i, s in enumerate(e.steps):
                state = tuple(x.parsed or x.action for x in e.steps[:i])
                text = step_text(e.goal, describe_action(s.action, s.events, s.error), s.observation)
                by_state[state][text] = (s.reward, e.dir.name)
        steps = []
        for state, texts in by_state.items():
            good = [(t, ep) for t, (r, ep) in texts.items() if r > 0]
            bad = [(t, ep) for t, (r, ep) in texts.items() if r <= 0]
            for (gt, ge), (bt, be) in itertools.product(good, bad):
                steps.append(Pair(task_id=task, seed=seed, level="step", chosen=gt, rejected=bt,
                                  meta={"t": len(state) + 1, "episodes": [ge, be]}))
        pairs += steps[:max_per_variant]
    return pairs
