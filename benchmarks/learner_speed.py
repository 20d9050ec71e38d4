#!/usr/bin/env python
"""Speed of one GRPO step of the learner through the REAL env: rollout / reward / update, tokens/s, episodes/s.

Runs `--steps` Dr. GRPO steps of the tiny policy on tasks/train/click-button.yaml (real Chromium, the
sandbox `drill` app, the env's milestone reward) and reports medians over steps:

* rollout: wall time of `RolloutEngine.collect` (envs + policy), split into policy scoring (the constrained
  decoding forward passes) and the rest (env resets/steps, waiting); episodes/s; scored tokens/s (prompt +
  candidate tokens scored by the generator per second of policy time)
* reward: advantage computation from the env rewards (the env computes rewards inside `step`)
* update: forward + backward + optimizer step + weight sync; update tokens/s (prompt + candidate tokens
  through forward and backward per second)

Also a rollout-only sweep over `--envs` (how episodes/s scales with concurrent envs on one Chromium).

    .venv/bin/python benchmarks/learner_speed.py --steps 3 --envs 4 8 16 --json benchmarks/results/learner_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from agentrl.learner.algos import get_algorithm
from agentrl.learner.config import SHORT_SYSTEM_PROMPT
from agentrl.learner.rollout import GroupJob, RolloutEngine
from agentrl.learner.update import Learner
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.taskspec import load_task

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--num-envs", type=int, default=16, help="concurrent envs for the GRPO steps")
    ap.add_argument("--envs", type=int, nargs="*", default=[4, 8, 16], help="rollout-only sweep")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    model, tok = build_tiny_policy(Path(tempfile.mkdtemp(prefix="tiny-")), seed=0)
    gen = HFGenerator(copy.deepcopy(model).eval(), tok)
    spec = load_task(REPO / "tasks/train/click-button.yaml")
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT)
    learner = Learner(model, get_algorithm("drgrpo"), lr=3e-4, entropy_coef=0.05, norm_length=spec.max_steps)
    roles = ("button", "link", "heading")

    rows = []
    eng = RolloutEngine([spec], gen, builder, num_envs=args.num_envs, click_roles=roles, described=True)
    try:
        eng.collect([GroupJob(spec.id, 10_000 + i, 2, group=i) for i in range(4)], temperature=1.0, seed=0)  # warm-up
        for step in range(args.steps):
            jobs = [GroupJob(spec.id, step * args.groups + i, args.group_size, group=i) for i in range(args.groups)]
            roll = eng.collect(jobs, temperature=1.0, seed=step)
            t0 = time.perf_counter()
            upd = learner.update(roll.trajectories)
            gen.load_weights(model)
            update_total = time.perf_counter() - t0
            s = roll.stats
            rows.append({
                "episodes": s["episodes"], "rollout_s": s["rollout_s"], "policy_s": s["policy_s"],
                "env_s": s["env_s"], "reward_s": upd["reward_s"], "update_s": update_total,
                "episodes_per_s_rollout": s["episodes_per_s"],
                "episodes_per_s_step": s["episodes"] / (s["rollout_s"] + update_total),
                "rollout_scored_tokens_per_s": s["scored_tokens_per_s"],
                "update_tokens_per_s": upd.get("update_tokens_per_s", 0.0),
                "action_errors": s["action_errors"], "errors": s["errors"],
            })
            print(json.dumps({"step": step, **{k: round(v, 3) for k, v in rows[-1].items()}}), flush=True)
    finally:
        eng.close()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}

    sweep = {}
    for n in args.envs:
        eng = RolloutEngine([spec], gen, builder, num_envs=n, click_roles=roles, described=True)
        try:
            eng.collect([GroupJob(spec.id, 20_000 + i, 2, group=i) for i in range(n // 2 or 1)], temperature=1.0, seed=0)
            t0 = time.perf_counter()
            res = eng.collect([GroupJob(spec.id, 30_000 + i, 8, group=i) for i in range(max(2, 2 * n // 8))],
                              temperature=1.0, seed=1)
            sweep[n] = {"episodes_per_s": res.stats["episodes"] / (time.perf_counter() - t0),
                        "action_errors": res.stats["action_errors"]}
        finally:
            eng.close()
        print(json.dumps({"envs": n, **sweep[n]}), flush=True)

    load = os.getloadavg()[0]
    print(f"\nDr. GRPO step, {args.groups} groups x {args.group_size} episodes, {args.num_envs} envs, "
          f"median of {len(rows)} steps (load average {load:.1f} on {os.cpu_count()} cores):")
    print("| rollout s | (policy s) | (env s) | reward s | update s | episodes/s (rollout) | episodes/s (step) "
          "| rollout scored tok/s | update tok/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {med['rollout_s']:.2f} | {med['policy_s']:.2f} | {med['env_s']:.2f} | {med['reward_s']:.3f} | "
          f"{med['update_s']:.2f} | {med['episodes_per_s_rollout']:.2f} | {med['episodes_per_s_step']:.2f} | "
          f"{med['rollout_scored_tokens_per_s']:.0f} | {med['update_tokens_per_s']:.0f} |")
    print("rollout-only episodes/s by concurrent envs: "
          + ", ".join(f"{n}: {v['episodes_per_s']:.2f}" for n, v in sweep.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"steps": rows, "median": med, "sweep": sweep, "loadavg": load}, indent=2))


if __name__ == "__main__":
    main()
