"""The browser env against hostile pages (issue 20), served by a sandbox app of a custom `SandboxServer`:
capped downloads, huge pages observed, every observation field and trajectory line within budget, no
agent stranded by a popup, resets that work after every kind of crash, no clipboard across episodes,
WebSockets to refused origins recorded, and degenerate actions answered at once."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentrl.envs.actions import MAX_ACTION_CHARS
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import BrowserEnv
from agentrl.envs.browser.recorder import notes
from agentrl.envs.host import browser_pids
from agentrl.sandbox.apps.base import App, Request, Response
from agentrl.sandbox.server import SandboxServer
from conftest import write_task

OUTSIDE = "http://outside.test"

INDEX = """<!doctype html><title>Hostile</title><h1>Hostile page</h1>
<button onclick="big()">Big download</button>
<a href="small.bin" download>Small download</a>
<button onclick="window.open('OUTSIDE/popup')">Popup outside</button>
<button onclick="setTimeout(() => window.open('OUTSIDE/later'), 300)">Popup later</button>
<a href="OUTSIDE/link">Outside link</a>
<a href="other">Other page</a>
<button onclick="new WebSocket('ws://outside.test/ws')">WebSocket</button>
<button onclick="for (let i = 0; i < 300; i++) fetch('OUTSIDE/flood/' + i).catch(() => 0)">Flood</button>
<input aria-label="Secret" value="hunter2"> <textarea aria-label="Paste here"></textarea>
<script>
function big() {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([new Uint8Array(64 * 1024 * 1024)]));
  a.download = 'big.bin';
  document.body.append(a);
  a.click();
}
</script>""".replace("OUTSIDE", OUTSIDE)


class HostileApp(App):
    """Pages that do what an arbitrary page may do. Mounted as ``playground`` (a name tasks may start in);
    the server of these tests serves only this app."""

    name = "playground"
    title = "Hostile"

    def new_state(self, seed: int) -> dict[str, int]:
        return {"broken": 0}

    def facts(self, state: dict[str, int]) -> dict[str, str]:
        return {}

    def public_state(self, state: dict[str, int]) -> dict[str, Any]:
        return dict(state)

    def handle(self, req: Request, state: dict[str, int]) -> Response:
        if req.path == "/small.bin":
            return Response(body=b"x" * 1024, content_type="application/octet-stream",
                            headers=[("Content-Disposition", 'attachment; filename="small.bin"')])
        if req.path == "/table":  # rows, and a long title and URL when asked
            rows = "".join(f"<tr><td>row {i}</td><td><a href='#r{i}'>open {i}</a></td></tr>" for i in range(int(req.query["rows"])))
            title = "T" * int(req.query.get("title", "5"))
            return Response(body=f"<!doctype html><title>{title}</title><table>{rows}</table>".encode())
        if req.path == "/broken-once":  # the start page's first load fails in the browser (a bad response)
            state["broken"] += 1
            if state["broken"] == 1:  # a second, different Content-Length: net::ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH
                return Response(body=b"broken", headers=[("Content-Length", "3")])
            return Response(body=b"<!doctype html><title>Loaded</title><p>Loaded on the second try</p>")
        if req.path == "/other":
            return Response(body=b"<!doctype html><title>Other</title><p>The other page</p>")
        return Response(body=INDEX.encode())


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(apps=[HostileApp()]) as srv:
        yield srv


@pytest.fixture
def hostile(server: SandboxServer, tmp_path: Path, make_env) -> Any:
    made = itertools.count()

    def make(path: str = "/playground/", **config: Any) -> BrowserEnv:
        task = write_task(tmp_path, [{"id": "g", "detector": "js_true", "params": {"expr": "false"}, "category": "goal"}],
                          path=path, task_id=f"hostile{next(made)}", max_steps=200)
        return make_env(task, sandbox=server, **config)

    return make


def ref(obs: dict[str, Any], name: str) -> str:
    return next(e.ref for e in parse_snapshot(obs["axtree"]).elements if e.name == name and e.ref)


def blocked(info: dict[str, Any]) -> list[Any]:
    return [e for e in info["events"] if e.kind == "blocked_request"]


def step_until(env: BrowserEnv, action: str, kind: str) -> tuple[dict[str, Any], list[Any]]:
    """Take `action`, then wait() steps until an event of `kind` came (a download may start after the
    click's step has settled: the page makes the file first); returns the last observation and the events."""
    obs, _, _, truncated, info = env.step(action)
    events = list(info["events"])
    deadline = time.monotonic() + 15  # a loaded machine
    while not any(e.kind == kind for e in events) and time.monotonic() < deadline:
        obs, _, _, truncated, info = env.step("wait()")
        events += info["events"]
    assert not truncated
    return obs, events


def test_hostile_download_over_the_byte_budget_is_cancelled_and_recorded(hostile) -> None:
    env = hostile(max_download_bytes=2**20)
    obs, _ = env.reset(seed=0)
    obs, events = step_until(env, f"click({ref(obs, 'Big download')})", "blocked_request")  # 64 MiB
    refused = [e for e in events if e.kind == "blocked_request" and e.reason and "budget of 1048576 bytes" in e.reason]
    assert refused and refused[0].url.startswith("blob:"), events
    assert "budget of 1048576 bytes" in notes(refused)[0]  # what the agent reads (the step's notes)
    downloads = env.episode_dir / "downloads"
    assert not downloads.exists() or not any(downloads.iterdir())
    obs, events = step_until(env, f"click({ref(obs, 'Small download')})", "download")  # a small one still fits
    assert [e.path for e in events if e.kind == "download"] == ["downloads/small.bin"], events


def test_hostile_downloads_over_the_count_budget_are_refused(hostile) -> None:
    env = hostile(max_downloads=2)
    obs, _ = env.reset(seed=0)
    for kind in ("download", "download", "blocked_request"):
        obs, events = step_until(env, f"click({ref(obs, 'Small download')})", kind)
    assert any(e.kind == kind and "budget of 2 downloads" in e.reason for e in events), events
    assert sorted(p.name for p in (env.episode_dir / "downloads").iterdir()) == ["small (1).bin", "small.bin"]


def test_hostile_huge_page_is_observed_as_too_large_not_truncated(hostile) -> None:
    env = hostile("/playground/table?rows=400", max_obs_elements=1000)  # 400 rows: ~2,000 elements
    obs, info = env.reset(seed=0)
    assert "page too large to observe in full" in obs["text"] and "over max_obs_elements=1000" in obs["text"]
    assert "row 399" in obs["text"] and "[ref=" not in obs["axtree"]  # its text, no element ids
    obs, _, _, truncated, info = env.step('goto("/playground/other")')  # the agent can still leave it
    assert not truncated and obs["title"] == "Other" and "[ref=" in obs["axtree"]


def test_hostile_page_whose_snapshot_times_out_is_observed_as_too_large(hostile) -> None:
    """Under max_obs_elements, but its snapshot does not come in time: the same degraded observation."""
    env = hostile("/playground/table?rows=2000", settle_timeout_ms=1)  # ~10,000 elements in 1 ms: never
    obs, _ = env.reset(seed=0)
    assert "whose snapshot did not come within 1 ms" in obs["text"] and "row 1999" in obs["text"], obs["text"][:400]
    obs, _, _, truncated, _ = env.step("wait()")
    assert not truncated and "page too large" in obs["axtree"]


def test_hostile_every_observation_field_and_trajectory_line_within_budget(hostile) -> None:
    long_url = "/playground/table?rows=600&title=9000&pad=" + "p" * 7000
    env = hostile(long_url, max_obs_chars=5000, max_record_chars=20_000)
    obs, _ = env.reset(seed=0)
    for key in ("text", "axtree", "title", "url"):
        assert len(obs[key]) <= 5000 + 60 and "[cut at 5000 of " in obs[key], (key, len(obs[key]))
    obs, _, _, _, info = env.step(f'fill({ref(obs, "open 1")}, "{"x" * 8000}")')  # a long action that fails
    assert len(obs["last_action_error"]) <= 5000 + 60
    obs, *_ = env.step('goto("/playground/")')
    obs, *_ = env.step(f"click({ref(obs, 'Flood')})")  # 300 refused requests in one step
    lines = (env.episode_dir / "trajectory.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines if json.loads(line)["type"] == "step"]
    assert all(len(line) <= 20_000 for line in lines), [len(line) for line in lines]
    # the long action's step: its events (the fill's 8,000-character value), then text fields, cut and marked;
    # the action itself kept whole (a replay sends it again)
    assert {"events", "observation", "error"} <= set(steps[0]["cut"]) and "action" not in steps[0]["cut"], steps[0]["cut"]
    assert steps[0]["error"].endswith("characters: max_record_chars]") and len(steps[0]["action"]) > 8000
    assert steps[1]["cut"] == {}
    assert steps[-1]["cut"].get("events", 0) > len(steps[-1]["events"]), steps[-1]["cut"]  # the flood's events


def test_hostile_popup_to_a_refused_origin_leaves_the_agent_on_its_page(hostile, server: SandboxServer) -> None:
    env = hostile()
    obs, _ = env.reset(seed=0)
    start = obs["url"]
    obs, _, _, truncated, info = env.step(f"click({ref(obs, 'Popup outside')})")
    assert not truncated and obs["url"] == start and obs["title"] == "Hostile", obs["url"]
    if not any(e.reason and "popup" in e.reason for e in blocked(info)):  # its tab came after the step (load)
        obs, _, _, truncated, info = env.step("wait()")
        assert obs["url"] == start
    assert any(e.reason and "popup" in e.reason for e in blocked(info)), info["events"]
    assert "blocked" in obs["last_action_error"]
    # a popup the page opens between steps: the next step still starts on the sandbox page, and a relative
    # goto resolves against the task's origin
    obs, *_ = env.step(f"click({ref(obs, 'Popup later')})")
    context, deadline = env._env._ep.context, time.monotonic() + 15
    while not any(p.url.startswith("chrome-error:") for p in context.pages) and time.monotonic() < deadline:
        time.sleep(0.1)  # the popup is open, on the error page of its refused request
    obs, _, _, truncated, info = env.step('goto("/playground/other")')
    assert not truncated and obs["url"] == server.origin + "/playground/other" and obs["title"] == "Other"
    assert "outside.test/later" in obs["last_action_error"]  # the popup since the last step, reported
    # a same-tab navigation to a refused origin: back on the last sandbox document, not an error page
    obs, *_ = env.step("back()")
    obs, _, _, _, info = env.step(f"click({ref(obs, 'Outside link')})")
    assert obs["url"] == start and obs["title"] == "Hostile", obs["url"]
    assert any(e.url == OUTSIDE + "/link" for e in blocked(info))


def test_hostile_websocket_to_a_refused_origin_is_recorded(hostile) -> None:
    env = hostile()
    obs, _ = env.reset(seed=0)
    obs, events = step_until(env, f"click({ref(obs, 'WebSocket')})", "blocked_request")
    ws = [e for e in events if e.kind == "blocked_request" and e.url == "ws://outside.test/ws"]
    assert ws and "WebSocket" in ws[0].reason, events


def pasted(obs: dict[str, Any]) -> str:
    return next(e.value for e in parse_snapshot(obs["axtree"]).elements if e.name == "Paste here")


@pytest.mark.parametrize("isolation", ["context", "storage"])
def test_hostile_clipboard_does_not_cross_episodes(hostile, isolation: str) -> None:
    env = hostile(isolation=isolation)
    obs, _ = env.reset(seed=0)
    for action in (f"click({ref(obs, 'Secret')})", 'press("Control+A")', 'press("Control+C")',
                   f"click({ref(obs, 'Paste here')})", 'press("Control+V")'):
        obs, *_ = env.step(action)
    assert pasted(obs) == "hunter2"  # the clipboard works within an episode
    obs, _ = env.reset(seed=1)
    obs, *_ = env.step(f"click({ref(obs, 'Paste here')})")
    obs, *_ = env.step('press("Control+V")')
    assert pasted(obs) == "", obs["axtree"]


def test_hostile_actions_over_the_limit_or_degenerate_are_error_observations(hostile) -> None:
    env = hostile()
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("click(e1)" + " " * MAX_ACTION_CHARS)
    assert f"over the limit of {MAX_ACTION_CHARS}" in info["action_error"] and not truncated
    obs, _, _, truncated, info = env.step("click(" * (MAX_ACTION_CHARS // 6))
    assert "unquoted '('" in info["action_error"] and not truncated
    obs, *_ = env.step("wait()")
    assert obs["last_action_error"] == ""


# ---------------------------------------------------------------- recovery, one test per crash kind
def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _renderers() -> list[int]:
    out = []
    for pid in browser_pids():
        try:
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def _recovers(env: BrowserEnv, seed: int) -> None:
    obs, _ = env.reset(seed=seed)
    assert obs["title"] == "Hostile", obs["text"][:300]
    obs, _, _, truncated, info = env.step(f"click({ref(obs, 'Other page')})")
    assert not truncated and obs["title"] == "Other", info


def test_hostile_recovery_after_browser_crash(hostile) -> None:
    env = hostile()
    env.reset(seed=0)
    _kill(browser_pids())
    deadline = time.time() + 10
    while env._host.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    obs, _, _, truncated, info = env.step("wait()")
    assert truncated and "browser died" in info["truncation_reason"]
    _recovers(env, 1)


@pytest.mark.parametrize("isolation", ["context", "storage"])
def test_hostile_recovery_after_renderer_crash(hostile, isolation: str) -> None:
    env = hostile(isolation=isolation)
    env.reset(seed=0)
    renderers = _renderers()
    assert renderers, "no renderer process found"
    _kill(renderers)  # the episode's page and the context made ready for the next one
    deadline = time.monotonic() + 10
    while not env._env._ep.crashed and time.monotonic() < deadline:
        time.sleep(0.05)
    obs, _, _, truncated, info = env.step("wait()")
    assert truncated and "renderer crashed" in info["truncation_reason"], info["truncation_reason"]
    _recovers(env, 1)
    _recovers(env, 2)


def test_hostile_recovery_after_context_crash(hostile) -> None:
    env = hostile()
    env.reset(seed=0)
    env._host.run(env._env._ep.context.close())  # the context goes away under the episode
    obs, _, _, truncated, info = env.step("wait()")
    assert truncated and info["truncation_reason"], info
    _recovers(env, 1)


def test_hostile_recovery_after_sandbox_request_failure(hostile, server: SandboxServer) -> None:
    """The start page's first load fails (reset's retry path): the second attempt runs in the same sandbox
    episode, still open (it was closed under it: 'Episode not open', then a KeyError on the first step)."""
    env = hostile("/playground/broken-once")
    obs, _ = env.reset(seed=0)
    assert obs["title"] == "Loaded", obs["text"][:300]
    assert env.episode_id in server.episode_ids()
    assert server.episode_state(env.episode_id)["playground"]["broken"] == 2
    obs, _, _, truncated, info = env.step('goto("/playground/other")')
    assert not truncated and obs["title"] == "Other"
