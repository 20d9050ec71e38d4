"""Rollouts: G episodes per (task, seed) group in N concurrent real browser envs, actions chosen by the policy.

The episodes run as coroutines on one event loop (`BrowserHost.shared()`'s thread); their envs come from a
pool (`agentrl.envs.pool`: the local pool, one Chromium in this process, or Ray actors that own the
browsers, ``pool=PoolConfig(backend="ray")``). The policy stays here either way. Every turn an
env coroutine builds the prompt ids from its observation, lists the valid actions (the `ActionSpace`: clicks,
and with ``typing`` fills and selects with the goal's values) and asks for a decision; the calling thread
batches all pending decisions, scores each distinct (prompt, candidates) pair once with the generator (its G
samples share that forward) and samples among the candidates (constrained decoding), each decision with its
own seed (collect seed, episode, turn): the same seeds give the same trajectories on either backend, and an
episode whose worker died is re-run from its seed with the same samples. In free-form mode
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
import hashlib
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
from agentrl.envs.browser import BrowserEnvConfig
from agentrl.envs.host import BrowserHost
from agentrl.envs.pool import make_pool
from agentrl.envs.workers import PoolConfig, WorkerLost
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
    sample_seed: int  # this decision's own sampling seed (collect seed, episode, turn): see `_sample_seed`
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
        pool: PoolConfig | None = None,
    ) -> None:
        self.space = ActionSpace(
            mode=actions, click_roles=tuple(click_roles), extra=tuple(extra_actions), described=described,
            typing=typing, answers=answers, observation=observation,
        )
        self.specs = {t.id: t for t in tasks}
        self.generator = generator
        self.builder = builder
        # where the envs run (`agentrl.envs.pool`): the local pool with num_envs envs unless told otherwise
        self.pool_config = pool or PoolConfig(max_envs=num_envs)
        self.num_envs = self.pool_config.concurrency
        self.max_new_tokens = max_new_tokens
        self.parse_error_penalty = parse_error_penalty
        # generous action timeout: on a loaded machine a click on a static button can take seconds, and a
        # timed-out click would be scored as a wrong choice (counted in stats["action_errors"] either way)
        self.env_config = env_config or BrowserEnvConfig(
            record=False, keep_episode_dirs=False, action_timeout_ms=20_000, settle_timeout_ms=20_000
        )
        # one router (and so one R_phi / judge client) shared by every env of the engine
        self.env_config = dataclasses.replace(self.env_config, router=RewardRouter.of(self.env_config.router))
        self.host = host or BrowserHost.shared()  # the loop the episodes run on (and the local pool's browser)
        self.batch_wait_s = batch_wait_s
        self.pool = make_pool(self.pool_config, self.env_config, self.host)
        self.reruns = 0  # episodes re-run because their worker died
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._write_lock = threading.Lock()
        # scores of each distinct (prompt, candidates) within one collect (the weights do not change during
        # it): a group's G samples share one forward even when their envs ask at different times
        self._scores: dict[tuple, Any] = {}
        self._seed = 0
        self._playing = 0  # episodes between their reset and their end (event-loop thread; read by collect)
        # held while deciding: the trainer takes it to swap the generator's weights between two decision
        # batches when rollouts overlap the update (async_rollouts), then `weights_changed` drops the scores
        self.policy_lock = threading.RLock()

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
        self._seed = seed
        self._scores.clear()
        reruns0 = self.reruns
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
            # no wait for more once every episode in play is waiting for a decision (none could ask now)
            while len(batch) < self._playing and (left := deadline - time.perf_counter()) > 0:
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
            "worker_reruns": self.reruns - reruns0,
            "action_errors": sum(t.action_error is not None for tr in trajectories for t in tr.turns),
            "parse_errors": sum(t.parse_error for tr in trajectories for t in tr.turns),
            "success": float(np.mean([t.success for t in trajectories])) if trajectories else 0.0,
        }
        stats["scored_tokens_per_s"] = (stats["prompt_tokens"] + stats["completion_tokens"]) / max(policy_s, 1e-9)
        return RolloutResult(trajectories, stats)

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------ policy side (calling thread)
    def weights_changed(self) -> None:
        """The generator's weights changed (call it holding `policy_lock`): scores of the old ones go."""
        with self.policy_lock:
            self._scores.clear()

    def _decide(self, batch: list[_Request], temperature: float, seed: int) -> int:
        with self.policy_lock:
            return self._decide_locked(batch, temperature, seed)

    def _decide_locked(self, batch: list[_Request], temperature: float, seed: int) -> int:
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
        params = SamplingParams(temperature=temperature, n=1)
        for key, reqs in keys.items():
            if key[1] is None:
                continue
            for r in reqs:  # each decision with its own seed: what it picks does not depend on the batching
                (c,) = candidate_completions(self._scores[key], key[0], params, r.sample_seed,
                                             self.generator.tokenizer, self.generator.weights_version)
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

    async def _ask(self, prompt_ids: list[int], candidates: list[str] | None, sample_seed: int) -> tuple[Completion, tuple]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._requests.put(_Request(prompt_ids, candidates, sample_seed, fut, loop))
        return await fut

    def _sample_seed(self, traj: Trajectory) -> int:
        """The seed of the decision `traj` takes next: from the collect seed, the episode (task, seed, group,
        sample) and the turn, so the same seeds sample the same actions whatever the envs' timing, backend
        or worker (and an episode re-run after its worker died samples what it would have)."""
        key = f"{self._seed}/{traj.task_id}/{traj.seed}/{traj.group}/{traj.sample}/{len(traj.turns)}"
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 2

    async def _episode(
        self, sem: asyncio.Semaphore, task_id: str, seed: int, group: int, sample: int, fh: Any, tag: dict
    ) -> Trajectory:
        """One episode on an env of the pool. A worker that dies under it (`WorkerLost`) costs nothing: the
        episode is re-run from the same seed (and the same sampling seeds) on another worker, up to the
        pool's ``retries``, then recorded as an infrastructure failure, never dropped."""
        cfg = self.pool_config
        async with sem:
            for attempt in range(cfg.retries + 1):
                traj = Trajectory(task_id=task_id, seed=seed, group=group, sample=sample)
                last = attempt == cfg.retries
                try:
                    env = await self.pool.acquire(self.specs[task_id])  # waits for a free slot (backpressure)
                except WorkerLost as e:
                    if not last:
                        self.reruns += 1
                        continue
                    _infra(traj, f"WorkerLost: {e}", "worker lost")
                    break
                broken = False
                try:
                    await asyncio.wait_for(self._play(env, traj), timeout=cfg.episode_timeout_s)
                except WorkerLost as e:
                    if not last:
                        self.reruns += 1
                        continue  # (the env goes back to the pool below: its worker is gone)
                    _infra(traj, f"WorkerLost: {e}", "worker lost")
                except TimeoutError:
                    broken = True  # the env may be inside a call still: closed, not reused
                    _infra(traj, f"episode timeout: longer than {cfg.episode_timeout_s:g} s", "episode timeout")
                except Exception as e:  # noqa: BLE001 - recorded on the trajectory and counted, never dropped
                    _infra(traj, f"{type(e).__name__}: {e}", traj.truncation_reason or "error")
                finally:
                    await self.pool.release(env, broken=broken)
                break
        if fh is not None:
            with self._write_lock:
                fh.write(json.dumps({**tag, **json.loads(traj.to_json())}) + "\n")
                fh.flush()
        return traj

    async def _play(self, env: Any, traj: Trajectory) -> None:
        self._playing += 1
        try:
            await self._turns(env, traj)
        finally:
            self._playing -= 1

    async def _turns(self, env: Any, traj: Trajectory) -> None:
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
            comp, cand_ids = await self._ask(prompt.ids, cands, self._sample_seed(traj))
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


def _infra(traj: Trajectory, error: str, reason: str) -> None:
    traj.truncated, traj.error, traj.truncation_reason, traj.infra_failure = True, error, reason, True


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
