"""R_phi on tasks it never saw: trajectories -> automatic pairs -> train on some tasks -> pairwise accuracy
and calibration on the others.

    .venv/bin/python benchmarks/rm_heldout.py --suite tasks/web --seeds 1 --random-episodes 1 --out runs/rm-web \\
        --runs runs/rm-heldout --train '*' --exclude 'accounts-*,reports-*' --exclude-heldout tasks/web \\
        --test 'accounts-*' --test 'accounts-*,reports-*' --test heldout:tasks/web

trains on every task of tasks/web that is not tagged `heldout` (no tasks/core task), and evaluates on tasks/core's
`accounts-*`, on all of tasks/core (pairs from the earlier run dir runs/rm-heldout) and on tasks/web's heldout
tasks. The defaults (--suite tasks/core --train 'reports-*' --test 'accounts-*') are the first experiment.
The same as the CLI sequence
    agentrl rm collect --suite tasks/web --seeds 1 --random-episodes 1 --out runs/rm-web
    agentrl rm prefs runs/rm-web runs/rm-heldout --store runs/rm-web/prefs.sqlite
    agentrl rm train --prefs runs/rm-web/prefs.sqlite --tasks 'GLOBS OF THE TRAIN TASKS' --out runs/rm-web/rm
    agentrl rm eval runs/rm-web/rm --prefs runs/rm-web/prefs.sqlite --tasks 'accounts-*'
Trajectories already in OUT are reused (delete OUT to collect afresh); embeddings are cached in
OUT/embeddings.pt. Results: benchmarks/results/rm_heldout.json.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
from pathlib import Path

import torch
from agentrl.rewards.prefs import Pair, PrefStore, auto_pairs
from agentrl.rewards.reward_model import Encoder, RewardModel, RMConfig, evaluate_pairs

from agentrl.collect import collect
from agentrl.suite import load_suite_spec
from agentrl.taskspec import load_suite

REPO = Path(__file__).resolve().parents[1]


def heldout_ids(suite_dir: str) -> set[str]:
    return {t.id for t in load_suite_spec(suite_dir).tasks if "heldout" in (t.tags or [])}


def select(pairs: list[Pair], spec: str) -> list[Pair]:
    """`heldout:SUITE_DIR` -> the pairs of that suite's heldout-tagged tasks; else comma-separated id globs."""
    if spec.startswith("heldout:"):
        ids = heldout_ids(spec.split(":", 1)[1])
        return [p for p in pairs if p.task_id in ids]
    return [p for p in pairs if any(fnmatch.fnmatch(p.task_id, g) for g in spec.split(","))]


def report(rm: RewardModel, pairs: list[Pair]) -> dict:
    r = evaluate_pairs(rm, pairs)
    r["accuracy_by_level"] = {lvl: evaluate_pairs(rm, [p for p in pairs if p.level == lvl])["accuracy"]
                              for lvl in ("trajectory", "step") if any(p.level == lvl and not p.tie for p in pairs)}
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=str(REPO / "tasks/core"), help="suite to collect trajectories on")
    ap.add_argument("--out", type=Path, default=REPO / "runs/rm-heldout")
    ap.add_argument("--runs", type=Path, action="append", default=[], help="another run dir to make pairs from (repeatable)")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--random-episodes", type=int, default=2)
    ap.add_argument("--train", default="reports-*", help="task-id globs to train on (comma-separated)")
    ap.add_argument("--exclude", default="", help="task-id globs never trained on (comma-separated)")
    ap.add_argument("--exclude-heldout", default=None, help="suite dir whose heldout-tagged tasks are never trained on")
    ap.add_argument("--test", action="append", help="globs, or heldout:SUITE_DIR (repeatable; default accounts-*)")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks/results/rm_heldout.json")
    args = ap.parse_args()
    tests = args.test or ["accounts-*"]
    torch.set_num_threads(1)  # the encoder runs on a shared 2-core machine: one thread, no spinning

    t0 = time.perf_counter()
    if not any(args.out.glob("episodes/*/trajectory.jsonl")):
        collect(load_suite(args.suite), list(range(args.seeds)), args.out, random_episodes=args.random_episodes)
    t_collect = time.perf_counter() - t0
    store = PrefStore(args.out / "prefs.sqlite")
    store.add_many(auto_pairs([args.out, *args.runs]))
    everything = store.pairs()
    never = {p.task_id for p in select(everything, args.exclude)} if args.exclude else set()
    never |= heldout_ids(args.exclude_heldout) if args.exclude_heldout else set()
    train = [p for p in select(everything, args.train) if p.task_id not in never]
    test_sets = {spec: select(everything, spec) for spec in tests}
    seen = {p.task_id for p in train}
    for spec, pairs in test_sets.items():
        if seen & {p.task_id for p in pairs}:
            raise SystemExit(f"train and test {spec!r} share tasks {sorted(seen & {p.task_id for p in pairs})}: "
                             "the point is tasks R_phi never saw")

    t1 = time.perf_counter()
    encoder = Encoder(args.encoder, cache_file=args.out / "embeddings.pt")
    rm = RewardModel(RMConfig(encoder=args.encoder), encoder=encoder)
    stats = rm.fit(train, progress=True)
    encoder.save_cache()
    t_train = time.perf_counter() - t1
    rm.save(args.out / "rm")
    (args.out / "rm" / "train.json").write_text(json.dumps({**stats, "tasks": sorted(seen)}, indent=2))
    t2 = time.perf_counter()
    results = {spec: report(rm, pairs) for spec, pairs in test_sets.items() if pairs}
    encoder.save_cache()
    t_eval = time.perf_counter() - t2
    result = {
        "train_tasks": sorted(seen), "train_pairs": len(train), "train": stats,
        "test": {spec: {"tasks": sorted({p.task_id for p in test_sets[spec]}), **r} for spec, r in results.items()},
        "seconds": {"collect": t_collect, "train": t_train, "eval": t_eval},
        "machine": "2 shared CPU cores (other jobs running), torch threads 1",
        "command": "benchmarks/rm_heldout.py " + " ".join(
            [f"--suite {args.suite} --seeds {args.seeds} --random-episodes {args.random_episodes} --out {args.out}",
             *(f"--runs {r}" for r in args.runs), f"--train '{args.train}'",
             *([f"--exclude '{args.exclude}'"] if args.exclude else []),
             *([f"--exclude-heldout {args.exclude_heldout}"] if args.exclude_heldout else []),
             *(f"--test '{t}'" for t in tests)]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"trained on {len(train)} pairs of {len(seen)} tasks: {stats}")
    for spec, r in results.items():
        print(f"{spec}: {r['pairs']} pairs, accuracy {r['accuracy']:.1%} {r['accuracy_by_level']}, ECE {r['ece']:.3f}, "
              f"at confidence >= {r['threshold']}: {r['accuracy_at_threshold']:.1%} on {r['coverage_at_threshold']:.1%}")
        for k, v in r["per_task"].items():
            print(f"  {k:32s} n={v['n']:4d} accuracy={v['accuracy']:.1%}")


if __name__ == "__main__":
    main()
