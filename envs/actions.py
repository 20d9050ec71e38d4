"""The action language and its parser.

One action per step, written as a call::

    click(e12)            fill(e5, "text")       select(e8, "Blue")     press("Enter")
    scroll("down")        goto("http://…")       back()                 wait()
    upload(e3, "report.csv")                      done("answer")
    click(120, 48)        hover(e4)              hover(300, 200)
    drag(e3, e7)          drag(e3, 200, 40)      drag(10, 20, 200, 40)  drag(10, 10, 50, 10, 50, 50)

``upload`` sets a file input to a file of the episode's own directory (a path relative to it).

The pointer verbs take an element id or a point ``x, y`` in CSS pixels of the viewport (``[box=x,y,w,h]``
in an observation made with ``obs_boxes``; the screenshot's pixels). ``drag(from, to)`` takes each end as
an id or a point; with points only, 2 to `MAX_DRAG_POINTS` of them are a path the pressed mouse follows
(drawing). A drag presses, moves and releases the mouse within the one action: no button stays held
between steps.

Element ids are the ``[ref=…]`` ids of the observation (``e12``; ``f1e12`` in an iframe). The parser digs the action out of LLM output:
an ``Action:`` line wins, then the last fenced code block, then the last call in the text. It never
raises on bad input from the agent: :func:`parse_action` returns an :class:`ActionError` that the env
turns into an error observation.

Other envs speak a different set of calls through ``signatures=`` (name -> argument kinds, or a list of
alternative kind tuples); kinds are ``"id"``, ``"str"`` and ``"int"``. The desktop env's language::

    >>> desk = {"click": [("id",), ("int", "int")], "key": ("str",), "done": ("str",)}
    >>> str(parse_action("Action: click(120, 48)", signatures=desk))
    'click(120, 48)'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: the most points of a drag's path (drawing); two is a plain drag
MAX_DRAG_POINTS = 16
_POINT = ("int", "int")

# name -> argument kinds, or a list of alternatives; "id" is an element id, "str" a string, "int" an integer
# (a pointer verb's x or y). done() takes an optional answer.
SIGNATURES: dict[str, tuple[str, ...] | list[tuple[str, ...]]] = {
    "click": [("id",), _POINT],
    "hover": [("id",), _POINT],
    "drag": [("id", "id"), ("id", *_POINT), (*_POINT, "id"), *[_POINT * n for n in range(2, MAX_DRAG_POINTS + 1)]],
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
#: the longest action text an env takes (its action space's `max_length`); a longer one is an error at once
MAX_ACTION_CHARS = 10_000
_HELP = ('click(id) or click(x, y), fill(id, "text"), select(id, "option"), press("Key"), scroll("down"), '
         'goto("url"), back(), wait(), upload(id, "file"), hover(id) or hover(x, y), drag(from, to), done("answer")')
#: what a call of these verbs with the wrong arguments is told (after the reason, if one form came close):
#: listing every alternative would not help
_USAGE = {**{v: (f"{v}() takes an element id ({v}(e12)) or a point x, y in CSS pixels of the viewport "
                    f"({v}(120, 48))") for v in ("click", "hover")},
          "drag": (f"drag(from, to) takes each end as an element id or an x, y point (drag(e3, e7), drag(e3, 200, 40), "
                   f"drag(10, 20, 200, 40)), or a path of 2 to {MAX_DRAG_POINTS} points (x1, y1, x2, y2, ...)")}

_CALL = re.compile(r"\b(" + "|".join(SIGNATURES) + r")\s*\(")
_ID = re.compile(r"^\[?(?:ref\s*=\s*)?[\"']?((?:f\d+)?e\d+)[\"']?\]?$")
# possessive (*+): without a closing fence, backtracking over a long tag or blank run was quadratic
_FENCE = re.compile(r"```[a-zA-Z]*+\s*+(.*?)```", re.S)
# [ \t], not \s: a \s* at every line start would run over all the following blank lines (quadratic)
_ACTION_LINE = re.compile(r"^[ \t]*(?:\*\*)?action(?:\*\*)?[ \t]*:[ \t]*(.+)$", re.I | re.M)
_INT = re.compile(r"^[+-]?\d+$")
_ID_ONLY = re.compile(r"^(?:f\d+)?e\d+$")

Signatures = Mapping[str, "tuple[str, ...] | list[tuple[str, ...]]"]
_KIND_WORDS = {"id": "element id", "str": "text", "int": "integer"}


@dataclass(frozen=True)
class Action:
    name: str
    args: tuple[str, ...] = ()
    #: the argument kinds this action was parsed with (None: the browser's SIGNATURES)
    kinds: tuple[str, ...] | None = field(default=None, compare=False)

    def _kinds(self) -> tuple[str, ...]:
        return self.kinds if self.kinds is not None else _browser_kinds(self.name, self.args)

    @property
    def arg_kinds(self) -> tuple[str, ...]:
        """The kinds of the arguments, in order (which form of a verb with alternatives this is)."""
        return self._kinds()

    @property
    def target(self) -> str | None:
        return self.args[0] if self.args and self._kinds()[:1] == ("id",) else None

    def __str__(self) -> str:
        return format_action(self)


@dataclass(frozen=True)
class ActionError:
    """Why an action string could not be parsed. `str()` is the message shown to the agent."""

    message: str

    def __str__(self) -> str:
        return self.message


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_action(action: Action | str, *args: str | int, kinds: tuple[str, ...] | None = None) -> str:
    """The text of an action: the exact inverse of `parse_action` (``parse_action(format_action(a)) == a``).

    Every writer of action text uses it (agents, the probe, tests): text arguments are quoted with their
    backslashes, quotes and newlines escaped. `kinds` default to the browser's `SIGNATURES` for a call of
    that arity, else to each argument's type (``int`` -> "int", ``str`` -> "str").

    >>> format_action("fill", "e5", 'say "hi"\\nbye')
    'fill(e5, "say \\\\"hi\\\\"\\\\nbye")'
    >>> format_action("click", 120, 48)
    'click(120, 48)'
    """
    if isinstance(action, Action):
        name, values, kinds = action.name, action.args, action._kinds()
    else:
        name, values = action, args
        if kinds is None:
            known = _browser_kinds(name, tuple(str(v) for v in values)) if name in SIGNATURES else None
            kinds = known if known is not None and len(known) == len(values) else tuple(
                "int" if isinstance(v, int) else "str" for v in values)
    if len(kinds) != len(values):
        raise ValueError(f"{name}(): {len(values)} argument(s) for kinds {kinds}")
    parts = []
    for v, k in zip(values, kinds, strict=True):
        if k == "id" and not _ID_ONLY.match(str(v)):
            raise ValueError(f"{name}(): {v!r} is not an element id (ids look like e12)")
        if k == "int" and not _INT.match(str(v)):
            raise ValueError(f"{name}(): {v!r} is not an integer")
        parts.append(str(v) if k in ("id", "int") else _quote(str(v)))
    return f"{name}({', '.join(parts)})"


def _browser_kinds(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """The kinds of a browser call with these values: the alternative of that arity whose ids and integers
    the values are (the first of that arity if none is)."""
    alts = _BROWSER[name]
    fitting = [k for k in alts if len(k) == len(values)]
    for kinds in fitting:
        if all(k == "str" or (_ID_ONLY if k == "id" else _INT).match(v) for k, v in zip(kinds, values, strict=True)):
            return kinds
    return fitting[0] if fitting else alts[0]


@functools.cache
def _language(items: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]) -> tuple[re.Pattern, str]:
    """The call regex and the help text of a custom signature set."""
    call = re.compile(r"\b(" + "|".join(re.escape(n) for n, _ in items) + r")\s*\(")
    forms = []
    for name, alts in items:
        forms.append(" or ".join(f"{name}({', '.join(_KIND_HELP[k] for k in kinds)})" for kinds in alts))
    return call, ", ".join(forms)


_KIND_HELP = {"id": "id", "str": '"text"', "int": "n"}


def _normalise(signatures: Signatures) -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
    return tuple((n, tuple(k) if isinstance(k, list) else (k,)) for n, k in signatures.items())


_BROWSER = dict(_normalise(SIGNATURES))


def parse_action(
    text: str, signatures: Signatures | None = None, *, max_chars: int | None = None
) -> Action | ActionError:
    """Parse one action out of `text` (raw LLM output is fine). Never raises; linear in ``len(text)``.

    `signatures` (name -> argument kinds, or a list of alternatives) replaces the browser's language. A
    text longer than `max_chars` (the envs pass `MAX_ACTION_CHARS`) is an error before any parsing."""
    if isinstance(text, str) and max_chars is not None and len(text) > max_chars:
        return ActionError(f"the action is {len(text)} characters long, over the limit of {max_chars}; "
                           "send one short action")
    if signatures is None:
        sigs, call, help_, usage = _BROWSER, _CALL, _HELP, _USAGE
    else:
        items = _normalise(signatures)
        sigs, (call, help_), usage = dict(items), _language(items), {}
    if not isinstance(text, str):
        return ActionError(f"the action must be a string, got {type(text).__name__}")
    if not text.strip():
        return ActionError(f"empty action; write one of: {help_}")
    whole = text.strip()
    m = call.match(whole)
    if m:  # a text that is exactly one call is that call (what `format_action` writes)
        result, end = _parse_call(m.group(1), whole, m.end(), sigs[m.group(1)], usage)
        if isinstance(result, Action) and end == len(whole):
            return result
    first_error: ActionError | None = None
    for source in _candidates(text):
        calls, pos = [], 0
        while m := call.search(source, pos):
            result, end = _parse_call(m.group(1), source, m.end(), sigs[m.group(1)], usage)
            if isinstance(result, Action):
                calls.append(result)
                pos = end  # a call written inside this call's text arguments is not a call
            else:
                first_error = first_error or result
                pos = m.end()
        if calls:
            return calls[-1]
    # Nothing parsed: report the most useful reason.
    if first_error is not None:
        return first_error
    snippet = text.strip().replace("\n", " ")
    snippet = snippet[:80] + ("…" if len(snippet) > 80 else "")
    return ActionError(f"no action found in {snippet!r}; write one of: {help_}")


def _candidates(text: str) -> list[str]:
    """Places to look, most specific first."""
    out = [m.group(1) for m in _ACTION_LINE.finditer(text)][-1:]
    out += [m.group(1) for m in _FENCE.finditer(text)][-1:]
    out.append(text)
    return out


def _parse_call(
    name: str, source: str, pos: int, alternatives: tuple[tuple[str, ...], ...], usage: Mapping[str, str]
) -> tuple[Action | ActionError, int]:
    """Parse the argument list that starts at source[pos] (just after the '('); also returns where it ends."""
    raw_args, end = _split_args(source, pos)
    if end == -2:
        return ActionError(f"{name}(…: an unquoted '(' in its arguments (quote text arguments)"), end
    if end < 0:
        return ActionError(f"{name}(…: missing closing parenthesis"), end
    return _parse_arg_list(name, raw_args, alternatives, usage.get(name)), end


def _parse_arg_list(
    name: str, raw_args: list[str], alternatives: tuple[tuple[str, ...], ...], usage: str | None = None
) -> Action | ActionError:
    result: Action | ActionError | None = None
    for kinds in alternatives:
        given = raw_args
        if name in OPTIONAL_LAST and len(given) == len(kinds) - 1:
            given = [*given, '""']
        if len(given) != len(kinds):
            continue
        result = _parse_args(name, given, kinds)
        if isinstance(result, Action):
            return Action(name, result.args, kinds)
    if result is not None:
        return ActionError(f"{result}; {usage}") if usage is not None else result
    if usage is not None:
        return ActionError(f"{usage}; got {len(raw_args)} argument(s)")
    if len(alternatives) == 1:
        kinds = alternatives[0]
        want = ", ".join(_KIND_WORDS[k] for k in kinds) or "no arguments"
        return ActionError(f"{name}() takes {len(kinds)} argument(s) ({want}), got {len(raw_args)}")
    forms = " or ".join(f"({', '.join(_KIND_WORDS[k] for k in kinds)})" for kinds in alternatives)
    return ActionError(f"{name}() takes {forms}, got {len(raw_args)} argument(s)")


def _parse_args(name: str, raw_args: list[str], kinds: tuple[str, ...]) -> Action | ActionError:
    args: list[str] = []
    for raw, kind in zip(raw_args, kinds, strict=True):
        if kind == "int":
            if not _INT.match(raw.strip()):
                return ActionError(f"{name}(): {raw.strip()!r} is not an integer")
            args.append(str(int(raw.strip())))
        elif kind == "id":
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
    """Split a comma-separated argument list honouring quotes; returns (args, index after ')'), or -1 when
    it never closes, -2 at an unquoted '('.

    An unquoted '(' ends the scan as a failure: no argument kind may hold one, and stopping there keeps
    `parse_action` linear (``'click(' * n`` scanned every later call's text once per call: quadratic)."""
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
        elif c == "(":
            return [], -2
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
