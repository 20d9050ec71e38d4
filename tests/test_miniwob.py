"""The MiniWoB++ suite: the sandbox serves Farama's pages seeded per episode, success is MiniWoB's own reward
(checked against the page for every episode, for a solving and a random agent), and the env's
``isolation="storage"`` mode leaves no client state from one episode to the next."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import SPARES, BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.apps.base import Request
from agentrl.sandbox.apps.miniwob import MiniWoBApp
from agentrl.suites import SUITES_DIR

from agentrl.agents import RandomAgent
from agentrl.agents.miniwob import MiniWoBHeuristicAgent, page_reward, utterance
from agentrl.evaluate import run_episode
from agentrl.suite import load_suite_spec
from agentrl.taskspec import load_suite, load_task
from agentrl.testing import check_oracle
from agentrl.types import BlockedRequestEvent

SUITE = SUITES_DIR / "miniwob"


def task(name: str) -> Path:
    return SUITE / f"miniwob.{name}.yaml"


@pytest.fixture
def env_for(tmp_path: Path):
    made: list[BrowserEnv] = []

    def make(name: str | Path, isolation: str = "storage") -> BrowserEnv:
        path = name if isinstance(name, Path) else task(name)
        env = BrowserEnv(path, BrowserEnvConfig(root_dir=tmp_path, isolation=isolation, record=False))
        made.append(env)
        return env

    yield make
    for e in made:
        e.close()


def test_suite_is_the_whole_miniwob_scored_by_miniwobs_reward() -> None:
    tasks = load_suite(SUITE)
    registered = MiniWoBApp().registered_tasks()  # the package's miniwob/<task>-v1 on html/miniwob pages
    assert len(registered) == 125 and sorted(t.id.removeprefix("miniwob.") for t in tasks) == registered
    for t in tasks:
        assert t.start.app == "miniwob" and t.start.path == f"/miniwob/miniwob/{t.id.removeprefix('miniwob.')}.html"
        assert [(m.id, m.detector, m.params, m.category) for m in t.milestones] == [
            ("miniwob_reward", "js_true", {"expr": "WOB_DONE_GLOBAL && WOB_RAW_REWARD_GLOBAL > 0"}, "goal"),
            ("miniwob_over", "js_true", {"expr": "WOB_DONE_GLOBAL && WOB_RAW_REWARD_GLOBAL <= 0"}, "ui"),
        ]
        assert t.success_ids() == ["miniwob_reward"] and t.fail_on == ["miniwob_over"] and t.milestones[1].weight == 0
    names = {p.stem for p in (MiniWoBApp().root / "miniwob").glob("*.html")}
    assert {t.id.removeprefix("miniwob.") for t in tasks} <= names
    assert load_suite_spec(SUITE).split("test")[1] == list(range(100000, 100010))


@pytest.mark.parametrize(
    "name", ["click-checkboxes", "login-user", "read-table", "click-tab", "email-inbox-forward-nl", "search-engine",
             "multi-layouts", "copy-paste-2"]
)
def test_heuristic_agent_solves_and_success_is_miniwobs_reward(env_for, name: str) -> None:
    env = env_for(name)
    r = run_episode(env, MiniWoBHeuristicAgent(), seed=3)
    done, raw = page_reward(env)
    assert r.error is None and r.success, (r.actions, r.milestones)
    assert done and raw > 0  # MiniWoB itself says the episode was won
    assert r.milestones == ["miniwob_reward"]


def test_random_agent_failures_agree_with_miniwobs_reward(env_for) -> None:
    outcomes = []
    for name in ("enter-text", "click-option", "click-test-2"):
        env = env_for(name, isolation="context")
        for seed in (0, 1):
            r = run_episode(env, RandomAgent(seed=seed), seed)
            _, raw = page_reward(env)
            assert r.success == (raw > 0), f"{name} seed {seed}: ours {r.success}, MiniWoB raw reward {raw}"
            outcomes.append(r.success)
    assert not all(outcomes), "a random agent won every episode: the check saw no failure"


class _Reading(RandomAgent):
    """The random agent, keeping the instruction it saw at reset (the page's level-1 heading)."""

    def reset(self, obs, info, variant) -> None:
        super().reset(obs, info, variant)
        self.goal = utterance(parse_snapshot(obs["axtree"]))


def test_every_miniwob_task_runs_and_random_agent_agrees_with_miniwobs_reward(tmp_path: Path) -> None:
    # the whole suite, one episode each: the page loads and starts (its instruction is the heading), the
    # episode runs without an error, and the env's success is MiniWoB's own reward read from the page
    config = BrowserEnvConfig(root_dir=tmp_path, isolation="storage", record=False)
    seen = []
    for spec in load_suite(SUITE):
        env = BrowserEnv(spec, config)  # all on the one browser of the process's host
        try:
            agent = _Reading(seed=1)
            r = run_episode(env, agent, seed=100000)
            done, raw = page_reward(env)
        finally:
            env.close()
        assert agent.goal, f"{spec.id}: no instruction heading on the page"
        assert r.error is None and r.truncation_reason in (None, "max_steps reached"), (spec.id, r)
        assert r.success == (done and raw > 0), f"{spec.id}: ours {r.success}, MiniWoB done {done} raw {raw}"
        if done and raw <= 0:  # MiniWoB's failure ends the episode there (the task's fail_on), not at max_steps
            assert r.terminated and not r.truncated and "miniwob_over" in r.milestones, (spec.id, r)
        seen.append((done, raw))
    assert len(seen) == 125
    assert any(d and raw < 0 for d, raw in seen), "no episode failed by MiniWoB's reward: the check saw none"


def test_after_miniwobs_episode_ends_only_its_instruction_and_the_cover_show(env_for) -> None:
    # a wrong click ends MiniWoB's episode with -1: the agentrl episode ends there too (the task's
    # `fail_on`: terminated, not successful), and the task's widgets leave the page, so a reused page
    # cannot change the reward any more
    env = env_for("click-test-2")
    obs, _ = env.reset(seed=6)
    ax = parse_snapshot(obs["axtree"])
    goal = utterance(ax)
    wrong = next(e for e in ax.find("button") if e.name not in goal)
    right = next(e for e in ax.find("button") if e.name in goal)
    obs, reward, terminated, truncated, info = env.step(f"click({wrong.ref})")
    assert page_reward(env) == (True, -1.0) and terminated and not truncated and not info["success"]
    assert [m.id for m in info["milestones"]] == ["miniwob_over"] and reward == 0.0
    after = parse_snapshot(obs["axtree"])
    assert [(e.role, e.name or e.value) for e in after.elements if e.ref][1:] == [("heading", goal), ("generic", "Episode over")]
    assert right.ref not in {e.ref for e in after.elements}


def test_static_oracles_solve_with_the_scripted_agent(env_for) -> None:
    static = [t for t in load_suite(SUITE) if "reference:miniwob-heuristic" not in t.tags]
    assert len(static) >= 3
    for t in static:
        env = env_for(t.id.removeprefix("miniwob."))
        check_oracle(env, [1])  # agentrl.testing: success, every milestone, the full return
        assert page_reward(env)[1] > 0, t.id


def test_episodes_are_seeded_and_stay_on_the_sandbox(env_for) -> None:
    env = env_for("enter-text")
    goals = []
    for seed in (4, 5, 4):
        obs, info = env.reset(seed=seed)
        goals.append(utterance(parse_snapshot(obs["axtree"])))
        assert not any(isinstance(e, BlockedRequestEvent) for e in info["events"])
        assert "Time left" not in obs["axtree"]  # the reward HUD is hidden
    assert goals[0] == goals[2] != goals[1], goals
    assert goals[0] and goals[0].startswith('Enter "')
    state = env.sandbox.episode_state(env.episode_id)["miniwob"]
    assert state == {"seed": 4, "pages": []}  # the start page was preloaded before the episode existed
    obs, *_ = env.step(f'goto("{env.task.start.path}")')  # loaded for the episode: seeded by the server
    assert utterance(parse_snapshot(obs["axtree"])) == goals[0]
    assert env.sandbox.episode_state(env.episode_id)["miniwob"] == {"seed": 4, "pages": ["enter-text"]}


@pytest.mark.parametrize("name", ["enter-text", "click-checkboxes", "read-table"])
def test_preloaded_start_page_gives_the_same_problem(env_for, tmp_path: Path, name: str) -> None:
    preloaded = env_for(name)
    spec = preloaded.task.model_copy(update={"start": preloaded.task.start.model_copy(update={"preload": False})})
    loaded = BrowserEnv(spec, BrowserEnvConfig(root_dir=tmp_path, isolation="storage", record=False))
    try:
        for seed in (0, 7):
            a, _ = preloaded.reset(seed=seed)
            b, _ = loaded.reset(seed=seed)
            assert preloaded._env._ep.preloaded and not loaded._env._ep.preloaded
            assert a["axtree"] == b["axtree"] and a["url"] == b["url"], seed
    finally:
        loaded.close()


def test_preload_on_a_page_that_cannot_wait_is_a_clear_error(tmp_path: Path) -> None:
    spec = load_task(SUITES_DIR / "core" / "reports-total.yaml")
    spec = spec.model_copy(update={"start": spec.start.model_copy(update={"preload": True})})
    env = BrowserEnv(spec, BrowserEnvConfig(root_dir=tmp_path, record=False))
    try:
        with pytest.raises(ValueError, match=r"start.preload is set.*__agentrlStart"):
            env.reset(seed=0)
    finally:
        env.close()


def test_a_half_covered_button_is_clicked_where_it_shows(env_for) -> None:
    # click-test-2, seed 6: button TWO covers the middle of button ONE, the one to click. Playwright's own
    # click waits for ONE's middle to be free until it times out; the env clicks the part of ONE that shows.
    env = env_for("click-test-2")
    r = run_episode(env, MiniWoBHeuristicAgent(), seed=6)
    assert r.success and r.steps == 1, r


def test_quoted_snapshot_lines_keep_their_ids() -> None:
    # Playwright single-quotes a node whose text needs YAML quoting ("#", ": "); MiniWoB has many
    ax = parse_snapshot(
        "- 'heading \"Click on Tab #2.\" [level=1] [ref=e3]'\n- 'tab \"it''s #2\" [ref=e5]':\n  - /url: \"#x\""
    )
    assert [(e.ref, e.role, e.name) for e in ax.elements] == [("e3", "heading", "Click on Tab #2."), ("e5", "tab", "it's #2")]
    assert utterance(ax) == "Click on Tab #2."


def test_app_serves_only_its_package_files() -> None:
    app = MiniWoBApp()
    state = app.new_state(9)
    page = app.handle(Request("GET", "/miniwob/click-test.html", "/miniwob"), state)
    assert page.status == 200 and b"Math.seedrandom(seed)" in page.body and b"core.startEpisodeReal()" in page.body
    assert b"__agentrlStart(9)" in page.body and not page.immutable and state.pages == ["click-test"]
    # preloaded: the same page, started later by the env with the episode's seed; no episode saw it
    pre = app.handle(Request("GET", "/miniwob/click-test.html", "/miniwob", preload=True), state)
    assert b"window.__agentrlStart = function (seed)" in pre.body and b"__agentrlStart(9)" not in pre.body
    assert state.pages == ["click-test"]
    core = app.handle(Request("GET", "/core/core.js", "/miniwob"), state)
    assert core.content_type.startswith("text/javascript") and core.immutable  # a package file: cacheable
    for bad in ("/../__init__.py", "/../../../../etc/passwd", "/miniwob/nope.html"):
        assert app.handle(Request("GET", bad, "/miniwob"), state).status == 404, bad
    assert app.handle(Request("POST", "/miniwob/click-test.html", "/miniwob"), state).status == 405


WRITE_EVERYWHERE = """async () => {
  document.cookie = 'leak=1; path=/';
  localStorage.setItem('leak', '1');
  sessionStorage.setItem('leak', '1');
  window.name = 'leak';
  await new Promise((ok, err) => {
    const r = indexedDB.open('leakdb', 1);
    r.onupgradeneeded = () => r.result.createObjectStore('s');
    r.onsuccess = () => { const tx = r.result.transaction('s', 'readwrite'); tx.objectStore('s').put('1', 'k');
                          tx.oncomplete = () => { r.result.close(); ok(); }; };
    r.onerror = err;
  });
  await (await caches.open('leakcache')).put('/leak', new Response('1'));
  history.pushState({}, '', '?leak=1');
  return true;
}"""
READ_EVERYTHING = """async () => ({
  cookie: document.cookie, local: localStorage.length, session: sessionStorage.length, name: window.name,
  idb: (await indexedDB.databases()).map(d => d.name), caches: await caches.keys(), history: history.length,
})"""


def assert_no_client_state(seen: dict) -> None:
    """What READ_EVERYTHING found is empty (history only counts entries, checked where it matters)."""
    assert seen == {"cookie": "", "local": 0, "session": 0, "name": "", "idb": [], "caches": [],
                    "history": seen["history"]}, seen


@pytest.mark.parametrize(
    ("start", "isolation"),
    [("preloaded", "storage"), ("preloaded", "context"), ("loaded at reset", "storage")],
)
def test_next_episode_sees_no_client_state_of_the_previous_one(env_for, start: str, isolation: str) -> None:
    # a preloaded MiniWoB page (the wipe goes straight to the next start page), or a sandbox page loaded at
    # reset (the wipe goes through the blank page)
    env = env_for("click-test" if start == "preloaded" else SUITES_DIR / "core" / "reports-open.yaml", isolation)
    env.reset(seed=1)
    first = env._env._ep
    page, context, run = first.page, first.context, env._host.run
    assert run(page.evaluate(WRITE_EVERYWHERE))
    before = run(page.evaluate(READ_EVERYTHING))
    assert before["local"] == before["session"] == 1 and before["name"] == "leak" and before["idb"] == ["leakdb"]
    assert before["caches"] == ["leakcache"] and "leak=1" in before["cookie"]
    old_id = env.episode_id

    # storage mode: `ahead` + 1 = 2 contexts take turns, so the third episode runs in the first one's context
    for seed in (2, 3):
        env.reset(seed=seed)
        ep = env._env._ep
        assert (ep.context is context) == (isolation == "storage" and seed == 3)
        after = run(ep.page.evaluate(READ_EVERYTHING))
        assert_no_client_state(after)
        assert after["history"] <= 3  # at most about:blank, the blank sandbox page and this one
        cookies = run(ep.context.cookies())
        assert [c["value"] for c in cookies] in ([], [env.episode_id]), cookies  # only this episode's cookie
        # server-side state is per episode as always: the old episode is closed, the new one is fresh
        assert old_id not in env.sandbox.episode_ids()
        assert env.sandbox.episode_state(env.episode_id)["miniwob"]["seed"] == seed
    obs, *_ = env.step("back()")
    assert "leak" not in obs["url"]
    # a second tab (the env adopts it as the agent's page) does not survive into the next episode either
    tabbed = ep.context
    run(tabbed.new_page())
    for seed in (4, 5):
        env.reset(seed=seed)
        assert len(env._env._ep.context.pages) == 1
        assert len(env._env._ep.wired) == 11  # 5 context and 6 page handlers: none left for the closed tab
    assert (env._env._ep.context is tabbed) == (isolation == "storage")


def test_a_closed_envs_contexts_go_clean_to_the_next_env(env_for) -> None:
    # isolation="storage": at close an env wipes its contexts and leaves them to its host; the next env with
    # the same origin and viewport starts in one of them (warm cache and renderer), wired to itself only
    a = env_for("click-test")
    a.reset(seed=1)
    run, host = a._host.run, a._host
    assert run(a._env._ep.page.evaluate(WRITE_EVERYWHERE))
    a_contexts = {a._env._ep.context} | {run(_awaited(t)).context for t in a._env._ready}
    assert len(a_contexts) == 2
    key = a._env._spare_key
    before = len(host.spare.get(key, []))
    a.close()
    assert len(host.spare[key]) == min(SPARES, before + 2)

    b = env_for("enter-text")
    obs, info = b.reset(seed=2)
    ep = b._env._ep
    assert ep.context in a_contexts  # reused, not made
    assert_no_client_state(run(ep.page.evaluate(READ_EVERYTHING)))
    # one handler per event: a's were removed when it handed the context back
    assert all(len(ep.context._impl_obj.listeners(e)) == 1 for e in ("request", "requestfinished", "response", "page"))
    assert len(ep.page._impl_obj.listeners("framenavigated")) == 1
    agent = MiniWoBHeuristicAgent()
    agent.reset(obs, info, b.variant)
    done = False
    while not done:
        obs, _, terminated, truncated, info = b.step(agent.act(obs))
        done = terminated or truncated
    assert info["success"] and page_reward(b) == (True, 1.0)

    # a context-isolated env never hands back: its contexts share nothing by construction
    n = len(host.spare[key])
    c = env_for("click-test", isolation="context")
    c.reset(seed=0)
    c.close()
    assert len(host.spare[key]) == n


async def _awaited(task):
    return await task
