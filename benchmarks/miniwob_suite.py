#!/usr/bin/env python
"""Run the whole MiniWoB++ suite with the heuristic and the random agent, and check every episode's success
against MiniWoB's own reward read from the page at the episode's end.

    .venv/bin/python benchmarks/miniwob_suite.py --seeds 3            # test-split seeds 100000..100002

Prints one line per task (successes and agreement per agent) and the totals; exits 1 if any episode's
success disagrees with MiniWoB's reward (``WOB_RAW_REWARD_GLOBAL > 0``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.suites import SUITES_DIR

from agentrl.agents import RandomAgent
from agentrl.agents.miniwob import MiniWoBHeuristicAgent, page_reward
from agentrl.evaluate import run_episode
from agentrl.suite import load_suite_spec

AGENTS = {"heuristic": MiniWoBHeuristicAgent, "random": RandomAgent}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="the first N seeds of the suite's test split")
    ap.add_argument("--isolation", choices=["context", "storage"], default="storage")
    args = ap.parse_args()
    tasks, seeds = load_suite_spec(SUITES_DIR / "miniwob").split("test")
    seeds = seeds[: args.seeds]
    t0 = time.perf_counter()
    totals = {a: [0, 0, 0] for a in AGENTS}  # episodes, successes, agreements
    print(f"{'task':36s}{'category':>10s}" + "".join(f"{a + ' ok':>14s}{'agree':>8s}" for a in AGENTS))
    with tempfile.TemporaryDirectory(prefix="miniwob-suite-") as tmp:
        for task in tasks:
            env = BrowserEnv(task, BrowserEnvConfig(root_dir=Path(tmp), isolation=args.isolation, record=False))
            cells = []
            for name, cls in AGENTS.items():
                ok = agree = 0
                for seed in seeds:
                    r = run_episode(env, cls(seed=seed), seed)
                    raw = page_reward(env)[1]
                    ok += r.success
                    agree += r.success == (raw > 0)
                    if r.success != (raw > 0):
                        print(f"  DISAGREE {task.id} seed {seed} {name}: ours {r.success}, raw {raw}", file=sys.stderr)
                cells.append(f"{ok:>11d}/{len(seeds)}{agree:>6d}/{len(seeds)}")
                for i, v in enumerate((len(seeds), ok, agree)):
                    totals[name][i] += v
            env.close()
            print(f"{task.id:36s}{task.category or '':>10s}" + "".join(cells), flush=True)
    load = os.getloadavg()[0]
    print(f"\n{len(tasks)} tasks x {len(seeds)} seeds, isolation={args.isolation}, "
          f"{time.perf_counter() - t0:.0f} s, load average {load:.1f} on {os.cpu_count()} cores")
    for name, (n, ok, agree) in totals.items():
        print(f"{name:10s} success {ok}/{n} = {ok / n:.0%}   agreement with MiniWoB's reward {agree}/{n} = {agree / n:.0%}")
    sys.exit(0 if all(t[2] == t[0] for t in totals.values()) else 1)


if __name__ == "__main__":
    main()
