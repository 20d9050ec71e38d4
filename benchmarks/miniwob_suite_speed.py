#!/usr/bin/env python
"""The whole MiniWoB++ suite (125 tasks), agentrl's env against the peers, in one run, with the random policy.

Every side runs the same tasks (every task of ``tasks/miniwob``: the 125 the miniwob package registers, no
``flight.*``), the same seeds (0..N-1) and the same step cap (``--max-steps``), with its random policy:
- the peers: the ``shared/bench`` scripts with ``--policy random --max-steps N`` in their own venvs, through
  ``miniwob_peer_speed.py`` (a task a peer cannot run is recorded with its error; the others go on);
- agentrl: ``BrowserEnv`` on ``tasks/miniwob`` with the ``random`` agent (``RandomAgent``), once per isolation
  mode. Its env ends an episode when MiniWoB ends it, with a reward or a failure (the tasks' ``fail_on``),
  or at the cap, as the peers' envs do. After every step the harness reads MiniWoB's own end of the episode
  and reward from the page, outside the timed loop: an episode counts as agreeing (``agree``) when the env's
  success is MiniWoB's and the env ended it no later than the page did.

Every side gets the same Chromium binary (agentrl's: Debian's chromium-headless-shell when installed; the
peers through ``BENCH_CHROMIUM``). One table: per side the reset and step medians (medians of per-task
medians), steps/s including resets, success, agree and the tasks it could not run; then agentrl / peer
ratios over the tasks both ran, per category and overall, and each side's slowest tasks.

    .venv/bin/python benchmarks/miniwob_suite_speed.py --episodes 1 --max-steps 5 --peers ../shared/bench \\
        --json benchmarks/results/miniwob_suite_speed.json
    .venv/bin/python benchmarks/miniwob_suite_speed.py --sides storage --tasks click-test,bisect-angle
    .venv/bin/python benchmarks/miniwob_suite_speed.py --report benchmarks/results/miniwob_suite_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.envs.host import HEADLESS_SHELL, BrowserHost
from agentrl.suites import SUITES_DIR
from miniwob_peer_speed import aggregate
from miniwob_speed import timed_episodes

from agentrl.agents import RandomAgent
from agentrl.suite import load_suite_spec

HERE = Path(__file__).resolve().parent
# side -> (venv key, shared/bench script, extra args); "agentrl" sides run in this process
SIDES = {
    "storage": ("agentrl", "", ["storage"]),
    "context": ("agentrl", "", ["context"]),
    "farama": ("bg", "farama_miniwob_bench.py", []),
    "bg-fast": ("bg", "browsergym_miniwob_bench.py", ["--fast"]),
    "floor-inplace": ("pw", "playwright_floor_bench.py", ["--reset-mode", "inplace", "--obs", "ai"]),
    "floor-context": ("pw", "playwright_floor_bench.py", ["--reset-mode", "context", "--obs", "ai"]),
    "bg": ("bg", "browsergym_miniwob_bench.py", []),
}
LABELS = {
    "storage": "**agentrl, `isolation=\"storage\"`**", "context": "agentrl, `isolation=\"context\"` (default)",
    "farama": "Farama miniwob 1.1 (Selenium, in-place reset)", "bg-fast": "BrowserGym 0.14.3, `--fast`",
    "floor-inplace": "floor: Playwright, in-place reset", "floor-context": "floor: Playwright, new context per episode",
    "bg": "BrowserGym 0.14.3, defaults",
}


def run_agentrl_task(path: Path, isolation: str, episodes: int, max_steps: int, root: Path) -> dict:
    """One task with the random agent, seeds 0..episodes-1: the peers' row plus ``agree``."""
    t0 = time.perf_counter()
    env = BrowserEnv(path, BrowserEnvConfig(root_dir=root, isolation=isolation, max_steps=max_steps))
    try:
        host = BrowserHost.shared()
        host.run(host.browser())  # launched (for the first task) at creation, as the peers' browsers are
        create_s = time.perf_counter() - t0
        agent = RandomAgent(seed=0)  # one agent: it draws from one stream per (task, seed) at each reset
        return timed_episodes(env, lambda: agent, path.stem.removeprefix("miniwob."), episodes, create_s)
    finally:
        env.close()


