#!/usr/bin/env python
"""Run one of the peers' MiniWoB++ speed scripts (``shared/bench``) so that a task that fails is recorded, not fatal.

Runs in the peer's own venv (it imports nothing of agentrl). The peer script is imported and its ``main()``
runs with the given arguments, with its ``run_task`` wrapped: a task that raises becomes a row
``{"task": ..., "error": "<Exception>: <first line>"}`` (the env it made is closed, the floor's browser
relaunched) and the next task runs. The aggregate row is over the tasks that ran and carries ``errors``
(how many) and ``error_tasks`` (which). After every task the rows so far are written to ``<json>.partial``,
so a side stopped by its time limit still says what it measured and which tasks it did not reach.

    /tmp/bench/.venv-bg/bin/python benchmarks/miniwob_peer_speed.py ../shared/bench/farama_miniwob_bench.py \\
        --tasks click-test,bisect-angle --policy random --max-steps 5 --episodes 1 --json /tmp/farama.json
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def aggregate(rows: list[dict], name: str = "ALL") -> dict:
    """The peers' aggregate (medians of per-task medians, totals of counts) over the tasks that ran."""
    ok = [r for r in rows if "error" not in r]
    errors = [r["task"] for r in rows if "error" in r]
    out: dict = {"task": name, "tasks": len(rows), "errors": len(errors), "error_tasks": errors}
    if not ok:
        return out
    steps = sum(r["steps"] for r in ok)
    nonterm = [x for r in ok if (x := r["step_nonterm_med_ms"]) == x]  # NaN != NaN: tasks without one
    step_s = sum(r["_step_s"] for r in ok)
    out.update({
        "episodes": sum(r["episodes"] for r in ok),
        "create_s": round(statistics.median(r["create_s"] for r in ok), 3),
        "reset_med_ms": round(statistics.median(r["reset_med_ms"] for r in ok), 1),
        "step_med_ms": round(statistics.median(r["step_med_ms"] for r in ok), 1),
        "step_nonterm_med_ms": round(statistics.median(nonterm), 1) if nonterm else float("nan"),
        "steps": steps,
        "steps_per_s": round(steps / step_s, 2) if step_s else float("nan"),
        "steps_per_s_incl_reset": round(steps / sum(r["_wall_s"] for r in ok), 2),
        "success": round(sum(r["success"] * r["episodes"] for r in ok) / sum(r["episodes"] for r in ok), 3),
    })
    return out


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].endswith(".py"):
        sys.exit(__doc__)
    script = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(script.stem, script)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    argv = sys.argv[2:]
    json_path = argv[argv.index("--json") + 1] if "--json" in argv else None
    rows: list[dict] = []
    made: list = []  # the envs gym.make returned during the current task

    import gymnasium

    make = gymnasium.make

    def tracking_make(*a, **k):
        env = make(*a, **k)
        made.append(env)
        return env

    gymnasium.make = tracking_make
    run_task = peer.run_task

    def safe_run_task(task, *a, **k):
        made.clear()
        t0 = time.perf_counter()
        try:
            row = run_task(task, *a, **k)
            # time inside step(), so that the aggregate's steps/s is steps over time, as in the peers' rows
            row["_step_s"] = row["steps"] / row["steps_per_s"] if row.get("steps_per_s") else 0.0
        except Exception as e:  # a peer that cannot run a task: recorded with its error, never dropped
            row = {"task": task, "error": _first_line(e), "error_after_s": round(time.perf_counter() - t0, 1)}
            print(f"  [{task}] ERROR {row['error']}", file=sys.stderr, flush=True)
            for env in made:  # BrowserGym and Farama: the env the failed task made
                try:
                    env.close()
                except Exception:  # noqa: S110 - best effort; the next task makes its own env
                    pass
            floor = next((x for x in a if hasattr(x, "launch") and hasattr(x, "browser")), None)
            if floor is not None:  # the floor: a fresh browser for the next task
                try:
                    floor.close()
                except Exception:  # noqa: S110
                    floor.browser = floor.context = floor.page = None
        rows.append(row)
        if json_path:
            Path(json_path + ".partial").write_text(json.dumps({"rows": rows}, default=str))
        return row

    peer.run_task = safe_run_task
    peer.C.overall = aggregate
    sys.argv = [str(script), *argv]
    peer.main()


if __name__ == "__main__":
    main()
