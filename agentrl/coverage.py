"""Milestone coverage of a suite: the scripted agent on every task x seed (does it succeed, which milestones
fire in which order, is that order the same on every seed), the random agent's success per category, and
for each answer task how often its best constant answer is right (`agentrl.fidelity.constant_answer_table`).

>>> suite = load_suite_spec("tasks/web")                              # doctest: +SKIP
>>> cov = measure(suite, seeds=[100000, 100001], random_seeds=2)      # doctest: +SKIP
>>> Path("docs/coverage.md").write_text(to_markdown(cov))              # doctest: +SKIP

CLI: ``agentrl tasks coverage tasks/web --seeds 5 --random-seeds 2 --out docs/coverage.md``.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentrl.agents import RandomAgent, ScriptedAgent
from agentrl.envs.factory import make_env
from agentrl.evaluate import EpisodeResult, run_episode
from agentrl.fidelity import ConstantAnswer, constant_answer_table
from agentrl.suite import Suite

RANDOM_SEED_OFFSET = 7_000  # random-agent episodes use other seeds than the scripted ones
CONSTANT_SEEDS = 1000  # seeds (from the split's first) over which the best constant answer is measured
MAX_CONSTANT_RATE = 0.02  # the most the best constant answer may be right on (tests/test_fidelity.py)


@dataclass(frozen=True)
class TaskCoverage:
    """What the scripted (and random) agent did on one task."""

    task_id: str
    category: str
    tier: int
    tags: tuple[str, ...]
    declared: tuple[str, ...]  # the task's milestone ids, in file order
    seeds: tuple[int, ...]
    successes: int
    orders: tuple[tuple[str, ...], ...]  # completed milestones in firing order, one per seed
    errors: tuple[str, ...]  # agent or env errors, "seed N: message"
    random_successes: int = 0
    random_episodes: int = 0

    @property
    def stable(self) -> bool:
        return len(set(self.orders)) == 1

    @property
    def missed(self) -> tuple[str, ...]:
        """Milestones that did not fire on at least one seed."""
        return tuple(m for m in self.declared if not all(m in o for o in self.orders))


@dataclass
class Coverage:
    suite: str
    split: str
    seeds: list[int]
    random_seeds: int
    tasks: list[TaskCoverage] = field(default_factory=list)
    #: per answer task, how often the best constant answer is right (`agentrl.fidelity`)
    constants: list[ConstantAnswer] = field(default_factory=list)

    def by_category(self) -> dict[str, list[TaskCoverage]]:
        out: dict[str, list[TaskCoverage]] = defaultdict(list)
        for t in self.tasks:
            out[t.category].append(t)
        return dict(out)

    @property
    def failing(self) -> list[TaskCoverage]:
        """Tasks the scripted agent did not solve on every seed, or whose milestones were not all hit."""
        return [t for t in self.tasks if t.successes < len(t.seeds) or t.missed or t.errors]


def measure(
    suite: Suite,
    seeds: list[int],
    random_seeds: int = 0,
    *,
    split: str = "test",
    only: list[str] | None = None,
    root_dir: Path | None = None,
    on_episode: Callable[[str, int, str], None] | None = None,
) -> Coverage:
    """Run the scripted agent on every task of ``suite``'s ``split`` (or the ids in ``only``) x ``seeds`` and
    the random agent ``random_seeds`` times per task. ``on_episode(task_id, seed, agent)`` is called after
    each episode (progress bars)."""
    tasks, _ = suite.split(split)
    if only is not None:
        unknown = sorted(set(only) - {t.id for t in tasks})
        if unknown:
            raise KeyError(f"no task(s) {unknown} in split {split!r} of suite {suite.name!r}")
        tasks = [t for t in tasks if t.id in only]
    root = root_dir or Path(tempfile.mkdtemp(prefix="agentrl-coverage-"))
    cov = Coverage(suite=suite.name, split=split, seeds=list(seeds), random_seeds=random_seeds)
    for spec in tasks:
        results: list[EpisodeResult] = []
        rand: list[EpisodeResult] = []
        errors: list[str] = []
        try:
            env = make_env(spec, root_dir=root)
        except Exception as e:  # a task the env cannot even start is a row with an error, not a crash
            errors.append(f"env: {type(e).__name__}: {e}")
        else:
            try:
                for seed in seeds:
                    r = run_episode(env, ScriptedAgent(), seed)
                    results.append(r)
                    if r.error:
                        errors.append(f"seed {seed}: {r.error}")
                    if on_episode:
                        on_episode(spec.id, seed, "scripted")
                for k in range(random_seeds):
                    seed = seeds[0] + RANDOM_SEED_OFFSET + k
                    rand.append(run_episode(env, RandomAgent(seed=k), seed))
                    if on_episode:
                        on_episode(spec.id, seed, "random")
            except Exception as e:
                errors.append(f"env: {type(e).__name__}: {e}")
            finally:
                env.close()
        cov.tasks.append(TaskCoverage(
            task_id=spec.id, category=suite.category(spec), tier=spec.tier, tags=tuple(spec.tags),
            declared=tuple(m.id for m in spec.milestones), seeds=tuple(r.seed for r in results),
            successes=sum(r.success for r in results), orders=tuple(tuple(r.milestones) for r in results),
            errors=tuple(errors), random_successes=sum(r.success for r in rand), random_episodes=len(rand),
        ))
    cov.constants = constant_answer_table(tasks, seeds[0], CONSTANT_SEEDS)
    return cov


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({n / d:.0%})" if d else "–"


def to_markdown(cov: Coverage, command: str = "") -> str:
    """The coverage tables: one row per task, then one row per category."""
    lines = [
        f"# Milestone coverage: suite `{cov.suite}`",
        "",
        f"Scripted agent (the tasks' oracles) on split `{cov.split}`, seeds {', '.join(map(str, cov.seeds))}; "
        f"random agent {cov.random_seeds} episode(s) per task on other seeds."
        + (f" Made with `{command}`." if command else ""),
        "",
        "Milestones are listed in the order they fired on the first seed; *same order* says whether every seed "
        "fired them in that order. *Missed* names milestones that did not fire on some seed.",
        "",
        "| task | category | tier | scripted success | milestones in firing order | same order | missed |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in sorted(cov.tasks, key=lambda t: (t.category, t.tier, t.task_id)):
        name = t.task_id + (" (held out)" if "heldout" in t.tags else "")
        order = " → ".join(t.orders[0]) if t.orders else "–"
        same = ("yes" if t.stable else f"no ({len(set(t.orders))} orders)") if t.orders else "–"
        lines.append(f"| {name} | {t.category} | {t.tier} | {_pct(t.successes, len(t.seeds))} | {order} | {same} | "
                     f"{', '.join(t.missed) or '–'} |")
    lines += ["", "## Per category", "",
              "| category | tasks | tiers 1/2/3 | scripted success | random success |", "|---|---|---|---|---|"]
    cats = cov.by_category()
    for cat, ts in sorted(cats.items()):
        tiers = "/".join(str(sum(t.tier == k for t in ts)) for k in (1, 2, 3))
        ok, n = sum(t.successes for t in ts), sum(len(t.seeds) for t in ts)
        rok, rn = sum(t.random_successes for t in ts), sum(t.random_episodes for t in ts)
        lines.append(f"| {cat} | {len(ts)} | {tiers} | {_pct(ok, n)} | {_pct(rok, rn)} |")
    ok, n = sum(t.successes for t in cov.tasks), sum(len(t.seeds) for t in cov.tasks)
    rok, rn = sum(t.random_successes for t in cov.tasks), sum(t.random_episodes for t in cov.tasks)
    lines.append(f"| **all** | {len(cov.tasks)} | | {_pct(ok, n)} | {_pct(rok, rn)} |")
    if cov.constants:
        lines += ["", "## Best constant answer", "",
                  f"For each answer task, the answer that is right on the most of {CONSTANT_SEEDS} seeds from "
                  f"{cov.seeds[0]} on (among the oracle's answers over those seeds), and how often it is right: "
                  f"`done(<it>)` as the first action, never looking at the page. At most "
                  f"{MAX_CONSTANT_RATE:.0%} is allowed (tests/test_fidelity.py); an answer also counts only after "
                  "the milestone that shows its source.", "",
                  "| task | distinct right answers | best constant | right on | rate |", "|---|---|---|---|---|"]
        for c in sorted(cov.constants, key=lambda c: (-c.rate, c.task_id)):
            lines.append(f"| {c.task_id} | {c.distinct} | `{c.best}` | {c.hits}/{c.seeds} | {c.rate:.1%} |")
    if cov.failing:
        lines += ["", "## Problems", ""]
        for t in cov.failing:
            detail = "; ".join(e[:300] for e in t.errors) or (f"missed {', '.join(t.missed)}" if t.missed else "")
            lines.append(f"- `{t.task_id}`: scripted success {_pct(t.successes, len(t.seeds))}. {detail}".rstrip())
    return "\n".join(lines) + "\n"
