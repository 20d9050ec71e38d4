"""The agentrl command line, run as a subprocess the way people run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

AGENTRL = [sys.executable, "-m", "agentrl.cli"]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*AGENTRL, *args], cwd=cwd, capture_output=True, text=True, timeout=240)


def test_validate_bundled_suite() -> None:
    r = run("tasks", "validate", "tasks/core")
    assert r.returncode == 0, r.stderr
    assert "task files valid" in r.stdout


def test_validate_reports_file_line_field_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "tasks/core/reports-open.yaml").read_text().replace("detector: url_matches", "detector: url_match"))
    r = run("tasks", "validate", str(bad))
    assert r.returncode == 1
    assert f"{bad}:" in r.stderr and "milestones[0].detector: unknown detector 'url_match' (did you mean 'url_matches'?)" in r.stderr


def test_evaluate_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run("evaluate", "--suite", "core", "--agent", "scripted", "--seeds", "2", "--task", "reports-open", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0 and summary["mean_return"] > 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["milestones"]
    assert "success_rate=100.0%" in r.stdout


def test_evaluate_miniwob_with_storage_isolation(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run("evaluate", "--suite", "miniwob", "--agent", "miniwob-heuristic", "--seeds", "3", "--task",
            "miniwob.click-checkboxes", "--task", "miniwob.enter-text", "--isolation", "storage", "--no-screenshots",
            "--no-report", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["success_rate"] == 1.0
    assert json.loads((out / "run.json").read_text())["env_config"]["isolation"] == "storage"
    bad = run("evaluate", "--suite", "miniwob", "--isolation", "tabs", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--isolation must be context or storage" in bad.stderr


def test_run_prints_steps_and_milestones(tmp_path: Path) -> None:
    r = run("run", "accounts-login", "--agent", "scripted", "--seed", "4", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "credentials_entered" in r.stdout and "signed_in" in r.stdout and "success=True" in r.stdout


def test_unknown_task_suggests(tmp_path: Path) -> None:
    r = run("run", "acounts-login")
    assert r.returncode != 0 and "did you mean 'accounts-login'" in r.stderr
