"""The action language parser: LLM output in, one action or an error message out; never an exception."""

import pytest
from agentrl.envs.actions import Action, ActionError, parse_action


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
        ("click()", "takes 1 argument"),
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
