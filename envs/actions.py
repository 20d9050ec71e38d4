"""The action language and its parser.

One action per step, written as a call::

    click(e12)            fill(e5, "text")       select(e8, "Blue")     press("Enter")
    scroll("down")        goto("http://…")       back()                 wait()
    upload(e3, "report.csv")                      done("answer")

``upload`` sets a file input to a file of the episode's own directory (a path relative to it).

Element ids are the ``[ref=…]`` ids of the observation (``e12``; ``f1e12`` after a navigation). The parser digs the action out of LLM output:
an ``Action:`` line wins, then the last fenced code block, then the last call in the text. It never
raises on bad input from the agent: :func:`parse_action` returns an :class:`ActionError` that the env
turns into an error observation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# name -> (argument kinds); "id" is an element id, "str" a string. done() takes an optional answer.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "click": ("id",),
    "fill": ("id", "str"),
    "select": ("id", "str"),
    "press": ("str",),
    "scroll": ("str",),
    "goto": ("str",),
    "back": (),
    "wait": (),
    "upload": ("id", "str"),
    "done": ("str",),
}
OPTIONAL_LAST = {"done"}  # done() and done("answer") are both fine
SCROLL_DIRECTIONS = ("up", "down", "left", "right")
_HELP = 'click(id), fill(id, "text"), select(id, "option"), press("Key"), scroll("down"), goto("url"), back(), wait(), upload(id, "file"), done("answer")'

_CALL = re.compile(r"\b(" + "|".join(SIGNATURES) + r")\s*\(")
_ID = re.compile(r"^\[?(?:ref\s*=\s*)?[\"']?((?:f\d+)?e\d+)[\"']?\]?$")
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)
_ACTION_LINE = re.compile(r"^\s*(?:\*\*)?action(?:\*\*)?\s*:\s*(.+)$", re.I | re.M)


@dataclass(frozen=True)
class Action:
    name: str
    args: tuple[str, ...] = ()

    @property
    def target(self) -> str | None:
        return self.args[0] if self.args and SIGNATURES[self.name][:1] == ("id",) else None

    def __str__(self) -> str:
        parts = [a if k == "id" else _quote(a) for a, k in zip(self.args, SIGNATURES[self.name], strict=False)]
        return f"{self.name}({', '.join(parts)})"


@dataclass(frozen=True)
class ActionError:
    """Why an action string could not be parsed. `str()` is the message shown to the agent."""

    message: str

    def __str__(self) -> str:
        return self.message


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def parse_action(text: str) -> Action | ActionError:
    """Parse one action out of `text` (raw LLM output is fine). Never raises."""
    if not isinstance(text, str):
        return ActionError(f"the action must be a string, got {type(text).__name__}")
    if not text.strip():
        return ActionError(f"empty action; write one of: {_HELP}")
    first_error: ActionError | None = None
    for source in _candidates(text):
        parsed = [_parse_call(m.group(1), source, m.end()) for m in _CALL.finditer(source)]
        calls = [p for p in parsed if isinstance(p, Action)]
        if calls:
            return calls[-1]
        first_error = first_error or next((p for p in parsed if isinstance(p, ActionError)), None)
    # Nothing parsed: report the most useful reason.
    if first_error is not None:
        return first_error
    snippet = text.strip().replace("\n", " ")
    snippet = snippet[:80] + ("…" if len(snippet) > 80 else "")
    return ActionError(f"no action found in {snippet!r}; write one of: {_HELP}")


def _candidates(text: str) -> list[str]:
    """Places to look, most specific first."""
    out = [m.group(1) for m in _ACTION_LINE.finditer(text)][-1:]
    out += [m.group(1) for m in _FENCE.finditer(text)][-1:]
    out.append(text)
    return out


def _parse_call(name: str, source: str, pos: int) -> Action | ActionError:
    """Parse the argument list that starts at source[pos] (just after the '(')."""
    raw_args, end = _split_args(source, pos)
    if end < 0:
        return ActionError(f"{name}(…: missing closing parenthesis")
    kinds = SIGNATURES[name]
    if name in OPTIONAL_LAST and len(raw_args) == len(kinds) - 1:
        raw_args = [*raw_args, '""']
    if len(raw_args) != len(kinds):
        want = ", ".join("element id" if k == "id" else "text" for k in kinds) or "no arguments"
        return ActionError(f"{name}() takes {len(kinds)} argument(s) ({want}), got {len(raw_args)}")
    args: list[str] = []
    for raw, kind in zip(raw_args, kinds, strict=True):
        if kind == "id":
            m = _ID.match(raw.strip())
            if not m:
                return ActionError(f"{name}(): {raw.strip()!r} is not an element id (ids look like e12)")
            args.append(m.group(1))
        else:
            value = _unquote(raw.strip())
            if value is None:
                return ActionError(f"{name}(): could not read the text argument {raw.strip()!r}")
            args.append(value)
    if name == "scroll":
        if args[0].lower() not in SCROLL_DIRECTIONS:
            return ActionError(f"scroll(): direction must be one of {', '.join(SCROLL_DIRECTIONS)}, got {args[0]!r}")
        args[0] = args[0].lower()
    if name in ("press", "goto") and not args[0]:
        return ActionError(f"{name}(): the argument is empty")
    if name == "upload" and not args[1]:
        return ActionError("upload(): the file name is empty")
    return Action(name, tuple(args))


def _split_args(s: str, pos: int) -> tuple[list[str], int]:
    """Split a comma-separated argument list honouring quotes; returns (args, index after ')') or -1."""
    args: list[str] = []
    cur: list[str] = []
    quote: str | None = None
    i = pos
    while i < len(s):
        c = s[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(s):
                cur.append(s[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
            cur.append(c)
        elif c == ",":
            args.append("".join(cur))
            cur = []
        elif c == ")":
            last = "".join(cur)
            if last.strip() or args:
                args.append(last)
            return args, i + 1
        else:
            cur.append(c)
        i += 1
    return [], -1


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "'": "'", "\\": "\\"}


def _unquote(raw: str) -> str | None:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        body, out, i = raw[1:-1], [], 0
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body):
                out.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)
    if raw and not any(c in raw for c in "\"'()"):
        return raw  # bare word: press(Enter), scroll(down)
    return None
