"""upload(id, "file"): files come only from the episode's own directory, start files are put there at reset,
and the sandbox server receives the bytes (multipart/form-data)."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrl.envs.actions import Action, ActionError, parse_action
from conftest import act, write_task

from agentrl.agents import ScriptedAgent
from agentrl.evaluate import run_episode
from agentrl.taskspec import load_task
from agentrl.yamlpos import TaskFileError

UPLOAD = [{"id": "uploaded", "detector": "server_state", "category": "goal",
           "params": {"path": "playground.uploads.0.text", "equals": "hello Hello from the playground"}}]
START = {"app": "playground", "path": "/playground/", "files": {"docs/notes.txt": "hello {{greeting}}"}}
ORACLE = [{"upload": {"role": "button", "name": "Attachment", "file": "docs/notes.txt"}},
          {"click": {"role": "button", "name": "Upload file"}}]


def test_parse_upload() -> None:
    assert parse_action('upload(e3, "a/b.csv")') == Action("upload", ("e3", "a/b.csv"))
    assert isinstance(parse_action('upload(e3, "")'), ActionError)
    assert isinstance(parse_action("upload(e3)"), ActionError)


def test_start_file_is_uploaded_with_its_templated_content(tmp_path: Path, make_env) -> None:
    env = make_env(write_task(tmp_path, UPLOAD, start=START, oracle=ORACLE), keep_episode_dirs=True)
    r = run_episode(env, ScriptedAgent(), seed=0)
    assert r.success, r
    assert (env.episode_dir / "docs" / "notes.txt").read_text() == "hello Hello from the playground"
    state = env.sandbox.episode_state(env.episode_id)["playground"]
    assert state["uploads"][0]["name"] == "notes.txt" and state["uploads"][0]["size"] == 31


@pytest.mark.parametrize("name, why", [
    ("/etc/passwd", "no '..', not absolute"),
    ("../../etc/passwd", "no '..', not absolute"),
    ("docs/missing.txt", "files: docs/notes.txt"),
])
def test_upload_outside_or_missing_is_an_error_observation(tmp_path: Path, make_env, name: str, why: str) -> None:
    env = make_env(write_task(tmp_path, UPLOAD, start=START, oracle=ORACLE))
    obs, _ = env.reset(seed=0)
    ref = next(line.split("[ref=")[1].split("]")[0] for line in obs["axtree"].splitlines() if 'button "Attachment"' in line)
    obs, reward, terminated, truncated, info = env.step(f'upload({ref}, "{name}")')
    assert why in info["action_error"] and why in obs["text"]
    assert reward == 0 and not (terminated or truncated)
    obs, *_ = act(env, obs, {"click": {"role": "button", "name": "Upload file"}})
    assert "No file chosen" in obs["text"]  # nothing reached the server


def test_upload_through_a_symlink_that_leaves_the_episode_dir_is_refused(tmp_path: Path, make_env) -> None:
    env = make_env(write_task(tmp_path, UPLOAD, start=START, oracle=ORACLE))
    obs, _ = env.reset(seed=0)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (env.episode_dir / "link.txt").symlink_to(secret)
    ref = next(line.split("[ref=")[1].split("]")[0] for line in obs["axtree"].splitlines() if 'button "Attachment"' in line)
    _, _, _, _, info = env.step(f'upload({ref}, "link.txt")')
    assert "leaves the episode's directory" in info["action_error"]


@pytest.mark.parametrize("name", ["../x.txt", "/tmp/x.txt", "trajectory.jsonl"])
def test_start_files_must_stay_inside_the_episode_dir(tmp_path: Path, name: str) -> None:
    f = write_task(tmp_path, UPLOAD, start={**START, "files": {name: "x"}}, oracle=ORACLE)
    with pytest.raises(TaskFileError, match=r"t\.yaml:\d+: start\.files"):
        load_task(f)
