"""Rollout throughput by backend and concurrency: the local pool vs Ray actors, 1/2/4/8 concurrent envs.

    .venv/bin/python benchmarks/ray_scaling.py --envs 1 2 4 8 --episodes 48 --json benchmarks/results/ray_scaling.json

The trainer's own path: `RolloutEngine` with the tiny policy (CPU, 1 torch thread) choosing among the
candidates, on a 3-step version of `tasks/train/click-button.yaml` (a step is one decision, one action
and one observation; resets are counted in the wall time). Configurations per N concurrent envs:

- ``local``: the local pool, N envs on this process's loop and Chromium;
- ``ray-1``: one Ray actor running the N envs (same work as local + the Ray hop: Ray's overhead);
- ``ray-2``: two Ray actors, N/2 envs each (ceil), each its own Chromium and sandbox server.

Memory: after each run, each worker's Chromium processes (count, summed RSS) and its process RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import yaml
from agentrl.envs.workers import PoolConfig

from agentrl.learner.config import SHORT_SYSTEM_PROMPT
from agentrl.learner.rollout import GroupJob, RolloutEngine
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.taskspec import load_task

REPO = Path(__file__).resolve().parents[1]


TICK = os.sysconf("SC_CLK_TCK")


def _role(pid: int, parents: dict[int, int], cmd: dict[int, str], me: int) -> str:
    """What a process is to this run: the learner (this process), a Ray worker actor, Ray's own processes,
    a Playwright node driver or a Chromium process (browser or renderer), each of the learner's or of an actor."""
    c = cmd[pid]
    if pid == me:
        return "learner"
    if "ray::" in c or "default_worker.py" in c:
        return "ray worker processes"  # the actors (and Ray's idle prestarted workers)
    owner, p = "", parents.get(pid)
    while p:
        if p == me:
            owner = "learner's"
            break
        if "ray::" in cmd.get(p, "") or "default_worker.py" in cmd.get(p, ""):
            owner = "actor's"
            break
        p = parents.get(p)
    if "node" in c.split(" ", 1)[0] or "playwright" in c.split(" ", 1)[0]:
        return f"node driver ({owner})"
    if "chrom" in c.split(" ", 1)[0]:
        kind = re.search(r"--type=([a-z-]+)", c)
        return f"chromium {kind.group(1) if kind else 'browser'} ({owner})"
    return "ray system" if owner or "ray" in c else "other"


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and everything under it, by `_role`; processes that
    are no longer there are not counted (take two snapshots around a window the processes live through)."""
    me = os.getpid()
    parents, cmd, cpu = {}, {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            c = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        pid = int(d.name)
        f = stat.rsplit(")", 1)[1].split()
        parents[pid], cmd[pid] = int(f[1]), c or stat.split("(", 1)[1].split(")", 1)[0]
        cpu[pid] = sum(int(x) for x in f[11:15]) / TICK  # with its reaped children (renderers come and go)
    mine = {me}
    changed = True
    while changed:
        changed = False
        for pid, pp in parents.items():
            if pp in mine and pid not in mine:
                mine.add(pid)
                changed = True
    out: dict[str, float] = {}
    for pid in mine:
        role = _role(pid, parents, cmd, me)
        out[role] = out.get(role, 0.0) + cpu[pid]
    return out


def run(policy, spec, pool: PoolConfig, episodes: int, seed0: int) -> dict:
    model, tok = policy
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT, max_prompt_tokens=1024)
    eng = RolloutEngine([spec], HFGenerator(model, tok), builder, click_roles=("button", "link", "heading"),
                        pool=pool, described=True)
    try:
        eng.collect([GroupJob(spec.id, seed0 + 999, min(pool.concurrency, 4))], temperature=1.0, seed=0)  # warm-up
        jobs = [GroupJob(spec.id, seed0 + g, 4, group=g) for g in range(episodes // 4)]
        remote = getattr(eng.pool, "calls", None) is not None
        calls0, call_s0 = (Counter(eng.pool.calls), Counter(eng.pool.call_s)) if remote else (Counter(), Counter())
        busy0 = _busy(eng.pool.stats()) if remote else 0.0
        cpu0, t0 = cpu_by_role(), time.perf_counter()
        res = eng.collect(jobs, temperature=1.0, seed=1)
        wall, cpu1 = time.perf_counter() - t0, cpu_by_role()
        calls = dict(Counter(eng.pool.calls) - calls0) if remote else {}
        # the Ray calls' wall time seen here less the time the actors spent in them: the hops' own cost
        hop_s = (sum((Counter(eng.pool.call_s) - call_s0).values()) - (_busy(eng.pool.stats()) - busy0)) if remote else 0.0
        mem = eng.pool.stats()
    finally:
        eng.close()
    s = res.stats
    return {"episodes": s["episodes"], "steps": s["turns"], "wall_s": wall, "steps_per_s": s["turns"] / wall,
            "episodes_per_s": s["episodes"] / wall, "s_per_episode": wall / s["episodes"],
            "policy_s": s["policy_s"], "infra_failures": s["infra_failures"], "workers": mem,
            "cpu_s_per_episode": {k: round((v - cpu0.get(k, 0.0)) / s["episodes"], 4) for k, v in sorted(cpu1.items())
                                  if v - cpu0.get(k, 0.0) > 0},
            "ray_calls_per_episode": {k: v / s["episodes"] for k, v in calls.items()},
            "ray_hop_ms_per_episode": 1000 * hop_s / s["episodes"]}


def _busy(stats: list[dict]) -> float:
    return sum(sum(w.get("busy_s", {}).values()) for w in stats)


def _profile_on(host) -> tuple:
    """cProfile on this thread and on `host`'s event-loop thread (a profiler sees only its own thread)."""
    import cProfile

    main, loop = cProfile.Profile(), cProfile.Profile()
    host.run(_enable(loop))
    main.enable()
    return main, loop