def run_agentrl(isolation: str, tasks: list[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="miniwob-suite-speed-") as tmp:
        for task in tasks:
            t0 = time.perf_counter()
            try:
                row = run_agentrl_task(SUITES_DIR / "miniwob" / f"miniwob.{task}.yaml", isolation, args.episodes,
                                       args.max_steps, Path(tmp))
            except Exception as e:  # recorded with its error, never dropped
                lines = str(e).strip().splitlines()
                row = {"task": task, "error": f"{type(e).__name__}: {lines[0][:300] if lines else ''}",
                       "error_after_s": round(time.perf_counter() - t0, 1)}
                print(f"  [{task}] ERROR {row['error']}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def run_peer(side: str, tasks: list[str], args: argparse.Namespace, out_dir: Path) -> tuple[list[dict], str | None]:
    """(per-task rows, the side's failure or None). Tasks the side did not reach are error rows."""
    venv, script, extra = SIDES[side]
    python = args.bg_python if venv == "bg" else args.pw_python
    out = out_dir / f"{side}.json"
    cmd = [python, str(HERE / "miniwob_peer_speed.py"), str(Path(args.peers) / script), "--episodes",
           str(args.episodes), "--policy", "random", "--max-steps", str(args.max_steps), "--json", str(out),
           "--tasks", ",".join(tasks), *extra]
    env = {**os.environ, "BENCH_CHROMIUM": args.peer_chromium}
    failure = None
    with open(out_dir / f"{side}.log", "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, timeout=args.peer_timeout,
                                  env=env)
            failure = None if proc.returncode == 0 else f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"stopped after {args.peer_timeout} s (--peer-timeout)"
    src = out if out.exists() else Path(f"{out}.partial")
    rows = [r for r in json.loads(src.read_text())["rows"] if r["task"] != "ALL"] if src.exists() else []
    seen = {r["task"] for r in rows}
    rows += [{"task": t, "error": f"not run: the side ended first ({failure})"} for t in tasks if t not in seen]
    if failure:
        tail = (out_dir / f"{side}.log").read_text()[-600:]
        print(f"    {side} FAILED ({failure}); log tail: {tail}", flush=True)
    return rows, failure


def summarize(rows: list[dict]) -> dict:
    row = aggregate(rows)
    ran = [r for r in rows if "error" not in r]
    if ran:  # the peers make an env (Farama: a browser) per task; agentrl's envs share one browser
        row["steps_per_s_incl_create"] = round(row["steps"] / sum(r["create_s"] + r["_wall_s"] for r in ran), 2)
    if ran and "agree" in ran[0]:
        row["agree"] = round(sum(r["agree"] * r["episodes"] for r in ran) / sum(r["episodes"] for r in ran), 3)
    row.pop("task")
    return row


def ratios(sides: dict[str, list[dict]], base: str, categories: dict[str, str]) -> dict[str, dict]:
    """base / peer steps/s including resets, over the tasks both ran: overall and per category."""
    out = {}
    mine = {r["task"]: r for r in sides[base] if "error" not in r}
    for side, rows in sides.items():
        if side == base:
            continue
        theirs = {r["task"]: r for r in rows if "error" not in r}
        both = sorted(mine.keys() & theirs.keys())
        cats: dict[str, list[str]] = {}
        for t in both:
            cats.setdefault(categories.get(t, "?"), []).append(t)

        def rate(rs: dict, ts: list[str], create: bool = False) -> float:
            return sum(rs[t]["steps"] for t in ts) / sum(rs[t]["_wall_s"] + create * rs[t]["create_s"] for t in ts)

        out[side] = {"tasks": len(both), "all": round(rate(mine, both) / rate(theirs, both), 2) if both else None,
                     "all_incl_create": round(rate(mine, both, True) / rate(theirs, both, True), 2) if both else None,
                     **{c: round(rate(mine, ts) / rate(theirs, ts), 2) for c, ts in sorted(cats.items())}}
    return out


def report(result: dict) -> str:
    cols = ["reset_med_ms", "step_med_ms", "steps_per_s_incl_reset", "steps_per_s_incl_create", "success", "agree",
            "steps"]
    lines = ["| side | " + " | ".join(cols) + " | tasks run | errors |", "|---|" + "---:|" * (len(cols) + 2)]
    for side, s in result["summary"].items():
        errs = ", ".join(s["error_tasks"][:8]) + (" ..." if len(s["error_tasks"]) > 8 else "")
        lines.append(f"| {LABELS[side]} | " + " | ".join(str(s.get(c, "")) for c in cols)
                     + f" | {s['tasks'] - s['errors']}/{s['tasks']} | {s['errors']}{': ' + errs if errs else ''} |")
    if result["ratios"]:
        cats = sorted({c for r in result["ratios"].values() for c in r if c not in ("tasks", "all", "all_incl_create")})
        lines += ["", f"{result['base']} / peer, steps/s including resets (and including env creation), over the "
                  "tasks both ran:", "", "| peer | tasks | all | all, incl. creation | " + " | ".join(cats) + " |",
                  "|---|" + "---:|" * (len(cats) + 3)]
        for side, r in result["ratios"].items():
            lines.append(f"| {LABELS[side]} | {r['tasks']} | **{r['all']}x** | {r['all_incl_create']}x | "
                         + " | ".join(f"{r.get(c, '')}x" for c in cats) + " |")
    lines += ["", "Slowest tasks per side (steps/s including resets):"]
    for side, rows in result["per_task"].items():
        ran = sorted((r for r in rows if "error" not in r), key=lambda r: r["steps_per_s_incl_reset"])[:4]
        lines.append(f"- {side}: " + ", ".join(f"{r['task']} {r['steps_per_s_incl_reset']}" for r in ran))
    for side, rows in result["per_task"].items():
        bad = [r["task"] for r in rows if r.get("agree", 1) < 1]
        if bad:
            lines.append(f"- {side}: success disagrees with MiniWoB's reward on {', '.join(bad)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=1, help="seeds 0..N-1 per task")
    ap.add_argument("--max-steps", type=int, default=5, help="the step cap of every side's random policy")
    ap.add_argument("--tasks", type=lambda s: s.split(","), default=None, help="default: every task of tasks/miniwob")
    ap.add_argument("--sides", type=lambda s: s.split(","), default=list(SIDES),
                    help=f"in this order; default all: {','.join(SIDES)}")
    ap.add_argument("--peers", default=None, help="the shared/bench folder (needed for the peer sides)")
    ap.add_argument("--bg-python", default="/tmp/bench/.venv-bg/bin/python")
    ap.add_argument("--pw-python", default="/tmp/bench/.venv-pw/bin/python")
    ap.add_argument("--peer-timeout", type=int, default=3600, help="seconds per peer side")
    ap.add_argument("--peer-chromium", default=HEADLESS_SHELL, help="BENCH_CHROMIUM; default: agentrl's binary")
    ap.add_argument("--json", default=None)
    ap.add_argument("--report", default=None, metavar="JSON", help="only print the tables of an earlier run's JSON")
    args = ap.parse_args()
    if args.report:
        result = json.loads(Path(args.report).read_text())
        result["summary"] = {side: summarize(rows) for side, rows in result["per_task"].items()}
        result["ratios"] = ratios(result["per_task"], result["base"], result["categories"]) if result["base"] else {}
        print(f"{result['note']}\n\n{report(result)}")
        return
    if unknown := [s for s in args.sides if s not in SIDES]:
        ap.error(f"--sides: unknown {unknown}; known: {', '.join(SIDES)}")
    if not args.peers and any(SIDES[s][0] != "agentrl" for s in args.sides):
        ap.error("--peers DIR is needed for the peer sides (or --sides storage,context)")
    suite = load_suite_spec(SUITES_DIR / "miniwob")
    categories = {t.id.removeprefix("miniwob."): t.category or "" for t in suite.tasks}
    tasks = args.tasks or sorted(categories)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    per_task: dict[str, list[dict]] = {}
    failures: dict[str, str] = {}
    out_dir = Path(tempfile.mkdtemp(prefix="miniwob-suite-peers-"))
    for side in args.sides:
        t0 = time.perf_counter()
        print(f"### {side} ({time.strftime('%H:%M:%S', time.gmtime())}, load {os.getloadavg()[0]:.1f})", flush=True)
        if SIDES[side][0] == "agentrl":
            per_task[side] = run_agentrl(SIDES[side][2][0], tasks, args)
        else:
            per_task[side], failure = run_peer(side, tasks, args, out_dir)
            if failure:
                failures[side] = failure
        s = summarize(per_task[side])
        print(f"    {time.perf_counter() - t0:.0f} s: " + "  ".join(f"{k}={v}" for k, v in s.items()
                                                               if k != "error_tasks"), flush=True)
    load1 = os.getloadavg()
    base = next((s for s in ("storage", "context") if s in per_task), None)
    result = {
        "note": (f"{started}, {os.cpu_count()} cores shared with other users, load average {load0[0]:.1f} at start "
                 f"and {load1[0]:.1f} at end; {len(tasks)} tasks x {args.episodes} episodes (seeds 0..{args.episodes - 1}),"
                 f" random policy, at most {args.max_steps} steps; agentrl's browser {HEADLESS_SHELL}"
                 + (f", the peers' {args.peer_chromium}" if args.peers else "")),
        "args": vars(args), "load_start": load0, "load_end": load1, "tasks": tasks, "categories": categories,
        "base": base, "side_failures": failures, "logs": str(out_dir),
        "summary": {side: summarize(rows) for side, rows in per_task.items()},
        "ratios": ratios(per_task, base, categories) if base else {},
        "per_task": per_task,
    }
    print(f"\n{result['note']}\n\n{report(result)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json}")
    sys.exit(1 if any(r.get("agree", 1) < 1 for rows in per_task.values() for r in rows) else 0)


if __name__ == "__main__":
    main()
