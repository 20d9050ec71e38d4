"""The exploit probe: generic shortcuts played against every task and seed, to find rewards an agent could
have without doing the task.

    tasks, seeds = load_suite_spec("tasks/web").split("test", 1)              # doctest: +SKIP
    results = probe_tasks(tasks, seeds, workers=2)                             # doctest: +SKIP
    Path("docs/probe.md").write_text(to_markdown(results))                     # doctest: +SKIP

CLI: ``agentrl tasks probe core web miniwob desktop --seeds 1 --known tests/probe_known.yaml --out docs/probe.md``.

Per task and seed the probe first plays the oracle (the baseline: its return, and what each step did),
then every shortcut's attempts, each in its own episode. An attempt is a *finding* when it earns what it
should not: a goal milestone or success (`GOAL`), any milestone or reward at all (`ANY`: a forged page must
earn nothing); and, for every shortcut, more return than the oracle (`MORE` asks only that: an oracle with
repeats must not pay twice).

A shortcut is a plain function registered in `SHORTCUTS`: it gets the task, the seed's variant and the
oracle's baseline, and returns `Attempt`s; each attempt's `script` is a generator of action strings that
reads the current observation from the `Play` it is given. Adding a class of shortcut is adding one
function in `agentrl.probe_shortcuts`, where the bundled ones are.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrl.agents import OracleStepError, oracle_action
from agentrl.envs.actions import Action, parse_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.probe_shortcuts import (
    ANY,
    GOAL,
    MORE,
    SHORTCUTS,
    SUCCESS,
    Attempt,
    Baseline,
    OracleStepRecord,
    Play,
    page_key,
)
from agentrl.sandbox.sites import run_sites, sites_up
from agentrl.taskspec import TaskSpec, TaskVariant
from agentrl.yamlpos import TaskFileError, line_of, load_with_lines


@dataclass(frozen=True)
class Finding:
    task_id: str
    seed: int
    shortcut: str
    detail: str
    earned: tuple[str, ...]  # milestones completed
    success: bool
    ret: float
    oracle_ret: float
    actions: tuple[str, ...]
    fix: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.task_id, self.shortcut)


@dataclass
class TaskProbe:
    """The probe's result on one task: attempts played per shortcut, findings, errors."""

    task_id: str
    env: str
    seeds: tuple[int, ...]
    attempts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- running
def make_env(spec: TaskSpec, root_dir: Path) -> Any:
    """The env the task runs in (its `env:`), with room for the probe's extra steps (4 x max_steps): a
    shortcut that repeats every rewarded action needs more steps than the oracle."""
    from agentrl.envs.browser import BrowserEnvConfig
    from agentrl.envs.factory import make_env as task_env

    return task_env(spec, BrowserEnvConfig(root_dir=root_dir, max_steps=spec.max_steps * 4, record=False,
                                           isolation="storage", keep_episode_dirs=False))


def baseline(env: Any, spec: TaskSpec, seed: int) -> tuple[TaskVariant, Baseline]:
    """Play the oracle on `seed`; record what each step earned and which decoys it could have hit."""
    obs, info = env.reset(seed=seed)
    variant = env.variant
    start = obs
    steps: list[OracleStepRecord] = []
    ret, success, done = 0.0, False, False
    for i, step in enumerate(variant.oracle):
        ax = parse_snapshot(obs["axtree"])
        try:
            action = oracle_action(step, ax, i)
        except OracleStepError:
            break
        decoys: tuple[str, ...] = ()
        target = getattr(step, step.kind, None)
        if step.kind in ("click", "fill", "select") and target is not None and target.name:
            parsed = parse_action(action)
            ref = parsed.target if isinstance(parsed, Action) else None
            decoys = tuple(e.ref for e in ax.elements if e.ref and e.ref != ref and e.name == target.name)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += reward
        success = success or info["success"]
        steps.append(OracleStepRecord(action=action, reward=float(reward), url=obs.get("url", ""),
                                      milestones=tuple(m.id for m in info["milestones"] if m.complete), decoys=decoys,
                                      page=page_key(obs)))
        if terminated or truncated:
            done = True
            break
    if not done:
        obs, reward, *_ = env.step('done("")')
        ret += reward
    return variant, Baseline(ret=ret, success=success, steps=tuple(steps), start_obs=start)