async def _enable(prof) -> None:
    prof.enable()


async def _disable(prof) -> None:
    prof.disable()


def _top(prof, n: int = 14) -> str:
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(n)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000]


def _actor_profile(worker, start: bool):
    """Start (or stop and return the text of) cProfile on an EnvWorker actor's event loop (where its calls
    and its browser run), through Ray's ``__ray_call__`` (nothing in the actor's code is for this)."""
    def go(self, start=start):
        import cProfile
        import threading

        loop = self.recycler.host.loop
        done = threading.Event()
        if start:
            self._prof = cProfile.Profile()
        action = self._prof.enable if start else self._prof.disable
        try:
            asyncio.get_running_loop()
            action()  # this call runs on the actor's loop
        except RuntimeError:
            loop.call_soon_threadsafe(lambda: (action(), done.set()))
            done.wait(10)
        return "" if start else _top(self._prof)
    return worker.handle.__ray_call__.remote(go)


def profile(policy, spec, pool: PoolConfig, episodes: int) -> None:
    """cProfile of the learner (its main thread: the decisions; its event loop: the envs or the Ray calls)
    and, on Ray, of the actor, over `episodes` episodes after a warm-up."""
    import ray

    model, tok = policy
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT, max_prompt_tokens=1024)
    eng = RolloutEngine([spec], HFGenerator(model, tok), builder, click_roles=("button", "link", "heading"),
                        pool=pool, described=True)
    try:
        eng.collect([GroupJob(spec.id, 999, min(pool.concurrency, 4))], temperature=1.0, seed=0)
        workers = getattr(eng.pool, "workers", [])
        ray.get([_actor_profile(w, True) for w in workers])
        main, loop = _profile_on(eng.host)
        eng.collect([GroupJob(spec.id, g, 4, group=g) for g in range(episodes // 4)], temperature=1.0, seed=1)
        main.disable()
        eng.host.run(_disable(loop))
        print("learner, main thread:\n" + _top(main) + "\nlearner, event loop:\n" + _top(loop))
        for w, text in zip(workers, ray.get([_actor_profile(w, False) for w in workers]), strict=True):
            print(f"actor {w.index}:\n{text}")
    finally:
        eng.close()


def obs_bytes(episodes: int = 2) -> dict:
    """What one step sends from a worker to the learner: the pickled (obs, reward, terminated, truncated,
    info) of the scripted agent's steps on the web suite's tasks, without and with a screenshot."""
    import pickle

    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.envs.factory import make_env

    from agentrl.agents import ScriptedAgent
    from agentrl.suite import load_suite_spec

    tasks, _ = load_suite_spec(REPO / "tasks/web").split("train", 1)
    out = {}
    for shot in (False, True):
        sizes = []
        for spec in [t for t in tasks if t.env == "browser"][::6]:
            env = make_env(spec, BrowserEnvConfig(screenshot=shot, record=False, keep_episode_dirs=False))
            try:
                for seed in range(episodes):
                    obs, info = env.reset(seed=seed)
                    agent = ScriptedAgent()
                    agent.reset(obs, info, env.variant)
                    done = False
                    while not done:
                        step = env.step(agent.act(obs))
                        obs, done = step[0], step[2] or step[3]
                        sizes.append(len(pickle.dumps(step)))
            finally:
                env.close()
        out["with_screenshot" if shot else "text"] = {"steps": len(sizes), "median_bytes": statistics.median(sizes),
                                                      "max_bytes": max(sizes)}
    return out


class _Echo:
    def step(self, payload: bytes) -> dict:
        return {"axtree": payload.decode(), "goal": "x", "reward": 0.0}


def ray_hop(n: int = 300, size: int = 14_000) -> dict:
    """The Ray hop alone: an actor call from an asyncio loop that sends an action and returns a
    `size`-byte observation (the median text step), `n` times in a row; median and p90 in ms."""
    import asyncio

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    actor = ray.remote(_Echo).options(num_cpus=0.5).remote()
    payload = b"x" * size

    async def go() -> list[float]:
        await actor.step.remote(payload)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            await actor.step.remote(payload)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    ms = sorted(asyncio.run(go()))
    ray.shutdown()
    return {"calls": n, "bytes": size, "median_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * n)],
            "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--obs-bytes", action="store_true", help="only measure the bytes a step sends back")
    ap.add_argument("--hop", action="store_true", help="only measure the Ray round trip of one step")
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--episodes", type=int, default=48, help="per configuration (multiple of 4)")
    ap.add_argument("--configs", nargs="+", default=["local", "ray-1", "ray-2"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", choices=["local", "ray-1"], help="only cProfile this configuration (--envs' first)")
    args = ap.parse_args()
    if args.hop:
        print(json.dumps(ray_hop(), indent=2))
        return
    if args.obs_bytes:
        print(json.dumps(obs_bytes(), indent=2))
        return
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    tmp = Path(tempfile.mkdtemp())
    policy = build_tiny_policy(tmp / "tiny", seed=0)
    data = yaml.safe_load((REPO / "tasks/train/click-button.yaml").read_text())
    data.update(id="click-button-3", max_steps=3)
    (tmp / "t.yaml").write_text(yaml.safe_dump(data))
    spec = load_task(tmp / "t.yaml")
    if args.profile:
        n = args.envs[0]
        pool = PoolConfig(max_envs=n) if args.profile == "local" else PoolConfig(backend="ray", workers=1, max_envs=n)
        profile(policy, spec, pool, args.episodes)
        ray.shutdown()
        return
    rows = []
    load0 = os.getloadavg()
    for n in args.envs:
        for name in args.configs:
            if name == "local":
                pool = PoolConfig(max_envs=n)
            else:
                k = int(name.split("-")[1])
                k = min(k, n)
                pool = PoolConfig(backend="ray", workers=k, max_envs=-(-n // k), cpus_per_worker=os.cpu_count() / k)
            r = run(policy, spec, pool, args.episodes, seed0=1000 * n)
            rows.append({"config": name, "envs": n, **r})
            chrom = sum(w["chromium_rss_mb"] for w in r["workers"])
            print(f"{name:6s} envs={n}: {r['steps_per_s']:.2f} steps/s, {r['episodes_per_s']:.2f} episodes/s, "
                  f"{r['s_per_episode'] * 1000:.0f} ms/episode, Chromium {chrom:.0f} MB in "
                  f"{sum(w['chromium_processes'] for w in r['workers'])} processes, infra {r['infra_failures']}",
                  flush=True)
            print("   CPU s/episode: " + ", ".join(f"{k} {v:.3f}" for k, v in r["cpu_s_per_episode"].items())
                  + f" (sum {sum(r['cpu_s_per_episode'].values()):.3f}); Ray calls/episode: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["ray_calls_per_episode"].items())
                  + f"; Ray hops {r['ray_hop_ms_per_episode']:.1f} ms/episode", flush=True)
    load1 = os.getloadavg()
    ray.shutdown()
    print("\n| envs | " + " | ".join(f"{c} steps/s" for c in args.configs) + " | ray-1 / local ms per episode |")
    print("|---:|" + "---:|" * (len(args.configs) + 1))
    by = {(r["config"], r["envs"]): r for r in rows}
    for n in args.envs:
        cells = [f"{by[(c, n)]['steps_per_s']:.2f}" for c in args.configs]
        over = by[("ray-1", n)]["s_per_episode"] / by[("local", n)]["s_per_episode"] if ("ray-1", n) in by else float("nan")
        print(f"| {n} | " + " | ".join(cells) + f" | {over:.2f}x |")
    for c in args.configs:
        if (c, 1) in by and (c, 2) in by:
            print(f"{c}: 2 envs / 1 env = {by[(c, 2)]['steps_per_s'] / by[(c, 1)]['steps_per_s']:.2f}x")
    for n in args.envs:
        per = [sum(w["chromium_rss_mb"] for w in by[(c, n)]["workers"]) for c in args.configs]
        print(f"Chromium RSS with {n} envs: " + ", ".join(f"{c} {m:.0f} MB" for c, m in zip(args.configs, per, strict=True))
              + f" (per env: {statistics.median(per) / n:.0f} MB)")
    print(f"load average before {load0[0]:.1f}, after {load1[0]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "load_before": load0, "load_after": load1,
                                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=2))


if __name__ == "__main__":
    main()
