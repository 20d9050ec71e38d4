"""Demonstrations: expert turns rendered exactly as the rollout renders the policy's own turns.

A demonstration is a `rollout.Trajectory` whose turns hold the prompt ids the policy would have seen and the
ids of the action the expert took (prompt + completion, joined, never re-tokenised), through the REAL env:

* ``record_demos``: the task's oracle (the scripted agent) on train seeds;
* ``replay_episodes``: any recorded episode (an `agentrl evaluate` run dir, a learner run's
  ``trajectories.jsonl``, a preference pair's episodes) re-played action by action from the same seed, so the
  prompt is rebuilt with THIS config and tokenizer (the files do not hold the view the prompt needs);
  a replay whose return differs from the recorded one has diverged and is not used.

Each turn follows `RolloutEngine._play`: observation -> view (``observation``: axtree / text / compact) ->
``PromptBuilder.build(goal, view, history)``. Its completion depends on the action mode:

* ``"candidates"``: the candidate whose parsed action equals the expert's (``parse_action`` on both sides,
  so ``button "Save" -> click(e2)`` matches ``click(e2)`` and typing candidates match ``fill``), tokenised
  as the generator scores candidates (its tokens + ``<|im_end|>``); the env gets that candidate's text;
* ``"free"``: the action as the parser prints it (``fill(e5, "alice")``) + ``<|im_end|>``.

The expert's turns carry no behaviour log-probs (zeros): a demonstration is not a sample of the policy and
is never passed to the RL learner. What is not used is counted (``DemoStats``): episodes lost to the
infrastructure, unsuccessful ones, actions with no matching candidate, diverged replays.

    demos, stats = record_demos(cfg, tok, specs, seeds=range(64))
    demos, stats = replay_episodes(cfg, tok, specs, read_recorded([Path("runs/eval")]))
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentrl.agents.scripted import ScriptedAgent
from agentrl.dataset import is_export, read_export
from agentrl.envs.actions import Action, parse_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import BrowserEnvConfig
from agentrl.envs.factory import make_async_env
from agentrl.envs.host import BrowserHost
from agentrl.learner.action_space import ActionSpace
from agentrl.learner.config import TrainConfig
from agentrl.learner.rollout import MAX_STEPS_REASON, Trajectory, Turn
from agentrl.policy.prompt import PromptBuilder, PromptResult, PromptTooLongError
from agentrl.policy.sampling import CandidateChooser
from agentrl.rewards.router import RouterConfig
from agentrl.taskspec import TaskSpec
from agentrl.trajectory import read_trajectory

ACTION_MODES = ("candidates", "free")


def action_mode(cfg: Any) -> str:
    """The config's action mode (``actions``: ``"candidates"`` or ``"free"``)."""
    return cfg.actions


