"""The agents that need no model: they read the observation text only.

- `ScriptedAgent` follows a task's oracle solution, resolving each step's element (named by role and
  accessible name, as a person would) to an element id by reading only the observation text. It proves
  every task solvable and every milestone reachable; run with a near-miss's steps it proves the goal
  cannot be had by a plausible wrong solution.
- `RandomAgent` acts uniformly over the actions the observation allows: the floor a policy must beat.
"""

from __future__ import annotations

import random
import re
from typing import Any

from agentrl.envs.actions import SCROLL_DIRECTIONS, format_action
from agentrl.envs.axtree import AXTree, parse_snapshot
from agentrl.taskspec import OracleStep, TaskVariant


class OracleStepError(RuntimeError):
    """The scripted agent could not find the element an oracle step names: the task or the app is broken."""


def oracle_action(step: OracleStep, ax: AXTree, index: int = 0) -> str:
    """The action string for one oracle step, given the current observation's accessibility tree."""
    kind = step.kind
    if kind in ("click", "fill", "select", "upload"):
        target = getattr(step, kind)
        pattern = re.compile(target.name_re) if target.name_re else None
        found = [e for e in ax.find(target.role, target.name, pattern) if e.ref]
        if len(found) <= target.nth:
            shown = ", ".join(f'{e.role} "{e.name}"' for e in ax.elements if e.ref and e.name)[:400]
            want = target.name if target.name is not None else f"/{target.name_re}/"
            raise OracleStepError(
                f"oracle step {index + 1} ({kind}): no {target.role} named {want!r} (nth={target.nth}) "
                f"in the observation; named elements: {shown}"
            )
        ref = found[target.nth].ref
        if kind == "click":
            return format_action("click", ref)
        value = target.text if kind == "fill" else target.file if kind == "upload" else target.option
        return format_action(kind, ref, value)
    if kind in ("back", "wait"):
        return format_action(kind)
    return format_action(kind, str(getattr(step, kind)))


class ScriptedAgent:
    """Replays the oracle (or given) steps; after the last one it calls done() to end the episode."""

    name = "scripted"

    def __init__(self, steps: list[OracleStep] | None = None, seed: int = 0) -> None:
        self._fixed = steps
        self._steps: list[OracleStep] = []
        self._i = 0

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: TaskVariant | None) -> None:
        if self._fixed is None and variant is None:
            raise ValueError("the scripted agent needs the task variant (its oracle) or explicit steps")
        self._steps = list(self._fixed if self._fixed is not None else variant.oracle)  # type: ignore[union-attr]
        self._i = 0

    def act(self, obs: dict[str, Any]) -> str:
        if self._i >= len(self._steps):
            return format_action("done", "")
        step = self._steps[self._i]
        action = oracle_action(step, parse_snapshot(obs["axtree"]), self._i)
        self._i += 1
        return action


_WORDS = ["alpha", "test", "hello", "42", "north", "report", "x@y.z", "Pro", "2024"]
_ACTIVE = ("button", "link", "checkbox", "radio", "menuitem", "tab", "option", "switch")
_FILLABLE = ("textbox", "searchbox", "spinbutton")


class RandomAgent:
    """Uniform over the actions the current observation makes possible (seeded, reproducible)."""

    name = "random"

    def __init__(self, steps: list[OracleStep] | None = None, seed: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: TaskVariant | None) -> None:
        # one stream per (agent seed, task, task seed): the same episode whatever ran before it, on any worker
        if variant is not None:
            self.rng.seed(f"{self.seed}:{variant.task.id}:{variant.seed}".encode())

    def act(self, obs: dict[str, Any]) -> str:
        ax = parse_snapshot(obs["axtree"])
        choices: list[str] = []
        for e in ax.elements:
            if not e.ref:
                continue
            if e.role in _ACTIVE:
                choices.append(format_action("click", e.ref))
            elif e.role in _FILLABLE:
                choices.append(format_action("fill", e.ref, self.rng.choice(_WORDS)))
            elif e.role in ("combobox", "listbox"):
                opts = [o.name for o in ax.elements if o.role == "option" and o.depth > e.depth]
                if opts:
                    choices.append(format_action("select", e.ref, self.rng.choice(opts)))
        choices += [format_action("press", "Enter"), format_action("scroll", self.rng.choice(SCROLL_DIRECTIONS)),
                    format_action("back"), format_action("done", "")]
        return self.rng.choice(choices)

