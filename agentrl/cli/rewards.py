"""The reward layers: `agentrl rm collect|prefs|train|eval`, `agentrl label`, `agentrl judge serve`."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from agentrl.cli.common import console, fail, resolve_suite

rm_app = typer.Typer(no_args_is_help=True, help="The learned reward R_phi: trajectories, preference pairs, training, evaluation.")
judge_app = typer.Typer(no_args_is_help=True, help="The LLM judge: a local OpenAI-compatible server.")


def register(app: typer.Typer) -> None:
    app.add_typer(rm_app, name="rm")
    app.add_typer(judge_app, name="judge")
    app.command("label")(label)


@rm_app.command("collect")
def rm_collect(
    suite: str = typer.Option("core", help="Suite folder or bundled suite name."),
    seeds: int = typer.Option(3, help="Seeds 0..N-1 per task."),
    out: Path = typer.Option(Path("runs/prefs"), help="Run directory for the trajectories."),
    task: list[str] = typer.Option(None, help="Only these task ids (repeatable)."),
    random_episodes: int = typer.Option(2, help="Random-agent episodes per task variant."),
    backend: str = typer.Option("local", help="local: in this process | ray: on Ray actors (pip install 'agentrl[ray]')."),
    ray_address: str = typer.Option(None, help="A Ray cluster ('auto', ray://HOST:10001); implies --backend ray."),
    workers: int = typer.Option(2, help="ray: worker actors, each with its own browser and sandbox server."),
    cpus_per_worker: float = typer.Option(1.0, help="ray: CPUs each worker actor reserves (fractions allowed)."),
    replace_actor_after: int = typer.Option(0, help="ray: replace a worker actor (its whole process) after this many "
                                            "episodes (0: never)."),
    replace_actor_above_mb: float = typer.Option(0.0, help="ray: ... or once its process's RSS passes this many MB."),
) -> None:
    """Run the scripted agent, oracle prefixes, near-misses and the random agent: trajectories to pair."""
    from agentrl.collect import collect
    from agentrl.envs.workers import PoolConfig
    from agentrl.evaluate import load_tasks

    tasks = load_tasks(resolve_suite(suite), task or None)
    try:
        pool = PoolConfig(backend="ray" if ray_address else backend, address=ray_address, workers=workers,
                          cpus_per_worker=cpus_per_worker, replace_actor_after=replace_actor_after,
                          replace_actor_above_mb=replace_actor_above_mb)
        collect(tasks, list(range(seeds)), out, random_episodes=random_episodes, progress=sys.stderr.isatty(),
                pool=pool)
    except (ValueError, ImportError) as e:
        raise fail(f"rm collect: {e}") from None
    console.print(f"trajectories in {out / 'episodes'}; next: agentrl rm prefs {out} --store prefs.sqlite")


@rm_app.command("prefs")
def rm_prefs(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories holding episodes/*/trajectory.jsonl."),
    store: Path = typer.Option(Path("prefs.sqlite"), help="SQLite preference store (created if missing)."),
) -> None:
    """Make preference pairs from the rule rewards of the trajectories (same task variant, different return)."""
    from collections import Counter

    from agentrl.rewards.prefs import PrefStore, auto_pairs

    try:
        pairs = auto_pairs(run_dirs)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    db = PrefStore(store)
    added = db.add_many(pairs)
    t = Table("task", "trajectory pairs", "step pairs", title=f"auto pairs from {len(run_dirs)} run dir(s)")
    counts = Counter((p.task_id, p.level) for p in pairs)
    for tid in sorted({p.task_id for p in pairs}):
        t.add_row(tid, str(counts[(tid, "trajectory")]), str(counts[(tid, "step")]))
    console.print(t)
    console.print(f"{added} new pairs ({len(pairs) - added} already stored) -> {store}; in store: {db.count()}")


@rm_app.command("train")
def rm_train(
    prefs: Path = typer.Option(..., help="Preference store (SQLite)."),
    out: Path = typer.Option(..., help="Directory for the trained reward model."),
    encoder: str = typer.Option("minilm", help="Encoder: 'minilm' (bundled) or any HF id / local path."),
    tasks: str = typer.Option(None, help="Only pairs of task ids matching these globs (comma-separated)."),
    level: str = typer.Option(None, help="Only 'step' or 'trajectory' pairs."),
    epochs: int = typer.Option(100, help="Full-batch steps per head."),
    heads: int = typer.Option(5, help="Ensemble size (confidence = disagreement)."),
    seed: int = typer.Option(0),
) -> None:
    """Train R_phi (frozen encoder + K heads) with the Bradley-Terry loss on the stored pairs."""
    from agentrl.rewards.prefs import PrefStore
    from agentrl.rewards.reward_model import RewardModel, RMConfig

    if not prefs.is_file():
        raise fail(f"no preference store {prefs} (make one with `agentrl rm prefs RUN_DIR --store {prefs}`)")
    pairs = PrefStore(prefs).pairs(level=level, tasks=tasks)  # type: ignore[arg-type]
    if not pairs:
        raise fail(f"no pairs in {prefs} for tasks={tasks!r} level={level!r}")
    rm = RewardModel(RMConfig(encoder=encoder, epochs=epochs, heads=heads, seed=seed))
    stats = rm.fit(pairs, progress=sys.stderr.isatty())
    rm.save(out)
    (out / "train.json").write_text(json.dumps({**stats, "tasks": tasks, "level": level, "store": str(prefs)}, indent=2))
    console.print(f"trained on {stats['pairs']} pairs ({stats['texts']} texts): train accuracy "
                  f"{stats['train_accuracy']:.1%}, loss {stats['train_loss']:.3f} -> {out}")


@rm_app.command("eval")
def rm_eval(
    model_dir: Path = typer.Argument(..., help="A trained reward model directory."),
    prefs: Path = typer.Option(..., help="Preference store (SQLite)."),
    tasks: str = typer.Option(None, help="Only pairs of task ids matching these globs (comma-separated)."),
    level: str = typer.Option(None, help="Only 'step' or 'trajectory' pairs."),
    threshold: float = typer.Option(None, help="Confidence threshold (default: the model's)."),
    out: Path = typer.Option(None, help="JSON report (default MODEL_DIR/eval.json)."),
) -> None:
    """Pairwise accuracy and calibration of R_phi on stored pairs (e.g. of tasks it never saw)."""
    from agentrl.rewards.prefs import PrefStore
    from agentrl.rewards.reward_model import RewardModel, evaluate_pairs

    try:
        rm = RewardModel.load(model_dir)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    pairs = PrefStore(prefs).pairs(level=level, tasks=tasks)  # type: ignore[arg-type]
    if not pairs:
        raise fail(f"no pairs in {prefs} for tasks={tasks!r} level={level!r}")
    r = evaluate_pairs(rm, pairs, threshold=threshold)
    r.update({"model": str(model_dir), "tasks": tasks, "level": level})
    t = Table("pairs", "accuracy", "ECE", f"coverage at conf >= {r['threshold']:.2f}", "accuracy there",
              title=f"R_phi {model_dir} on {tasks or 'all tasks'}")
    t.add_row(str(r["pairs"]), f"{r['accuracy']:.1%}", f"{r['ece']:.3f}", f"{r['coverage_at_threshold']:.1%}",
              f"{r['accuracy_at_threshold']:.1%}")
    console.print(t)
    rel = Table("confidence bin", "pairs", "mean confidence", "accuracy", title="reliability")
    for b in r["reliability"]:
        rel.add_row(b["bin"], str(b["n"]), f"{b['confidence']:.2f}", f"{b['accuracy']:.2f}")
    console.print(rel)
    per = Table("task/level", "pairs", "accuracy", title="per task")
    for k, v in r["per_task"].items():
        per.add_row(k, str(v["n"]), f"{v['accuracy']:.1%}")
    console.print(per)
    path = out or model_dir / "eval.json"
    path.write_text(json.dumps(r, indent=2))
    console.print(f"[bold]pairwise accuracy {r['accuracy']:.1%}[/bold] on {r['pairs']} pairs -> {path}")


def label(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories holding episodes/*/trajectory.jsonl."),
    store: Path = typer.Option(Path("prefs.sqlite"), help="SQLite preference store."),
    port: int = typer.Option(8010, help="Port on 127.0.0.1 (0 = any free port)."),
    labeller: str = typer.Option(None, help="Your name in the store (default: the login name)."),
) -> None:
    """Label preferences in a browser: two trajectories of one task side by side; Left / Right better / Tie."""
    from agentrl.labelling import LabelServer
    from agentrl.rewards.prefs import PrefStore

    server = LabelServer(run_dirs, PrefStore(store), labeller=labeller or getpass.getuser(), port=port)
    if not server.items:
        raise fail(f"no two different trajectories of one task variant under {', '.join(map(str, run_dirs))}")
    console.print(f"{len(server.items)} comparisons ({len(server.done)} already labelled): open {server.url} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@judge_app.command("serve")
def judge_serve(
    model: str = typer.Option(..., help="Local path or HF id of a causal LM."),
    port: int = typer.Option(8001, help="Port on 127.0.0.1 (0 = any free port)."),
    name: str = typer.Option("local-judge", help="Model name reported by /v1/models."),
    max_new_tokens: int = typer.Option(128),
) -> None:
    """Serve a local transformers model as an OpenAI-compatible judge on 127.0.0.1 (Ctrl-C to stop)."""
    from agentrl.judge_server import JudgeServer, TransformersReply

    server = JudgeServer(TransformersReply(model, max_new_tokens), port=port, model_name=name)
    console.print(f"judge {name} ({model}) at {server.base_url}  (AGENTRL_JUDGE_BASE_URL={server.base_url})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