def play(env: Any, spec: TaskSpec, seed: int, attempt: Attempt, base: Baseline) -> Finding | None:
    """One attempt in a fresh episode; the finding if it earned what its judge forbids."""
    obs, info = env.reset(seed=seed)
    p = Play(spec=spec, variant=env.variant, baseline=base, obs=obs, info=info)
    actions: list[str] = []
    ret, success = 0.0, False
    earned: list[str] = []
    for action in attempt.script(p):
        actions.append(action)
        p.last_action = action
        p.obs, p.reward, terminated, truncated, p.info = env.step(action)
        ret += p.reward
        success = p.info["success"]  # the final state: a change undone later is revoked (issue 19)
        earned += [m.id for m in p.info["milestones"] if m.complete]
        if terminated or truncated:
            break
    goals = {m.id for m in env.variant.milestones if m.category == "goal"}
    if attempt.unless and attempt.unless <= set(earned):
        return None  # the way the attempt skipped was taken after all: a real solution
    bad = ret > base.ret + 1e-6 or {  # more than the oracle is a finding for every shortcut
        GOAL: success or any(m in goals for m in earned),
        ANY: bool(earned) or ret > 0,
        MORE: False,
        SUCCESS: success,
    }[attempt.judge]
    if not bad:
        return None
    return Finding(task_id=spec.id, seed=seed, shortcut=attempt.shortcut, detail=attempt.detail,
                   earned=tuple(earned), success=success, ret=round(ret, 4), oracle_ret=round(base.ret, 4),
                   actions=tuple(a if len(a) <= 120 else a[:117] + "..." for a in actions), fix=attempt.fix)


