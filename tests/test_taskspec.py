"""Task files: every problem reported with file, line and field; templating per seed."""

from pathlib import Path
from textwrap import dedent

import pytest

from agentrl.taskspec import load_task
from agentrl.yamlpos import TaskFileError

GOOD = """\
id: demo
instruction: "Open {{report_title}} and say {{color}} {{n}}"
start: {app: reports, path: /reports/}
variables:
  color: {choice: [red, blue, green]}
  n: {int: [1, 9]}
milestones:
  - id: opened
    detector: url_matches
    params: {pattern: "/reports/{{report_slug}}$"}
    category: nav
  - id: answered
    detector: answer_matches
    params: {equals: "{{total}}"}
    category: goal
    after: [opened]
oracle:
  - click: {role: link, name: "{{report_title}}"}
  - done: "{{total}}"
"""

FACTS = {"reports": {"report_title": "Sales (Q1)", "report_slug": "sales-q1", "total": "1,234"}}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "task.yaml"
    p.write_text(dedent(text))
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(TaskFileError) as e:
        load_task(write(tmp_path, text))
    return e.value.problems


def test_good_task_renders_per_seed(tmp_path: Path) -> None:
    spec = load_task(write(tmp_path, GOOD))
    v = spec.render(3, FACTS)
    assert v.instruction.startswith("Open Sales (Q1) and say ")
    assert v.variables["color"] in ("red", "blue", "green") and 1 <= int(v.variables["n"]) <= 9
    # template values inserted into regex parameters are escaped; into plain strings they are not
    assert v.milestones[0].params["pattern"] == r"/reports/sales\-q1$"
    assert v.milestones[1].params["equals"] == "1,234"
    assert v.oracle[0].click.name == "Sales (Q1)"
    # same seed, same variant; the variables vary across seeds
    assert spec.render(3, FACTS).instruction == v.instruction
    assert len({spec.render(s, FACTS).instruction for s in range(30)}) > 5


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("detector: url_matches", "detector: url_matchs", ":9: milestones[0].detector: unknown detector 'url_matchs' (did you mean 'url_matches'?)"),
        ("category: nav", "category: navigation", ":11: milestones[0].category: Input should be"),
        ("    after: [opened]", "    after: [openned]", ":16: milestones[1].after[0]: unknown milestone 'openned' (did you mean 'opened'?)"),
        ("params: {pattern:", "params: {patern:", ":10: milestones[0].params.patern: unknown parameter 'patern' for detector url_matches (did you mean 'pattern'?)"),
        ("n: {int: [1, 9]}", "n: {int: [9, 1]}", ":6: variables.n: 'int' must be [lo, hi]"),
        ("  - done: \"{{total}}\"", "  - finish: now", ":19: oracle[1].finish: unknown field 'finish'"),
        ("start: {app: reports, path: /reports/}", "start: {app: reports, path: reports}", ":3: start.path: path must start with '/'"),
        ("instruction:", "instructions:", ":2: instructions: unknown field 'instructions' (did you mean 'instruction'?)"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = problems(tmp_path, GOOD.replace(old, new))
    path = str(tmp_path / "task.yaml")
    assert any(p.startswith(path) and expected in p for p in found), found


def test_fail_on_names_a_milestone_that_success_does_not_need(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace("oracle:", "fail_on: [openned]\noracle:"))
    assert any(":17: fail_on[0]: unknown milestone 'openned' (did you mean 'opened'?)" in p for p in found), found
    found = problems(tmp_path, GOOD.replace("oracle:", "fail_on: [answered]\noracle:"))
    assert any(":17: fail_on[0]: milestone 'answered' is needed for success" in p for p in found), found
    assert load_task(write(tmp_path, GOOD.replace("oracle:", "fail_on: [opened]\noracle:"))).fail_on == ["opened"]


def test_missing_parameter_and_bad_regex(tmp_path: Path) -> None:
    text = GOOD.replace('params: {pattern: "/reports/{{report_slug}}$"}', "params: {}")
    assert any(":10: milestones[0].params.pattern: missing required parameter for detector url_matches" in p for p in problems(tmp_path, text))
    text = GOOD.replace('params: {pattern: "/reports/{{report_slug}}$"}', 'params: {pattern: "(unclosed"}')
    assert any("milestones[0].params.pattern" in p and "missing )" in p for p in problems(tmp_path, text))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("category: nav", "category: bogus").replace("detector: answer_matches", "detector: nope")
    found = problems(tmp_path, text)
    assert len(found) == 2 and ":11:" in found[0] and ":13:" in found[1]


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace("variables:", "variables: [unclosed"))
    assert len(found) == 1 and "YAML syntax error" in found[0] and f"{tmp_path / 'task.yaml'}:" in found[0]


def test_no_goal_and_duplicates(tmp_path: Path) -> None:
    text = GOOD.replace("category: goal", "category: form").replace("id: answered", "id: opened")
    found = problems(tmp_path, text)
    assert any("duplicate milestone id 'opened'" in p for p in found)
    assert any("no milestone has category 'goal'" in p for p in found)


def test_unknown_template_variable_at_render(tmp_path: Path) -> None:
    spec = load_task(write(tmp_path, GOOD.replace("{{color}}", "{{colour}}")))
    with pytest.raises(TaskFileError) as e:
        spec.render(0, FACTS)
    assert ":2: instruction: unknown template variable 'colour' (did you mean 'color'?)" in str(e.value)


@pytest.mark.parametrize(
    ("env", "detector", "params", "need"),
    [
        ("browser", "screen_changed", "{}", "screenshot"),
        ("browser", "window_shown", "{title: Save As}", "windows"),
        ("desktop", "url_matches", "{pattern: /done}", "url"),
        ("desktop", "server_state", "{app: notes, path: x, equals: 1}", "server_state"),
    ],
)
def test_detector_needs_checked_against_the_env(tmp_path: Path, env: str, detector: str, params: str, need: str) -> None:
    """A detector that reads what the task's env does not give would silently never fire: an error naming
    the file, the line and the detector."""
    start = "{app: playground, path: /playground/}" if env == "browser" else '{app: notes, launch: ["notes"]}'
    f = tmp_path / "t.yaml"
    f.write_text(dedent(f"""\
        id: t
        env: {env}
        instruction: do it
        start: {start}
        milestones:
          - id: ok
            detector: answer_matches
            params: {{equals: "yes"}}
            category: goal
          - id: never
            detector: {detector}
            params: {params}
            category: ui
        oracle:
          - done: "yes"
        """))
    with pytest.raises(TaskFileError) as e:
        load_task(f)
    assert f"{f}:11: milestones[1].detector: detector {detector} needs {need}, which the {env} env does not give" in str(e.value)
