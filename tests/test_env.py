"""The browser env's contract: Gymnasium API, bad actions as observations, the sandbox walls, isolation
between episodes, crash recovery, async and multi-process use, reproducible trajectories."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from pathlib import Path

import gymnasium as gym
import pytest
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import AsyncBrowserEnv, BrowserEnv, BrowserEnvConfig
from agentrl.envs.host import BrowserHost, browser_pids
from agentrl.suites import SUITES_DIR
from conftest import act

import agentrl  # noqa: F401  (registers agentrl/<task-id>)
from agentrl.agents import ScriptedAgent
from agentrl.evaluate import run_episode
from agentrl.testing import check_env
from agentrl.trajectory import read_trajectory

CORE = SUITES_DIR / "core"
LOGIN = CORE / "accounts-login.yaml"
PLAYGROUND = None  # set per test via write_task


def test_gym_make_and_check_env() -> None:
    env = gym.make("agentrl/reports-open")
    try:
        check_env(env)  # Gymnasium's checker and agentrl.testing's
        obs, info = env.reset(seed=1)
        assert "Goal: Open the report" in obs["text"] and "[ref=" in obs["text"]
        assert obs["url"].startswith("http://127.0.0.1:")
    finally:
        env.close()


@pytest.mark.parametrize(
    "action, reason",
    [
        ("", "empty action"),
        ("dance()", "no action found"),
        ("click(e99999)", "there is no element e99999"),
        ('fill(ROOT, "x")', "failed"),  # the page's root element: not fillable
        ('press("NoSuchKey")', "failed"),
        ("click(", "missing closing parenthesis"),
        ('goto("http://example.com/")', "outside the sandbox"),
        ("\ud800 binary \x00 junk", "no action found"),
    ],
)
def test_bad_actions_are_error_observations(make_env, action: str, reason: str) -> None:
    env = make_env(LOGIN, action_timeout_ms=500)
    obs, _ = env.reset(seed=0)
    action = action.replace("ROOT", parse_snapshot(obs["axtree"]).refs()[0])
    obs, reward, terminated, truncated, info = env.step(action)
    assert reason in info["action_error"], info["action_error"]
    assert "ERROR" in obs["text"] and reason in obs["last_action_error"]
    assert reward == 0.0 and not terminated and not truncated
    obs, *_ = env.step("wait()")  # the episode goes on
    assert obs["last_action_error"] == ""


def test_outside_requests_are_blocked_and_recorded(make_env, tmp_path: Path) -> None:
    from conftest import write_task

    env = make_env(write_task(tmp_path, [{"id": "g", "detector": "js_true", "params": {"expr": "false"}, "category": "goal"}]))
    obs, info = env.reset(seed=0)
    # the page's own <img src="http://example.com/tracker.png"> was aborted before leaving the browser
    assert any(e.kind == "blocked_request" and "example.com/tracker.png" in e.url for e in info["events"])
    obs, _, _, _, info = act(env, obs, {"click": {"role": "link", "name": "Outside link"}})
    assert any(e.kind == "blocked_request" and e.url.startswith("http://example.com/outside") for e in info["events"])
    assert obs["url"].startswith(env.sandbox.origin) or obs["url"].startswith("chrome-error://")
    obs, *_ = env.step('goto("http://example.com/steal")')
    assert "outside the sandbox" in obs["last_action_error"]


def test_other_loopback_ports_are_walled_off(make_env) -> None:
    """The wall is the context's proxy, not a URL filter: a page cannot reach another server on 127.0.0.1 (a
    judge, a database UI, ...) by fetch, WebSocket or navigation; the sandbox still answers."""
    import http.server
    import threading

    hits: list[str] = []

    class Count(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Count)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        env = make_env(LOGIN)
        obs, _ = env.reset(seed=0)
        page, run, port = env._env._ep.page, env._host.run, other.server_address[1]
        got = run(page.evaluate("""async port => ({
          fetch: await fetch(`http://127.0.0.1:${port}/fetch`).then(r => 'reached', e => 'failed'),
          ws: await new Promise(ok => { const w = new WebSocket(`ws://127.0.0.1:${port}/ws`);
                                        w.onopen = () => ok('reached'); w.onerror = () => ok('failed'); }),
          sandbox: await fetch('/accounts/login').then(r => r.status),
        })""", port))
        assert got == {"fetch": "failed", "ws": "failed", "sandbox": 200}, got
        obs, _, _, _, info = env.step("wait()")
        assert any(e.kind == "blocked_request" and e.url == f"http://127.0.0.1:{port}/fetch" for e in env._env._ep.events)
        run(page.evaluate("port => { location.href = `http://127.0.0.1:${port}/nav`; }", port))
        obs, *_ = env.step("wait()")
        assert not obs["url"].startswith(f"http://127.0.0.1:{port}")
        assert hits == [], hits
    finally:
        other.shutdown()
        other.server_close()


def test_concurrent_episodes_share_nothing(make_env, tmp_path: Path) -> None:
    a, b = make_env(LOGIN), make_env(LOGIN)
    obs_a, info_a = a.reset(seed=5)
    obs_b, info_b = b.reset(seed=5)  # same task, same seed, both open at once
    for s in a.variant.oracle:
        obs_a, *_ , info_a = act(a, obs_a, s.model_dump(exclude_none=True))
    assert info_a["success"]
    # b's server-side state, cookies and files are untouched by a's login
    assert a.sandbox.episode_state(a.episode_id)["accounts"]["logged_in"] is True
    assert b.sandbox.episode_state(b.episode_id)["accounts"]["logged_in"] is False
    obs_b, *_ = b.step('goto("/accounts/apply")')
    assert "/accounts/login" in obs_b["url"], "b reached the protected page: a's session leaked"
    ctx_a, ctx_b = a._env._ep.context, b._env._ep.context
    cookies_a = a._host.run(ctx_a.cookies())
    cookies_b = b._host.run(ctx_b.cookies())
    assert {c["value"] for c in cookies_a}.isdisjoint({c["value"] for c in cookies_b})
    assert a.episode_dir != b.episode_dir


def test_downloads_stay_in_their_episode_dir(make_env, tmp_path: Path) -> None:
    root = tmp_path / "episodes"
    a, b = make_env(CORE / "reports-download.yaml", root_dir=root), make_env(CORE / "reports-download.yaml", root_dir=root)
    before = {p for p in Path("/tmp").iterdir()}
    r_a = run_episode(a, ScriptedAgent(), 1)
    b.reset(seed=2)
    assert r_a.success
    dir_a, dir_b = Path(r_a.episode_dir), Path(b._env._ep.dir)
    files_a = sorted(p.relative_to(dir_a).as_posix() for p in dir_a.rglob("*") if p.is_file())
    assert any(f.startswith("downloads/") and f.endswith(".csv") for f in files_a)
    assert not any(p.is_file() for p in dir_b.rglob("*") if p.name != "trajectory.jsonl")
    # nothing was written next to the episode dirs, and no new downloads landed in /tmp
    assert {p.name for p in root.iterdir()} == {dir_a.name, dir_b.name}
    new_tmp = {p for p in Path("/tmp").iterdir()} - before
    assert not [p for p in new_tmp if p.is_file()], new_tmp


@pytest.mark.parametrize("isolation", ["context", "storage"])
def test_element_ids_depend_on_the_page_only(make_env, isolation: str) -> None:
    # Playwright numbers a tab's documents into its refs (f3e12); the env's ids must not show how many
    # pages the tab loaded before (a reused context in storage mode, a preloaded start page)
    env = make_env(LOGIN, isolation=isolation, record=False)
    first, _ = env.reset(seed=0)
    for seed in (1, 2, 3):
        env.reset(seed=seed)
    again, _ = env.reset(seed=0)
    assert again["axtree"] == first["axtree"]
    refs = parse_snapshot(first["axtree"]).refs()
    assert refs and all(re.fullmatch(r"e\d+", r) for r in refs), refs
    # an iframe's elements are f1eN, and an action on them reaches the right frame
    page, run = env._env._ep.page, env._host.run
    run(page.evaluate("""() => { const f = document.createElement('iframe');
        f.srcdoc = '<button onclick="parent.document.title = \\'inner clicked\\'">Inner</button>';
        document.body.prepend(f); return new Promise(ok => f.onload = ok); }"""))
    obs, *_ = env.step("wait()")
    inner = [e for e in parse_snapshot(obs["axtree"]).elements if e.name == "Inner"]
    assert len(inner) == 1 and re.fullmatch(r"f1e\d+", inner[0].ref), obs["axtree"]
    obs, *_ = env.step(f"click({inner[0].ref})")
    assert obs["title"] == "inner clicked", obs["last_action_error"]


def test_killed_browser_truncates_and_next_reset_recovers(make_env) -> None:
    env = make_env(LOGIN)
    obs, _ = env.reset(seed=0)
    pids = browser_pids()
    assert pids, "no Chromium process found under this process"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while env._host.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    obs, reward, terminated, truncated, info = env.step("click(e1)")
    assert truncated and not terminated and reward == 0.0
    assert "browser died" in info["truncation_reason"]
    meta, steps, summary = read_trajectory(env.episode_dir / "trajectory.jsonl")
    assert summary is not None and "browser died" in summary.truncation_reason
    obs, info = env.reset(seed=1)  # relaunches Chromium
    assert "Sign in" in obs["text"]
    assert run_episode(env, ScriptedAgent(), 2).success


def test_same_seed_same_trajectory(make_env) -> None:
    env = make_env(CORE / "accounts-apply.yaml")

    def steps_of(seed: int) -> list[dict]:
        r = run_episode(env, ScriptedAgent(), seed)
        _, steps, summary = read_trajectory(Path(r.episode_dir) / "trajectory.jsonl")
        assert summary is not None and summary.success
        port = env.sandbox.origin
        out = []
        for s in steps:
            d = s.model_dump(mode="json", exclude={"latency_ms": True, "timings": True,
                                                   "audit": {"latency_ms": True, "layers": {"__all__": {"latency_ms"}}}})
            assert d["audit"]["decided_by"] == "rules" and d["audit"]["value"] == d["reward"]
            out.append(json.loads(json.dumps(d).replace(port, "ORIGIN")))
        return out

    a, b, c = steps_of(3), steps_of(3), steps_of(4)
    assert a == b
    assert a != c


def test_async_twin_runs_concurrent_episodes(tmp_path: Path) -> None:
    async def one(seed: int) -> bool:
        env = AsyncBrowserEnv(LOGIN, BrowserEnvConfig(root_dir=tmp_path))
        try:
            obs, info = await env.reset(seed)
            agent = ScriptedAgent()
            agent.reset(obs, info, env.variant)
            done = False
            while not done:
                obs, _, term, trunc, info = await env.step(agent.act(obs))
                done = term or trunc
            return bool(info["success"])
        finally:
            await env.close()

    async def main() -> list[bool]:
        return await asyncio.gather(one(1), one(2), one(3))

    assert asyncio.run(main()) == [True, True, True]


def test_sync_env_inside_a_running_event_loop(tmp_path: Path) -> None:
    async def main() -> bool:
        env = BrowserEnv(LOGIN, BrowserEnvConfig(root_dir=tmp_path))  # sync Playwright would refuse here
        try:
            return run_episode(env, ScriptedAgent(), 0).success
        finally:
            env.close()

    assert asyncio.run(main())


def _worker(args: tuple[str, int, str]) -> tuple[int, bool, str]:
    task, seed, root = args
    env = BrowserEnv(task, BrowserEnvConfig(root_dir=Path(root)))
    try:
        r = run_episode(env, ScriptedAgent(), seed)
        return os.getpid(), r.success, env.sandbox.origin
    finally:
        env.close()


def test_worker_processes(tmp_path: Path) -> None:
    with mp.get_context("spawn").Pool(2) as pool:
        out = pool.map(_worker, [(str(LOGIN), s, str(tmp_path)) for s in (1, 2)])
    assert [ok for _, ok, _ in out] == [True, True]
    assert out[0][0] != out[1][0]


def test_no_browser_process_outlives_the_host() -> None:
    """A child process's browsers die with it (the driver kills Chromium when the process exits)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_report_pids, args=(str(LOGIN), q))
    p.start()
    pids = q.get(timeout=60)
    p.join(timeout=30)
    assert pids
    time.sleep(0.5)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]]
    assert not alive, f"Chromium processes outlived their worker: {alive}"


def test_restart_kills_only_its_hosts_browser(make_env) -> None:
    # two hosts in one process (the sync envs' shared one, and one on another loop thread): a stuck
    # browser relaunched by one must not take the other's episodes down
    env = make_env(LOGIN)
    env.reset(seed=0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    other = BrowserHost(loop)
    try:
        other.run(other.browser())
        theirs, ours = set(browser_pids(tag=other._tag)), set(browser_pids(tag=env._host._tag))
        assert theirs and ours and not theirs & ours and theirs | ours <= set(browser_pids())
        other.run(other.restart())
        deadline = time.time() + 10
        while any(Path(f"/proc/{p}").exists() and " Z " not in Path(f"/proc/{p}/stat").read_text() for p in theirs):
            assert time.time() < deadline, "the restarted host's Chromium survived"
            time.sleep(0.05)
        assert env._host.is_alive() and set(browser_pids(tag=env._host._tag)) == ours
        _, _, _, truncated, info = env.step('scroll("down")')  # this host's episode goes on
        assert not truncated, info["truncation_reason"]
    finally:
        other.run(other.aclose())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def _report_pids(task: str, q) -> None:
    env = BrowserEnv(task)
    env.reset(seed=0)
    q.put(browser_pids())
    env.close()
