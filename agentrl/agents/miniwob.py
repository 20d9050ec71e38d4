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

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentrl.envs.actions import format_action
from agentrl.envs.axtree import AXTree, Element, parse_snapshot
from agentrl.taskspec import TaskVariant

Resolver = Callable[[AXTree, "MiniWoBHeuristicAgent"], str | None]


@dataclass(frozen=True)
class Step:
    """One planned action: `op` on the `nth` element of `role` (named `name` when given)."""

    op: str  # click | fill | select | dynamic
    role: str = ""
    name: str | None = None
    nth: int = 0
    text: str = ""  # fill: the text; select: the option
    resolve: Resolver | None = None  # dynamic: computes the action from the page (None: nothing to do)
    repeat: bool = False  # dynamic: stays the current step until its resolver returns None


def _click(role: str, name: str | None = None, nth: int = 0) -> Step:
    return Step("click", role, name, nth)


def _fill(text: str, nth: int = 0) -> Step:
    return Step("fill", "textbox", None, nth, text)


def _checks(items: str) -> list[Step]:
    names = [] if items.strip() == "nothing" else [x.strip() for x in items.split(",") if x.strip()]
    return [Step("dynamic", resolve=_check(n)) for n in names]


def _check(name: str) -> Resolver:
    """Click the checkbox or radio named `name` (whichever the page has)."""

    def resolve(ax: AXTree, agent: MiniWoBHeuristicAgent) -> str | None:
        for role in ("checkbox", "radio"):
            found = [e for e in ax.find(role, name) if e.ref]
            if found:
                return format_action("click", found[0].ref)
        return None

    return resolve


def _read_table(key: str) -> Resolver:
    """Fill the textbox with the cell next to the cell named `key`."""

    def resolve(ax: AXTree, agent: MiniWoBHeuristicAgent) -> str | None:
        cells = [e for e in ax.elements if e.role == "cell"]
        for i, c in enumerate(cells[:-1]):
            if c.name == key:
                box = _nth(ax, "textbox", None, 0)
                return format_action("fill", box.ref, cells[i + 1].name) if box else None
        return None

    return resolve


def _arithmetic(ax: AXTree, agent: MiniWoBHeuristicAgent) -> str | None:
    for e in ax.elements:
        m = re.fullmatch(r"\s*(-?\d+)\s*([-+*x/])\s*(-?\d+)\s*=\s*", e.value or e.name)
        if m:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            value = {"+": a + b, "-": a - b, "*": a * b, "x": a * b, "/": a // b if b else 0}[op]
            box = _nth(ax, "textbox", None, 0)
            return format_action("fill", box.ref, str(value)) if box else None
    return None


def _tree(target: str) -> Resolver:
    """navigate-tree: click the item named `target` if shown, else open the next folder not opened yet."""

    def resolve(ax: AXTree, agent: MiniWoBHeuristicAgent) -> str | None:
        named = [e for e in ax.elements if e.ref and e.role in ("generic", "listitem") and e.name == target]
        if not named:
            named = [e for e in ax.elements if e.ref and e.role == "generic" and e.value == target]
        if named:
            return format_action("click", named[0].ref)
        for e in ax.elements:
            label = e.name or e.value
            if e.ref and e.role == "generic" and label and label not in agent.opened:
                agent.opened.add(label)
                return format_action("click", e.ref)
        return None

    return resolve


_ORDINAL = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4}
_WIDGETS = {"button": "button", "checkbox": "checkbox", "radio": "radio", "text": "textbox", "textarea": "textbox"}

