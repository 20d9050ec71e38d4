"""The `agentrl` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agentrl.yamlpos import TaskFileError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train and evaluate computer-use agents.")
tasks_app = typer.Typer(no_args_is_help=True, help="Task files: validate, list, coverage and the exploit probe.")
app.add_typer(tasks_app, name="tasks")
console = Console(width=160) if not sys.stdout.isatty() else Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole: file:line: field: message


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, markup=False, highlight=False)
    return typer.Exit(code)


def resolve_suite(suite: str) -> Path:
    """A suite folder: a path, or the name of a bundled suite (e.g. `core`)."""
    from agentrl.suites import SUITES_DIR

    p = Path(suite)
    if p.exists():
        return p
    if (SUITES_DIR / suite).is_dir():
        return SUITES_DIR / suite
    names = sorted(d.name for d in SUITES_DIR.iterdir() if d.is_dir() and not d.name.startswith("_"))
    raise fail(f"no suite folder {suite!r} (bundled suites: {', '.join(names)})")


def resolve_task(task: str) -> Path:
    """A task file path, or the id of a bundled task."""
    from agentrl.registration import bundled_tasks

    p = Path(task)
    if p.exists():
        return p
    found = bundled_tasks()
    if task in found:
        return found[task]
    from agentrl.registry import did_you_mean

    raise fail(f"no task file or bundled task {task!r}{did_you_mean(task, tuple(found))}")


@tasks_app.command("validate")
def tasks_validate(paths: list[Path] = typer.Argument(..., help="Task files or suite folders.")) -> None:
    """Check task files against the schema, the detector signatures and a live sandbox; every error with
    file:line: field, every file reported."""
    from agentrl.taskcheck import validate_files

    report = validate_files(paths)
    if not report.files:
        err.print(f"[red]no task files under {', '.join(map(str, paths))}[/red]")
        raise typer.Exit(2)
    for p in report.problems:
        err.print(p, markup=False, highlight=False)
    console.print(f"{report.valid}/{len(report.files)} task files valid")
    if report.problems:
        raise typer.Exit(1)


@tasks_app.command("list")
def tasks_list(suite: str = typer.Argument("core", help="Suite folder or bundled suite name.")) -> None:
    """List the tasks of a suite."""
    from agentrl.taskspec import load_suite

    try:
        specs = load_suite(resolve_suite(suite))
    except TaskFileError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1) from None
    t = Table("id", "app", "tier", "max steps", "milestones")
    for s in specs:
        t.add_row(s.id, s.start.app, str(s.tier), str(s.max_steps), ", ".join(m.id for m in s.milestones))
    console.print(t)


@tasks_app.command("coverage")
def tasks_coverage(
    suite: str = typer.Argument(..., help="Suite folder or bundled suite name (e.g. tasks/web)."),
    seeds: int = typer.Option(5, help="Scripted-agent seeds per task: the first N seeds of the split."),
    random_seeds: int = typer.Option(2, help="Random-agent episodes per task (success per category)."),
    split: str = typer.Option(None, help="Which split's tasks and seeds (default: test, else the first split)."),
    out: Path = typer.Option(Path("docs/coverage.md"), help="Markdown file to write."),
    task: list[str] = typer.Option(None, help="Only these task ids (repeatable)."),
) -> None:
    """Milestone coverage table: scripted-agent success and milestone order per task x seed, random per category."""
    import tempfile

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentrl.coverage import measure, to_markdown
    from agentrl.suite import load_suite_spec

    try:
        spec = load_suite_spec(resolve_suite(suite))
    except TaskFileError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1) from None
    name = split or ("test" if "test" in spec.splits else next(iter(spec.splits)))
    try:
        tasks, seed_list = spec.split(name, seeds)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not sys.stderr.isatty()) as bar, tempfile.TemporaryDirectory() as episodes:
            job = bar.add_task("coverage", total=len(task or tasks) * (len(seed_list) + random_seeds))
            cov = measure(spec, seed_list, random_seeds, split=name, only=task or None, root_dir=Path(episodes),
                          on_episode=lambda t, s, a: bar.update(job, advance=1, description=f"{t} seed {s} ({a})"))
    except KeyError as e:
        raise fail(str(e.args[0])) from None
    command = f"agentrl tasks coverage {suite} --seeds {seeds} --random-seeds {random_seeds}" + "".join(
        f" --task {t}" for t in task or [])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_markdown(cov, command))
    for t in cov.failing:
        err.print(f"{t.task_id}: scripted {t.successes}/{len(t.seeds)}; missed {list(t.missed)}; "
                  f"{'; '.join(e[:300] for e in t.errors)}",
                  markup=False, highlight=False)
    ok = sum(t.successes for t in cov.tasks)
    n = sum(len(t.seeds) for t in cov.tasks)
    console.print(f"scripted success {ok}/{n} on {len(cov.tasks)} tasks, {len(cov.failing)} with problems -> {out}")
    if cov.failing:
        raise typer.Exit(1)


@tasks_app.command("probe")
def tasks_probe(
    suites: list[str] = typer.Argument(..., help="Suite folders or bundled suite names (e.g. tasks/web desktop)."),
    seeds: int = typer.Option(2, help="Seeds per task: the first N seeds of the split."),
    split: str = typer.Option(None, help="Which split's tasks and seeds (default: test, else the first split)."),
    workers: int = typer.Option(1, help="Processes, each with its own browser and sandbox."),
    shortcut: list[str] = typer.Option(None, help="Only these shortcut classes (repeatable)."),
    task: list[str] = typer.Option(None, help="Only these task ids (repeatable)."),
    known: Path = typer.Option(None, help="YAML list of known findings ({task, shortcut, issue}): reported, not failed."),
    out: Path = typer.Option(None, help="Markdown file for the table (e.g. docs/probe.md)."),
) -> None:
    """Play generic shortcuts against every task and seed (forged pages, direct goto, empty/garbage/long
    answers, repeats, back/reload, decoys) and report any that earns a goal or success, or more than the
    oracle; exit 1 on a finding not in --known."""
    from agentrl.probe import SHORTCUTS, known_findings, probe_tasks, to_markdown
    from agentrl.suite import load_suite_spec

    unknown = sorted(set(shortcut or []) - set(SHORTCUTS.names()))
    if unknown:
        raise fail(f"no shortcut(s) {unknown}; there are {', '.join(SHORTCUTS.names())}")
    try:
        allowed = known_findings(known) if known else {}
        jobs = []
        for name in suites:
            spec = load_suite_spec(resolve_suite(name))
            tasks, seed_list = spec.split(split or ("test" if "test" in spec.splits else next(iter(spec.splits))), seeds)
            jobs.append((name, [t for t in tasks if not task or t.id in task], seed_list))
    except TaskFileError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1) from None
    except KeyError as e:
        raise fail(str(e.args[0])) from None
    results = []
    for name, tasks, seed_list in jobs:
        console.print(f"probing {len(tasks)} tasks of {name} on seeds {seed_list[0]}..{seed_list[-1]}")
        results += probe_tasks(tasks, seed_list, workers=workers, shortcuts=shortcut or None, on_task=lambda r: console.print(
            f"  {r.task_id}: {sum(r.attempts.values())} attempts, {len(r.findings)} findings, {len(r.errors)} errors"))
    new = 0
    for r in results:
        for e in r.errors:
            err.print(f"{r.task_id}: error: {e}", markup=False, highlight=False)
        for f in r.findings:
            tag = allowed.get(f.key)
            new += tag is None
            err.print(f"{f.task_id} seed {f.seed}: {f.shortcut}: {f.detail} -> earned {list(f.earned)}"
                      f"{' and success' if f.success else ''}, return {f.ret:g} (oracle {f.oracle_ret:g}); "
                      f"fix: {f.fix}" + (f" [known: {tag}]" if tag else ""), markup=False, highlight=False)
    if out:
        command = "agentrl tasks probe " + " ".join(suites) + f" --seeds {seeds}" + (f" --known {known}" if known else "")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_markdown(results, command, allowed))
    total = sum(len(r.findings) for r in results)
    attempts = sum(sum(r.attempts.values()) for r in results)
    console.print(f"{attempts} attempts on {len(results)} tasks: {total} findings ({new} not known), "
                  f"{sum(len(r.errors) for r in results)} errors" + (f" -> {out}" if out else ""))
    if new or any(r.errors for r in results):
        raise typer.Exit(1)


@app.command()
def run(
    task: str = typer.Argument(..., help="Task file or bundled task id."),
    agent: str = typer.Option("scripted", help="scripted | random | miniwob-heuristic | hf:PATH | openai:MODEL | ckpt:RUN_DIR | py:MODULE:CLASS"),
    seed: int = typer.Option(0),
    screenshot: bool = typer.Option(False, help="Record a screenshot per step."),
    out: Path | None = typer.Option(None, help="Where the episode directory goes (default: a temp dir)."),
) -> None:
    """Run one episode, printing each step and the milestone events it fired."""
    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.envs.factory import make_env
    from agentrl.evaluate import make_agent, run_episode

    try:  # the task's env: the browser, or a desktop for an `env: desktop` task
        env = make_env(resolve_task(task), BrowserEnvConfig(screenshot=screenshot, root_dir=out))
    except TaskFileError as e:
        err.print(str(e), markup=False)
        raise typer.Exit(1) from None

    def show(t: int, action: str, info: dict) -> None:
        line = f"[bold]{t:>3}[/bold] {action}"
        if info["action_error"]:
            line += f"  [red]error: {info['action_error']}[/red]"
        for m in info["milestones"]:
            line += f"\n      [green]+{m.reward:.2f} {m.id}[/green] ({m.category}) {m.evidence.detail}"
        console.print(line, highlight=False)

    try:
        r = run_episode(env, make_agent(agent, seed), seed, on_step=show)
        console.print(f"goal: {env.variant.instruction if env.variant else ''}", highlight=False)
    finally:
        env.close()
    color = "green" if r.success else "red"
    console.print(
        f"[{color}]success={r.success}[/{color}] return={r.return_:.2f} steps={r.steps} "
        f"milestones={r.milestones} episode dir: {r.episode_dir}"
    )
    if r.error:
        err.print(f"agent error: {r.error}", markup=False)


@app.command()
def train(
    config: Path = typer.Argument(None, help="Training config YAML (e.g. configs/tiny-click-button.yaml)."),
    resume: Path = typer.Option(None, help="Continue this run dir from its last checkpoint (config from it)."),
    out: Path = typer.Option(None, help="Run directory (default: the config's out_dir)."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps in total."),
) -> None:
    """Train a policy with RL in the browser env: held-out success before and after, curves in the run dir."""
    from agentrl.learner.build import check_generator
    from agentrl.learner.config import TrainConfig
    from agentrl.learner.trainer import train as run_train

    if resume is None and config is None:
        err.print("give a CONFIG.yaml, or --resume RUN_DIR")
        raise typer.Exit(2)
    try:  # a config or a machine that cannot run it: one clear line, before anything is built
        cfg = TrainConfig.load(resume / "config.yaml" if resume is not None else config)
        check_generator(cfg)
    except (ValueError, ImportError, RuntimeError, FileNotFoundError) as e:
        raise fail(f"{resume / 'config.yaml' if resume is not None else config}: {e}") from None
    run_dir = resume or out or Path(cfg.out_dir)
    cfg = None if resume is not None else cfg
    s = run_train(cfg, run_dir, resume=resume is not None, max_steps=max_steps, progress=sys.stderr.isatty())
    console.print(
        f"[bold]{s['algorithm']}[/bold]: held-out success ({s['eval_mode']}) {s['success_before']:.1%} -> "
        f"{s['success_after']:.1%} (best {s['best_success']:.1%} at step {s['best_step']}) after {s['steps']} steps, "
        f"{s['episodes']} episodes, {s['elapsed_s']:.0f} s"
    )
    console.print(f"report: {run_dir / 'summary.json'}  metrics: {run_dir / 'metrics.jsonl'}  curves: {', '.join(s['curves'])}")


@app.command()
def sandbox(port: int = typer.Option(8000, help="Port on 127.0.0.1 (0 = any free port).")) -> None:
    """Serve the sandbox apps on 127.0.0.1 for a person to browse (Ctrl-C to stop)."""
    from agentrl.sandbox.server import main

    sys.exit(main(["--port", str(port)]))


from agentrl import cli_eval  # noqa: E402  (its commands use console/resolve_suite defined above)

app.command("evaluate")(cli_eval.evaluate)
app.command("compare")(cli_eval.compare)
app.command("replay")(cli_eval.replay)

from agentrl import cli_rewards  # noqa: E402  (reward layers: R_phi, labelling, the judge server)

app.add_typer(cli_rewards.rm_app, name="rm")
app.add_typer(cli_rewards.judge_app, name="judge")
app.command("label")(cli_rewards.label)

if __name__ == "__main__":
    app()
