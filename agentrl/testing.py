"""Checks that prove a task and an env, for task authors and for the project's tests.

    from agentrl.testing import check_task, check_env
    check_task("tasks/desktop/notes-save-as.yaml", seeds=[0, 1])   # raises TaskCheckError saying what failed
    check_env(make_env("tasks/core/reports-open.yaml"))              # Gymnasium's checker, then ours

A task is proved when, on its env (`agentrl.envs.factory.make_env`, browser or desktop):

- `check_oracle`: the scripted agent (the task's oracle) succeeds on every seed, fires every milestone
  (each after the ones its `after` names) for the full return, in the same order on every seed; a seed
  given twice is the determinism check: the same seed gives the same trajectory (actions, rewards,
  milestones fired at each step, errors, the end);
- `check_near_miss`: no near-miss reaches the goal or fires a milestone it `must_not`;
- `check_noop`: doing nothing (wait, then done(""); fewer where max_steps ends it first) fires nothing and
  earns nothing (a scroll is no no-op on a desktop: over a GTK combo box it changes the value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentrl.envs.episode import MAX_STEPS_REASON, EpisodeEnv
from agentrl.taskspec import NearMiss, TaskSpec

NOOP = ("wait()", 'done("")')


class TaskCheckError(AssertionError):
    """A task (or env) failed a check; the message names the task, the seed and what happened."""


def _fail(task: TaskSpec, message: str) -> TaskCheckError:
    return TaskCheckError(f"{task.id} ({task.path}): {message}")


def play(env: EpisodeEnv, seed: int, near_miss: str | None = None) -> tuple[list[tuple], dict[str, Any]]:
    """One episode of the scripted agent on `seed`, following the oracle or the near-miss named
    `near_miss` (as rendered for the seed): per step (action, reward, ids fired, whether the action failed,
    terminated, truncated), and the last info. An oracle step that cannot act raises `TaskCheckError`."""
    from agentrl.agents import ScriptedAgent

    obs, info = env.reset(seed=seed)
    assert env.variant is not None
    steps = None if near_miss is None else next(n for n in env.variant.near_misses if n.name == near_miss).steps
    agent = ScriptedAgent(steps)
    agent.reset(obs, info, env.variant)
    record: list[tuple] = []
    terminated = truncated = False
    while not (terminated or truncated):
        try:
            action = agent.act(obs)
        except Exception as e:  # noqa: BLE001 - an oracle that cannot act is what this check reports
            raise _fail(env.task, f"seed {seed}: step {len(record) + 1} cannot act: {type(e).__name__}: {e}") from e
        obs, reward, terminated, truncated, info = env.step(action)
        record.append((action, round(float(reward), 9), tuple(m.id for m in info["milestones"]),
                       info["action_error"] is not None, terminated, truncated))
    return record, info


def check_oracle(env: EpisodeEnv, seeds: list[int]) -> None:
    """The oracle solves the task on every seed, fires every milestone (respecting `after`) for the full
    return, in one order on every seed (the task's `fail_on` milestones excepted: the oracle fires none of
    them); a seed listed twice must give the same trajectory twice."""
    task = env.task
    wanted = [m for m in task.milestones if m.id not in task.fail_on]
    full = sum(m.effective_weight() for m in wanted)
    orders: list[list[str]] = []
    runs: dict[int, list[tuple]] = {}
    for seed in seeds:
        record, info = play(env, seed)
        done = list(info["completed"])
        if not info["success"]:
            raise _fail(task, f"seed {seed}: the oracle failed ({info.get('truncation_reason') or 'no success'}), "
                              f"milestones {done}, actions {[r[0] for r in record]}")
        if set(done) != {m.id for m in wanted}:
            missed = sorted({m.id for m in wanted} - set(done))
            extra = sorted(set(done) & set(task.fail_on))
            raise _fail(task, f"seed {seed}: the oracle fired {extra}, which fail the episode" if extra else
                              f"seed {seed}: the oracle never fired {missed} (fired {done})")
        pos = {m: i for i, m in enumerate(done)}
        for m in wanted:
            early = [a for a in m.after if pos[a] > pos[m.id]]
            if early:
                raise _fail(task, f"seed {seed}: {m.id} fired before {early}, which it comes after")
        if abs(info["return"] - full) > 1e-6:
            raise _fail(task, f"seed {seed}: the oracle's return {info['return']:.6f} is not the full {full:.6f}")
        if seed in runs and runs[seed] != record:
            diff = next(i for i, (a, b) in enumerate(zip(runs[seed], record, strict=False)) if a != b)
            raise _fail(task, f"seed {seed} twice gave two trajectories: step {diff + 1} was {runs[seed][diff]}, "
                              f"then {record[diff]}")
        runs[seed] = record
        orders.append(done)
    if any(o != orders[0] for o in orders):
        raise _fail(task, f"the milestone order differs across seeds {list(seeds)}: {orders}")


def check_near_miss(env: EpisodeEnv, near: NearMiss, seed: int, *, strict: bool = False) -> dict[str, Any]:
    """Play one near-miss (rendered for `seed`): it must not reach the goal nor fire what it `must_not`.
    `strict`: every step must be a valid action (a near-miss that errors out proves nothing). Returns the
    last info."""
    task = env.task
    record, info = play(env, seed, near.name)
    if strict and any(r[3] for r in record):
        bad = next(r for r in record if r[3])
        raise _fail(task, f"near-miss {near.name!r} is broken: {bad[0]!r} failed ({info['action_error']})")
    if info["success"]:
        raise _fail(task, f"seed {seed}: near-miss {near.name!r} reached the goal: {info['completed']}")
    hit = sorted(set(near.must_not) & set(info["completed"]))
    if hit:
        raise _fail(task, f"seed {seed}: near-miss {near.name!r} fired {hit}, which it must not")
    return info


def check_noop(env: EpisodeEnv, seed: int = 0, actions: tuple[str, ...] = NOOP) -> None:
    """Doing nothing fires no milestone and earns nothing; done() ends the episode without success."""
    env.reset(seed=seed)
    info: dict[str, Any] = {}
    terminated = truncated = False
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        if info["milestones"] or reward != 0.0:
            raise _fail(env.task, f"seed {seed}: the no-op {action!r} fired {[m.id for m in info['milestones']]}, "
                                  f"reward {reward}")
        if truncated:  # a task of fewer steps than the no-op has (max_steps reached)
            break
    if not (terminated or info.get("truncation_reason") == MAX_STEPS_REASON) or info["success"]:
        raise _fail(env.task, f"seed {seed}: the no-op {list(actions)} did not end the episode without success "
                              f"({info.get('truncation_reason') or 'not terminated'})")


def check_task(task: TaskSpec | str | Path, seeds: list[int] = (0, 1), *, env: EpisodeEnv | None = None,
               config: Any = None, strict: bool = False) -> None:
    """Every check of a task (module doc): the oracle on `seeds` and again on the first (determinism), each
    near-miss and the no-op on the first seed. Uses `env`, or makes (and closes) the task's env."""
    from agentrl.envs.factory import make_env

    own = env is None
    env = env or make_env(task, config)
    try:
        seeds = list(seeds)
        check_oracle(env, [*seeds, seeds[0]])
        for near in env.task.near_misses:
            check_near_miss(env, near, seeds[0], strict=strict)
        check_noop(env, seeds[0])
    finally:
        if own:
            env.close()


