"""`agentrl evaluate`, `agentrl compare` and `agentrl replay`: run dirs of episodes and their numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from agentrl.cli.common import console, err, resolve_suite


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("compare")(compare)
    app.command("replay")(replay)


def _ci(ci: list[float]) -> str:
    return f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def parse_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as YAML scalars (``0.7`` -> float, ``true`` -> bool).

    >>> parse_options(["temperature=0.7", "mode=choose"])
    {'temperature': 0.7, 'mode': 'choose'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out


def evaluate(
    suite: str = typer.Option("core", help="Suite folder or bundled suite name (core, train, web)."),
    split: str = typer.Option(None, help="Split of the suite (default: 'test', or the suite's only split)."),
    agent: str = typer.Option("scripted", help="scripted | random | hf:PATH_OR_ID | openai:MODEL | ckpt:RUN_DIR"),
    seeds: int = typer.Option(None, help="The first N seeds of the split (default: all of them, up to 100)."),
    workers: int = typer.Option(1, help="Worker processes (or Ray actors), each with its own browser and sandbox server."),
    backend: str = typer.Option("local", help="local: worker processes on this machine | ray: Ray actors (pip install "
                                "'agentrl[ray]'; a Ray started here unless --ray-address)."),
    ray_address: str = typer.Option(None, help="A Ray cluster to run the workers on ('auto', ray://HOST:10001); implies "
                                    "--backend ray."),
    cpus_per_worker: float = typer.Option(1.0, help="ray: CPUs each worker actor reserves (fractions allowed)."),
    episode_timeout: float = typer.Option(900.0, help="ray: an episode longer than this (s) is recorded as an error."),
    restart_browser_after: int = typer.Option(0, help="ray: restart a worker's browser after this many episodes (0: never)."),
    replace_actor_after: int = typer.Option(0, help="ray: replace a worker actor (its whole process) after this many "
                                            "episodes (0: never)."),
    replace_actor_above_mb: float = typer.Option(0.0, help="ray: ... or once its process's RSS passes this many MB."),
    resume: bool = typer.Option(False, "--resume", help="Keep the episodes already in OUT/results.jsonl (a stopped "
                                "or killed run) and run only the missing ones."),
    out: Path = typer.Option(Path("runs/eval"), help="Run directory."),
    task: list[str] = typer.Option(None, help="Only these task ids (repeatable)."),
    screenshots: bool = typer.Option(True, "--screenshots/--no-screenshots", help="Record a screenshot per step."),
    obs_boxes: bool = typer.Option(False, "--obs-boxes", help="Add [box=x,y,w,h] (CSS pixels) to each element line, for pointer actions without vision (desktop observations always carry [at=x,y])."),
    max_steps: int = typer.Option(None, help="Override every task's max_steps."),
    base_url: str = typer.Option(None, help="openai: endpoint base URL (default $OPENAI_BASE_URL)."),
    api_key: str = typer.Option(None, help="openai: API key (default $OPENAI_API_KEY)."),
    temperature: float = typer.Option(None, help="LLM agents: sampling temperature (default 0, greedy)."),
    option: list[str] = typer.Option(None, "--option", "-O", help="Agent option KEY=VALUE (repeatable)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html."),
    sites: Path = typer.Option(None, help="A YAML file of `sites:` for this run, added to (and overriding) the "
                                          "suite's (docs/own-sites.md)."),
    isolation: str = typer.Option(
        "context", help="context: a new browser context per episode | storage: two contexts taking turns, wiped "
        "in the background (several times faster on MiniWoB, docs/architecture.md#isolation)."
    ),
) -> None:
    """Evaluate an agent on a suite split: results.jsonl, summary.json (95% intervals) and report.html in OUT."""
    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.evaluate import evaluate as run_eval
    from agentrl.rewards.router import RouterConfig
    from agentrl.sitespec import SITES_ENV
    from agentrl.suite import load_suite_spec
    from agentrl.yamlpos import TaskFileError

    if sites is not None:  # read by every task load, in this process and its workers
        os.environ[SITES_ENV] = str(sites.resolve())
    try:
        s = load_suite_spec(resolve_suite(suite))
    except TaskFileError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1) from None
    if split is None:
        split = "test" if "test" in s.splits else next(iter(s.splits)) if len(s.splits) == 1 else None
        if split is None:
            err.print(f"suite {s.name!r} has splits {', '.join(s.splits)}; choose one with --split")
            raise typer.Exit(2)
    try:
        tasks, seed_list = s.split(split, seeds)
    except KeyError as e:
        err.print(e.args[0], markup=False)
        raise typer.Exit(2) from None
    if seeds is None and len(seed_list) > 100:
        err.print(f"split {split!r} has {len(seed_list)} seeds; pass --seeds N to run the first N")
        raise typer.Exit(2)
    if task:
        from agentrl.registry import did_you_mean

        known = {t.id for t in tasks}
        for t in task:
            if t not in known:
                err.print(f"no task {t!r} in split {split!r} of {s.name}{did_you_mean(t, tuple(known))}", markup=False)
                raise typer.Exit(2)
        tasks = [t for t in tasks if t.id in task]
    options = {**parse_options(option or []), "base_url": base_url, "api_key": api_key, "temperature": temperature}
    try:  # the suite's reward router (suite.yaml `router:`); rules only when it names none
        router = RouterConfig.from_suite(s.root)
    except ValueError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1) from None
    if isolation not in ("context", "storage"):
        err.print(f"--isolation must be context or storage, not {isolation!r}", markup=False)
        raise typer.Exit(2)
    from agentrl.envs.workers import PoolConfig

    if restart_browser_after and not (ray_address or backend == "ray"):
        err.print("--restart-browser-after restarts a Ray worker's browser: it needs --backend ray (a local worker "
                  "process starts a fresh browser per run)", markup=False)
        raise typer.Exit(2)
    try:
        pool = PoolConfig(backend="ray" if ray_address else backend, address=ray_address, workers=max(1, workers),
                          cpus_per_worker=cpus_per_worker, episode_timeout_s=episode_timeout,
                          restart_after=restart_browser_after, replace_actor_after=replace_actor_after,
                          replace_actor_above_mb=replace_actor_above_mb)
    except ValueError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(2) from None
    config = BrowserEnvConfig(screenshot=screenshots, max_steps=max_steps, router=router, isolation=isolation,
                              obs_boxes=obs_boxes)
    try:
        summary = run_eval(
            tasks, agent, seed_list, out, config=config, workers=workers, agent_options=options,
            categories={t.id: s.category(t) for t in tasks}, meta={"suite": s.name, "split": split},
            report=report, progress=console.is_terminal, pool=pool, resume=resume,
        )
    except (KeyError, ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        err.print(f"evaluate: {e.args[0] if e.args else e}", markup=False)
        raise typer.Exit(2) from None
    t = Table("task", "category", "tier", "success [95% CI]", "mean return", "mean steps", "errors",
              title=f"{agent} on {s.name}/{split}, seeds {seed_list[0]}..{seed_list[-1]}")
    for tid, r in summary["per_task"].items():
        t.add_row(tid, r["category"], str(r["tier"]), f"{r['success_rate']:.0%} {_ci(r['success_ci'])}",
                  f"{r['mean_return']:.2f}", f"{r['mean_steps']:.1f}", str(r["errors"]))
    console.print(t)
    lo, hi = summary["success_ci"]
    console.print(
        f"[bold]success_rate={summary['success_rate']:.1%}[/bold] (95% CI {lo:.1%}-{hi:.1%}) "
        f"mean_return={summary['mean_return']:.3f} episodes={summary['episodes']} errors={summary['errors']} "
        f"wall={summary['wall_s']:.0f}s -> {out / 'summary.json'}" + (f", {out / 'report.html'}" if report else "")
    )


def compare(
    run_a: Path = typer.Argument(..., help="Run dir A (the baseline)."),
    run_b: Path = typer.Argument(..., help="Run dir B (compared with A: differences are B - A)."),
    out: Path = typer.Option(None, help="Also write the comparison as JSON here."),
) -> None:
    """Per-task success and return differences between two runs, with significance tests."""
    from agentrl.evaluate import load_results
    from agentrl.stats import compare_results

    try:
        cmp = compare_results(load_results(run_a), load_results(run_b))
    except FileNotFoundError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(2) from None
    cmp = {"run_a": str(run_a), "run_b": str(run_b), **cmp}
    t = Table("task", "n A/B", "success A", "success B", "Δ", "test", "p", "return A", "return B", "Δ", "test", "p",
              title=f"B = {run_b}  vs  A = {run_a}")
    for tid, r in [*cmp["per_task"].items(), ("ALL", cmp["overall"])]:
        s, ret = r["success"], r["return"]
        star = lambda p: (f"[bold]{p:.3f}*[/bold]" if p >= 0.001 else f"[bold]{p:.1e}*[/bold]") if p < 0.05 else f"{p:.3f}"  # noqa: E731
        t.add_row(tid, f"{r['n_a']}/{r['n_b']}", f"{s['a']:.0%}", f"{s['b']:.0%}", f"{s['diff']:+.0%}", s["test"],
                  star(s["p_value"]), f"{ret['a']:.2f}", f"{ret['b']:.2f}", f"{ret['diff']:+.2f}", ret["test"],
                  star(ret["p_value"]), end_section=tid == list(cmp["per_task"])[-1])
    console.print(t)
    console.print("* p < 0.05 (two-sided, not corrected for multiple tasks). Paired tests (McNemar, sign-flip) "
                  "where both runs have the same (task, seed) episodes; else Fisher exact / permutation.")
    if out is not None:
        out.write_text(json.dumps(cmp, indent=2))
        console.print(f"-> {out}")


def replay(
    run_dir: Path = typer.Argument(..., help="Run dir of `agentrl evaluate`."),
    episode: str = typer.Argument(..., help="Index in results.jsonl, TASK:SEED, or the episode dir name."),
) -> None:
    """Re-run one episode's recorded actions in a fresh env; exit 0 if it reproduces, 1 if not."""
    from agentrl.replay import replay as run_replay

    try:
        r = run_replay(run_dir, episode)
    except (KeyError, FileNotFoundError) as e:
        err.print(e.args[0] if e.args else str(e), markup=False)
        raise typer.Exit(2) from None
    for n in r.notes:
        console.print(f"note: {n}", highlight=False)
    if r.match:
        console.print(f"[green]match[/green] {r.episode}: {r.steps} actions replayed, milestones "
                      f"{r.replayed_milestones}, return {r.replayed_return:.3f}", highlight=False)
        return
    console.print(f"[red]mismatch[/red] {r.episode}: {r.divergence}", highlight=False)
    console.print(f"expected milestones {r.expected_milestones} return {r.expected_return:.3f}; replay "
                  f"{r.replayed_milestones} return {r.replayed_return:.3f}", highlight=False)
    raise typer.Exit(1)
