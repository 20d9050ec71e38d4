"""Registration of the bundled tasks with Gymnasium: lazy (importing agentrl reads no task file) and by
file name, which every bundled task's id must equal."""

from __future__ import annotations

import subprocess
import sys

from agentrl.suites import SUITES_DIR

from agentrl.registration import bundled_tasks
from agentrl.yamlpos import load_with_lines


def test_every_bundled_task_id_is_its_file_name() -> None:
    files = sorted(f for f in SUITES_DIR.rglob("*.yaml") if f.name != "suite.yaml")
    assert len(bundled_tasks()) == len(files) > 100
    for f in files:
        data, _ = load_with_lines(f)
        assert data["id"] == f.stem, f"{f}:1: id: {data['id']!r} is not the file's name {f.stem!r}"


def test_import_agentrl_parses_no_task_file() -> None:
    code = (
        "import yaml\n"
        "seen = []\n"
        "for name in ('compose', 'load', 'safe_load'):\n"
        "    orig = getattr(yaml, name)\n"
        "    setattr(yaml, name, lambda *a, _o=orig, **k: (seen.append(1), _o(*a, **k))[1])\n"
        "import agentrl, gymnasium as gym\n"
        "assert 'agentrl/xterm-exit' in gym.registry and 'agentrl/reports-open' in gym.registry\n"
        "print(len(seen))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", f"import agentrl parsed {r.stdout.strip()} YAML documents"
