"""Reward router overhead per step: rules only (the default), with R_phi (MiniLM, CPU), and with the judge
behind a local HTTP server (a rule-based reply function, so the figure is the router + HTTP + prompt cost).

    .venv/bin/python benchmarks/router_overhead.py [--rm runs/rm-heldout/rm] [--n 2000]

The step inputs are real: one oracle episode of tasks/core/reports-search in the browser env. Results:
benchmarks/results/router_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.rewards.judge import JudgeConfig
from agentrl.rewards.router import RewardRouter, RouterConfig, StepInput

from agentrl.agents import ScriptedAgent
from agentrl.judge_server import JudgeServer
from agentrl.taskspec import load_task

REPO = Path(__file__).resolve().parents[1]


def real_steps() -> list[StepInput]:
    spec = load_task(REPO / "tasks/core/reports-search.yaml")
    env = BrowserEnv(spec, BrowserEnvConfig())
    try:
        obs, info = env.reset(seed=0)
        agent = ScriptedAgent()
        agent.reset(obs, info, env.variant)
        out, history, terminated, truncated = [], [], False, False
        while not (terminated or truncated):
            action = agent.act(obs)
            before = obs
            obs, _, terminated, truncated, info = env.step(action)
            out.append(StepInput.from_info(spec, env.variant, action, before["text"], obs["text"], info,
                                           history=list(history), terminated=terminated))
            history.append(action)
        return out
    finally:
        env.close()


def time_router(router: RewardRouter, steps: list[StepInput], n: int) -> dict[str, float]:
    for x in steps:  # warm-up (R_phi's first call loads nothing more, but caches embeddings: bypass below)
        router.step(x)
    per: list[float] = []
    decided: set[str] = set()
    for i in range(n):
        x = steps[i % len(steps)]
        t0 = time.perf_counter()
        _, audit = router.step(x)
        per.append((time.perf_counter() - t0) * 1e6)
        decided.add(audit.decided_by)
    per.sort()
    return {"n": n, "median_us": statistics.median(per), "p90_us": per[int(0.9 * (n - 1))], "decided_by": sorted(decided)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rm", type=Path, default=REPO / "runs/rm-heldout/rm", help="a trained R_phi directory")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks/results/router_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the encoder runs on a shared 2-core machine: one thread, no spinning
    steps = real_steps()
    judged = [StepInput(**{**x.__dict__, "task": x.task.model_copy(update={"judge": True})}) for x in steps]
    results = {"steps_per_episode": len(steps), "obs_chars_median": statistics.median(len(x.obs_after) for x in steps)}
    results["rules_only"] = time_router(RewardRouter.from_config(), steps, args.n)

    if (args.rm / "config.json").is_file():
        router = RewardRouter.from_config(RouterConfig(reward_model=str(args.rm), rm_threshold=0.0))
        model = router.sources["reward_model"].model  # type: ignore[attr-defined]
        cold: list[float] = []
        for i in range(min(50, args.n)):  # every step a text R_phi has not embedded yet (the real case)
            model.encoder._cache.clear()
            t0 = time.perf_counter()
            router.step(judged[i % len(judged)])
            cold.append((time.perf_counter() - t0) * 1e6)
        results["reward_model_uncached"] = {"n": len(cold), "median_us": statistics.median(cold),
                                            "decided_by": ["reward_model"], "encoder": model.config.encoder}
        results["reward_model_cached_text"] = time_router(router, judged, min(args.n, 500))

    with JudgeServer(lambda m: '{"score": 0.5, "rationale": "ok"}') as server, tempfile.TemporaryDirectory() as d:
        for name, cache in (("judge_http_uncached", None), ("judge_cache_hit", f"{d}/c.sqlite")):
            router = RewardRouter.from_config(RouterConfig(judge=JudgeConfig(base_url=server.base_url, cache=cache)))
            results[name] = time_router(router, judged, min(args.n, 300))
    results["machine"] = "2 CPU cores shared with other jobs (load varies), torch threads 1"
    results["command"] = f"benchmarks/router_overhead.py --n {args.n} --rm {args.rm}"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
