"""Milestones that mean what they say: no success from a 404 page, a query string, a guess, an undone change,
text the agent typed, or a skipped step; and task files that cannot be right are refused (issue 19).

The shortcut plans come from `agentrl.fidelity` and are played through the real env on a test-split seed;
the best constant answer is measured over 1000 seeds from the test split's first seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agentrl.envs.axtree import AXTree
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.rewards.detectors import DETECTORS, StepContext
from agentrl.rewards.milestones import MilestoneTracker
from agentrl.sandbox.server import SandboxServer
from agentrl.suites import SUITES_DIR
from conftest import REPO
from typer.testing import CliRunner

from agentrl import cli
from agentrl.coverage import CONSTANT_SEEDS, MAX_CONSTANT_RATE
from agentrl.fidelity import (
    Plan,
    constant_answer_plans,
    constant_answer_stats,
    error_page_plans,
    oracle_answer,
    play,
    skipped_prerequisite_plans,
    trace_oracle,
    undo_plans,
)
from agentrl.suite import load_suite_spec
from agentrl.taskcheck import validate_files
from agentrl.taskspec import Milestone, OracleStep, TaskFileError, load_suite, load_task
from agentrl.types import RequestEvent

SUITES = [load_suite_spec(SUITES_DIR / "web"), load_suite_spec(SUITES_DIR / "core")]
TASKS = {t.id: t for s in SUITES for t in s.tasks}
SEED = 100000  # the first seed of the web suite's test split
ANSWER_TASKS = sorted(i for i, t in TASKS.items() if any(m.detector == "answer_matches" for m in t.milestones))
URL_TASKS = sorted(i for i, t in TASKS.items() if any(m.detector == "url_matches" for m in t.milestones))
AFTER_TASKS = sorted(i for i, t in TASKS.items() if any(m.after for m in t.milestones))


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fidelity")
    made: dict[str, BrowserEnv] = {}

    def get(task_id: str) -> BrowserEnv:
        if task_id not in made:
            made[task_id] = BrowserEnv(TASKS[task_id], BrowserEnvConfig(root_dir=root, record=False))
        return made[task_id]

    yield get
    for e in made.values():
        e.close()


def steps(*raw: Any) -> list[OracleStep]:
    return [OracleStep.model_validate(r) for r in raw]


def variables(env: BrowserEnv, seed: int = SEED) -> dict[str, str]:
    env.reset(seed=seed)
    return dict(env.variant.variables)


# ---------------------------------------------------------------- URLs: path, anchored, 2xx, declared origin
def test_fidelity_a_404_page_does_not_open_the_report(envs) -> None:
    env = envs("reports-open")
    v = variables(env)
    out = play(env, SEED, steps({"goto": f"/nope/reports/{v['report_slug']}"}))
    assert not out.success and "report_page" not in out.fired, out


def test_fidelity_a_path_in_the_query_string_is_not_the_page(envs) -> None:
    for task, mid, path in (
        ("reports-open", "report_page", "/reports/{report_slug}"),
        ("reports-search", None, "/reports/{report_slug}"),
        ("nav-ledger-open", "right_page", "/reports/transactions?page={tx_page}"),
    ):
        env = envs(task)
        path = path.format(**variables(env))
        out = play(env, SEED, steps({"goto": f"/reports/?q={path}"}))
        assert not out.success, (task, out)
        assert mid is None or mid not in out.fired, (task, out)


def test_fidelity_login_page_with_next_is_not_the_protected_page(envs) -> None:
    for goto in ("/accounts/login?next=/accounts/apply", "/accounts/apply"):  # typed, and the redirect there
        out = play(envs("accounts-login"), SEED, steps({"goto": goto}))
        assert "on_form" not in out.fired and not out.success, (goto, out)


def test_fidelity_error_page_and_query_string_variants_of_every_url_milestone_earn_nothing(envs) -> None:
    played = 0
    for task in URL_TASKS:
        env = envs(task)
        env.reset(seed=SEED)
        for plan in error_page_plans(TASKS[task], env.variant):
            out = play(env, SEED, plan.steps)
            mid = plan.label.split(":")[0]
            assert not out.success and mid not in out.fired, (task, plan.label, out)
            played += 1
    assert played >= 4 * 12  # every bundled URL milestone that names one page, four variants each


def ctx_at(url: str, history: list[Any], **kw: Any) -> StepContext:
    return StepContext(step=1, events=[], history=history, url=url, title="", ax=AXTree("", ()),
                       episode_dir=Path("."), **kw)


def test_fidelity_url_matches_the_whole_path_of_a_2xx_sandbox_document() -> None:
    info = DETECTORS.get("url_matches")
    o = "http://127.0.0.1:9"
    ok = [RequestEvent(method="GET", url=f"{o}/reports/q1", status=200)]
    assert info(ctx_at(f"{o}/reports/q1", ok), {"pattern": "/reports/q1$"})
    assert info(ctx_at(f"{o}/reports/q1?x=1#top", [RequestEvent(method="GET", url=f"{o}/reports/q1?x=1", status=200)]),
                {"pattern": "/reports/q1"})  # the query counts only when the pattern asks for it
    for url, status, pattern in (
        (f"{o}/nope/reports/q1", 404, "/reports/q1$"),  # an error page
        (f"{o}/nope/reports/q1", 200, "/reports/q1$"),  # anchored at the start of the path
        (f"{o}/reports/?q=/reports/q1", 200, "/reports/q1$"),  # a path in the query string
        (f"{o}/reports/q1", 302, "/reports/q1$"),  # a redirect on its way elsewhere
    ):
        assert not info(ctx_at(url, [RequestEvent(method="GET", url=url, status=status)]), {"pattern": pattern}), url
    assert not info(ctx_at("data:text/html,/reports/q1", []), {"pattern": ".*"})  # never answered by the sandbox
    assert info(ctx_at(f"{o}/kb/?q=a&page=2", [RequestEvent(method="GET", url=f"{o}/kb/?q=a&page=2", status=200)]),
                {"pattern": "/kb/\\?(.*&)?page=2"})


def test_fidelity_tracker_revokes_a_state_goal_that_no_longer_holds() -> None:
    goal = Milestone(id="tz", detector="server_state", params={"path": "s.tz", "equals": "UTC"}, category="goal")
    seen = Milestone(id="seen", detector="server_state", params={"path": "s.seen"}, category="nav")
    tracker = MilestoneTracker([goal, seen], ["tz"])
    rewards = []
    for tz in ("UTC", "CET", "UTC"):
        fired = tracker.update(ctx_at("", [], server_state={"s": {"tz": tz, "seen": 1}}))
        rewards.append(sum(e.reward for e in fired))
        assert tracker.success == (tz == "UTC"), (tz, tracker.revoked)
    assert rewards[0] > 0 and rewards[1:] == [0, 0]  # paid once; success follows the state


# ---------------------------------------------------------------- answers: evidence and entropy
@pytest.fixture(scope="module")
def test_seed_facts() -> dict[int, Any]:
    with SandboxServer() as server:
        return {s: server.open_episode(f"c{s}", s) for s in range(SEED, SEED + CONSTANT_SEEDS)}


def test_fidelity_best_constant_answer_is_right_on_at_most_2_percent_of_test_seeds(test_seed_facts) -> None:
    every = {t.id: t for d in sorted(SUITES_DIR.iterdir()) if d.is_dir() and not d.name.startswith("_")
             for t in load_suite(d)}  # every bundled suite, the desktop one included
    answer_tasks = [t for t in every.values() if any(m.detector == "answer_matches" for m in t.milestones)]
    rates = {t.id: constant_answer_stats(t, test_seed_facts) for t in answer_tasks}
    too_easy = {t: (r.best, r.hits) for t, r in rates.items() if r.rate > MAX_CONSTANT_RATE}
    assert not too_easy, f"best constant answer right on more than 2% of 1000 test seeds: {too_easy}"
    assert set(ANSWER_TASKS) <= set(rates) and len(rates) >= 17


def test_fidelity_constant_answer_statistics_catch_a_low_entropy_task(tmp_path: Path, test_seed_facts) -> None:
    f = tmp_path / "weak.yaml"
    f.write_text(
        "id: weak\ninstruction: Which product?\nstart: {app: kb, path: /kb/}\n"
        "variables:\n  pick: {choice: [Web app, Mobile app, Desktop app]}\n"
        "milestones:\n  - {id: a, detector: answer_matches, params: {equals: '{{pick}}'}, category: goal}\n"
        "oracle:\n  - done: '{{pick}}'\n"
    )
    r = constant_answer_stats(load_task(f), dict(list(test_seed_facts.items())[:300]))
    assert r is not None and r.distinct == 3 and 0.25 < r.rate < 0.45, r


def test_fidelity_a_constant_first_answer_earns_nothing(envs, test_seed_facts) -> None:
    facts = dict(list(test_seed_facts.items())[:200])
    for task in ANSWER_TASKS:
        stats = constant_answer_stats(TASKS[task], facts)
        env = envs(task)
        for plan in constant_answer_plans(stats):
            out = play(env, SEED, plan.steps)
            assert not out.success and not out.fired, (task, plan.label, out)


def test_fidelity_a_right_answer_without_its_source_earns_nothing(envs) -> None:
    for task, mid in (("search-read-figure", "right_answer"), ("mail-read-code", "right_code")):
        env = envs(task)
        env.reset(seed=SEED)
        answer = oracle_answer(env.variant)
        out = play(env, SEED, steps({"done": answer}))
        assert mid not in out.fired and not out.success, (task, out)


# ---------------------------------------------------------------- state: final, not once
def test_fidelity_an_undone_change_does_not_count(envs) -> None:
    env = envs("set-regional")
    v = variables(env)
    out = play(env, SEED, steps(
        {"select": {"role": "combobox", "name": "Time zone", "option": v["target_timezone"]}},
        {"click": {"role": "button", "name": "Save changes"}},
        {"select": {"role": "combobox", "name": "Time zone", "option": v["timezone"]}},
        {"select": {"role": "combobox", "name": "Date format", "option": v["target_date_format"]}},
        {"click": {"role": "button", "name": "Save changes"}},
    ))
    assert not out.errors, out.errors
    assert "timezone_saved" in out.fired and "date_format_saved" in out.fired  # both fired once...
    assert not out.success and out.revoked == ["timezone_saved"]  # ...but the server has the old time zone


def test_fidelity_undo_after_each_state_milestone_earns_no_success(envs) -> None:
    played = 0
    for task in sorted(i for i in TASKS if i.startswith("set-")):
        env = envs(task)
        trace, start = trace_oracle(env, SEED)
        for plan in undo_plans(env.variant, start):
            out = play(env, SEED, plan.steps)
            assert not out.errors, (task, plan.label, out.errors)
            assert not out.success, (task, plan.label, out)
            played += 1
    assert played >= 2


# ---------------------------------------------------------------- evidence: the right one
def test_fidelity_filter_set_needs_a_search_with_the_filter(envs) -> None:
    env = envs("search-filter-product")
    v = variables(env)
    out = play(env, SEED, steps(
        {"fill": {"role": "searchbox", "name": "Search articles", "text": v["topic"]}},
        {"click": {"role": "button", "name": "Search"}},
        {"click": {"role": "link", "name": v["title"]}},
    ))
    assert not out.errors, out.errors
    assert "filter_set" not in out.fired and not out.success, out


def test_fidelity_text_typed_into_a_field_is_not_text_the_page_shows(envs) -> None:
    for task, mid, box in (("nav-ledger-open", "page_shown", "Search reports"),
                           ("search-filter-product", "filtered_results", "Search articles")):
        env = envs(task)
        env.reset(seed=SEED)
        text = next(m.params["text"] for m in env.variant.milestones if m.id == mid)
        out = play(env, SEED, steps({"fill": {"role": "searchbox", "name": box, "text": text}}))
        assert not out.errors and mid not in out.fired, (task, out)


def test_fidelity_typing_the_thank_you_url_is_not_subscribing(envs) -> None:
    out = play(envs("form-newsletter"), SEED, steps({"goto": "/forms/newsletter/thanks"}))
    assert "thanks_shown" not in out.fired and not out.success, out


# ---------------------------------------------------------------- order: no milestone without its prerequisites
def test_fidelity_skipping_a_prerequisite_fires_nothing_after_it(envs) -> None:
    skipped = 0
    for task in AFTER_TASKS:
        env = envs(task)
        trace, _ = trace_oracle(env, SEED)
        after = {m.id: m.after for m in env.variant.milestones}
        goals = TASKS[task].success_ids()
        for plan in skipped_prerequisite_plans(env.variant, trace):
            out = play(env, SEED, plan.steps)
            mid = plan.label.split(" ")[0]
            missing = [a for a in after[mid] if a not in out.fired]
            if missing:  # the jump really skipped a prerequisite
                skipped += 1
                assert mid not in out.fired, (task, plan.label, out)
            for g in goals:  # a goal never counts without every prerequisite it names
                if g in out.fired:
                    assert all(a in out.fired[: out.fired.index(g)] for a in after[g]), (task, plan.label, out)
            if out.success:
                assert not missing or mid not in goals, (task, plan.label, out)
    assert skipped >= 10


def test_fidelity_plans_are_labelled_shortcuts() -> None:
    spec = TASKS["nav-ledger-open"]
    with SandboxServer() as server:
        variant = spec.render(SEED, server.open_episode("p", SEED))
    plans = error_page_plans(spec, variant)
    assert {p.kind for p in plans} == {"error_page", "query_string"}
    assert all(isinstance(p, Plan) and p.steps and p.steps[0].kind == "goto" for p in plans)
    assert any(p.steps[0].goto == f"/nope/reports/transactions?page={variant.variables['tx_page']}" for p in plans)


# ---------------------------------------------------------------- task files that cannot be right are refused
TASK = """\
id: t
instruction: "Open {{report_title}}."
start: {app: reports, path: /reports/}
milestones:
  - id: a
    detector: url_matches
    params: {pattern: "/reports/{{report_slug}}"}
    category: nav
  - id: b
    detector: js_true
    params: {expr: "document.title.includes('{{report_title}}')"}
    category: goal
