"""What the policy may say on a page, and how it sees the page: the action space of training and evaluation.

Two modes:

* ``candidates``: the env lists valid action strings and the policy samples among them (constrained
  decoding; one loss unit per turn). Clicks on every element with a role in ``click_roles``; with
  ``typing``, also ``fill`` for every text box with each value of the goal, and ``select`` for every
  option of a drop-down; with ``answers``, ``done("v")`` for each value of the goal and the page; then
  the fixed ``extra`` actions.
* ``free``: the policy writes its reply and the env parses it (one loss unit per sampled token). A reply
  that does not parse is an error observation, counted and optionally penalised (``parse_error_penalty``
  in the train config).

Values of the goal are its quoted strings, then its other words that are not English function words, in
order (the candidate set does not know which one the task wants: telling them apart is the policy's job).

>>> from agentrl.envs.axtree import parse_snapshot
>>> tree = parse_snapshot('- main [ref=e1]:\\n  - textbox "City" [ref=e2]\\n  - button "Submit" [ref=e3]')
>>> space = ActionSpace(click_roles=("button",), typing=True, described=True)
>>> space.candidates(tree, "Enter Oslo in the City box")
['button "Submit" -> click(e3)', 'textbox "City" -> fill(e2, "Enter")', 'textbox "City" -> fill(e2, "Oslo")', 'textbox "City" -> fill(e2, "City")', 'textbox "City" -> fill(e2, "box")']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentrl.envs.actions import Action
from agentrl.envs.axtree import AXTree

MODES = ("candidates", "free")
FILL_ROLES = ("textbox", "searchbox")
SELECT_ROLES = ("combobox", "listbox")
MAX_VALUES = 12  # goal values offered per field (the longest instructions have about this many content words)
MAX_ANSWERS = 24  # page values offered to done()
_STOPWORDS = frozenset(
    "a an the in on at to of and or with as for then from into by is it its this that be your you"
    " all any each one two".split()
)
_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|\'([^\'\n]+)\'(?!\w)')
_WORD = re.compile(r"[\w@+-][\w@.+'/:-]*[\w@]|[\w@]")


def goal_values(goal: str, limit: int = MAX_VALUES) -> list[str]:
    """Quoted strings of the goal, then its content words (no function words), first occurrences in order.

    >>> goal_values('Sign in as alice with the password "hunter 2".')
    ['hunter 2', 'Sign', 'alice', 'password']
    """
    quoted = [next(g for g in m.groups() if g) for m in _QUOTED.finditer(goal)]
    rest = _QUOTED.sub(" ", goal)
    words = [w for w in _WORD.findall(rest) if w.lower() not in _STOPWORDS]
    return list(dict.fromkeys([*quoted, *words]))[:limit]


def page_values(tree: AXTree, limit: int = MAX_ANSWERS) -> list[str]:
    """Short texts of the page an answer could be: cell, text and heading names (first occurrences)."""
    out = [e.name or e.value for e in tree.elements if e.role in ("cell", "gridcell", "text", "heading", "paragraph")]
    return list(dict.fromkeys(v.strip() for v in out if v and v.strip() and len(v.strip()) <= 40))[:limit]


def _options(tree: AXTree, at: int) -> list[str]:
    """The option names listed under the element at index ``at`` (deeper lines right after it)."""
    host, out = tree.elements[at], []
    for e in tree.elements[at + 1 :]:
        if e.depth <= host.depth:
            break
        if e.role == "option" and e.name:
            out.append(e.name)
    return out


@dataclass(frozen=True)
class ActionSpace:
    mode: str = "candidates"
    click_roles: tuple[str, ...] = ("button", "link")
    extra: tuple[str, ...] = ()
    described: bool = False  # each candidate as `role "name" -> call`: the choice shows in its first tokens
    typing: bool = False  # fill / select candidates
    answers: bool = False  # done("value") candidates
    observation: str = "axtree"  # "axtree", "text" or "compact"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"actions must be one of {', '.join(map(repr, MODES))}, not {self.mode!r}")
        if self.observation not in ("axtree", "text", "compact"):
            raise ValueError(f"observation must be 'axtree', 'text' or 'compact', got {self.observation!r}")
        object.__setattr__(self, "click_roles", tuple(self.click_roles))
        object.__setattr__(self, "extra", tuple(self.extra))

    @property
    def free(self) -> bool:
        return self.mode == "free"

    @property
    def view_roles(self) -> tuple[str, ...]:
        """Roles the compact view lists: the clickable ones, and the fields where the policy can type."""
        typed = self.typing or self.free
        return self.click_roles + (tuple(r for r in FILL_ROLES + SELECT_ROLES if r not in self.click_roles) if typed else ())

    def view(self, obs: dict[str, Any], tree: AXTree) -> str:
        if self.observation == "compact":
            return compact_observation(tree, self.view_roles)
        return obs[self.observation]

    def candidates(self, tree: AXTree, goal: str = "") -> list[str]:
        """Valid actions for the page, in a stable order (clicks, fills, selects, answers, extras)."""
        out: list[str] = []
        for i, e in enumerate(tree.elements):
            if not e.ref:
                continue
            if e.role in self.click_roles:
                out.append(self._write(e.role, e.name, Action("click", (e.ref,))))
            if self.typing and e.role in FILL_ROLES:
                out += [self._write(e.role, e.name, Action("fill", (e.ref, v))) for v in goal_values(goal)]
            if self.typing and e.role in SELECT_ROLES:
                out += [self._write(e.role, e.name, Action("select", (e.ref, o))) for o in _options(tree, i)]
        if self.answers:
            out += [str(Action("done", (v,))) for v in dict.fromkeys([*goal_values(goal), *page_values(tree)])]
        return list(dict.fromkeys([*out, *self.extra]))

    def _write(self, role: str, name: str, action: Action) -> str:
        return f'{role} "{name}" -> {action}' if self.described else str(action)

    @classmethod
    def of(cls, cfg: Any) -> ActionSpace:
        """The action space a train config (``TrainConfig`` or an offline config) describes."""
        return cls(
            mode=cfg.actions, click_roles=tuple(cfg.click_roles), extra=tuple(cfg.extra_actions),
            described=cfg.described_actions, typing=cfg.typing_candidates, answers=cfg.answer_candidates,
            observation=cfg.observation,
        )


def candidate_actions(
    tree: AXTree, click_roles: Sequence[str], extra: Sequence[str] = (), *, described: bool = False
) -> list[str]:
    """Clicks for each element whose role is in ``click_roles``, then extras (``ActionSpace`` without typing).

    ``described=True`` writes each click as ``role "name" -> click(ref)``: the policy names its target
    before the call, and the action parser takes the last call in the text, so the env gets ``click(ref)``.
    The choice then shows in the candidate's own first tokens (``button ...``) instead of only in which
    digits it copies from the prompt, which a small model learns far faster (docs/training.md).

    >>> from agentrl.envs.axtree import parse_snapshot
    >>> tree = parse_snapshot('- main [ref=e1]:\\n  - button "Save" [ref=e2]')
    >>> candidate_actions(tree, ["button"]), candidate_actions(tree, ["button"], described=True)
    (['click(e2)'], ['button "Save" -> click(e2)'])
    """
    return ActionSpace(click_roles=tuple(click_roles), extra=tuple(extra), described=described).candidates(tree)


def compact_observation(tree: AXTree, roles: Sequence[str]) -> str:
    """One line per actionable element, role first: ``role ref "name"`` (a short, uniform view of the tree);
    a field shows its value after a colon.

    >>> from agentrl.envs.axtree import parse_snapshot
    >>> compact_observation(parse_snapshot('- main [ref=e1]:\\n  - button "Save" [ref=e2]'), ["button"])
    'button e2 "Save"'
    """
    return "\n".join(
        f'{e.role} {e.ref} "{e.name}"' + (f": {e.value}" if e.value and e.role in FILL_ROLES else "")
        for e in tree.elements
        if e.ref and e.role in roles
    )
