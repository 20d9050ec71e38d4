#!/usr/bin/env python
"""Speed of agentrl's BrowserEnv against the raw-Playwright floor, on the bundled tasks, in one run.

Both sides drive the same Chromium (the headless shell when installed) against the same sandbox pages with the same oracle actions:
- floor: sync Playwright, a new browser context per episode, per step one action plus one AI-mode
  ARIA snapshot (the observation that carries element ids). No env, no events, no detectors, no settling.
- env:   `BrowserEnv.reset/step` with the scripted agent: settle on load/network signals, events,
  detectors, milestone rewards, trajectory file — everything a training run gets.
Each configuration runs with text observations and with a screenshot per step. Rounds alternate
floor/env so drift in machine load hits both. Medians and ratios are what to quote.

    .venv/bin/python benchmarks/env_speed.py --episodes 10 --json benchmarks/results/env_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import EPISODE_HEADER, BrowserEnv, BrowserEnvConfig
from agentrl.envs.host import CHROME_ARGS, HEADLESS_SHELL
from agentrl.envs.sandboxes import default_sandbox
from agentrl.suites import SUITES_DIR
from playwright.sync_api import sync_playwright

from agentrl.agents import ScriptedAgent, oracle_action
from agentrl.taskspec import TaskSpec, load_suite


class Floor:
    def __init__(self, pw, screenshot: bool) -> None:
        self.browser = pw.chromium.launch(executable_path=HEADLESS_SHELL, headless=True, args=CHROME_ARGS)  # the env's
        self.screenshot = screenshot
        self.sandbox = default_sandbox()
        self.context = None

    def observe(self, page) -> str:
        snap = page.aria_snapshot(mode="ai")
        if self.screenshot:
            page.screenshot(type="png")
        return snap

    def episode(self, spec: TaskSpec, seed: int, resets: list, steps: list) -> bool:
        t0 = time.perf_counter()
        if self.context is not None:
            self.context.close()
        ep_id = f"floor-{uuid.uuid4().hex[:8]}"
        variant = spec.render(seed, self.sandbox.open_episode(ep_id, seed))
        self.context = self.browser.new_context(viewport={"width": 1024, "height": 768}, accept_downloads=True)
        self.context.set_extra_http_headers({EPISODE_HEADER: ep_id})
        page = self.context.new_page()
        page.goto(self.sandbox.origin + spec.start.path)
        snap = self.observe(page)
        resets.append(time.perf_counter() - t0)
        ok = True
        for i, step in enumerate(variant.oracle):
            t0 = time.perf_counter()
            try:
                action = oracle_action(step, parse_snapshot(snap), i)
            except Exception:  # noqa: BLE001 - the floor has no settling; a miss is counted, not fatal
                ok = False
                break
            kind = step.kind
            if kind in ("click", "fill", "select"):
                ref = action[action.index("(") + 1 :].split(",")[0].rstrip(")")
                loc = page.locator(f"aria-ref={ref}")
                if kind == "click":
                    loc.click()
                elif kind == "fill":
                    loc.fill(step.fill.text)
                else:
                    loc.select_option(label=step.select.option)
            elif kind == "goto":
                page.goto(self.sandbox.origin + step.goto if step.goto.startswith("/") else step.goto)
            snap = self.observe(page)
            steps.append(time.perf_counter() - t0)
        self.sandbox.close_episode(ep_id)
        return ok

    def close(self) -> None:
        self.browser.close()


def run_env(env_by_task: dict[str, BrowserEnv], spec: TaskSpec, seed: int, resets: list, steps: list) -> bool:
    env = env_by_task[spec.id]
    agent = ScriptedAgent()
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed)
    resets.append(time.perf_counter() - t0)
    agent.reset(obs, info, env.variant)
    done = False
    n = 0
    while not done and n < len(env.variant.oracle):
        action = agent.act(obs)
        t0 = time.perf_counter()
        obs, _, term, trunc, info = env.step(action)
        steps.append(time.perf_counter() - t0)
        done = term or trunc
        n += 1
    if not info["success"]:  # say why, so a failure in a speed run is visible and explainable
        print(f"env failure: {spec.id} seed {seed}: completed {info['completed']}, last error {info['action_error']}")
    return bool(info["success"])


def summarise(name: str, resets: list[float], steps: list[float], successes: list[bool]) -> dict:
    total = sum(resets) + sum(steps)
    return {
        "config": name,
        "episodes": len(resets),
        "steps": len(steps),
        "reset_med_ms": 1000 * statistics.median(resets),
        "reset_p90_ms": 1000 * statistics.quantiles(resets, n=10)[-1] if len(resets) > 1 else 0.0,
        "step_med_ms": 1000 * statistics.median(steps),
        "steps_per_s": len(steps) / sum(steps),
        "steps_per_s_incl_reset": len(steps) / total,
        "success": sum(successes) / len(successes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=str(SUITES_DIR / "core"))
    ap.add_argument("--episodes", type=int, default=10, help="seeds per task per configuration")
    ap.add_argument("--rounds", type=int, default=2, help="alternating floor/env rounds")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    specs = load_suite(args.suite)
    seeds = list(range(args.episodes))
    results = []
    root = Path(tempfile.mkdtemp(prefix="agentrl-bench-"))
    with sync_playwright() as pw:
        for shot in (False, True):
            obs = "text+screenshot" if shot else "text"
            acc = {k: ([], [], []) for k in ("floor", "env")}
            floor = Floor(pw, shot)
            cfg = BrowserEnvConfig(screenshot=shot, root_dir=root, keep_episode_dirs=False)
            envs = {s.id: BrowserEnv(s, cfg) for s in specs}
            for s in specs:  # warm-up: one episode each, not counted
                floor.episode(s, 999, [], [])
                run_env(envs, s, 999, [], [])
            for _ in range(args.rounds):
                for s in specs:
                    for seed in seeds:
                        r, st, ok = acc["floor"]
                        ok.append(floor.episode(s, seed, r, st))
                    for seed in seeds:
                        r, st, ok = acc["env"]
                        ok.append(run_env(envs, s, seed, r, st))
            for e in envs.values():
                e.close()
            floor.close()
            for k in ("floor", "env"):
                results.append(summarise(f"{k} ({obs})", *acc[k]))
            f, e = results[-2], results[-1]
            results.append({
                "config": f"ratio env/floor ({obs})",
                "step_med": e["step_med_ms"] / f["step_med_ms"],
                "reset_med": e["reset_med_ms"] / f["reset_med_ms"],
            })
    load = os.getloadavg()
    print(f"# tasks={len(specs)} episodes/task/config={args.episodes * args.rounds} load avg={load[0]:.2f}")
    print("| config | episodes | steps | reset med ms | reset p90 ms | step med ms | steps/s | steps/s incl. reset | success |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "ratio" in r["config"]:
            print(f"| {r['config']} | | | {r['reset_med']:.2f}x | | {r['step_med']:.2f}x | | | |")
        else:
            print(
                f"| {r['config']} | {r['episodes']} | {r['steps']} | {r['reset_med_ms']:.0f} | {r['reset_p90_ms']:.0f} | "
                f"{r['step_med_ms']:.0f} | {r['steps_per_s']:.1f} | {r['steps_per_s_incl_reset']:.1f} | {r['success']:.2f} |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"load_avg": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
