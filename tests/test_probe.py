"""The exploit probe (issue 14): it catches tasks made weak on purpose, finds nothing new in the bundled
suites (known findings are listed in tests/probe_known.yaml with the issue that owns them), and its CLI
tells a task author what to fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from agentrl.envs import wall
from agentrl.suites import SUITES_DIR
from conftest import write_task

from agentrl.probe import known_findings, probe_task, probe_tasks, to_markdown
from agentrl.probe_shortcuts import literal
from agentrl.suite import load_suite_spec
from agentrl.taskspec import load_task

KNOWN = Path(__file__).with_name("probe_known.yaml")
DESKTOP_READY = all(Path(p).exists() for p in ("/usr/bin/Xvfb", "/usr/bin/xdotool", "/usr/bin/openbox", "/usr/bin/mousepad"))


def _weak_tasks(tmp_path: Path) -> dict[str, Path]:
    """One task per weakness, each with an oracle that solves it honestly."""
    return {
        # the goal is a page anyone can open by URL
        "direct_goto": write_task(tmp_path, [
            {"id": "popup_page", "detector": "url_matches", "params": {"pattern": "/playground/popup$"}, "category": "goal"},
        ], task_id="weak-goto", oracle=[{"click": {"role": "link", "name": "Open popup"}}]),
        # any answer is right
        "done_answer": write_task(tmp_path, [
            {"id": "answered", "detector": "answer_matches", "params": {"pattern": ".*"}, "category": "goal"},
        ], task_id="weak-answer", oracle=[{"done": "Hello from the playground"}]),
        # a repeatable milestone on a request: sending twice pays twice
        "repeat_rewarded": write_task(tmp_path, [
            {"id": "sent", "detector": "request_made", "params": {"url": "/api/echo$", "method": "POST"},
             "category": "form", "repeatable": True},
            {"id": "answered", "detector": "answer_matches", "params": {"equals": "sent"}, "category": "goal",
             "after": ["sent"]},
        ], task_id="weak-repeat", oracle=[{"fill": {"role": "textbox", "name": "Message", "text": "hi"}},
                                          {"click": {"role": "button", "name": "Send message"}}, {"done": "sent"}]),
    }


@pytest.mark.parametrize("weakness", ["direct_goto", "done_answer", "repeat_rewarded"])
def test_probe_catches_a_task_made_weak_on_purpose(tmp_path: Path, weakness: str) -> None:
    spec = load_task(_weak_tasks(tmp_path)[weakness])
    result = probe_task(spec, [0])
    assert not result.errors, result.errors
    caught = {f.shortcut for f in result.findings}
    assert weakness in caught, (result.attempts, result.findings)
    f = next(f for f in result.findings if f.shortcut == weakness)
    assert f.fix and f.actions and f.seed == 0
    # and nothing else in these tasks is a finding: the other shortcuts earn nothing (an answer that any text
    # satisfies is also a constant answer right on every seed: issue 19's class catches it too)
    also = {"done_answer": {"constant_answer"}}.get(weakness, set())
    assert caught == {weakness} | also, result.findings


def test_probe_catches_a_hole_in_the_wall(tmp_path: Path, monkeypatch) -> None:
    """With the wall's origin check made to let everything through, the forged pages earn: the probe
    reports them (and that the wall, not the task, is to blame)."""
    monkeypatch.setattr(wall, "declared", lambda origin, url: True)
    result = probe_task(load_task(SUITES_DIR / "web" / "email" / "mail-archive.yaml"), [0], ["forged_document"])
    found = [f for f in result.findings if f.shortcut == "forged_document"]
    assert found and any("archived_notice" in f.earned for f in found), result.findings
    assert "wall" in found[0].fix


def test_probe_forged_documents_earn_nothing_on_the_issues_tasks() -> None:
    """The two forgeries of issue 14, as the probe plays them: a data: page with MiniWoB's done globals, and
    one with mail-archive's notice."""
    for f in (SUITES_DIR / "miniwob" / "miniwob.click-test-2.yaml", SUITES_DIR / "web" / "email" / "mail-archive.yaml"):
        result = probe_task(load_task(f), [0, 1], ["forged_document"])
        assert result.attempts["forged_document"] >= 2 and not result.findings and not result.errors, result


def test_probe_regex_literal() -> None:
    assert literal(r"^/reports/q3\?region=north$") == "/reports/q3?region=north"
    assert literal(r"/files/[^/]+/edit") == "/files/"
    assert literal(r"/mail/inbox/?$") == "/mail/inbox"
    assert literal(r"\d+") == ""


def _suites() -> list:
    out = []
    for name in ("core", "web", "miniwob", "desktop"):
        marks = [pytest.mark.skipif(not DESKTOP_READY, reason="the desktop packages are not installed")] if name == "desktop" else []
        out.append(pytest.param(name, marks=marks))
    return out


@pytest.mark.timeout(900)  # the web suite plays ~500 attempts: minutes on 2 cores
@pytest.mark.parametrize("suite", _suites())
def test_probe_bundled_suite_has_no_new_findings(suite: str, tmp_path: Path) -> None:
    """Every task of the suite on its first test seed, two processes: any finding not in probe_known.yaml
    (each tagged with the issue that fixes it, or accepted with its reason) fails, with what to fix."""
    spec = load_suite_spec(SUITES_DIR / suite)
    tasks, seeds = spec.split("test" if "test" in spec.splits else next(iter(spec.splits)), 1)
    results = probe_tasks(tasks, seeds, workers=min(2, os.cpu_count() or 1))
    known = known_findings(KNOWN)
    assert not [e for r in results for e in r.errors], [f"{r.task_id}: {e}" for r in results for e in r.errors]
    assert all(sum(r.attempts.values()) >= 3 for r in results), {r.task_id: r.attempts for r in results}
    new = [f for r in results for f in r.findings if f.key not in known]
    assert not new, "\n".join(f"{f.task_id} seed {f.seed}: {f.shortcut}: {f.detail} -> {list(f.earned)}; "
                              f"fix: {f.fix}" for f in new)
    table = to_markdown(results, known=known)
    assert all(r.task_id in table for r in results)


def test_probe_known_findings_name_an_issue() -> None:
    known = known_findings(KNOWN)
    # each names the issue that owns it or says why the task is right as it is
    assert known and all(re.match(r"(issue \d+|accepted): \S", v) for v in known.values()), known


def test_probe_cli_reports_what_to_fix(tmp_path: Path) -> None:
    suite = tmp_path / "weak"
    suite.mkdir()
    _weak_tasks(suite)
    out = tmp_path / "probe.md"
    r = subprocess.run([sys.executable, "-m", "agentrl.cli", "tasks", "probe", str(suite), "--seeds", "1",
                        "--shortcut", "direct_goto", "--shortcut", "done_answer", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "weak-goto seed" in text and "direct_goto" in text and "fix:" in text, text
    assert "weak-answer seed" in text and "done_answer" in text, text
    table = out.read_text()
    assert "| weak-goto |" in table and "## Findings" in table and "agentrl tasks probe" in table
