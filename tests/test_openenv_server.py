"""`agentrl serve` as OpenEnv: openenv-core's own server app on 127.0.0.1, driven by openenv-core's own client
(`EnvClient` over its WebSocket protocol): 8 concurrent sessions on one server each solve a task of the web
suite with the scripted agent's actions, milestones in the metadata, a full-page screenshot fetched intact;
a session whose page dies ends truncated with the reason, and the server goes on."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("openenv.core")
uvicorn = pytest.importorskip("uvicorn")

from agentrl.envs.browser import BrowserEnvConfig  # noqa: E402

from agentrl.agents.scripted import ScriptedAgent  # noqa: E402
from agentrl.learner.trainer import load_tasks  # noqa: E402
from agentrl.openenv_server import AgentrlAction, AgentrlEnvClient, create_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    specs = load_tasks([str(REPO / "tasks/web")])[:8]
    app = create_server(specs, config=BrowserEnvConfig(record=False, keep_episode_dirs=False), max_sessions=16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield app, f"http://127.0.0.1:{port}", specs, srv
    srv.should_exit = True
    th.join(timeout=30)


async def _solve(app, url: str, task: str) -> dict:
    async with AgentrlEnvClient(url) as c:
        r = await c.reset(seed=0, task=task)
        st = await c.state()
        env = app.state.agentrl.sessions[st.episode_id].env  # the server's session: its variant has the oracle
        agent = ScriptedAgent()
        agent.reset({"axtree": r.observation.axtree}, {}, env.variant)
        fired, rewards, shot = [], [], None
        while not r.done:
            first = not rewards
            r = await c.step(AgentrlAction(action=agent.act({"axtree": r.observation.axtree}),
                                           screenshot="full" if first else "none"))
            rewards.append(r.reward)
            fired += [m["id"] for m in r.observation.metadata["milestones"]]
            if first:  # the page's height now, on the server's loop (the next step has not been sent)
                height = asyncio.run_coroutine_threadsafe(env._ep.page.evaluate(
                    "document.documentElement.scrollHeight"), env.host.loop).result(30)
                shot = (await c.screenshot(r.observation), r.observation.screenshot, height)
        return {"task": task, "obs": r.observation, "rewards": rewards, "fired": fired, "shot": shot,
                "state": await c.state(), "host": env.host}


def test_openenv_eight_concurrent_sessions_solve_their_tasks_with_the_scripted_agent(server) -> None:
    from PIL import Image

    app, url, specs, _ = server

    async def main():
        return await asyncio.gather(*(_solve(app, url, s.id) for s in specs))

    got = asyncio.run(main())
    assert len(got) == 8 and len({g["task"] for g in got}) == 8
    assert len({id(g["host"]) for g in got}) == 1  # one browser host (one Chromium) for every session
    for g in got:
        meta = g["obs"].metadata
        assert meta["success"] and g["state"].success, (g["task"], meta)
        assert meta["return"] == pytest.approx(sum(g["rewards"])) and g["fired"]
        assert set(g["fired"]) <= set(meta["completed"])
        assert meta["audit"]["decided_by"] and "value" in meta["audit"]
        png, info, height = g["shot"]
        assert info["full_page"] and len(png) == info["bytes"]
        w, h = BrowserEnvConfig().viewport
        with Image.open(io.BytesIO(png)) as im:
            im.load()  # a truncated PNG fails here
            assert im.size == (w, max(h, height)), (g["task"], im.size, height)  # the whole page, not the viewport
    assert any(g["shot"][2] > BrowserEnvConfig().viewport[1] for g in got)  # mail-attach: a page below the fold


def test_openenv_a_dead_session_ends_truncated_and_the_server_goes_on(server) -> None:
    app, url, specs, srv = server

    async def main():
        async with AgentrlEnvClient(url) as c:
            await c.reset(seed=1, task=specs[0].id)
            env = app.state.agentrl.sessions[(await c.state()).episode_id].env
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(env._ep.page.close(), env.host.loop))
            r = await c.step(AgentrlAction(action="scroll(down)"))
            assert r.done and r.observation.metadata["truncated"], r.observation.metadata
            assert r.observation.metadata["truncation_reason"].startswith(("browser died", "page failed", "session failed"))
        dropped = AgentrlEnvClient(url)  # a client that vanishes mid-episode, without a close message
        await dropped.connect()
        await dropped.reset(seed=2, task=specs[1].id)
        dropped._ws.transport.abort()
        async with AgentrlEnvClient(url) as c:  # the server still serves new sessions
            with pytest.raises(RuntimeError, match="no task 'nope' on this server"):
                await c.reset(seed=3, task="nope")  # the client's error; the session goes on
            r = await c.reset(seed=3, task=specs[2].id)
            assert r.observation.goal and not r.done
            return r

    asyncio.run(main())
    assert urllib.request.urlopen(url + "/health", timeout=10).status == 200 and not srv.should_exit


def test_openenv_pointer_verbs_reach_the_env(server) -> None:
    """The action line is the env's language, the pointer verbs included: a point off the viewport is the
    env's error, a point on the page acts and is recorded."""
    app, url, specs, srv = server

    async def main():
        async with AgentrlEnvClient(url) as c:
            await c.reset(seed=4, task=specs[0].id)
            r = await c.step(AgentrlAction(action="click(5000, 10)"))
            assert "the point (5000, 10) is outside the viewport" in r.observation.info["action_error"] and not r.done
            r = await c.step(AgentrlAction(action="hover(5, 5)"))
            assert not r.observation.info.get("action_error"), r.observation.info
            assert [e["name"] for e in r.observation.info["events"] if e["kind"] == "action"] == ["hover"]

    asyncio.run(main())


def test_openenv_agentrl_serve_command_serves_a_task_to_the_client() -> None:
    """`agentrl serve` as people run it: a subprocess on 127.0.0.1, one episode through openenv-core's client."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "agentrl.cli", "serve", "--task",
                             str(REPO / "tasks/train/click-named-button.yaml"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(url + "/health", timeout=1).status == 200:
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)

        async def main():
            async with AgentrlEnvClient(url) as c:
                r = await c.reset(seed=0)
                name = r.observation.goal.split('"')[1]  # Click the "<name>" button.
                ref = next(line.split("[ref=")[1].rstrip("]") for line in r.observation.axtree.splitlines()
                           if f'button "{name}"' in line)
                return await c.step(AgentrlAction(action=f"click({ref})"))

        r = asyncio.run(main())
        assert r.done and r.reward == pytest.approx(1.0) and r.observation.metadata["success"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
