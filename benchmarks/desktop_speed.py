#!/usr/bin/env python
"""Reset and step latency of the desktop env (real Xvfb, real apps), with the parts of a step split out.

Runs the scripted agent on the desktop tasks (one env per task, kept across its episodes, as training
would; seeds 0..episodes-1), counts its successes, and reports over all episodes: reset latency (kill the previous episode's apps, launch the task's apps,
wait for their windows, settle, observe) and step latency (input through xdotool, settle, AT-SPI walk,
windows, files, processes, detectors), as median and p90. It also times the raw probes one step is made of:
the window list (Xlib), one AT-SPI walk (the bridge), one screenshot (ImageGrab), and an xdotool call.

    .venv/bin/python benchmarks/desktop_speed.py --episodes 5 --json benchmarks/results/desktop_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agentrl.envs.desktop import DesktopEnv, DesktopEnvConfig
from agentrl.suites import SUITES_DIR

from agentrl.agents import ScriptedAgent

TASKS = sorted(p.stem for p in (SUITES_DIR / "desktop").glob("*.yaml") if p.name != "suite.yaml")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median_ms": round(statistics.median(xs), 1), "p90_ms": round(pct(xs, 0.9), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=3, help="episodes per task")
    ap.add_argument("--tasks", nargs="*", default=TASKS)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    resets: list[float] = []
    steps: list[float] = []
    parts: dict[str, list[float]] = {"act_ms": [], "observe_ms": [], "detect_ms": []}
    probes: dict[str, list[float]] = {"windows": [], "atspi_walk": [], "screenshot": [], "xdotool": []}
    failures: list[str] = []
    solved = 0
    root = Path(tempfile.mkdtemp(prefix="agentrl-desktop-bench-"))
    for task in args.tasks:
        env = DesktopEnv(SUITES_DIR / "desktop" / f"{task}.yaml", DesktopEnvConfig(root_dir=root, keep_episode_dirs=False))
        try:
            for ep in range(args.episodes):
                t0 = time.perf_counter()
                obs, info = env.reset(seed=ep)
                resets.append((time.perf_counter() - t0) * 1000)
                agent = ScriptedAgent()
                agent.reset(obs, info, env.variant)
                done = False
                while not done:
                    action = agent.act(obs)
                    t1 = time.perf_counter()
                    obs, _, terminated, truncated, info = env.step(action)
                    steps.append((time.perf_counter() - t1) * 1000)
                    done = terminated or truncated
                solved += bool(info["success"])
                if not info["success"]:
                    failures.append(f"{task} seed {ep}: {info['completed']} {info['truncation_reason']}")
            s = env.session
            assert s is not None
            for name, fn in (("windows", s.windows), ("atspi_walk", s.ax_nodes), ("screenshot", s.grab),
                             ("xdotool", lambda s=s: s.xdotool("mousemove", "5", "5"))):
                for _ in range(5):
                    t = time.perf_counter()
                    fn()
                    probes[name].append((time.perf_counter() - t) * 1000)
            for line in (env.episode_dir / "trajectory.jsonl").read_text().splitlines() if env.episode_dir else []:
                rec = json.loads(line)
                for k in parts:
                    if rec.get("type") == "step" and k in rec.get("timings", {}):
                        parts[k].append(rec["timings"][k])
        finally:
            env.close()
    shutil.rmtree(root, ignore_errors=True)
    out = {
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "tasks": args.tasks, "episodes_per_task": args.episodes,
        "reset": stats(resets), "step": stats(steps),
        "step_parts_last_episode": {k: stats(v) for k, v in parts.items() if v},
        "probes": {k: stats(v) for k, v in probes.items()},
        "solved": f"{solved}/{len(resets)}", "failures": failures,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
