#!/usr/bin/env python
"""agentrl's env on MiniWoB++ against the peers (BrowserGym, Farama's Selenium env, raw Playwright), in one run.

agentrl side: `BrowserEnv` on the suite's tasks (``tasks/miniwob``), the same 7 tasks, seeds 0..N-1 and
oracle as ``shared/bench`` (the `miniwob-heuristic` agent: its plans for these tasks are that oracle's,
ported), the same columns. It runs once per isolation mode (``context``: a fresh browser context per
episode; ``storage``: two contexts taking turns, every client state wiped between two of one's episodes). Each episode's success
is also checked against MiniWoB's own reward read from the page (``agree``).

Peer side (``--peers DIR``): the scripts of ``shared/bench`` run one after the other in their own venvs,
on the same machine and the same Chromium binary as agentrl (``--peer-chromium``; agentrl runs Debian's
chromium-headless-shell when installed), before agentrl's runs; then one table with agentrl/peer ratios.

    .venv/bin/python benchmarks/miniwob_speed.py --episodes 10 \\
        --peers ../shared/bench --bg-python /tmp/bench/.venv-bg/bin/python \\
        --pw-python /tmp/bench/.venv-pw/bin/python --json benchmarks/results/miniwob_speed.json
    .venv/bin/python benchmarks/miniwob_speed.py --episodes 3 --isolation storage   # agentrl only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.envs.host import HEADLESS_SHELL, BrowserHost
from agentrl.suites import SUITES_DIR

from agentrl.agents.miniwob import MiniWoBHeuristicAgent, page_reward

TASKS = ["click-test", "click-test-2", "click-button", "focus-text", "enter-text", "login-user", "click-checkboxes"]
COLS = ["reset_med_ms", "step_med_ms", "step_nonterm_med_ms", "steps_per_s", "steps_per_s_incl_reset", "success"]
# name -> (venv key, script, extra args); run in this order
PEERS = {
    "browsergym (defaults)": ("bg", "browsergym_miniwob_bench.py", []),
    "browsergym --fast": ("bg", "browsergym_miniwob_bench.py", ["--fast"]),
    "farama miniwob (selenium)": ("bg", "farama_miniwob_bench.py", []),
    "playwright floor, context/episode": ("pw", "playwright_floor_bench.py", ["--reset-mode", "context", "--obs", "ai"]),
    "playwright floor, in place": ("pw", "playwright_floor_bench.py", ["--reset-mode", "inplace", "--obs", "ai"]),
}


def med_ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 1) if xs else float("nan")


def timed_episodes(env: BrowserEnv, agent_for, task: str, episodes: int, create_s: float) -> dict:
    """Seeds 0..episodes-1 of `env` with ``agent_for()``'s agent: the row of reset/step times, success, and
    agreement with MiniWoB's own reward. The page's reward is read after every step, outside the timed
    loop; an episode agrees when the env's success is MiniWoB's and the env ended it no later than the page."""
    resets, steps, nonterm, wins, agree, untimed = [], [], [], 0, 0, 0.0
    wall0 = time.perf_counter()
    for seed in range(episodes):
        t = time.perf_counter()
        obs, info = env.reset(seed=seed)
        resets.append(time.perf_counter() - t)
        agent = agent_for()
        agent.reset(obs, info, env.variant)
        done = late = False
        while not done:
            action = agent.act(obs)
            t = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            steps.append(time.perf_counter() - t)
            t = time.perf_counter()
            page_done, raw = page_reward(env)  # untimed: MiniWoB's own end of the episode and its reward
            untimed += time.perf_counter() - t
            done = terminated or truncated
            late = page_done and not done  # MiniWoB ended its episode and the env did not: a disagreement
            if late:
                break
            if not done:
                nonterm.append(steps[-1])
        wins += info["success"]
        agree += info["success"] == (raw > 0) and not late
    wall = time.perf_counter() - wall0 - untimed
    return {
        "task": task, "episodes": episodes, "create_s": round(create_s, 3),
        "reset_first_ms": round(resets[0] * 1000, 1), "reset_med_ms": med_ms(resets), "step_med_ms": med_ms(steps),
        "step_nonterm_med_ms": med_ms(nonterm), "steps": len(steps),
        "steps_per_s": round(len(steps) / sum(steps), 2), "steps_per_s_incl_reset": round(len(steps) / wall, 2),
        "success": round(wins / episodes, 3), "agree": round(agree / episodes, 3), "_wall_s": wall,
        "_step_s": sum(steps),
    }


def run_task(task: str, isolation: str, episodes: int, root: Path, ahead: int = 1) -> dict:
    """One task, `episodes` seeds, the heuristic agent (a fresh one per episode)."""
    t0 = time.perf_counter()
    env = BrowserEnv(SUITES_DIR / "miniwob" / f"miniwob.{task}.yaml", BrowserEnvConfig(root_dir=root, isolation=isolation, ahead=ahead))
    try:
        host = BrowserHost.shared()
        host.run(host.browser())  # launched (for the first task) at creation, as the Farama and floor sides do
        return timed_episodes(env, MiniWoBHeuristicAgent, task, episodes, time.perf_counter() - t0)
    finally:
        env.close()


def overall(rows: list[dict], name: str) -> dict:
    steps = sum(r["steps"] for r in rows)
    eps = sum(r["episodes"] for r in rows)
    nonterm = [x for r in rows if (x := r["step_nonterm_med_ms"]) == x]  # NaN != NaN: tasks with none
    return {
        "task": name, "episodes": eps,
        "reset_med_ms": round(statistics.median(r["reset_med_ms"] for r in rows), 1),
        "step_med_ms": round(statistics.median(r["step_med_ms"] for r in rows), 1),
        "step_nonterm_med_ms": round(statistics.median(nonterm), 1) if nonterm else float("nan"),
        "steps": steps,
        "steps_per_s": round(steps / sum(r["_step_s"] for r in rows), 2),
        "steps_per_s_incl_reset": round(steps / sum(r["_wall_s"] for r in rows), 2),
        "success": round(sum(r["success"] * r["episodes"] for r in rows) / eps, 3),
        "agree": round(sum(r["agree"] * r["episodes"] for r in rows) / eps, 3),
    }


def run_peer(name: str, args: argparse.Namespace, out_dir: Path) -> dict | None:
    venv, script, extra = PEERS[name]
    python = args.bg_python if venv == "bg" else args.pw_python
    out = out_dir / (script.removesuffix(".py") + "_".join(["", *extra]).replace("-", "") + ".json")
    cmd = [python, str(Path(args.peers) / script), "--episodes", str(args.episodes), "--json", str(out),
           "--tasks", ",".join(args.tasks), *extra]
    print(f"### {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, "BENCH_CHROMIUM": args.peer_chromium}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.peer_timeout, env=env)
    if proc.returncode != 0 or not out.exists():
        print(f"    FAILED rc={proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}", flush=True)
        return None
    row = json.loads(out.read_text())["rows"][-1]
    print(f"    {time.perf_counter() - t0:.0f} s: {_fmt(row)}", flush=True)
    return row


def _fmt(row: dict) -> str:
    return "  ".join(f"{c}={row.get(c)}" for c in COLS)


def table(rows: dict[str, dict], base: str | None) -> str:
    head = ["run", *COLS, "agree"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for name, r in rows.items():
        lines.append("| " + " | ".join([name, *(str(r.get(c, "")) for c in COLS), str(r.get("agree", "n/a"))]) + " |")
    if base:
        for name, r in rows.items():
            if name.startswith("agentrl"):
                continue
            b = rows[base]
            lines.append(
                f"| **{base} / {name}** | {b['reset_med_ms'] / r['reset_med_ms']:.2f}x time | "
                f"{b['step_med_ms'] / r['step_med_ms']:.2f}x time | | {b['steps_per_s'] / r['steps_per_s']:.2f}x | "
                f"**{b['steps_per_s_incl_reset'] / r['steps_per_s_incl_reset']:.2f}x** | | |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--tasks", type=lambda s: s.split(","), default=TASKS)
    ap.add_argument("--isolation", choices=["context", "storage", "both"], default="both")
    ap.add_argument("--ahead", type=int, default=1, help="BrowserEnvConfig.ahead: contexts made ready ahead")
    ap.add_argument("--peers", default=None, help="shared/bench folder: also run the peers, first")
    ap.add_argument("--bg-python", default="/tmp/bench/.venv-bg/bin/python")
    ap.add_argument("--pw-python", default="/tmp/bench/.venv-pw/bin/python")
    ap.add_argument("--peer-timeout", type=int, default=1800)
    ap.add_argument("--peer-chromium", default=HEADLESS_SHELL,
                    help="the peers' browser binary (BENCH_CHROMIUM); default: the one agentrl runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    rows: dict[str, dict] = {}
    out_dir = Path(tempfile.mkdtemp(prefix="miniwob-peers-"))
    if args.peers:
        for name in PEERS:
            row = run_peer(name, args, out_dir)
            if row:
                rows[name] = row
    modes = ["context", "storage"] if args.isolation == "both" else [args.isolation]
    per_task = {}
    with tempfile.TemporaryDirectory(prefix="miniwob-speed-") as tmp:
        for mode in modes:
            task_rows = [run_task(t, mode, args.episodes, Path(tmp), args.ahead) for t in args.tasks]
            per_task[mode] = task_rows
            rows[f"agentrl isolation={mode}"] = overall(task_rows, mode)
            print(f"### agentrl isolation={mode}: {_fmt(rows[f'agentrl isolation={mode}'])}", flush=True)
            for r in task_rows:
                print(f"    {r['task']:18s} {_fmt(r)}  agree={r['agree']}", flush=True)
    load1 = os.getloadavg()
    base = "agentrl isolation=storage" if "agentrl isolation=storage" in rows else None
    note = (f"{started}, {os.cpu_count()} cores, load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; "
            f"{args.episodes} episodes x {len(args.tasks)} tasks, oracle policy; agentrl's browser {HEADLESS_SHELL}"
            + (f", the peers' {args.peer_chromium}" if args.peers else ""))
    print(f"\n{note}\n\n{table(rows, base)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"note": note, "rows": rows, "per_task": per_task}, indent=1, default=str))
        print(f"wrote {args.json}")
    sys.exit(0 if all(r.get("agree", 1) == 1 for r in rows.values()) else 1)


if __name__ == "__main__":
    main()
