#!/usr/bin/env python
"""The pointer verbs' cost in the browser env: median step ms of ``click(id)`` against ``click(x, y)`` (which
also finds the element under the point for its event), ``hover(x, y)`` and a two-point ``drag``, with and
without ``obs_boxes``, on a page of `--items` buttons.

    .venv/bin/python benchmarks/pointer_speed.py --steps 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.apps.base import App, Request, Response
from agentrl.sandbox.server import SandboxServer


class ButtonsApp(App):
    name = "playground"
    title = "Buttons"

    def __init__(self, items: int) -> None:
        self.items = items

    def new_state(self, seed: int) -> dict:
        return {}

    def facts(self, state: dict) -> dict[str, str]:
        return {}

    def public_state(self, state: dict) -> dict[str, Any]:
        return {}

    def handle(self, req: Request, state: dict) -> Response:
        buttons = "".join(f"<button>Item {i}</button>" for i in range(self.items))
        return Response(body=f"<!doctype html><title>Buttons</title><div>{buttons}</div>".encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--items", type=int, default=200)
    args = ap.parse_args()
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(apps=[ButtonsApp(args.items)]) as srv:
        task = Path(tmp) / "t.yaml"
        task.write_text(yaml.safe_dump({
            "id": "pointer-speed", "instruction": "x", "start": {"app": "playground", "path": "/playground/"},
            "max_steps": 10 * args.steps, "oracle": [{"wait": True}],
            "milestones": [{"id": "g", "detector": "js_true", "params": {"expr": "false"}, "category": "goal"}]}))
        for boxes in (False, True):
            env = BrowserEnv(task, BrowserEnvConfig(root_dir=Path(tmp) / "e", obs_boxes=boxes, record=False), sandbox=srv)
            try:
                obs, _ = env.reset(seed=0)
                target = next(e for e in parse_snapshot(obs["axtree"]).elements if e.name == "Item 7")
                x, y = (40, 15)  # on the first buttons' row
                actions = {"click(id)": f"click({target.ref})", "click(x, y)": f"click({x}, {y})",
                           "hover(x, y)": f"hover({x}, {y})", "drag(x, y, x2, y2)": f"drag({x}, {y}, {x + 100}, {y + 40})"}
                times: dict[str, list[float]] = {k: [] for k in actions}
                for _ in range(args.steps):
                    for name, action in actions.items():
                        t0 = time.perf_counter()
                        obs, *_ = env.step(action)
                        times[name].append((time.perf_counter() - t0) * 1000)
                        assert not obs["last_action_error"], obs["last_action_error"]
                out[f"obs_boxes={boxes}"] = {k: round(statistics.median(v), 1) for k, v in times.items()}
            finally:
                env.close()
    print(json.dumps({"items": args.items, "steps": args.steps, "median_step_ms": out}, indent=1))


if __name__ == "__main__":
    main()