@dataclass
class DemoStats:
    """Where the episodes went; only ``used`` ones are demonstrations."""

    episodes: int = 0
    used: int = 0
    turns: int = 0
    infra_failures: int = 0  # exception, dead browser, prompt that cannot fit, start page without candidates
    unsuccessful: int = 0  # the expert did not succeed (record_demos) / not kept for lack of success
    unmatched: int = 0  # an expert action that no candidate parses to (candidate mode)
    diverged: int = 0  # a replay whose return differs from the recorded one
    errors: list[str] = field(default_factory=list)  # the first few reasons, for the log

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Ids(CandidateChooser):
    """The generator's own candidate tokenisation (`CandidateChooser.candidate_ids`) without a model."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.end_id = int(tokenizer.get_vocab().get("<|im_end|>", tokenizer.eos_token_id))


class TurnRenderer:
    """What the rollout does before the policy acts (view, candidates, prompt ids), and an expert action's
    completion ids in the config's action mode."""

    def __init__(self, cfg: TrainConfig, tokenizer: Any, *, actions: str | None = None) -> None:
        self.cfg = cfg
        self.actions = actions or action_mode(cfg)
        if self.actions not in ACTION_MODES:
            raise ValueError(f"actions must be one of {ACTION_MODES}, not {self.actions!r}")
        self.builder = PromptBuilder(tokenizer, system=cfg.system_prompt, max_prompt_tokens=cfg.max_prompt_tokens,
                                     history_k=cfg.history_k)
        self.ids = _Ids(tokenizer)

    def observe(self, obs: dict[str, Any], history: Sequence[str]) -> tuple[PromptResult, list[str]]:
        """The prompt and the candidate actions for an observation (``RolloutEngine._play``'s rendering)."""
        tree = parse_snapshot(obs["axtree"])
        space = ActionSpace.of(self.cfg)
        cands = [] if self.actions == "free" else space.candidates(tree, obs["goal"])
        return self.builder.build(obs["goal"], space.view(obs, tree), history), cands

    def turn(self, prompt: PromptResult, cands: list[str], action: str) -> tuple[Turn, str] | str:
        """(the turn, the text to send to the env) for the expert's ``action``, or why it cannot be one."""
        parsed = parse_action(action)
        if not isinstance(parsed, Action):
            return f"unparseable expert action {action!r}: {parsed}"
        if self.actions == "free":
            text = str(parsed)
            ids = self.ids.candidate_ids([text])[0]
            return Turn(prompt_ids=list(prompt.ids), completion_ids=ids, logprobs=[0.0] * len(ids), action=text,
                        candidates=[], candidate_ids=[], candidate_index=0, candidate_entropy=0.0,
                        seq_logprob_restricted=0.0, prompt_truncated=prompt.truncated), text
        match = [i for i, c in enumerate(cands) if parse_action(c) == parsed]
        if not match:
            return f"no candidate is {parsed} (candidates: {cands[:8]})"
        cids = self.ids.candidate_ids(cands)
        i = match[0]
        return Turn(prompt_ids=list(prompt.ids), completion_ids=list(cids[i]), logprobs=[0.0] * len(cids[i]),
                    action=cands[i], candidates=list(cands), candidate_ids=[list(c) for c in cids], candidate_index=i,
                    candidate_entropy=0.0, seq_logprob_restricted=0.0, prompt_truncated=prompt.truncated), cands[i]


# ---------------------------------------------------------------- the episode loop (one event loop, N envs)
@dataclass(frozen=True)
class EpisodeJob:
    """Play ``task_id`` from ``seed`` with the given ``actions`` (None: the oracle). ``ret``: the recorded
    return a replay must reproduce (None: not checked)."""

    task_id: str
    seed: int
    actions: tuple[str, ...] | None = None
    ret: float | None = None


@dataclass
class _Outcome:
    traj: Trajectory
    problem: str | None = None  # "unmatched", "diverged": not usable, counted
    reason: str = ""


async def _play(env: Any, job: EpisodeJob, renderer: TurnRenderer, traj: Trajectory) -> _Outcome:
    obs, info = await env.reset(job.seed)
    agent: ScriptedAgent | None = None
    if job.actions is None:
        agent = ScriptedAgent()
        agent.reset(obs, info, env.variant)
    history: list[str] = []
    while True:
        if job.actions is not None and len(traj.turns) >= len(job.actions):
            break  # the recorded episode ended here (its env stopped it, or its agent did)
        try:
            prompt, cands = renderer.observe(obs, history)
        except PromptTooLongError as e:
            traj.truncated, traj.truncation_reason, traj.infra_failure = True, f"context budget: {e}", True
            return _Outcome(traj)
        if not cands and renderer.actions == "candidates":
            traj.truncated, traj.truncation_reason = True, "no candidate actions on the page"
            traj.infra_failure = not traj.turns
            return _Outcome(traj, None if traj.infra_failure else "unmatched", traj.truncation_reason)
        action = agent.act(obs) if agent is not None else job.actions[len(traj.turns)]  # type: ignore[index]
        made = renderer.turn(prompt, cands, action)
        if isinstance(made, str):
            return _Outcome(traj, "unmatched", made)
        turn, sent = made
        obs, reward, terminated, truncated, info = await env.step(sent)
        turn.reward, turn.milestones, turn.action_error = reward, [m.id for m in info["milestones"]], info.get("action_error")
        traj.turns.append(turn)
        history.append(sent)
        traj.success = bool(info["success"])
        if terminated or truncated:
            traj.terminated, traj.truncated = terminated, truncated
            traj.truncation_reason = info.get("truncation_reason") if truncated else None
            traj.infra_failure = truncated and traj.truncation_reason != MAX_STEPS_REASON
            break
    if job.ret is not None and abs(traj.ret - job.ret) > 1e-6:
        return _Outcome(traj, "diverged", f"{job.task_id} seed {job.seed}: replay return {traj.ret:g}, recorded {job.ret:g}")
    return _Outcome(traj)


