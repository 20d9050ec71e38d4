"""Hostile YAML (issue 14): task files, suite files, train and router configs are shared between users, so
the loader refuses what could hang or exhaust the machine, or run code, with `file:line: problem`, fast."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentrl.rewards.router import RouterConfig

from agentrl.learner.config import TrainConfig
from agentrl.suite import load_suite_spec
from agentrl.taskspec import load_task
from agentrl.yamlpos import MAX_BYTES, TaskFileError, load_with_lines

LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["id: *i"]
)

HOSTILE = {
    "nested aliases": (LAUGHS, ":5: ", "e: the file holds more than 20,000 values once its aliases are expanded"),
    "python tag": ("id: !!python/object/apply:os.system ['touch /tmp/forged']\n", ":1: ", "could not determine a constructor"),
    "unknown local tag": ("id: x\nmilestones: !evil {}\n", ":2: ", "could not determine a constructor"),
    "deep nesting": ("id: " + "[" * 500 + "]" * 500 + "\n", ":1: ", "nesting deeper than"),
    "deeper nesting": ("id: " + "[" * 50_000 + "]" * 50_000 + "\n", ":1: ", "nesting depth"),
    "deep block nesting": ("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v\n", ":65: ", "nesting deeper than"),
    "duplicate key": ("id: a\ninstruction: x\nid: b\n", ":3: ", "id: duplicate key 'id' (first at line 1)"),
    "nested duplicate key": ("id: a\nstart:\n  app: mail\n  path: /\n  app: files\n", ":5: ", "start.app: duplicate key 'app' (first at line 3)"),
    "syntax error": ("id: [unclosed\n", ":", "YAML syntax error"),
    "not utf-8": (b"id: \xff\xfe\n", ":1: ", "not UTF-8"),
    "many values": ("id: [" + "1," * 100_000 + "1]\n", ":1: ", "the file holds more than 20,000 values"),
}


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("name", list(HOSTILE))
def test_forge_hostile_task_yaml_is_refused_fast_with_its_line(tmp_path: Path, name: str) -> None:
    content, line, words = HOSTILE[name]
    f = _write(tmp_path / "task.yaml", content)
    t0 = time.perf_counter()
    with pytest.raises(TaskFileError) as e:
        load_task(f)
    assert time.perf_counter() - t0 < 1.0
    assert str(e.value).startswith(f"{f}{line}") and words in str(e.value), str(e.value)
    assert "Traceback" not in str(e.value)
    assert not Path("/tmp/forged").exists()


def test_forge_fifty_megabyte_file_is_refused_unread(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    with f.open("w") as out:
        out.write("id: big\nnotes: |\n")
        line = "  " + "x" * 1000 + "\n"
        for _ in range(50_000):
            out.write(line)
    assert f.stat().st_size > 50_000_000
    t0 = time.perf_counter()
    with pytest.raises(TaskFileError, match=rf"^{f}:1: the file is [\d,]+ bytes, over the limit of {MAX_BYTES:,}"):
        load_task(f)
    assert time.perf_counter() - t0 < 1.0


def test_forge_merge_keys_and_anchors_still_load(tmp_path: Path) -> None:
    f = _write(tmp_path / "ok.yaml", "base: &b {x: 1, y: 2}\nmerged:\n  <<: *b\n  y: 3\nsame: *b\n")
    data, lines = load_with_lines(f)
    assert data == {"base": {"x": 1, "y": 2}, "merged": {"x": 1, "y": 3}, "same": {"x": 1, "y": 2}}
    assert lines[("merged", "y")] == 4


@pytest.mark.parametrize("name", ["nested aliases", "python tag", "deep nesting", "duplicate key"])
def test_forge_hostile_configs_are_refused(tmp_path: Path, name: str) -> None:
    content, _, words = HOSTILE[name]
    words = words.replace("id:", "{key}:").replace("'id'", "'{key}'")
    # a suite file (suite.yaml) next to no tasks, the reward router's config in it, a train config
    suite = tmp_path / "suite"
    suite.mkdir()
    meta = _write(suite / "suite.yaml", content.replace("id:", "splits:"))
    for load in (lambda: load_suite_spec(suite), lambda: RouterConfig.from_suite(suite)):
        t0 = time.perf_counter()
        with pytest.raises(ValueError) as e:
            load()
        assert time.perf_counter() - t0 < 1.0
        assert str(e.value).startswith(f"{meta}:") and words.format(key="splits") in str(e.value), str(e.value)
    cfg = _write(tmp_path / "train.yaml", content.replace("id:", "algo:"))
    with pytest.raises(ValueError) as e:
        TrainConfig.load(cfg)
    assert str(e.value).startswith(f"{cfg}:") and words.format(key="algo") in str(e.value), str(e.value)


def test_forge_cli_validate_reports_hostile_file_without_traceback(tmp_path: Path) -> None:
    _write(tmp_path / "laughs.yaml", LAUGHS)
    _write(tmp_path / "tag.yaml", HOSTILE["python tag"][0])
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "agentrl.cli", "tasks", "validate", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert time.perf_counter() - t0 < 30
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert f"{tmp_path / 'laughs.yaml'}:5:" in out and f"{tmp_path / 'tag.yaml'}:1:" in out, out
