"""The action language parser: LLM output in, one action or an error message out; never an exception."""

import random

import pytest
from agentrl.envs.actions import (
    MAX_ACTION_CHARS,
    SCROLL_DIRECTIONS,
    SIGNATURES,
    Action,
    ActionError,
    format_action,
    parse_action,
)
from agentrl.envs.desktop import DESKTOP_SIGNATURES


@pytest.mark.parametrize(
    "text, expected",
    [
        ("click(e12)", "click(e12)"),
        ("  click( e12 )  ", "click(e12)"),
        ('click("e12")', "click(e12)"),
        ("click([e12])", "click(e12)"),
        ("click(ref=e3)", "click(e3)"),
        ("click(f1e57)", "click(f1e57)"),
        ('fill(e5, "hello, world")', 'fill(e5, "hello, world")'),
        ("fill(e5, 'single quotes')", 'fill(e5, "single quotes")'),
        (r'fill(e5, "say \"hi\"")', r'fill(e5, "say \"hi\"")'),
        ('select(e8, "Blue")', 'select(e8, "Blue")'),
        ('press("Enter")', 'press("Enter")'),
        ("press(Enter)", 'press("Enter")'),
        ('scroll("Down")', 'scroll("down")'),
        ('goto("/reports/")', 'goto("/reports/")'),
        ("back()", "back()"),
        ("wait()", "wait()"),
        ('done("42")', 'done("42")'),
        ("done()", 'done("")'),
        # LLM output: prose, fences, Action: lines
        ("I will open the report.\nAction: click(e7)", "click(e7)"),
        ("Thinking... maybe click(e1)?\n```python\nclick(e9)\n```", "click(e9)"),
        ("First click(e1), no wait, click(e2)", "click(e2)"),
        ("**Action:** fill(e4, \"x\")", 'fill(e4, "x")'),
        # a call inside a text argument is text, not a second call
        ('Action: fill(e4, "then click(e2)")', 'fill(e4, "then click(e2)")'),
        ('done("```click(e9)```")', 'done("```click(e9)```")'),
    ],
)
def test_parses(text: str, expected: str) -> None:
    a = parse_action(text)
    assert isinstance(a, Action), a
    assert str(a) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty action"),
        ("   ", "empty action"),
        ("hello there", "no action found"),
        ("click()", "click() takes an element id (click(e12)) or a point x, y"),
        ("click(12)", "is not an element id"),
        ("click(button)", "is not an element id"),
        ("fill(e5)", "takes 2 argument"),
        ('scroll("sideways")', "direction must be one of"),
        ('goto("http://x"', "missing closing parenthesis"),
        ('press("")', "empty"),
        ("rm -rf /; __import__('os')", "no action found"),
        ("\x00\x01\x02", "no action found"),
    ],
)
def test_errors_are_values_with_reasons(text: str, message: str) -> None:
    a = parse_action(text)
    assert isinstance(a, ActionError)
    assert message in str(a)


def test_non_string_is_an_error_not_an_exception() -> None:
    assert isinstance(parse_action(None), ActionError)  # type: ignore[arg-type]
    assert isinstance(parse_action(42), ActionError)  # type: ignore[arg-type]


def test_round_trip() -> None:
    for a in [Action("fill", ("e1", 'a "quoted"\nline')), Action("done", ("x\\y",)), Action("click", ("e3",))]:
        assert parse_action(str(a)) == a


# Text arguments drawn from the characters that break hand-written quoting: quotes, backslashes, newlines,
# tabs, parentheses, commas, backticks, the action words themselves, and non-ASCII text.
_PIECES = ['"', "'", "\\", "\n", "\r", "\t", "(", ")", ",", "```", "Action: ", "click(e2)", "done()", "\\n",
           "é", "日本語", "🙂", "Ω", " ", "a", "Z", "42", "-", "\u200b", "`", "[ref=e1]"]


def _text(rng: random.Random, nonempty: bool = False) -> str:
    s = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 8)))
    return s or ("x" if nonempty else s)


def _arg(rng: random.Random, kind: str, name: str) -> str:
    if kind == "id":
        return rng.choice(["", f"f{rng.randint(0, 9)}"]) + f"e{rng.randint(0, 9999)}"
    if kind == "int":
        return str(rng.randint(-50, 5000))
    if name == "scroll":
        return rng.choice(SCROLL_DIRECTIONS)
    return _text(rng, nonempty=name in ("press", "goto", "upload", "key", "type", "focus"))


@pytest.mark.parametrize("language", ["browser", "desktop"])
def test_format_action_round_trips_parse_action(language: str) -> None:
    """parse_action(format_action(a)) == a over thousands of actions, unicode and newlines included."""
    sigs = SIGNATURES if language == "browser" else DESKTOP_SIGNATURES
    rng = random.Random(16)
    for _ in range(3000):
        name = rng.choice(sorted(sigs))
        alts = sigs[name] if isinstance(sigs[name], list) else [sigs[name]]
        kinds = rng.choice(alts)
        a = Action(name, tuple(_arg(rng, k, name) for k in kinds), kinds)
        text = format_action(a)
        back = parse_action(text) if language == "browser" else parse_action(text, signatures=sigs)
        assert back == a, (a, text, back)
        assert "\n" not in text  # one action, one line
        assert format_action(name, *a.args, kinds=kinds) == text == str(a)


def test_format_action_refuses_what_parse_action_would_not_read_back() -> None:
    with pytest.raises(ValueError, match="not an element id"):
        format_action("click", "Save")
    with pytest.raises(ValueError, match="argument"):
        format_action("fill", "e1", "a", kinds=("id",))
    assert format_action("click", 120, 48) == "click(120, 48)"
    assert format_action("key", "ctrl+s") == 'key("ctrl+s")'


@pytest.mark.parametrize(
    "text, message",
    [
        ("click(" * 1666, "an unquoted '('"),
        ('click("' * 1428, "an unquoted '('"),
        ("click(e1," * 1111, "an unquoted '('"),
        ("x" + "\n " * 4999 + "x", "no action found"),
        ("```" + " " * 9997, "no action found"),
        ('fill(e1, "' + "a" * 9990, "missing closing parenthesis"),
    ],
)
def test_hostile_degenerate_replies_parse_in_linear_time(text: str, message: str) -> None:
    """What an LLM looping on one token sends, at the action limit: an error with the reason (these took
    0.6-1.5 s each before the parser stopped at unquoted parentheses; benchmarks/parse_action_speed.py)."""
    got = parse_action(text, max_chars=MAX_ACTION_CHARS)
    assert isinstance(got, ActionError) and message in str(got), str(got)[:200]


def test_hostile_action_over_the_limit_is_an_error_before_parsing() -> None:
    text = "click(e1)" + " " * MAX_ACTION_CHARS
    got = parse_action(text, max_chars=MAX_ACTION_CHARS)
    assert isinstance(got, ActionError) and f"over the limit of {MAX_ACTION_CHARS}" in str(got)
    assert parse_action(text) == Action("click", ("e1",))  # without a limit, the same text parses
    assert parse_action("done(f(x))") == ActionError("done(…: an unquoted '(' in its arguments (quote text arguments)")
    assert parse_action('done("f(x)")') == Action("done", ("f(x)",))
