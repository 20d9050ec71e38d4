"""The desktop env on a real Xvfb with real apps (the project's GTK3 apps, Debian's mousepad and xterm):
every task solved by the scripted agent and none by its near-misses, each desktop detector firing and not,
bad actions as observations, nothing written outside the episode directory, no process outliving close(),
a killed app truncating the episode, and trajectories written as they happen."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import yaml
from agentrl.envs.desktop import DesktopEnv, DesktopEnvConfig
from agentrl.envs.xserver import EPISODE_TAG, TAG, tagged_pids
from agentrl.suites import SUITES_DIR

import agentrl  # noqa: F401  (registers agentrl/<task-id>)
from agentrl.agents import ScriptedAgent
from agentrl.taskspec import OracleStep, load_suite
from agentrl.testing import check_env, check_near_miss, check_noop, check_oracle
from agentrl.trajectory import read_trajectory

pytestmark = pytest.mark.skipif(
    not all(Path(p).exists() for p in ("/usr/bin/Xvfb", "/usr/bin/xdotool", "/usr/bin/openbox", "/usr/bin/mousepad")),
    reason="the desktop packages are not installed (bash scripts/setup.sh installs them)",
)

DESKTOP = SUITES_DIR / "desktop"
TASKS = sorted(p for p in DESKTOP.glob("*.yaml") if p.name != "suite.yaml")


@pytest.fixture
def make_env(tmp_path: Path):
    envs: list[DesktopEnv] = []

    def make(task: Any, **config: Any) -> DesktopEnv:
        config.setdefault("root_dir", tmp_path / "episodes")
        env = DesktopEnv(task, DesktopEnvConfig(**config))
        envs.append(env)
        return env

    yield make
    for e in envs:
        e.close()


def play(env: DesktopEnv, seed: int, steps: list[OracleStep] | None = None) -> tuple[dict, list[str]]:
    """One episode of the scripted agent (the oracle, or `steps` then done()); (last info, actions)."""
    obs, info = env.reset(seed=seed)
    agent = ScriptedAgent(steps)
    agent.reset(obs, info, env.variant)
    actions: list[str] = []
    done = False
    while not done:
        actions.append(agent.act(obs))
        obs, _, terminated, truncated, info = env.step(actions[-1])
        done = terminated or truncated
    return info, actions


def write_task(tmp_path: Path, launch: list[str], milestones: list[dict], files: dict[str, str] | None = None) -> Path:
    data = {"id": "t", "env": "desktop", "instruction": "test", "max_steps": 30,
            "start": {"app": launch[0].split()[0], "launch": launch, "files": files or {}},
            "milestones": milestones, "oracle": [{"wait": True}]}
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return f


def test_suite_has_twelve_templated_tasks() -> None:
    specs = load_suite(DESKTOP)
    assert len(specs) >= 12 and all(s.env == "desktop" for s in specs)
    assert sum(1 for s in specs if s.variables) >= 12
    apps = {line.split()[0] for s in specs for line in s.start.launch}
    assert {"notes", "settings", "files", "mousepad", "xterm"} <= apps


@pytest.mark.parametrize(
    "text, expected",
    [
        ("click(120, 48)", "click(120, 48)"),
        ("click(e7)", "click(e7)"),
        ("Action: double_click( 5 ,6 )", "double_click(5, 6)"),
        ('type("line one\\nline two")', 'type("line one\\nline two")'),
        ("key(ctrl+s)", 'key("ctrl+s")'),
        ('fill(e3, "x")', 'fill(e3, "x")'),
        ('focus("Notes")', 'focus("Notes")'),
        ("done()", 'done("")'),
        ("click(1.5, 2)", "'1.5' is not an integer"),
        ("click(1, 2, 3)", "click() takes (element id) or (integer, integer), got 3"),
        ("goto('/x')", "no action found"),  # a browser action, not a desktop one
    ],
)
def test_desktop_action_language(text: str, expected: str) -> None:
    from agentrl.envs.actions import ActionError, parse_action
    from agentrl.envs.desktop import DESKTOP_SIGNATURES

    a = parse_action(text, signatures=DESKTOP_SIGNATURES)
    assert expected in str(a)
    if not isinstance(a, ActionError):
        assert str(parse_action(str(a), signatures=DESKTOP_SIGNATURES)) == str(a)  # round trip


@pytest.mark.parametrize("task", TASKS, ids=[t.stem for t in TASKS])
def test_scripted_agent_solves_task(make_env, task: Path) -> None:
    """`agentrl.testing`'s checks on every desktop task, in one env (one desktop): the oracle on seeds 0
    and 1, then the no-op. No same-seed rerun here: under a loaded CI machine an X app's effect (files-move's
    rename after Return) can land one step later, which a trajectory comparison reports as a difference."""
    env = make_env(task)
    check_oracle(env, [0, 1])
    s = env.summary()
    assert s.return_ > 0 and not s.truncated
    check_noop(env, 0)


# one task per app and kind of goal (a saved file, a closed app, a deletion, an editor, a shell, focus)
NEAR_MISS_TASKS = ["notes-save-as", "settings-theme", "files-delete", "mousepad-append", "xterm-echo", "focus-switch"]


@pytest.mark.parametrize("task", NEAR_MISS_TASKS)
def test_near_miss_does_not_succeed(make_env, task: str) -> None:
    env = make_env(DESKTOP / f"{task}.yaml")
    for nm in env.task.near_misses:
        check_near_miss(env, nm, 0)


def test_gym_make_and_check_env_and_observation(tmp_path: Path) -> None:
    env = gym.make("agentrl/notes-read-code", root_dir=tmp_path, screenshot=True)
    try:
        check_env(env)  # Gymnasium's checker (spaces, seeding, reset/step) and agentrl.testing's
        obs, info = env.reset(seed=4)
        code = env.unwrapped.variant.variables["code"]
        assert f"Door code: {code}" in obs["axtree"] and '[focused] "memo.txt — Notes" class=Notes' in obs["text"]
        assert obs["screenshot"].shape == (768, 1024, 3) and obs["screenshot"].std() > 1  # not a blank screen
        assert any(e.kind == "window" and e.change == "opened" for e in info["events"])
        assert any(e.kind == "process" and e.name == "notes" for e in info["events"])
        env.step("wait()")  # the trajectory is written as the episode happens
        meta, steps, summary = read_trajectory(env.unwrapped.episode_dir / "trajectory.jsonl")
        assert meta["task_id"] == "notes-read-code" and len(steps) == 1 and summary is None
        assert steps[0].parsed == "wait()" and "Accessibility tree:" in steps[0].observation
        assert steps[0].screenshot == "screenshots/0001.png" and (env.unwrapped.episode_dir / steps[0].screenshot).is_file()
    finally:
        env.close()


BAD_ACTIONS = [
    ("", "empty action"),
    ("dance()", "no action found"),
    ("click(e999)", "there is no element e999"),
    ("click(5000, 10)", "off the screen"),
    ("click(1, 2, 3)", "click() takes"),
    ('key("NoSuchKey")', "failed"),
    ('focus("No Such Window")', "no window titled"),
    ("\ud800 junk \x00", "no action found"),
]


def test_bad_actions_are_error_observations(make_env) -> None:
    env = make_env(DESKTOP / "notes-save-as.yaml", max_steps=30)
    env.reset(seed=0)
    for action, reason in BAD_ACTIONS:
        obs, reward, terminated, truncated, info = env.step(action)
        assert reason in (info["action_error"] or ""), (action, info["action_error"])
        assert "ERROR" in obs["text"] and reward == 0.0 and not terminated and not truncated
    obs, *_ = env.step("wait()")  # the episode goes on
    assert obs["last_action_error"] == "" and "draft.txt — Notes" in obs["windows"]


DETECTOR_CASES = [
    {"id": "save_as_shown", "detector": "window_shown", "params": {"title": "Save As"}, "category": "ui"},
    {"id": "save_as_in_xterm", "detector": "window_shown", "params": {"title": "Save As", "wm_class": "xterm"},
     "category": "ui"},
    {"id": "terminal_focused", "detector": "window_shown", "params": {"title": "Terminal", "focused": True},
     "category": "ui"},
    {"id": "save_as_closed", "detector": "dialog_closed", "params": {"title": "Save As"}, "category": "ui"},
    {"id": "md_created", "detector": "file_changed",
     "params": {"change": "created", "glob": "*.md", "contains": "hello desk"}, "category": "file"},
    {"id": "md_wrong_content", "detector": "file_changed",
     "params": {"change": "created", "ext": "md", "contains": "nope"}, "category": "file"},
    {"id": "a_modified", "detector": "file_changed", "params": {"change": "modified", "glob": "a.txt"},
     "category": "file"},
    {"id": "b_deleted", "detector": "file_changed", "params": {"change": "deleted", "glob": "b.txt"},
     "category": "file"},
    {"id": "sleep_started", "detector": "process_started", "params": {"name": "sleep", "cmd_re": "sleep 77"},
     "category": "ui"},
    {"id": "sleep_exited", "detector": "process_exited", "params": {"name": "sleep"}, "category": "ui"},
    {"id": "screen_changed", "detector": "screen_changed",
     "params": {"window_title_re": "^Terminal$", "region": [0, 0, 500, 60], "min_fraction": 0.002},
     "category": "ui"},
    {"id": "goal", "detector": "answer_matches", "params": {"equals": "end"}, "category": "goal"},
]


def test_detectors_fire_exactly_when_their_condition_holds(make_env, tmp_path: Path) -> None:
    env = make_env(write_task(tmp_path, ["notes a.txt", "xterm"], DETECTOR_CASES, {"a.txt": "start\n", "b.txt": "bye\n"}))
    obs, info = env.reset(seed=0)
    fired: dict[str, set[str]] = {}

    def step(name: str, action: str) -> dict:
        nonlocal obs
        obs, _, _, truncated, info = env.step(action)
        assert not info["action_error"] and not truncated, (action, info["action_error"])
        fired[name] = {e.id for e in info["milestones"]}
        return obs

    ref = lambda role, name: next(e.ref for e in env._ep.ax.elements if e.role == role and e.name == name)  # noqa: E731
    step("focus terminal", 'focus("Terminal")')
    step("start sleep", 'type("rm b.txt; (sleep 77 &) \\n")')
    step("focus notes", 'focus("Notes")')
    step("type text", 'type("hello desk ")')
    step("save a.txt", 'key("ctrl+s")')
    step("open save as", f"click({ref('button', 'Save As…')})")
    step("save as md", f'fill({ref("textbox", "File name")}, "n.md")')
    step("confirm", 'key("Return")')
    step("kill sleep", 'focus("Terminal")')
    step("pkill", 'type("pkill -f \'sleep 77\'\\n")')
    step("end", 'done("end")')
    assert fired == {
        "focus terminal": {"terminal_focused"},
        "start sleep": {"b_deleted", "sleep_started", "screen_changed"},
        "focus notes": set(),
        "type text": set(),
        "save a.txt": {"a_modified"},
        "open save as": {"save_as_shown"},
        "save as md": set(),
        "confirm": {"save_as_closed", "md_created"},
        "kill sleep": set(),
        "pkill": {"sleep_exited"},
        "end": {"goal"},
    }, fired
    assert not {"save_as_in_xterm", "md_wrong_content"} & set(env.summary().milestones)


def test_every_desktop_detector_has_a_case() -> None:
    from agentrl.rewards.detectors import DETECTORS

    desktop = {n for n in DETECTORS.names() if DETECTORS.get(n).fn.__module__ == "agentrl.rewards.desktop_detectors"}
    assert desktop == {m["detector"] for m in DETECTOR_CASES} - {"answer_matches"}


def test_nothing_is_written_outside_the_episode_dir(make_env, tmp_path: Path, monkeypatch) -> None:
    home, tmp, cwd = (tmp_path / d for d in ("home", "tmp", "cwd"))
    for d in (home, tmp, cwd):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    notes = make_env(DESKTOP / "notes-save-as.yaml", root_dir=tmp_path / "episodes")
    term = make_env(DESKTOP / "xterm-echo.yaml", root_dir=tmp_path / "episodes")
    for env in (notes, term):
        info, _ = play(env, 2)
        assert info["success"]
    displays = [env.session.display.lstrip(":") for env in (notes, term)]
    notes.close()
    term.close()
    for d in (home, cwd, tmp):  # tmp held the session dirs (D-Bus socket, AT-SPI bus, openbox's HOME)
        assert list(d.rglob("*")) == [], f"written outside the episode dir: {list(d.rglob('*'))}"
    for ep in (tmp_path / "episodes").iterdir():
        assert {p.name for p in ep.iterdir()} <= {"home", "trajectory.jsonl", "apps.log"}
    for n in displays:  # Xvfb's own lock and socket in /tmp went with it
        assert not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists()


def test_no_process_outlives_close_and_reset_kills_the_episode(make_env, tmp_path: Path) -> None:
    env = make_env(DESKTOP / "xterm-echo.yaml")
    env.reset(seed=0)
    ep1 = env.episode_id
    # a process that leaves the terminal's session and process group: found by its environment tag
    env.step('type("setsid sleep 300 & \\n")')
    session = env.session
    assert session is not None
    tag = session.tag
    pids = tagged_pids(TAG, tag)
    names = {Path(f"/proc/{p}/comm").read_text().strip() for p in pids}
    assert {"Xvfb", "dbus-daemon", "openbox", "xterm", "sleep"} <= names, names
    assert tagged_pids(EPISODE_TAG, ep1)
    env.reset(seed=1)
    assert tagged_pids(EPISODE_TAG, ep1) == []  # reset killed every process of the previous episode
    xvfb = session._xvfb
    env.close()
    assert tagged_pids(TAG, tag) == []
    assert xvfb is not None and xvfb.poll() is not None
    display = session.display.lstrip(":")
    assert not Path(f"/tmp/.X{display}-lock").exists()


def test_killed_app_truncates_and_next_reset_recovers(make_env) -> None:
    env = make_env(DESKTOP / "notes-append.yaml")
    obs, _ = env.reset(seed=0)
    pid = env._ep.apps[0][1].pid
    os.kill(pid, signal.SIGKILL)
    obs, reward, terminated, truncated, info = env.step('key("ctrl+End")')
    assert truncated and not terminated and reward == 0.0
    assert "app notes" in info["truncation_reason"] and "SIGKILL" in info["truncation_reason"]
    _, steps, summary = read_trajectory(env.episode_dir / "trajectory.jsonl")
    assert summary is not None and summary.truncated and "SIGKILL" in (summary.truncation_reason or "")
    with pytest.raises(RuntimeError, match="ended"):
        env.step("wait()")
    info, _ = play(env, 1)
    assert info["success"]


def test_killed_x_server_truncates_and_next_reset_restarts_it(make_env) -> None:
    env = make_env(DESKTOP / "notes-read-code.yaml")
    env.reset(seed=0)
    old = env.session
    old._xvfb.kill()
    obs, reward, terminated, truncated, info = env.step("wait()")
    assert truncated and "X server" in info["truncation_reason"]
    info, _ = play(env, 0)
    assert info["success"] and env.session is not old


def test_two_envs_never_share_a_desktop(make_env) -> None:
    a, b = make_env(DESKTOP / "notes-read-code.yaml"), make_env(DESKTOP / "settings-about.yaml")
    obs_a, _ = a.reset(seed=0)
    obs_b, _ = b.reset(seed=0)
    assert a.session.display != b.session.display and a.session.bus != b.session.bus
    assert "Notes" in obs_a["windows"] and "Settings" not in obs_a["windows"] + obs_a["axtree"]
    assert "Settings" in obs_b["windows"] and "Notes" not in obs_b["windows"] + obs_b["axtree"]


def test_coordinate_clicks_reach_the_app(make_env) -> None:
    """click(x, y) and double_click(x, y) on screen coordinates, with no element ids involved."""
    env = make_env(DESKTOP / "files-move.yaml")
    env.reset(seed=0)
    v = env.variant.variables

    def at(name: str) -> str:
        return next(e for e in env._ep.ax.elements if e.role == "listitem" and e.name == name).attrs["at"]

    env.step(f"click({at(v['name'])})")
    assert "selected" in next(e for e in env._ep.ax.elements if e.name == v["name"]).attrs
    obs, *_ = env.step(f"double_click({at(v['folder'] + '/')})")
    assert f'label "Folder: {v["folder"]}"' in obs["axtree"]