def play_jobs(
    cfg: TrainConfig,
    tokenizer: Any,
    specs: Sequence[TaskSpec],
    jobs: Sequence[EpisodeJob],
    *,
    actions: str | None = None,
    host: BrowserHost | None = None,
    on_episode: Callable[[int], None] | None = None,
) -> list[_Outcome]:
    """Play every job through the real env (``num_envs`` at a time, one Chromium); outcomes in job order."""
    renderer = TurnRenderer(cfg, tokenizer, actions=actions)
    by_id = {s.id: s for s in specs}
    unknown = sorted({j.task_id for j in jobs} - set(by_id))
    if unknown:
        raise ValueError(f"episodes of tasks not in the config's tasks: {unknown}")
    host = host or BrowserHost.shared()
    env_cfg = BrowserEnvConfig(record=False, keep_episode_dirs=False, action_timeout_ms=20_000,
                               settle_timeout_ms=20_000, isolation=cfg.isolation,  # the rollout's, reward included
                               router=RouterConfig.model_validate(cfg.reward_router) if cfg.reward_router else None)
    free: dict[str, list[Any]] = {}  # AsyncBrowserEnv or AsyncDesktopEnv, by the task's env
    made: list[Any] = []
    done = 0

    async def one(sem: asyncio.Semaphore, i: int, job: EpisodeJob) -> _Outcome:
        nonlocal done
        traj = Trajectory(task_id=job.task_id, seed=job.seed, group=i, sample=0)
        async with sem:
            pool = free.setdefault(job.task_id, [])
            env = pool.pop() if pool else None
            if env is None:
                env = make_async_env(by_id[job.task_id], env_cfg, host=host)
                made.append(env)
            try:
                out = await _play(env, job, renderer, traj)
            except Exception as e:  # noqa: BLE001 - an infrastructure failure: counted, never a demonstration
                traj.truncated, traj.error, traj.infra_failure = True, f"{type(e).__name__}: {e}", True
                traj.truncation_reason = traj.truncation_reason or "error"
                out = _Outcome(traj)
            finally:
                pool.append(env)
        done += 1
        if on_episode is not None:
            on_episode(done)
        return out

    async def run_all() -> list[_Outcome]:
        sem = asyncio.Semaphore(max(1, cfg.num_envs))
        try:
            return list(await asyncio.gather(*(one(sem, i, j) for i, j in enumerate(jobs))))
        finally:
            await asyncio.gather(*(e.close() for e in made), return_exceptions=True)

    return host.run(run_all())


def _tally(outcomes: Sequence[_Outcome], *, need_success: bool) -> tuple[list[Trajectory], DemoStats]:
    stats = DemoStats(episodes=len(outcomes))
    kept = []
    for o in outcomes:
        t = o.traj
        if t.infra_failure:
            stats.infra_failures += 1
            reason = t.error or t.truncation_reason or "infrastructure"
        elif o.problem == "unmatched":
            stats.unmatched += 1
            reason = o.reason
        elif o.problem == "diverged":
            stats.diverged += 1
            reason = o.reason
        elif need_success and not t.success:
            stats.unsuccessful += 1
            reason = f"{t.task_id} seed {t.seed}: not successful (return {t.ret:g})"
        else:
            kept.append(t)
            continue
        if len(stats.errors) < 5:
            stats.errors.append(reason)
    stats.used, stats.turns = len(kept), sum(len(t.turns) for t in kept)
    return kept, stats


