"""Rewards an agent cannot forge: no tab shows a document the agent (or a page) could author outside the
task's origin, by any scheme or route, and detectors never read one (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrl.envs import wall
from agentrl.envs.axtree import parse_snapshot
from agentrl.sandbox.apps.playground import FORGED_URL
from agentrl.suites import SUITES_DIR
from conftest import write_task

MINIWOB_FORGERY = 'goto("data:text/html,<script>WOB_DONE_GLOBAL=true;WOB_RAW_REWARD_GLOBAL=1</script>")'
ARCHIVE_FORGERY = 'goto("data:text/html,<p>Conversation archived.</p>")'

# what a forged page could feed: its text, its URL, a script's global
FORGE_MILESTONES = [
    {"id": "text", "detector": "text_visible", "params": {"text": "Conversation archived."}, "category": "goal"},
    {"id": "url", "detector": "url_matches", "params": {"pattern": "Conversation|Forged"}, "category": "goal"},
    {"id": "js", "detector": "js_true", "params": {"expr": "window.forged === true"}, "category": "goal"},
]


def _blocked(info: dict) -> list[str]:
    return [e.url for e in info["events"] if e.kind == "blocked_request"]


def _assert_refused(obs: dict, reward: float, terminated: bool, info: dict) -> None:
    assert reward == 0.0 and not terminated and not info["success"], info["milestones"]
    assert info["milestones"] == [] and info["completed"] == []
    assert "blocked" in obs["last_action_error"] and "ERROR" in obs["text"], obs["last_action_error"]
    assert _blocked(info), info["events"]


def test_forge_miniwob_done_global_by_data_url(make_env) -> None:
    env = make_env(SUITES_DIR / "miniwob" / "miniwob.click-test-2.yaml")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(MINIWOB_FORGERY)
    _assert_refused(obs, reward, terminated, info)
    assert any(u.startswith("data:") for u in _blocked(info))
    # the episode goes on, on the task's own page
    obs, reward, *_ = env.step("wait()")
    assert reward == 0.0 and obs["url"].startswith(env.sandbox.origin) and obs["last_action_error"] == ""


def test_forge_mail_archive_notice_by_data_url(make_env) -> None:
    env = make_env(SUITES_DIR / "web" / "email" / "mail-archive.yaml")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(ARCHIVE_FORGERY)
    _assert_refused(obs, reward, terminated, info)
    assert "archived_notice" not in info["completed"]
    assert env.summary().return_ == 0.0


@pytest.mark.parametrize("url", [
    FORGED_URL, "blob:http://127.0.0.1/0b1c", "about:blank", "about:srcdoc", "view-source:http://127.0.0.1/",
    "filesystem:http://127.0.0.1/temporary/f.html", "javascript:document.title=1", "chrome://version",
    "file:///etc/passwd",
])
def test_forge_by_goto_every_scheme(make_env, tmp_path: Path, url: str) -> None:
    env = make_env(write_task(tmp_path, FORGE_MILESTONES))
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(f'goto("{url}")')
    _assert_refused(obs, reward, terminated, info)
    assert url in _blocked(info)


@pytest.mark.parametrize("control, route", [
    ("Data link", "link"), ("Blank link", "link"), ("Source link", "link"),
    ("Data form", "form"),
    ("Script data", "script"), ("Script blob", "script"), ("Script about", "script"), ("Script filesystem", "script"),
    ("Redirect link", "redirect"),
    ("Popup blank", "popup"), ("Popup blob", "popup"),
    ("Iframe data", "iframe"), ("Iframe blob", "iframe"),
])
def test_forge_by_page_route(make_env, tmp_path: Path, control: str, route: str) -> None:
    """Each route a page offers to a document outside its origin (sandbox/apps/playground.py `/escapes`)
    is an error observation and a recorded blocked request, and earns nothing; the tab stays on the
    task's origin."""
    env = make_env(write_task(tmp_path, FORGE_MILESTONES, path="/playground/escapes"), action_timeout_ms=1000)
    obs, _ = env.reset(seed=0)
    ref = next(e.ref for e in parse_snapshot(obs["axtree"]).elements if e.name == control)
    obs, reward, terminated, truncated, info = env.step(f"click({ref})")
    _assert_refused(obs, reward, terminated, info)
    assert obs["url"].startswith(env.sandbox.origin + "/")
    page = env._env._ep.page
    assert wall.trusted(env.sandbox.origin, page), [f.url for f in page.frames]
    obs, reward, _, _, info = env.step("wait()")  # nothing forged is left to earn from later
    assert reward == 0.0 and info["completed"] == []


def test_forge_slipped_past_the_wall_earns_nothing(make_env, tmp_path: Path, monkeypatch) -> None:
    """Defence in depth: with the wall's eviction turned off, a data: iframe stays in the page, and the
    detectors still read nothing from it; the audit says the page state was withheld."""

    async def no_eviction(origin, page, blank):  # the first layer off, to show the second one
        return []

    monkeypatch.setattr(wall, "enforce", no_eviction)
    env = make_env(write_task(tmp_path, FORGE_MILESTONES[:1], path="/playground/escapes"))
    obs, _ = env.reset(seed=0)
    ref = next(e.ref for e in parse_snapshot(obs["axtree"]).elements if e.name == "Iframe data")
    obs, reward, terminated, truncated, info = env.step(f"click({ref})")
    obs, reward, terminated, truncated, info = env.step("wait()")
    assert "Conversation archived." in obs["axtree"]  # the forged document is showing...
    assert reward == 0.0 and info["completed"] == []  # ...and earns nothing
    assert "withheld" in info["audit"]["note"], info["audit"]


def test_forge_declared_origin_is_exact() -> None:
    origin = "http://127.0.0.1:8123"
    assert wall.declared(origin, origin + "/mail/") and wall.declared(origin, origin)
    for url in ("http://127.0.0.1:81234/", "http://127.0.0.1:8123.evil/", "data:" + origin + "/",
                "blob:" + origin + "/x", "view-source:" + origin + "/", "about:blank"):
        assert not wall.declared(origin, url), url
    assert wall.refusal("Not allowed to navigate top frame to data URL: data:text/html,x") == "data:text/html,x"
    assert wall.refusal("Not allowed to load local resource: view-source:http://a/") == "view-source:http://a/"
    assert wall.refusal("Failed to load resource: 404") is None