def check_env(env: Any, seed: int = 0) -> None:
    """Gymnasium's `check_env` on the env (its spaces, reset/step signatures, seeding; no render check),
    then ours: it is an `EpisodeEnv`, its observation has the text an agent reads and the keys every env
    gives, and the reset's info is what the evaluator reads."""
    from gymnasium.utils.env_checker import check_env as gym_check_env

    raw = env.unwrapped
    gym_check_env(raw, skip_render_check=True)
    if not isinstance(raw, EpisodeEnv):
        raise TaskCheckError(f"{type(raw).__name__} is not an EpisodeEnv (reset, step, summary, close, task, "
                             "variant, episode_id, episode_dir)")
    obs, info = raw.reset(seed=seed)
    missing = [k for k in ("text", "goal", "axtree", "title", "url", "last_action_error") if k not in obs]
    if missing:
        raise TaskCheckError(f"{type(raw).__name__}: the observation lacks {missing}")
    if not obs["text"].startswith(f"Goal: {raw.variant.instruction}"):
        raise TaskCheckError(f"{type(raw).__name__}: the observation's text does not start with the goal")
    lacking = [k for k in ("milestones", "events", "success", "completed", "return", "instruction", "step")
               if k not in info]
    if lacking:
        raise TaskCheckError(f"{type(raw).__name__}: the reset's info lacks {lacking}")
