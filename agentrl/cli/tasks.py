"""`agentrl tasks validate|list|coverage|probe`: task files and suites."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from agentrl.cli.common import console, err, fail, resolve_suite
from agentrl.yamlpos import TaskFileError

tasks_app = typer.Typer(no_args_is_help=True, help="Task files: validate, list, coverage and the exploit probe.")


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")


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
        t.add_row(s.id, s.start.app or s.start.site or s.start.url or "", str(s.tier), str(s.max_steps), ", ".join(m.id for m in s.milestones))
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