oracle:
  - click: {role: link, name: "{{report_title}}"}
"""


def validate(*paths: Path) -> tuple[int, list[str], str]:
    """`agentrl tasks validate` as a user runs it: exit code, problem lines, summary line."""
    result = CliRunner().invoke(cli.app, ["tasks", "validate", *map(str, paths)])
    lines = result.output.splitlines()
    return result.exit_code, [ln for ln in lines if not ln.endswith("task files valid")], lines[-1] if lines else ""


def problems_of(tmp_path: Path, text: str, name: str = "t.yaml") -> list[str]:
    f = tmp_path / name
    f.write_text(text)
    code, problems, _ = validate(f)
    assert (code == 0) == (not problems), (code, problems)
    return problems


def test_fidelity_validate_accepts_the_base_task(tmp_path: Path) -> None:
    assert problems_of(tmp_path, TASK) == []


def test_fidelity_validate_refuses_after_cycles(tmp_path: Path) -> None:
    text = TASK.replace("    category: nav\n", "    category: nav\n    after: [b]\n").replace(
        "    category: goal\n", "    category: goal\n    after: [a]\n")
    probs = problems_of(tmp_path, text)
    assert any(":9: milestones[0].after: `after` cycle a -> b -> a" in p for p in probs), probs
    with pytest.raises(TaskFileError):
        load_task(tmp_path / "t.yaml")


def test_fidelity_validate_refuses_an_unknown_app(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, TASK.replace("app: reports", "app: reprots"))
    assert any(":3: start.app: unknown app 'reprots' (did you mean 'reports'?)" in p for p in probs), probs


def test_fidelity_validate_refuses_a_start_path_the_app_does_not_serve(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, TASK.replace("path: /reports/}", "path: /reports/overveiw}"))
    assert any(":3: start.path: the app 'reports' answers 404 for '/reports/overveiw'" in p for p in probs), probs
    probs = problems_of(tmp_path, TASK.replace("path: /reports/}", "path: /kb/}"))
    assert any(":3: start.path: '/kb/' is not a page of the app 'reports'" in p for p in probs), probs


@pytest.mark.parametrize("bad", ["{{report-title}}", "{{ report title }}", "{{ 7*7 }}", "{{report_title"])
def test_fidelity_validate_refuses_malformed_templates(tmp_path: Path, bad: str) -> None:
    probs = problems_of(tmp_path, TASK.replace('"Open {{report_title}}."', f'"Open {bad}."'))
    assert any(":2: instruction: " in p and "template" in p for p in probs), probs
    probs = problems_of(tmp_path, TASK.replace("includes('{{report_title}}')", f"includes('{bad}')"))
    assert any(":11: milestones[1].params.expr: " in p and "template" in p for p in probs), probs


def test_fidelity_validate_refuses_an_unknown_variable_inside_an_expression(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, TASK.replace("includes('{{report_title}}')", "includes('{{report_titel}}')"))
    assert any(":11: milestones[1].params.expr: unknown template variable 'report_titel'" in p for p in probs), probs


def test_fidelity_validate_reports_every_file_whatever_an_earlier_one_did(tmp_path: Path) -> None:
    (tmp_path / "a-binary.yaml").write_bytes(b"id: x\ninstruction: \xff\xfe\n")
    (tmp_path / "b-tag.yaml").write_text("id: !!python/object/apply:os.getcwd []\n")
    (tmp_path / "c-cycle.yaml").write_text(TASK.replace("    category: nav\n", "    category: nav\n    after: [a]\n"))
    (tmp_path / "d-good.yaml").write_text(TASK)
    (tmp_path / "e-app.yaml").write_text(TASK.replace("app: reports", "app: nowhere"))
    code, problems, summary = validate(tmp_path)
    assert code == 1 and summary == "1/5 task files valid", (summary, problems)
    for name in ("a-binary", "b-tag", "c-cycle", "e-app"):
        assert any(p.startswith(str(tmp_path / f"{name}.yaml") + ":") for p in problems), (name, problems)
    report = validate_files([tmp_path])
    assert report.valid == 1 and len(report.files) == 5 and len(report.problems) == len(problems)


def test_fidelity_validate_refuses_templates_where_none_are_filled(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, TASK.replace("path: /reports/}", "path: \"/reports/{{report_slug}}\"}"))
    assert any(":3: start.path: templates are not filled in this field" in p for p in probs), probs


def test_fidelity_bundled_suites_validate() -> None:
    report = validate_files([REPO / "tasks"])
    assert report.problems == [] and report.valid == len(report.files) > 90
