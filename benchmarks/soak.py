"""Soak: thousands of episodes of mixed web tasks on Ray rollout workers, memory and processes sampled.

    .venv/bin/python benchmarks/soak.py --episodes 2000 --workers 2 --out benchmarks/results/soak

Half the episodes with ``isolation="context"`` (a new browser context per episode), half with
``"storage"`` (contexts wiped and reused), every task of the `web` suite (train split) with the scripted
agent, through `agentrl.evaluate.evaluate` on Ray actors (each with its own Chromium and sandbox
server). Every ``--every`` seconds a sampler records the episodes finished, the Chromium processes started
by this run (found by a mark in their environment, wherever they hang in the process tree) and their
summed RSS, and the RSS of the run's other processes (the Ray workers). At the end: no Chromium process
with the mark may be left, every episode must be in results.jsonl, and the RSS trend (least squares over
the second half of each phase, MB per 1,000 episodes) is reported. Writes samples.jsonl, soak.json and
soak.png into OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from pathlib import Path

MARK_KEY = "AGENTRL_SOAK_MARK"


def marked() -> dict[str, float]:
    """This run's processes: those under this one (Ray's, its actors, their Chromium) and any with the run's
    mark in their environment wherever they hang (an orphaned browser; Chromium's child processes rewrite
    their environment block, its browser process keeps it). Chromium count and RSS, the others' RSS (MB),
    and CPU seconds (each live process's own and that of the children it has reaped)."""
    mark = f"{MARK_KEY}={os.environ[MARK_KEY]}".encode()
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float, float, bool]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            rss = next((int(x.split()[1]) for x in (d / "status").read_text().splitlines() if x.startswith("VmRSS:")), 0)
            tagged = mark in (d / "environ").read_bytes()
        except (OSError, StopIteration):
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        procs[int(d.name)] = (int(fields[1]), comm, rss / 1024, sum(int(x) for x in fields[11:15]) / tick, tagged)
    me = os.getpid()
    ours = {p for p, v in procs.items() if v[4]}
    children: dict[int, list[int]] = {}
    for p, v in procs.items():
        children.setdefault(v[0], []).append(p)
    stack = [me]
    while stack:
        for c in children.get(stack.pop(), []):
            ours.add(c)
            stack.append(c)
    ours.discard(me)
    out = {"chromium_processes": 0, "chromium_rss_mb": 0.0, "other_processes": 0, "other_rss_mb": 0.0, "cpu_s": 0.0}
    roles: dict[str, float] = {"driver": procs[me][2]} if me in procs else {}
    for p in ours:
        _, comm, rss, cpu, _ = procs[p]
        kind = "chromium" if "chrom" in comm else "other"
        out[f"{kind}_processes"] += 1
        out[f"{kind}_rss_mb"] += rss
        out["cpu_s"] += cpu
        if kind == "other":  # which of the others: Ray's actors, its servers, the Playwright drivers
            role = ("actors" if comm.startswith("ray::") else "node drivers" if comm.startswith("node")
                    else comm if comm in ("gcs_server", "raylet") else "ray other")
            roles[role] = roles.get(role, 0.0) + rss
    out["rss_mb_by_role"] = {k: round(v, 1) for k, v in sorted(roles.items())}
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 3:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