def probe_task(spec: TaskSpec, seeds: list[int], shortcuts: list[str] | None = None) -> TaskProbe:
    """Every shortcut's attempts on every seed of one task (episode directories in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="agentrl-probe-") as root:
        return _probe_task(spec, seeds, shortcuts or SHORTCUTS.names(), Path(root))


def _probe_task(spec: TaskSpec, seeds: list[int], names: list[str], root: Path) -> TaskProbe:
    result = TaskProbe(task_id=spec.id, env=spec.env, seeds=tuple(seeds))
    try:
        env = make_env(spec, root)
    except Exception as e:  # a task the env cannot start is a row with an error, not a crash
        result.errors.append(f"env: {type(e).__name__}: {e}")
        return result
    try:
        for seed in seeds:
            try:
                variant, base = baseline(env, spec, seed)
            except Exception as e:  # noqa: BLE001 - reported per task
                result.errors.append(f"seed {seed}: oracle: {type(e).__name__}: {e}")
                continue
            for name in names:
                for attempt in SHORTCUTS.get(name)(spec, variant, base):
                    result.attempts[name] = result.attempts.get(name, 0) + 1
                    try:
                        finding = play(env, spec, seed, attempt, base)
                    except Exception as e:  # noqa: BLE001 - reported per task
                        result.errors.append(f"seed {seed}: {name} ({attempt.detail}): {type(e).__name__}: {e}")
                        continue
                    if finding is not None:
                        result.findings.append(finding)
    finally:
        env.close()
    return result


def _probe_path(path: str, seeds: list[int], shortcuts: list[str] | None) -> TaskProbe:
    from agentrl.taskspec import load_task

    return probe_task(load_task(path), seeds, shortcuts)


def probe_tasks(specs: list[TaskSpec], seeds: list[int], *, workers: int = 1, shortcuts: list[str] | None = None,
                on_task: Callable[[TaskProbe], None] | None = None) -> list[TaskProbe]:
    """`probe_task` over `specs`, in `workers` processes (each with its own browser and sandbox) when > 1;
    results in the order of `specs`."""
    with sites_up(run_sites(specs, workers if len(specs) > 1 else 1)):  # the tasks' own sites, for the run
        return _probe_tasks(specs, seeds, workers=workers, shortcuts=shortcuts, on_task=on_task)


def _probe_tasks(specs: list[TaskSpec], seeds: list[int], *, workers: int, shortcuts: list[str] | None,
                 on_task: Callable[[TaskProbe], None] | None) -> list[TaskProbe]:
    if workers <= 1 or len(specs) <= 1:
        out = []
        for s in specs:
            out.append(probe_task(s, seeds, shortcuts))
            if on_task:
                on_task(out[-1])
        return out
    # spawn: fork would copy the parent's Playwright threads and event loop
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_probe_path, str(s.path), seeds, shortcuts) for s in specs]
        out = []
        for f in futures:
            out.append(f.result())
            if on_task:
                on_task(out[-1])
        return out


def known_findings(path: Path) -> dict[tuple[str, str], str]:
    """A YAML list of findings already known and owned by an issue, ``{task, shortcut, issue, why}`` each:
    (task, shortcut) -> "issue: why". The probe still reports them; `agentrl tasks probe --known` and the
    CI test fail only on the others."""
    data, lines = load_with_lines(Path(path))
    if not isinstance(data, list):
        raise TaskFileError([f"{path}:1: a list of {{task, shortcut, issue, why}} mappings"])
    out: dict[tuple[str, str], str] = {}
    for i, item in enumerate(data):
        if not (isinstance(item, dict) and {"task", "shortcut", "issue"} <= item.keys()):
            raise TaskFileError([f"{path}:{line_of(lines, (i,))}: [{i}]: needs task, shortcut and issue"])
        out[(str(item["task"]), str(item["shortcut"]))] = f"{item['issue']}: {item.get('why', '')}".rstrip(": ")
    return out


# ---------------------------------------------------------------- the report
def to_markdown(results: list[TaskProbe], command: str = "", known: dict[tuple[str, str], str] | None = None) -> str:
    """The probe's table: per task, attempts and findings per shortcut; then every finding with its fix."""
    known = known or {}
    names = sorted({n for r in results for n in r.attempts})
    lines = [
        "# Exploit probe",
        "",
        "Generic shortcuts played against every task and seed (`agentrl/probe.py`, `agentrl/probe_shortcuts.py`).",
        "A cell is `findings/attempts`; a finding is an attempt that earned a goal milestone or success (a",
        "forged page: any milestone; an undo or a skipped prerequisite: success at the end), or more return",
        "than the oracle. Findings marked *known* are listed in tests/probe_known.yaml with the issue that",
        "fixes them or the reason the task is right as it is; `agentrl tasks probe --known` and",
        "tests/test_probe.py fail on any other. `n/a`: the shortcut does not apply (no browser on the desktop,",
        "no rewarded oracle step, no look-alike of a target, no answer task). A new class of shortcut is one",
        "function registered in `SHORTCUTS` (`agentrl/probe_shortcuts.py`).",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["| task | env | seeds | " + " | ".join(names) + " | errors |",
              "|---|---|---|" + "---|" * len(names) + "---|"]
    for r in results:
        cells = []
        for n in names:
            found = sum(f.shortcut == n for f in r.findings)
            cells.append(f"{'**' if found else ''}{found}/{r.attempts.get(n, 0)}{'**' if found else ''}"
                         if n in r.attempts else "n/a")
        lines.append(f"| {r.task_id} | {r.env} | {len(r.seeds)} | " + " | ".join(cells) + f" | {len(r.errors)} |")
    findings = [f for r in results for f in r.findings]
    tasks = len(results)
    lines += ["", f"{len(findings)} findings on {len({f.task_id for f in findings})} of {tasks} tasks; "
              f"{sum(len(r.errors) for r in results)} errors.", ""]
    if findings:
        lines += ["## Findings", "", "| task | seed | shortcut | attempt | earned | return (oracle) | fix | known |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in findings:
            earned = ", ".join(f.earned) + (" + success" if f.success else "")
            lines.append(f"| {f.task_id} | {f.seed} | {f.shortcut} | {_cell(f.detail)} | {earned} | "
                         f"{f.ret:g} ({f.oracle_ret:g}) | {_cell(f.fix)} | {known.get(f.key, '')} |")
    errors = [f"{r.task_id}: {e}" for r in results for e in r.errors]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {_cell(e)}" for e in errors]
    return "\n".join(lines) + "\n"


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")
