"""Rollouts: G episodes per (task, seed) group in N concurrent real browser envs, actions chosen by the policy.

The envs run as coroutines on one event loop (`BrowserHost.shared()`'s thread, one Chromium). Every turn an
env coroutine builds the prompt ids from its observation, lists the valid actions (the `ActionSpace`: clicks,
and with ``typing`` fills and selects with the goal's values) and asks for a decision; the calling thread
batches all pending decisions, scores each distinct (prompt, candidates) pair once with the generator (its G
samples share that forward) and samples among the candidates (constrained decoding). In free-form mode
(``actions="free"``) the policy writes its reply instead (the G samples of a prompt in one generate call) and
the env parses it; a reply that is not an action is an error observation, counted in ``stats["parse_errors"]``
and given ``parse_error_penalty``. Each turn records the exact prompt ids, completion ids and log-probs
(nothing is re-tokenised), the reward and the milestones.

    engine = RolloutEngine(specs, generator, builder, num_envs=32)
    result = engine.collect([GroupJob("click-button", seed=3, size=8)], temperature=1.0, seed=0)
    result.trajectories[0].turns[0].action, result.stats["episodes_per_s"]
    engine.close()

Truncation is never silent: a trajectory that hits the env's max_steps, whose prompt had to be cut to fit
``max_prompt_tokens``, whose goal alone does not fit, or whose page offers no candidate action is marked
(``truncated``, ``truncation_reason``, ``Turn.prompt_truncated``) and counted in ``result.stats``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.envs.actions import ActionError, parse_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import AsyncBrowserEnv, BrowserEnvConfig
from agentrl.envs.factory import make_async_env
from agentrl.envs.host import BrowserHost
from agentrl.learner.action_space import ActionSpace, candidate_actions, compact_observation
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.prompt import PromptBuilder, PromptTooLongError
from agentrl.policy.records import Completion, SamplingParams
from agentrl.policy.sampling import candidate_completions
from agentrl.rewards.router import RewardRouter
from agentrl.taskspec import TaskSpec

__all__ = ["GroupJob", "RolloutEngine", "RolloutResult", "Trajectory", "Turn", "candidate_actions", "compact_observation"]
MAX_STEPS_REASON = "max_steps reached"  # the envs' truncation reason when the policy ran out of steps


@dataclass
class Turn:
    """One decision: the exact ids the policy saw and produced, and what the env answered."""

    prompt_ids: list[int]
    completion_ids: list[int]  # the chosen candidate's ids (its tokens + <|im_end|>), exactly as scored, or the sampled ids
    logprobs: list[float]  # per completion token, under the weights that sampled it
    action: str
    candidates: list[str]  # [] in free-form mode: the policy wrote `action` itself
    candidate_ids: list[list[int]]  # ids of every candidate (the entropy bonus scores them all)
    candidate_index: int
    candidate_entropy: float  # entropy of the candidate distribution it was sampled from (nats)
    seq_logprob_restricted: float  # log-prob of the choice among the candidates
    reward: float = 0.0
    milestones: list[str] = field(default_factory=list)
    prompt_truncated: bool = False  # the observation was cut to fit max_prompt_tokens
    action_error: str | None = None  # the env's error message for this action (e.g. a click that failed)
    weights_version: int = 0
    parse_error: bool = False  # free-form: the reply was not an action (error observation, penalised)


@dataclass
class Trajectory:
    """One episode. ``group`` identifies the (task, seed) group its advantage is computed in."""

    task_id: str
    seed: int
    group: int
    sample: int
    turns: list[Turn] = field(default_factory=list)
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    truncation_reason: str | None = None
    error: str | None = None  # an exception ended the episode (its turns are still recorded)
    # ended for a reason that is not the policy's doing (an exception, a dead browser or a failed page, a
    # start page without any candidate, a prompt that cannot fit): its return is not a reward
    infra_failure: bool = False

    @property
    def ret(self) -> float:
        return float(sum(t.reward for t in self.turns))


    def to_json(self) -> str:
        return json.dumps({**asdict(self), "return": self.ret})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """From a ``trajectories.jsonl`` row (extra keys such as ``step`` and ``return`` are ignored)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        return cls(**{**d, "turns": [Turn(**t) for t in d["turns"]]})