def leak_probe(episodes: int, isolation: str, top: int = 15) -> dict:
    """What grows in a worker, in this process (no Ray): `evaluate`'s runner (the scripted agent, one env
    per task, at most 8 kept) over `episodes` episodes of the web suite's tasks; tracemalloc snapshots
    after the first third and at the end, diffed by line (the Python objects that grew), and the RSS of this
    process and of its Playwright node driver every 10 episodes (what tracemalloc cannot see)."""
    import tempfile
    import tracemalloc

    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.envs.workers import process_rss_mb

    from agentrl.evaluate import _Job, _Runner
    from agentrl.suite import load_suite_spec

    tasks, _ = load_suite_spec(Path(__file__).resolve().parents[1] / "tasks/web").split("train", 1)
    tasks = [t for t in tasks if t.env == "browser"]
    root = Path(tempfile.mkdtemp())
    cfg = BrowserEnvConfig(isolation=isolation, screenshot=False, root_dir=root, record=True, keep_episode_dirs=True)
    runner = _Runner("scripted", {}, cfg, staging=".worker-0", max_envs=8)
    me = os.getpid()

    def node_rss() -> float:
        kids = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and
                (d / "stat").exists() and f") S {me} " in (d / "stat").read_text().replace(") R ", ") S ")]
        return sum(process_rss_mb(k) for k in kids if b"node" in Path(f"/proc/{k}/cmdline").read_bytes()[:200])

    rss, snap0 = [], None
    tracemalloc.start(8)
    for i in range(episodes):
        task = tasks[i % len(tasks)]
        r = runner.run(_Job(i, task, i // len(tasks), ""))
        if r.error:
            print("error", task.id, r.error, flush=True)
        if i % 10 == 9:
            rss.append({"episodes": i + 1, "python_mb": process_rss_mb(), "node_mb": node_rss(),
                        "traced_mb": tracemalloc.get_traced_memory()[0] / 2**20})
            print(json.dumps(rss[-1]), flush=True)
        if i + 1 == episodes // 3:
            snap0 = tracemalloc.take_snapshot()
    snap1 = tracemalloc.take_snapshot()
    runner.close()
    n = episodes - episodes // 3
    grew = [{"kb_per_episode": round(st.size_diff / 1024 / n, 2), "count_per_episode": round(st.count_diff / n, 2),
             "where": [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in st.traceback[-4:]]}
            for st in snap1.compare_to(snap0, "traceback")[:top]]
    xs = [r["episodes"] for r in rss[len(rss) // 3:]]
    out = {"episodes": episodes, "isolation": isolation, "grew": grew,
           "trend_mb_per_1000_episodes": {k: 1000 * slope(xs, [r[k] for r in rss[len(rss) // 3:]])
                                         for k in ("python_mb", "node_mb", "traced_mb")}, "rss": rss}
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/soak"))
    ap.add_argument("--report-only", action="store_true", help="only write soak.json/png of a stopped run in OUT")
    ap.add_argument("--mark", default="", help="--report-only: the stopped run's mark")
    ap.add_argument("--phases", nargs="+", choices=["context", "storage"], default=["context", "storage"],
                    help="the isolations to run (the episodes are split between them)")
    ap.add_argument("--leak-probe", choices=["context", "storage"],
                    help="only run `leak_probe` (in this process, no Ray) with this isolation for --episodes episodes")
    ap.add_argument("--plot-roles", type=Path, nargs="+", help="only draw `plot_roles` of these runs' OUT folders into --out")
    args = ap.parse_args()
    if args.plot_roles:
        plot_roles(args.plot_roles, args.out)
        return
    if args.leak_probe:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"leak_probe_{args.leak_probe}.json").write_text(json.dumps(leak_probe(args.episodes, args.leak_probe)))
        return
    if args.report_only:
        report_only(args)
        return
    os.environ[MARK_KEY] = uuid.uuid4().hex  # before Ray starts: its processes and their Chromium inherit it
    import ray
    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.envs.workers import PoolConfig

    from agentrl.evaluate import evaluate
    from agentrl.suite import load_suite_spec

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    suite = load_suite_spec(Path(__file__).resolve().parents[1] / "tasks/web")
    tasks, _ = suite.split("train", 1)
    tasks = [t for t in tasks if t.env == "browser"]
    args.out.mkdir(parents=True, exist_ok=True)
    samples: list[dict] = []
    state = {"phase": "start", "done_before": 0, "stop": False}
    sample_file = (args.out / "samples.jsonl").open("w")
    t0 = time.monotonic()

    def done_now() -> int:
        f = args.out / state["phase"] / "results.jsonl"
        return state["done_before"] + (len(f.read_text().splitlines()) if f.exists() else 0)

    def sampler() -> None:
        while not state["stop"]:
            s = {"t": round(time.monotonic() - t0, 1), "phase": state["phase"], "episodes": done_now(), **marked(),
                 "load": os.getloadavg()[0]}
            samples.append(s)
            sample_file.write(json.dumps(s) + "\n")
            sample_file.flush()
            time.sleep(args.every)

    threading.Thread(target=sampler, daemon=True).start()
    phases = {}
    per_phase = args.episodes // len(args.phases)
    seeds_per_task = -(-per_phase // len(tasks))
    for isolation in args.phases:
        state["phase"] = isolation
        seeds = list(range(seeds_per_task))
        picked = [(t, s) for s in seeds for t in tasks][:per_phase]
        run_tasks = [t for t in tasks if any(p[0] is t for p in picked)]
        t1 = time.monotonic()
        summary = evaluate(
            run_tasks, "scripted", seeds, args.out / isolation, progress=False, report=False,
            config=BrowserEnvConfig(isolation=isolation, screenshot=False),
            pool=PoolConfig(backend="ray", workers=args.workers, cpus_per_worker=os.cpu_count() / args.workers),
        )
        phases[isolation] = {"episodes": summary["episodes"], "errors": summary["errors"],
                             "success_rate": summary["success_rate"], "ray": summary.get("ray"),
                             "wall_s": time.monotonic() - t1, "expected": len(run_tasks) * len(seeds)}
        state["done_before"] += summary["episodes"]
        print(isolation, json.dumps(phases[isolation]), flush=True)
    state["phase"] = "end"
    time.sleep(3)
    left_after_close = marked()
    ray.shutdown()
    time.sleep(3)
    left_after_shutdown = marked()
    state["stop"] = True
    time.sleep(args.every + 0.5)
    sample_file.close()

    write_report(args.out, samples, phases, [t.id for t in tasks], args, left_after_close, left_after_shutdown)


def write_report(out: Path, samples: list[dict], phases: dict, tasks: list[str], args: argparse.Namespace,
                 left_after_close: dict, left_after_shutdown: dict) -> None:
    trend = {}
    for isolation in ("context", "storage"):
        ph = [s for s in samples if s["phase"] == isolation]
        last = max((s["episodes"] for s in ph), default=0)
        run = [s for s in ph if s["episodes"] < last]  # before the phase's workers closed
        half = run[len(run) // 2:]
        xs = [s["episodes"] for s in half]
        trend[isolation] = {
            "chromium_rss_mb_per_1000_episodes": 1000 * slope(xs, [s["chromium_rss_mb"] for s in half]),
            "other_rss_mb_per_1000_episodes": 1000 * slope(xs, [s["other_rss_mb"] for s in half]),
            "chromium_processes_per_1000_episodes": 1000 * slope(xs, [s["chromium_processes"] for s in half]),
            "rss_mb_per_1000_episodes_by_role": {
                k: round(1000 * slope(xs, [s["rss_mb_by_role"].get(k, 0.0) for s in half]), 1)
                for k in sorted({k for s in half for k in s.get("rss_mb_by_role", {})})},
            "cpu_s_per_episode": slope([s["episodes"] for s in run], [s["cpu_s"] for s in run]),
            "chromium_processes_min_max": [min((s["chromium_processes"] for s in ph), default=0),
                                           max((s["chromium_processes"] for s in ph), default=0)],
            "chromium_rss_mb_min_max": [round(min((s["chromium_rss_mb"] for s in ph), default=0)),
                                        round(max((s["chromium_rss_mb"] for s in ph), default=0))],
        }
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "episodes_asked": args.episodes,
              "tasks": tasks, "workers": args.workers, "phases": phases, "trend": trend,
              "left_after_close": left_after_close, "left_after_shutdown": left_after_shutdown,
              "load_mean": sum(s["load"] for s in samples) / max(1, len(samples))}
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    plot(samples, out / "soak.png")


def report_only(args: argparse.Namespace) -> None:
    """soak.json and soak.png of a run stopped before its end, from its samples and results files (the
    processes left are those with its mark found now: --mark, read from the stopped run's environment)."""
    samples = [json.loads(x) for x in (args.out / "samples.jsonl").read_text().splitlines() if x.strip()]
    phases, tasks = {}, set()
    for isolation in ("context", "storage"):
        f = args.out / isolation / "results.jsonl"
        rows = [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []
        tasks |= {r["task"] for r in rows}
        phases[isolation] = {"episodes": len(rows), "errors": sum(r["error"] is not None for r in rows),
                             "success_rate": sum(r["success"] for r in rows) / max(1, len(rows)), "stopped_early": True}
    os.environ[MARK_KEY] = args.mark
    left = marked()
    write_report(args.out, samples, phases, sorted(tasks), args, left, left)


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, c, b) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for phase, color in (("context", "tab:blue"), ("storage", "tab:orange")):
        ph = [s for s in samples if s["phase"] == phase]
        x = [s["episodes"] for s in ph]
        a.plot(x, [s["chromium_rss_mb"] for s in ph], color=color, label=f"Chromium RSS ({phase})")
        a.plot(x, [s["other_rss_mb"] for s in ph], color=color, linestyle="--", label=f"Ray workers RSS ({phase})")
        b.plot(x, [s["chromium_processes"] for s in ph], color=color, label=f"Chromium processes ({phase})")
        for role, style in (("actors", "-"), ("node drivers", "--"), ("driver", ":"), ("ray other", "-.")):
            c.plot(x, [s.get("rss_mb_by_role", {}).get(role, float("nan")) for s in ph], color=color,
                   linestyle=style, label=f"{role} ({phase})")
    a.set_ylabel("MB (summed RSS)")
    b.set_ylabel("processes")
    b.set_xlabel("episodes finished")
    c.set_ylabel("MB (RSS, by process)")
    c.legend(fontsize=7, ncol=2)
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    a.set_title("soak: web suite, scripted agent, Ray rollout workers")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_roles(dirs: list[Path], path: Path) -> None:
    """The RSS of each kind of non-Chromium process against episodes, one panel per run (its samples.jsonl):
    e.g. before and after a change. Runs whose samples lump the node drivers into "ray other" show them so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(dirs), figsize=(6 * len(dirs), 4), sharey=True, squeeze=False)
    runs = [[json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines() if x.strip()] for d in dirs]
    runs = [[r for r in rows if r["phase"] not in ("start", "end") and "rss_mb_by_role" in r] for rows in runs]
    roles = sorted({k for rows in runs for r in rows for k in r["rss_mb_by_role"]})
    color = {role: f"C{i}" for i, role in enumerate(roles)}  # one color per role in every panel
    for ax, d, rows in zip(axes[0], dirs, runs, strict=True):
        for role in sorted({k for r in rows for k in r["rss_mb_by_role"]}):
            ax.plot([r["episodes"] for r in rows], [r["rss_mb_by_role"].get(role, float("nan")) for r in rows],
                    label=role, color=color[role])
        ax.set_title(d.name, fontsize=9)
        ax.set_xlabel("episodes finished")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("MB (RSS)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