def record_demos(
    cfg: TrainConfig, tokenizer: Any, specs: Sequence[TaskSpec], seeds: Iterable[int], *, actions: str | None = None,
    host: BrowserHost | None = None, on_episode: Callable[[int], None] | None = None,
) -> tuple[list[Trajectory], DemoStats]:
    """The oracle's successful episodes on ``seeds`` of every task, as demonstrations."""
    jobs = [EpisodeJob(s.id, int(seed)) for s in specs for seed in seeds]
    outcomes = play_jobs(cfg, tokenizer, specs, jobs, actions=actions, host=host, on_episode=on_episode)
    return _tally(outcomes, need_success=True)


def replay_episodes(
    cfg: TrainConfig, tokenizer: Any, specs: Sequence[TaskSpec], jobs: Sequence[EpisodeJob], *,
    need_success: bool = True, actions: str | None = None, host: BrowserHost | None = None,
) -> tuple[list[Trajectory], DemoStats]:
    """Recorded episodes re-played (see the module docstring); ``need_success``: keep successful ones only."""
    outcomes = play_jobs(cfg, tokenizer, specs, jobs, actions=actions, host=host)
    return _tally(outcomes, need_success=need_success)


# ---------------------------------------------------------------- recorded episodes on disk
def read_recorded(run_dirs: Iterable[Path]) -> list[EpisodeJob]:
    """The episodes of run dirs as replay jobs: a learner run's ``trajectories.jsonl`` (its rows: task, seed,
    the actions sent), else every ``trajectory.jsonl`` below the dir (`agentrl evaluate`, `agentrl rm
    collect`, your own agent's episodes written by the env), or an `agentrl export` (Parquet). Unfinished or
    errored episodes are left out; identical (task, seed, actions) episodes are kept once."""
    jobs: dict[tuple, EpisodeJob] = {}
    for run in map(Path, run_dirs):
        if not run.exists():
            raise FileNotFoundError(f"no run directory {run}")
        if is_export(run):  # `agentrl export`'s Parquet (either granularity)
            for meta, steps, finished in read_export(run):
                acts = tuple(s.action for s in steps)
                if finished:
                    jobs.setdefault((meta["task_id"], meta["seed"], acts), EpisodeJob(
                        meta["task_id"], meta["seed"], acts, round(sum(s.reward for s in steps), 6)))
            continue
        learner = run / "trajectories.jsonl"
        if learner.exists():
            for n, line in enumerate(learner.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    t = Trajectory.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{learner}:{n}: not a trajectory row: {e}") from None
                if t.infra_failure or t.error or not t.turns:
                    continue
                acts = tuple(tt.action for tt in t.turns)
                jobs.setdefault((t.task_id, t.seed, acts), EpisodeJob(t.task_id, t.seed, acts, t.ret))
            continue
        for f in sorted(run.rglob("trajectory.jsonl")):
            meta, steps, summary = read_trajectory(f)
            if summary is None or "task_id" not in meta or not steps:
                continue
            acts = tuple(s.action for s in steps)
            ret = round(sum(s.reward for s in steps), 6)
            jobs.setdefault((meta["task_id"], int(meta.get("seed", 0)), acts),
                            EpisodeJob(meta["task_id"], int(meta.get("seed", 0)), acts, ret))
    return list(jobs.values())


def write_demos(path: Path, demos: Iterable[Trajectory], **tag: Any) -> int:
    """Append demonstrations as ``trajectories.jsonl`` rows (``Trajectory.from_dict`` reads them back)."""
    n = 0
    with Path(path).open("a") as fh:
        for t in demos:
            fh.write(json.dumps({**tag, **json.loads(t.to_json())}) + "\n")
            n += 1
    return n


def read_demos(path: Path) -> list[Trajectory]:
    """Demonstrations written by `write_demos` (ids as recorded: same tokenizer and config only)."""
    return [Trajectory.from_dict(json.loads(ln)) for ln in Path(path).read_text().splitlines() if ln.strip()]
