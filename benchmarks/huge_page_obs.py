#!/usr/bin/env python
"""Observing a huge page: the browser env's observation time and size on a 10,000-row table.

A sandbox app of its own serves one page with a table of `--rows` rows (3 cells each, ~50,000 DOM
elements at 10,000 rows). The env resets onto it and then takes `--steps` ``wait()`` steps; each step's
observation is timed (the env's own ``observe_ms``) and measured (the characters of ``text`` and
``axtree``, and of the step's line in trajectory.jsonl). Medians from one run.

    .venv/bin/python benchmarks/huge_page_obs.py --rows 10000 --steps 5 --json benchmarks/results/huge_page_obs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.apps.base import App, Request, Response
from agentrl.sandbox.server import SandboxServer


class TableApp(App):
    """One page: a table of `rows` rows."""

    name = "playground"  # a name tasks may start in; this server serves only this app
    title = "Big table"

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def new_state(self, seed: int) -> dict:
        return {}

    def facts(self, state: dict) -> dict[str, str]:
        return {}

    def public_state(self, state: dict) -> dict:
        return {}

    def handle(self, req: Request, state: dict) -> Response:
        body = "".join(f"<tr><td>{i}</td><td>item {i}</td><td><a href='#r{i}'>open</a></td></tr>" for i in range(self.rows))
        html = f"<!doctype html><title>Big table</title><h1>Rows</h1><table><tbody>{body}</tbody></table>"
        return Response(body=html.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="huge-page-"))
    task = tmp / "bigtable.yaml"
    task.write_text(yaml.safe_dump({
        "id": "bigtable", "instruction": "read the table", "start": {"app": "playground", "path": "/playground/"},
        "max_steps": args.steps + 1, "oracle": [{"wait": True}],
        "milestones": [{"id": "g", "detector": "js_true", "params": {"expr": "false"}, "category": "goal"}],
    }))
    with SandboxServer(apps=[TableApp(args.rows)]) as server:
        env = BrowserEnv(task, BrowserEnvConfig(root_dir=tmp / "episodes"), sandbox=server)
        try:
            t0 = time.perf_counter()
            obs, _ = env.reset(seed=0)
            reset_ms = (time.perf_counter() - t0) * 1000
            observe, text, axtree, ends = [], [], [], []
            for _ in range(args.steps):
                obs, _, terminated, truncated, info = env.step("wait()")
                text.append(len(obs["text"]))
                axtree.append(len(obs["axtree"]))
                if truncated or terminated:
                    ends.append(info.get("truncation_reason"))
                    break
            lines = (env.episode_dir / "trajectory.jsonl").read_text().splitlines()
            steps = [json.loads(line) for line in lines if '"type": "step"' in line or '"type":"step"' in line]
            observe = [s["timings"]["observe_ms"] for s in steps if s.get("timings", {}).get("observe_ms")]
            line_chars = [len(line) for line in lines[1:-1]] or [len(line) for line in lines]
        finally:
            env.close()
    result = {
        "rows": args.rows, "reset_ms": round(reset_ms), "steps": len(text),
        "observe_ms_median": round(statistics.median(observe)) if observe else None,
        "text_chars_median": statistics.median(text), "axtree_chars_median": statistics.median(axtree),
        "trajectory_line_chars_max": max(line_chars), "ended": ends,
    }
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