# (utterance pattern, plan from its match); first match wins
RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], list[Step]]]] = [
    (re.compile(r"Click the button\."), lambda m: [_click("button")]),
    (re.compile(r"Click button (\S+), then click button (\S+)\."), lambda m: [_click("button", m[1]), _click("button", m[2])]),
    (re.compile(r"Click button (\S+?)\.?"), lambda m: [_click("button", m[1])]),
    (re.compile(r'Click on the "(.*)" button\.'), lambda m: [_click("button", m[1])]),
    (re.compile(r'Close the dialog box by clicking the "x"\.'), lambda m: [_click("button", "Close")]),
    (
        re.compile(r'Click the button in the dialog box labeled "(.*)"\.'),
        lambda m: [_click("button", "Close" if m[1] == "x" else m[1])],  # the "x" is named "Close"
    ),
    (re.compile(r"Click on Tab #(\d+)\."), lambda m: [_click("link", f"Tab #{m[1]}")]),
    (re.compile(r'Click on a "(.*)" widget\.'), lambda m: [_click(_WIDGETS.get(m[1], m[1]))]),
    (re.compile(r"Expand the section below and click submit\."), lambda m: [_click("tab"), _click("button", "Submit")]),
    (re.compile(r"Focus into the textbox\."), lambda m: [_click("textbox")]),
    (re.compile(r"Focus into the (\w+) input textbox\."), lambda m: [_click("textbox", None, _ORDINAL.get(m[1], 0))]),
    (re.compile(r'Enter "(.*)" into the text field and press Submit\.'), lambda m: [_fill(m[1]), _click("button", "Submit")]),
    (
        re.compile(r'Type "(.*)" in all (lower|upper) case letters in the text input and press Submit\.'),
        lambda m: [_fill(m[1].lower() if m[2] == "lower" else m[1].upper()), _click("button", "Submit")],
    ),
    (
        re.compile(r'Enter the password "(.*)" into both text fields and press submit\.'),
        lambda m: [_fill(m[1], 0), _fill(m[1], 1), _click("button", "Submit")],
    ),
    (
        re.compile(r'Enter the username "(.*)" and the password "(.*)" into the text fields and press login\.'),
        lambda m: [_fill(m[1], 0), _fill(m[2], 1), _click("button", "Login")],
    ),
    (
        re.compile(r"Select (.*) from the list and click Submit\."),
        lambda m: [Step("select", "combobox", None, 0, m[1]), _click("button", "Submit")],
    ),
    (re.compile(r"Select (.*) and click Submit\."), lambda m: [*_checks(m[1]), _click("button", "Submit")]),
    (
        re.compile(r"Enter the value of (.*) into the text field and press Submit\."),
        lambda m: [Step("dynamic", resolve=_read_table(m[1])), _click("button", "Submit")],
    ),
    (
        re.compile(r"Solve the math problem and type your answer into the textbox\. Press submit when done\."),
        lambda m: [Step("dynamic", resolve=_arithmetic), _click("button", "Submit")],
    ),
    (
        re.compile(r'Navigate through the file tree\. Find and click on the folder or file named "(.*)"\.'),
        lambda m: [Step("dynamic", resolve=_tree(m[1]), repeat=True)],
    ),
]


def utterance_plan(utterance: str) -> list[Step] | None:
    """The plan for a MiniWoB utterance, or None when no rule knows its shape."""
    text = " ".join(utterance.split())
    for pattern, plan in RULES:
        m = pattern.fullmatch(text)
        if m:
            return plan(m)
    return None


def utterance(ax: AXTree) -> str | None:
    """MiniWoB's instruction: the page's level-1 heading (where the sandbox's miniwob app puts ``#query``)."""
    for e in ax.elements:
        if e.role == "heading" and e.attrs.get("level") == "1":
            return e.name
    return None


def _nth(ax: AXTree, role: str, name: str | None, nth: int) -> Element | None:
    found = [e for e in ax.find(role, name) if e.ref]
    return found[nth] if len(found) > nth else None


class MiniWoBHeuristicAgent:
    """Reads the MiniWoB utterance from the observation and follows the plan of the rule that matches it.

    When no rule matches, or a planned element is not on the page, it ends the episode with ``done("")``
    (a failure MiniWoB's reward agrees with), never a guess.
    """

    name = "miniwob-heuristic"

    def __init__(self, steps: Any = None, seed: int = 0) -> None:
        self.plan: list[Step] | None = None
        self.goal: str | None = None
        self.opened: set[str] = set()
        self._i = 0

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: TaskVariant | None) -> None:
        self.goal = utterance(parse_snapshot(obs["axtree"]))
        self.plan = utterance_plan(self.goal) if self.goal else None
        self.opened = set()
        self._i = 0

    def act(self, obs: dict[str, Any]) -> str:
        if self.plan is None:
            return 'done("")'
        ax = parse_snapshot(obs["axtree"])
        while self._i < len(self.plan):
            step = self.plan[self._i]
            if step.op == "dynamic":
                assert step.resolve is not None
                action = step.resolve(ax, self)
                if action is None or not step.repeat:
                    self._i += 1
                if action is not None:
                    return action
                continue
            self._i += 1
            el = _nth(ax, step.role, step.name, step.nth)
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
