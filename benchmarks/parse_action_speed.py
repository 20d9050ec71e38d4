#!/usr/bin/env python
"""`parse_action` on degenerate replies of up to the action limit (10,000 characters): what an LLM stuck
on one token sends. Median of `--repeat` parses per input, in ms; linear parsing keeps each in milliseconds.

    .venv/bin/python benchmarks/parse_action_speed.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from agentrl.envs.actions import MAX_ACTION_CHARS, parse_action

N = MAX_ACTION_CHARS
INPUTS = {
    "click( x n": ("click(" * N)[:N],
    'click(" x n': ('click("' * N)[:N],
    "click(e1, x n": ("click(e1," * N)[:N],
    "blank lines": "x" + "\n " * (N // 2 - 1) + "x",
    "open fence + blanks": "```" + " " * (N - 3),
    "drag(1, x n": ("drag(1, " * N)[:N],
    "drag( + 5,000 integers": ("drag(" + "1," * N)[: N - 1] + ")",
    "16-point drags x n": (("drag(" + ", ".join(["100"] * 32) + ") ") * N)[:N],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out = {}
    for name, text in INPUTS.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            parse_action(text, max_chars=MAX_ACTION_CHARS)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = round(statistics.median(times), 2)
    print(json.dumps({"chars": MAX_ACTION_CHARS, "median_ms": out}))


if __name__ == "__main__":
    main()
