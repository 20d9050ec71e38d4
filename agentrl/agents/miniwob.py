"""`miniwob-heuristic`: a rule agent for the MiniWoB++ suite that reads the goal from the page.

MiniWoB generates each episode's instruction (the utterance) in the page's JavaScript, so no task file can
name the right element by role and name ahead of time. This agent reads the utterance from the
observation (the sandbox's miniwob app shows it as the page's level-1 heading), matches it against one
rule per instruction shape (ported from the peers' benchmark oracle in ``shared/bench/_bench_common.py``
and extended to more tasks), and turns it into actions on the element ids of the current observation.
Each `act` re-reads the observation, so a plan step that depends on the page (a table cell, a folder that
has just opened) sees the page as it is now. It is the reference solution of the suite's tasks tagged
``reference:miniwob-heuristic`` (their oracle is a placeholder).

>>> [(s.op, s.role, s.name, s.text) for s in utterance_plan('Enter "aIGD" into the text field and press Submit.')]
[('fill', 'textbox', None, 'aIGD'), ('click', 'button', 'Submit', '')]
"""

from __future__ import annotations

from typing import Any

from agentrl.envs.actions import format_action
from agentrl.envs.axtree import AXTree, parse_snapshot
from agentrl.taskspec import TaskVariant

from .miniwob_pages import Memory, Step, nth
from .miniwob_rules import utterance_plan

__all__ = ["MiniWoBHeuristicAgent", "Step", "page_reward", "utterance", "utterance_plan"]


def utterance(ax: AXTree) -> str | None:
    """MiniWoB's instruction: the page's level-1 heading (where the sandbox's miniwob app puts ``#query``)."""
    for e in ax.elements:
        if e.role == "heading" and e.attrs.get("level") == "1":
            return e.name
    return None


class MiniWoBHeuristicAgent:
    """Reads the MiniWoB utterance from the observation and follows the plan of the rule that matches it.

    When no rule matches, or a planned element is not on the page, it ends the episode with ``done("")``
    (a failure MiniWoB's reward agrees with), never a guess.
    """

    name = "miniwob-heuristic"

    def __init__(self, steps: Any = None, seed: int = 0) -> None:
        self.plan: list[Step] | None = None
        self.goal: str | None = None
        self.memory: Memory = {}  # what the plan's page-reading steps remember (agentrl.agents.miniwob_rules)
        self._i = 0

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: TaskVariant | None) -> None:
        self.goal = utterance(parse_snapshot(obs["axtree"]))
        self.plan = utterance_plan(self.goal) if self.goal else None
        self.memory = {}
        self._i = 0

    def act(self, obs: dict[str, Any]) -> str:
        if self.plan is None:
            return 'done("")'
        ax = parse_snapshot(obs["axtree"])
        while self._i < len(self.plan):
            step = self.plan[self._i]
            if step.op == "dynamic":
                assert step.resolve is not None
                action = step.resolve(ax, self.memory)
                if action is None or not step.repeat:
                    self._i += 1
                if action is not None:
                    return action
                continue
            self._i += 1
            el = nth(ax, step.role, step.name, step.nth)
            if el is None:
                return format_action("done", "")
            if step.op in ("fill", "select"):
                return format_action(step.op, el.ref, step.text)
            return format_action("click", el.ref)
        return format_action("done", "")


def page_reward(env: Any) -> tuple[bool, float]:
    """MiniWoB's own outcome of the running episode, read from the page: (WOB_DONE_GLOBAL, WOB_RAW_REWARD_GLOBAL).

    An independent check of the suite's success milestone (tests and benchmarks compare the two); `env` is a
    `BrowserEnv` with a MiniWoB episode open. A page that is no longer the task page (the agent went
    ``back()`` to the blank page) never got a reward: (False, 0.0).
    """
    page = env._env._ep.page  # the live page of the env's current episode
    done, raw = env._host.run(page.evaluate(
        "() => typeof WOB_DONE_GLOBAL === 'undefined' ? [false, 0] : [WOB_DONE_GLOBAL, WOB_RAW_REWARD_GLOBAL]"
    ))
    return bool(done), float(raw)
