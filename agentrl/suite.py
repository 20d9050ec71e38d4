"""Suites: a folder of task files plus an optional ``suite.yaml`` that names the splits.

A suite folder holds task files, in sub-folders if it likes; a task's **category** is its ``category:``
field, or else the first folder below the suite root (``tasks/web/forms/signup.yaml`` -> ``forms``).
``suite.yaml`` defines named splits, each a set of tasks and a range of seeds, so that training and
evaluation use disjoint seeds and, where the suite says so, disjoint tasks::

    name: web
    description: Six workflow categories on the sandbox apps.
    categories: [navigation, forms, files, email, settings, search]   # optional: checked when given
    splits:
      train: {exclude: ["tag:heldout"], seeds: [0, 100000]}          # [start, stop)
      test:  {seeds: [100000, 100005]}                                # all tasks, held-out seeds

``tasks`` and ``exclude`` are lists of task-id globs (``forms-*``), ``tag:NAME`` or ``category:NAME``;
``tasks`` defaults to every task. A suite without ``suite.yaml`` has one split, ``all``, over seeds
``[0, 5)``.

>>> s = load_suite_spec(SUITES_DIR / "core")            # doctest: +SKIP
>>> tasks, seeds = s.split("test")                          # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentrl.registry import did_you_mean
from agentrl.taskspec import TaskSpec, load_suite
from agentrl.yamlpos import TaskFileError, field_name, line_of, load_with_lines

DEFAULT_SEEDS = (0, 5)


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tasks: list[str] = ["*"]
    exclude: list[str] = []
    seeds: tuple[int, int] = DEFAULT_SEEDS  # [start, stop)

    @model_validator(mode="after")
    def _range(self) -> Split:
        if self.seeds[1] <= self.seeds[0]:
            raise ValueError(f"seeds must be [start, stop) with stop > start, got {list(self.seeds)}")
        return self

    def seed_list(self, n: int | None = None) -> list[int]:
        """The first `n` seeds of the split's range (all of them when `n` is None)."""
        start, stop = self.seeds
        return list(range(start, stop if n is None else min(stop, start + n)))


class SuiteFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    description: str = ""
    categories: list[str] | None = None
    splits: dict[str, Split] = Field(default_factory=lambda: {"all": Split()})
    #: the reward router's configuration for the suite's tasks (`agentrl.rewards.router.RouterConfig`)
    router: dict | None = None
    #: the web apps of the user's own that the suite's tasks run on (`agentrl.sitespec`), by name
    sites: dict | None = None


class Suite:
    """A loaded suite: its tasks (validated), their categories, and its splits."""

    def __init__(self, root: Path, tasks: list[TaskSpec], meta: SuiteFile) -> None:
        self.root, self.tasks, self.meta = root, tasks, meta
        self.name = meta.name or root.name

    def category(self, task: TaskSpec) -> str:
        if task.category:
            return task.category
        rel = task.path.resolve().relative_to(self.root.resolve())
        return rel.parts[0] if len(rel.parts) > 1 else "uncategorised"

    @property
    def splits(self) -> dict[str, Split]:
        return self.meta.splits

    def split(self, name: str, n_seeds: int | None = None) -> tuple[list[TaskSpec], list[int]]:
        """(tasks, seeds) of split `name`; `n_seeds` keeps the first n seeds of its range."""
        if name not in self.splits:
            raise KeyError(f"suite {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}"
                           f"{did_you_mean(name, tuple(self.splits))}")
        s = self.splits[name]
        chosen = [t for t in self.tasks if self._matches(t, s.tasks) and not self._matches(t, s.exclude)]
        return chosen, s.seed_list(n_seeds)

    def _matches(self, task: TaskSpec, patterns: list[str]) -> bool:
        for p in patterns:
            if p.startswith("tag:"):
                if p[4:] in task.tags:
                    return True
            elif p.startswith("category:"):
                if self.category(task) == p[9:]:
                    return True
            elif fnmatch.fnmatchcase(task.id, p):
                return True
        return False


def load_suite_spec(root: str | Path) -> Suite:
    """Load a suite folder: every task file, and ``suite.yaml`` if present. Raises TaskFileError naming
    file, line and field for every problem (bad split, a pattern that matches no task, unknown category)."""
    root = Path(root)
    tasks = load_suite(root)
    meta_path = root / "suite.yaml"
    if not meta_path.exists():
        return Suite(root, tasks, SuiteFile())
    data, lines = load_with_lines(meta_path)
    try:
        meta = SuiteFile.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise TaskFileError([
            f"{meta_path}:{line_of(lines, tuple(err['loc']))}: {field_name(tuple(err['loc']))}: {err['msg']}"
            for err in e.errors()
        ]) from None
    suite = Suite(root, tasks, meta)
    problems: list[str] = []
    ids = tuple(t.id for t in tasks)
    for name, s in meta.splits.items():
        for key in ("tasks", "exclude"):
            for i, p in enumerate(getattr(s, key)):
                if not any(suite._matches(t, [p]) for t in tasks):
                    problems.append(f"{meta_path}:{line_of(lines, ('splits', name, key, i))}: "
                                    f"splits.{name}.{key}[{i}]: {p!r} matches no task{did_you_mean(p, ids)}")
    if meta.categories is not None:
        for t in tasks:
            c = suite.category(t)
            if c not in meta.categories:
                problems.append(f"{t.path}:1: category: {c!r} is not one of the suite's categories "
                                f"({', '.join(meta.categories)}){did_you_mean(c, tuple(meta.categories))}")
    if problems:
        raise TaskFileError(problems)
    return suite