@dataclass(frozen=True)
class GroupJob:
    """Run ``size`` episodes of task ``task_id`` from ``seed``; they form advantage group ``group``."""

    task_id: str
    seed: int
    size: int
    group: int = 0


@dataclass
class RolloutResult:
    trajectories: list[Trajectory]
    stats: dict[str, float]


@dataclass
class _Request:
    prompt_ids: list[int]
    candidates: list[str] | None  # None: free-form generation
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class RolloutEngine:
    """N reusable async envs (per task, created on demand: the task's browser or desktop env) on one event loop,
    driven by a generator."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        generator: HFGenerator,
        builder: PromptBuilder,
        *,
        num_envs: int = 32,
        click_roles: Sequence[str] = ("button", "link"),
        extra_actions: Sequence[str] = (),
        observation: str = "axtree",
        described: bool = False,
        typing: bool = False,
        answers: bool = False,
        actions: str = "candidates",
        max_new_tokens: int = 64,
        parse_error_penalty: float = 0.0,
        env_config: BrowserEnvConfig | None = None,
        host: BrowserHost | None = None,
        batch_wait_s: float = 0.01,
    ) -> None:
        self.space = ActionSpace(
            mode=actions, click_roles=tuple(click_roles), extra=tuple(extra_actions), described=described,
            typing=typing, answers=answers, observation=observation,
        )
        self.specs = {t.id: t for t in tasks}
        self.generator = generator
        self.builder = builder
        self.num_envs = num_envs
        self.max_new_tokens = max_new_tokens
        self.parse_error_penalty = parse_error_penalty
        # generous action timeout: on a loaded machine a click on a static button can take seconds, and a
        # timed-out click would be scored as a wrong choice (counted in stats["action_errors"] either way)
        self.env_config = env_config or BrowserEnvConfig(
            record=False, keep_episode_dirs=False, action_timeout_ms=20_000, settle_timeout_ms=20_000
        )
        # one router (and so one R_phi / judge client) shared by every env of the engine
        self.env_config = dataclasses.replace(self.env_config, router=RewardRouter.of(self.env_config.router))
        self.host = host or BrowserHost.shared()
        self.batch_wait_s = batch_wait_s
        self._free: dict[str, list[AsyncBrowserEnv]] = {}
        self._all: list[AsyncBrowserEnv] = []
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._write_lock = threading.Lock()
        # scores of each distinct (prompt, candidates) within one collect (the weights do not change during
        # it): a group's G samples share one forward even when their envs ask at different times
        self._scores: dict[tuple, Any] = {}

    # ------------------------------------------------------------ public
    def collect(
        self,
        jobs: Sequence[GroupJob],
        *,
        temperature: float,
        seed: int,
        writer: Path | None = None,
        tag: dict[str, Any] | None = None,
    ) -> RolloutResult:
        """Run every job's episodes to the end; decisions are made on this thread, in batches.

        ``writer``: a JSONL file each trajectory is appended to as it finishes (with ``tag`` merged in).
        """
        rng = np.random.default_rng(seed)
        self._scores.clear()
        t0 = time.perf_counter()
        policy_s = 0.0
        n_decisions = n_batches = n_forward = 0
        done = asyncio.run_coroutine_threadsafe(self._run_jobs(jobs, temperature, writer, tag or {}), self.host.loop)
        while True:
            try:
                first = self._requests.get(timeout=0.005)
            except queue.Empty:
                if done.done():
                    break
                continue
            batch = [first]
            deadline = time.perf_counter() + self.batch_wait_s
            while (left := deadline - time.perf_counter()) > 0:
                try:
                    batch.append(self._requests.get(timeout=left))
                except queue.Empty:
                    break
            t1 = time.perf_counter()
            n_forward += self._decide(batch, temperature, int(rng.integers(2**62)))
            policy_s += time.perf_counter() - t1
            n_decisions += len(batch)
            n_batches += 1
        trajectories = done.result()
        self._scores.clear()
        wall = time.perf_counter() - t0
        reasons = Counter(t.truncation_reason for t in trajectories if t.truncated)
        stats: dict[str, float] = {
            "episodes": len(trajectories),
            "turns": n_decisions,
            "rollout_s": wall,
            "policy_s": policy_s,
            "env_s": wall - policy_s,
            "episodes_per_s": len(trajectories) / wall if wall > 0 else 0.0,
            "decision_batches": n_batches,
            "prompt_forwards": n_forward,
            "prompt_tokens": sum(len(t.prompt_ids) for tr in trajectories for t in tr.turns),
            "completion_tokens": sum(len(t.completion_ids) for tr in trajectories for t in tr.turns),
            "truncated": sum(reasons.values()),
            "truncated_max_steps": reasons.get(MAX_STEPS_REASON, 0),
            "truncated_context": sum(n for r, n in reasons.items() if r and r.startswith("context")),
            "prompt_cut_turns": sum(t.prompt_truncated for tr in trajectories for t in tr.turns),
            "errors": sum(t.error is not None for t in trajectories),
            "infra_failures": sum(t.infra_failure for t in trajectories),
            "action_errors": sum(t.action_error is not None for tr in trajectories for t in tr.turns),
            "parse_errors": sum(t.parse_error for tr in trajectories for t in tr.turns),
            "success": float(np.mean([t.success for t in trajectories])) if trajectories else 0.0,
        }
        stats["scored_tokens_per_s"] = (stats["prompt_tokens"] + stats["completion_tokens"]) / max(policy_s, 1e-9)
        return RolloutResult(trajectories, stats)

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(e.close() for e in self._all), return_exceptions=True)

        self.host.run(close_all())
        self._all.clear()
        self._free.clear()

    # ------------------------------------------------------------ policy side (calling thread)
    def _decide(self, batch: list[_Request], temperature: float, seed: int) -> int:
        """Score each distinct (prompt, candidates) once per collect and sample one completion per request;
        free-form requests generate (the G samples of one prompt in one call). Returns the prompt forwards."""
        keys: dict[tuple, list[_Request]] = {}
        for r in batch:
            keys.setdefault((tuple(r.prompt_ids), None if r.candidates is None else tuple(r.candidates)), []).append(r)
        new = [k for k in keys if k[1] is not None and k not in self._scores]
        free = [k for k in keys if k[1] is None]
        try:
            scored = self.generator.score_candidates([list(k[0]) for k in new], [list(k[1]) for k in new])
            self._scores.update(zip(new, scored, strict=True))
            for i, key in enumerate(free):
                params = SamplingParams(temperature=temperature, n=len(keys[key]), max_new_tokens=self.max_new_tokens,
                                        seed=seed + 7919 * (i + 1))
                for r, c in zip(keys[key], self.generator.generate([list(key[0])], params)[0], strict=True):
                    r.loop.call_soon_threadsafe(_set_result, r.future, (c, ()))
        except Exception as e:  # noqa: BLE001 - handed to every waiting env coroutine, raised there
            for r in batch:
                r.loop.call_soon_threadsafe(_set_exception, r.future, e)
            return 0
        for i, (key, reqs) in enumerate(keys.items()):
            if key[1] is None:
                continue
            params = SamplingParams(temperature=temperature, n=len(reqs))
            comps = candidate_completions(
                self._scores[key], key[0], params, seed + i, self.generator.tokenizer, self.generator.weights_version
            )
            for r, c in zip(reqs, comps, strict=True):
                r.loop.call_soon_threadsafe(_set_result, r.future, (c, self._scores[key].token_ids))
        return len(new) + len(free)

    # ------------------------------------------------------------ env side (event-loop thread)
    async def _run_jobs(
        self, jobs: Sequence[GroupJob], temperature: float, writer: Path | None, tag: dict[str, Any]
    ) -> list[Trajectory]:
        sem = asyncio.Semaphore(self.num_envs)
        fh = writer.open("a") if writer is not None else None
        try:
            coros = [
                self._episode(sem, job.task_id, job.seed, job.group, i, fh, tag)
                for job in jobs
                for i in range(job.size)
            ]
            return list(await asyncio.gather(*coros))
        finally:
            if fh is not None:
                fh.close()

    async def _ask(self, prompt_ids: list[int], candidates: list[str] | None) -> tuple[Completion, tuple]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._requests.put(_Request(prompt_ids, candidates, fut, loop))
        return await fut

    async def _episode(
        self, sem: asyncio.Semaphore, task_id: str, seed: int, group: int, sample: int, fh: Any, tag: dict
    ) -> Trajectory:
        traj = Trajectory(task_id=task_id, seed=seed, group=group, sample=sample)
        async with sem:
            free = self._free.setdefault(task_id, [])
            env = free.pop() if free else None
            if env is None:
                env = make_async_env(self.specs[task_id], self.env_config, host=self.host)  # its task's env
                self._all.append(env)
            try:
                await self._play(env, traj)
            except Exception as e:  # noqa: BLE001 - recorded on the trajectory and counted, never dropped
                traj.truncated, traj.error = True, f"{type(e).__name__}: {e}"
                traj.truncation_reason = traj.truncation_reason or "error"
                traj.infra_failure = True
            finally:
                free.append(env)
        if fh is not None:
            with self._write_lock:
                fh.write(json.dumps({**tag, **json.loads(traj.to_json())}) + "\n")
                fh.flush()
        return traj

    async def _play(self, env: AsyncBrowserEnv, traj: Trajectory) -> None:
        obs, _ = await env.reset(traj.seed)
        history: list[str] = []
        space = self.space
        while True:
            tree = parse_snapshot(obs["axtree"])
            cands = None if space.free else space.candidates(tree, obs["goal"])
            if cands == []:
                traj.truncated, traj.truncation_reason = True, "no candidate actions on the page"
                traj.infra_failure = not traj.turns  # a dead end the policy walked into is its own doing
                return
            try:
                prompt = self.builder.build(obs["goal"], space.view(obs, tree), history)
            except PromptTooLongError as e:
                traj.truncated, traj.truncation_reason = True, f"context budget: {e}"
                traj.infra_failure = True
                return
            comp, cand_ids = await self._ask(prompt.ids, cands)
            index = int(comp.candidate_index or 0)
            action = comp.text if cands is None else cands[index]
            bad_reply = cands is None and isinstance(parse_action(action), ActionError)
            obs, reward, terminated, truncated, info = await env.step(action)
            traj.turns.append(
                Turn(
                    prompt_ids=list(prompt.ids),
                    completion_ids=list(comp.token_ids),
                    logprobs=list(comp.logprobs),
                    action=action,
                    candidates=cands or [],
                    candidate_ids=[list(c) for c in cand_ids],
                    candidate_index=index,
                    candidate_entropy=float(comp.candidate_entropy or 0.0),
                    seq_logprob_restricted=float(comp.seq_logprob_restricted or 0.0),
                    reward=reward + (self.parse_error_penalty if bad_reply else 0.0),
                    milestones=[m.id for m in info["milestones"]],
                    prompt_truncated=prompt.truncated,
                    action_error=info.get("action_error"),
                    weights_version=comp.weights_version,
                    parse_error=bad_reply,
                )
            )
            history.append(action if cands is not None else str(parse_action(action)) if not bad_reply else action.strip()[:200])
            traj.success = bool(info["success"])
            if terminated or truncated:
                traj.terminated, traj.truncated = terminated, truncated
                traj.truncation_reason = info.get("truncation_reason") if truncated else None
                traj.infra_failure = truncated and traj.truncation_reason != MAX_STEPS_REASON
                return


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
