"""Every bundled task is solvable, its evaluator is tested like code: the oracle fires every milestone in a
stable order, every near-miss misses the goal, a no-op fires nothing, and a random agent stays low."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.suites import SUITES_DIR
from conftest import assert_oracle_solves, play_near_miss

from agentrl.agents import RandomAgent
from agentrl.evaluate import run_episode
from agentrl.taskspec import load_suite

CORE = load_suite(SUITES_DIR / "core")
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("suite")
    made = {t.id: BrowserEnv(t, BrowserEnvConfig(root_dir=root)) for t in CORE}
    yield made
    for e in made.values():
        e.close()


@pytest.mark.parametrize("task", CORE, ids=lambda t: t.id)
def test_oracle_solves_and_fires_every_milestone_in_order(envs, task) -> None:
    assert_oracle_solves(envs[task.id], task, SEEDS)


NEAR_MISSES = [(t, n) for t in CORE for n in t.near_misses]


@pytest.mark.parametrize("task, near", NEAR_MISSES, ids=[f"{t.id}:{n.name}" for t, n in NEAR_MISSES])
def test_near_miss_does_not_earn_the_goal(envs, task, near) -> None:
    for seed in SEEDS[:2]:
        info = play_near_miss(envs[task.id], near, seed)
        assert not info["success"], f"near-miss {near.name!r} reached the goal (seed {seed}): {info['completed']}"
        assert not set(near.must_not) & set(info["completed"]), f"near-miss {near.name!r} fired {near.must_not}"


@pytest.mark.parametrize("task", CORE, ids=lambda t: t.id)
def test_noop_fires_nothing(envs, task) -> None:
    env = envs[task.id]
    obs, info = env.reset(seed=0)
    fired = []
    for action in ["wait()", "scroll(\"down\")", "wait()", 'done("")']:
        obs, reward, terminated, truncated, info = env.step(action)
        fired += info["milestones"]
        assert reward == 0.0
    assert fired == [] and terminated and not info["success"]


def test_random_agent_stays_low(envs, tmp_path: Path) -> None:
    results = [run_episode(envs[t.id], RandomAgent(seed=7), seed) for t in CORE for seed in range(4)]
    rate = sum(r.success for r in results) / len(results)
    assert rate < 0.2, f"random agent success {rate:.0%}: some task is too easy to hit by chance"
