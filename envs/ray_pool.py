"""Rollout envs inside Ray actors: the ``ray`` backend of `agentrl.envs.pool.make_pool` (``pip install agentrl[ray]``).

Each `EnvWorker` actor is a process with its own Chromium (`BrowserHost.for_running_loop()`), its own sandbox server
(`default_sandbox()`, started on first use inside the actor) and the desktop displays of its desktop tasks;
it runs up to ``max_envs`` envs at once (an async actor: its calls are coroutines on the actor's event loop, the
browser's) under the per-worker limits of `Recycler`. The policy stays with the caller: the
caller sends ``reset(seed)`` and ``step(action)`` and gets the observations back (`RemoteEnv`), so the
decisions, the ids the learner trains on and their log-probs never leave the learner's process.

    pool = RayPool(PoolConfig(backend="ray", workers=4, max_envs=8), env_config)
    env = await pool.acquire(spec)      # the least-loaded live worker with a free slot (else waits: backpressure)

Whole episodes (`agentrl evaluate`, `agentrl rm collect`, whose agent lives with the env): `run_episodes`
on `EpisodeWorker` actors, one episode in flight per actor.

Faults: a call on a dead actor raises `WorkerLost`; the pool starts a replacement actor (the CPUs it held are
free again) and the caller re-runs the episode from its seed. Placement: every actor reserves
``cpus_per_worker`` CPUs; asking for more than the cluster has is an error here, before any actor is made,
never a wait that does not end.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agentrl.envs.host import BrowserHost
from agentrl.envs.workers import PoolConfig, Recycler, WorkerLost, chromium_stats, process_rss_mb

#: the actors' options besides their CPUs: no task events (Ray records every call's states in both processes
#: and keeps the last 100,000 calls' in its GCS, for its dashboard and `ray list tasks`: per call, a few steps a
#: second per env, that is CPU on both sides and GCS memory that grows for hours before its bound)
QUIET = {"enable_task_events": False}


def ray_init(address: str | None = None) -> Any:
    """Import Ray and connect: to `address` (a cluster) when given, else a local Ray started here (once)."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("the ray rollout backend needs Ray: pip install 'agentrl[ray]'") from e
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address} if address else {"include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, configure_logging=False, **kwargs)
    return ray


def check_placement(ray: Any, workers: int, cpus_per_worker: float) -> None:
    """Raise (naming the numbers) when `workers` actors of `cpus_per_worker` CPUs cannot all be placed."""
    have = float(ray.cluster_resources().get("CPU", 0.0))
    need = workers * cpus_per_worker
    if need > have + 1e-9:
        raise ValueError(
            f"rollout: {workers} workers x {cpus_per_worker:g} CPUs need {need:g} CPUs but the Ray cluster has "
            f"{have:g}; lower rollout.workers or rollout.cpus_per_worker (fractions are allowed, e.g. 0.5)"
        )


class EnvWorker:
    """The actor body (made a Ray actor by `RayPool`): envs by id, each one episode at a time.

    An async actor: Ray runs its calls as coroutines on the actor's own event loop, which is also the loop
    of its browser (`BrowserHost.for_running_loop`), so a call goes straight into Playwright. (A threaded
    actor handing each call to a browser-loop thread paid two thread switches more per call, each a wait
    for the GIL and a core: ~8 ms per call on this 2-core machine, BENCHMARKS.md.)"""

    def __init__(self, config: PoolConfig, env_config: Any) -> None:
        self.config, self.env_config = config, env_config
        self._recycler: Recycler | None = None  # made on the actor's loop, at its first call
        self.envs: dict[int, Any] = {}
        self.episodes = 0  # released so far: with the process's RSS, what `PoolConfig.actor_spent` reads
        self.busy_s: Counter[str] = Counter()  # seconds spent in the envs' calls, by method (vs the caller's wall)
        self._dropped: set[int] = set()  # env ids given back before (or without) being opened

    def ping(self) -> int:
        return os.getpid()

    @property
    def recycler(self) -> Recycler:
        if self._recycler is None:
            self._recycler = Recycler(self.config, self.env_config, BrowserHost.for_running_loop())
        return self._recycler

    async def _timed(self, method: str, coro: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await coro
        finally:
            self.busy_s[method] += time.perf_counter() - t0

    async def open_reset(self, env_id: int, spec: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """An env for `spec` (waiting for a free slot), kept as `env_id` (the caller's), reset with `seed`:
        one round trip for both."""
        env = await self._timed("open", self.recycler.acquire(spec))
        self.envs[env_id] = env
        if env_id in self._dropped:  # the caller gave up on it while it waited for a slot (an episode timeout)
            await self.release(env_id, broken=True)
            raise TimeoutError(f"env {env_id} was given back before it was opened")
        return await self._timed("reset", env.reset(seed))

    async def reset(self, env_id: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return await self._timed("reset", self.envs[env_id].reset(seed))

    async def step(self, env_id: int, action: str) -> tuple[tuple[dict[str, Any], float, bool, bool, dict[str, Any]], Any]:
        """The env's step; when it ends the episode, the env is taken back in the same call (no `release`
        round trip): the second item is then what `release` returns, else None."""
        out = await self._timed("step", self.envs[env_id].step(action))
        return out, (await self.release(env_id) if out[2] or out[3] else None)

    async def release(self, env_id: int, broken: bool = False) -> tuple[int, float]:
        """Take the env back (if it is still out); returns this actor's episodes so far and its RSS (MB)."""
        env = self.envs.pop(env_id, None)
        if env is None:
            self._dropped.add(env_id)
        else:
            self.episodes += 1
            await self._timed("release", self.recycler.release(env, broken=broken))
        return self.episodes, process_rss_mb()

    async def stats(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "rss_mb": process_rss_mb(), "restarts": self.recycler.restarts,
                "active": self.recycler.active, "busy_s": dict(self.busy_s), **chromium_stats()}

    async def close(self) -> None:
        await self.recycler.close()
        await self.recycler.host.aclose()


@dataclass
class _Worker:
    handle: Any
    index: int
    load: int = 0
    alive: bool = True
    pid: int | None = None
    retiring: bool = False  # spent (`PoolConfig.actor_spent`): takes no new env, replaced once its envs are back


@dataclass
class RemoteEnv:
    """An env inside a worker actor, driven from here: the async env interface of `make_async_env`. Two
    round trips are saved per episode: the actor's env is taken in the `reset` call (not at `acquire`), and
    given back in the `step` that ends the episode (`released` then holds the actor's answer)."""

    pool: RayPool
    worker: _Worker
    env_id: int
    spec: Any
    opened: bool = False
    released: tuple[int, float] | None = None

    async def _call(self, method: str, *args: Any) -> Any:
        ray, pool = self.pool.ray, self.pool
        pool.calls[method] += 1
        t0 = time.perf_counter()
        try:
            return await getattr(self.worker.handle, method).remote(self.env_id, *args)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
            pool.lost(self.worker)
            raise WorkerLost(f"rollout worker {self.worker.index} (pid {self.worker.pid}) died: "
                             f"{type(e).__name__}") from None
        finally:
            pool.call_s[method] += time.perf_counter() - t0

    async def reset(self, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.opened:  # a second reset of the same env (its episode played again)
            return await self._call("reset", seed)
        self.opened = True
        return await self._call("open_reset", self.spec, seed)

    async def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        out, self.released = await self._call("step", action)
        return out


class RayPool:
    """`config.workers` `EnvWorker` actors; envs handed out to the least-loaded live worker with room."""

    def __init__(self, config: PoolConfig, env_config: Any) -> None:
        self.ray = ray = ray_init(config.address)
        check_placement(ray, config.workers, config.cpus_per_worker)
        self.config, self.env_config = config, env_config
        # calls in flight at once (coroutines on the actor's loop): every env's, a waiting open each, stats/close
        self._actor = ray.remote(EnvWorker).options(
            num_cpus=config.cpus_per_worker, max_concurrency=2 * config.max_envs + 2, **QUIET
        )
        self.workers: list[_Worker] = []
        self.lost_workers = 0
        self.replaced = 0  # actors retired and replaced by a limit (replace_actor_after / _above_mb)
        # actor calls made by the envs, by method, and their wall time here (benchmarks/ray_scaling.py)
        self.calls: Counter[str] = Counter()
        self.call_s: Counter[str] = Counter()
        self._env_ids = itertools.count()
        self._changed: asyncio.Condition | None = None
        for _ in range(config.workers):
            self._spawn()
        pids = ray.get([w.handle.ping.remote() for w in self.workers])
        for w, pid in zip(self.workers, pids, strict=True):
            w.pid = pid

    def _spawn(self) -> _Worker:
        w = _Worker(self._actor.remote(self.config, self.env_config), index=len(self.workers))
        self.workers.append(w)
        return w

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def lost(self, worker: _Worker) -> None:
        """`worker` died: start a replacement (the pool keeps its size) and let waiting acquires look again."""
        if not worker.alive:
            return
        worker.alive = False
        self.lost_workers += 1
        self._spawn()
        if self._changed is not None:
            loop = asyncio.get_running_loop()
            loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond():
            self._cond().notify_all()

    def _live(self) -> list[_Worker]:
        return [w for w in self.workers if w.alive]

    def _open(self) -> list[_Worker]:
        """The live workers with a free slot that take new envs (not retiring)."""
        return [w for w in self.workers if w.alive and not w.retiring and w.load < self.config.max_envs]

    async def acquire(self, spec: Any) -> RemoteEnv:
        cond = self._cond()
        async with cond:
            await cond.wait_for(self._open)
            worker = min(self._open(), key=lambda w: w.load)
            worker.load += 1
        return RemoteEnv(self, worker, next(self._env_ids), spec)  # the actor's env is taken at its reset

    async def _unload(self, worker: _Worker) -> None:
        async with self._cond():
            worker.load -= 1
            self._cond().notify_all()

    async def release(self, env: RemoteEnv, *, broken: bool = False) -> None:
        worker = env.worker
        if worker.alive and env.opened:
            answer = env.released if not broken else None
            if answer is None:  # not given back by its last step (the episode ended here, or mid-call)
                self.calls["release"] += 1
                try:
                    answer = await worker.handle.release.remote(env.env_id, broken)
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError):
                    self.lost(worker)
            if answer is not None:
                worker.retiring = worker.retiring or self.config.actor_spent(*answer)
        await self._unload(worker)
        if worker.retiring and worker.alive and worker.load == 0:
            await self._replace(worker)

    async def _replace(self, worker: _Worker) -> None:
        """Retire `worker` (spent, and none of its envs out): close its envs and browser, end its process, and
        start a fresh actor in its place."""
        worker.alive = False
        try:
            await asyncio.wait_for(worker.handle.close.remote(), timeout=120)
        except Exception:  # noqa: BLE001 - an actor that cannot close is killed all the same
            pass
        self.ray.kill(worker.handle, no_restart=True)
        self.replaced += 1
        self._spawn()
        await self._notify()

    def kill_worker(self, index: int) -> None:
        """Kill worker `index`'s actor at once (what a lost node does); for tests and drills."""
        self.ray.kill(self.workers[index].handle, no_restart=True)

    def stats(self) -> list[dict[str, Any]]:
        live = self._live()
        out = self.ray.get([w.handle.stats.remote() for w in live], timeout=60)
        return [{"worker": w.index, **s} for w, s in zip(live, out, strict=True)]

    def close(self) -> None:
        live = self._live()
        try:
            self.ray.get([w.handle.close.remote() for w in live], timeout=120)
        except Exception:  # noqa: BLE001 - a worker that cannot close is killed below all the same
            pass
        for w in live:
            self.ray.kill(w.handle, no_restart=True)
            w.alive = False


# ---------------------------------------------------------------- whole episodes (evaluate, rm collect)
class EpisodeWorker:
    """The actor body for runs whose agent lives with the env (`agentrl evaluate`, `agentrl rm collect`):
    `make_runner(index)` builds, inside the actor, an object with ``run(job) -> result`` and ``close()``
    (its agent and one env per task); episodes run one at a time, and the browser is restarted between
    two of them when a limit of `PoolConfig` says so."""

    def __init__(self, make_runner: Any, index: int, config: PoolConfig) -> None:
        self.config = config
        self.runner = make_runner(index)
        self.episodes = 0
        self.restarts = 0

    def ping(self) -> int:
        return os.getpid()

    def run(self, job: Any) -> tuple[Any, float]:
        """Run `job`; returns its result and this process's RSS (MB) after it."""
        result = self.runner.run(job)
        self.episodes += 1
        c = self.config
        if (c.restart_after and self.episodes >= c.restart_after) or (
            c.restart_above_mb and chromium_stats()["chromium_rss_mb"] > c.restart_above_mb
        ):
            self.runner.close()  # its envs are made again for the next episode, on the new browser
            host = BrowserHost.shared()
            host.run(host.restart())
            self.episodes, self.restarts = 0, self.restarts + 1
        return result, process_rss_mb()

    def stats(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "rss_mb": process_rss_mb(), "restarts": self.restarts, **chromium_stats()}

    def close(self) -> None:
        self.runner.close()


def run_episodes(
    jobs: list[Any], make_runner: Any, config: PoolConfig, on_result: Any, on_failed: Any, on_lost: Any = None,
) -> dict[str, int]:
    """Run every job on ``config.workers`` `EpisodeWorker` actors, one episode in flight per actor (a dead
    actor takes one episode with it, which is re-run on another from the same seed), handing each result to
    `on_result` as it comes, in this process (so the run's files are written here, as episodes finish).

    `on_failed(job, reason)` makes the record of an episode that could not be run: after ``retries`` lost
    workers, or past ``episode_timeout_s`` (its actor is killed and replaced). `on_lost(index)`: worker
    `index` died (its partial files can go). A worker spent by `PoolConfig.actor_spent` is closed between two
    episodes and a fresh actor takes its place. Returns counts: episodes, reruns, lost_workers, timeouts,
    replaced."""
    ray = ray_init(config.address)
    check_placement(ray, min(config.workers, len(jobs)) or 1, config.cpus_per_worker)
    actor = ray.remote(EpisodeWorker).options(num_cpus=config.cpus_per_worker, max_concurrency=2, **QUIET)
    lost_errors = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
    spawned = itertools.count()
    idle: list[tuple[int, Any]] = []
    for _ in range(max(1, min(config.workers, len(jobs)))):
        i = next(spawned)
        idle.append((i, actor.remote(make_runner, i, config)))
    pending = list(reversed(jobs))
    tries: dict[int, int] = {}
    inflight: dict[Any, tuple[int, Any, Any, float]] = {}  # ref -> (worker index, handle, job, start)
    ran: dict[int, int] = {}  # episodes per worker index (`PoolConfig.actor_spent`)
    counts = {"episodes": 0, "reruns": 0, "lost_workers": 0, "timeouts": 0, "replaced": 0}

    def replace(index: int, handle: Any) -> None:
        ray.kill(handle, no_restart=True)
        counts["lost_workers"] += 1
        if on_lost is not None:
            on_lost(index)
        j = next(spawned)
        idle.append((j, actor.remote(make_runner, j, config)))

    def retire(handle: Any) -> None:
        """A spent actor (idle, between two episodes): closed, ended, and a fresh one started in its place."""
        try:
            ray.get(handle.close.remote(), timeout=120)
        except Exception:  # noqa: BLE001 - an actor that cannot close is killed all the same
            pass
        ray.kill(handle, no_restart=True)
        counts["replaced"] += 1
        j = next(spawned)
        idle.append((j, actor.remote(make_runner, j, config)))

    try:
        while pending or inflight:
            while pending and idle:  # backpressure: a job goes out only to an idle worker
                index, handle = idle.pop()
                job = pending.pop()
                inflight[handle.run.remote(job)] = (index, handle, job, time.monotonic())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                index, handle, job, _t0 = inflight.pop(ref)
                try:
                    result, rss_mb = ray.get(ref)
                except lost_errors as e:
                    replace(index, handle)
                    key = id(job)
                    tries[key] = tries.get(key, 0) + 1
                    if tries[key] <= config.retries:
                        counts["reruns"] += 1
                        pending.append(job)  # next out, on another worker, from the same seed
                    else:
                        counts["episodes"] += 1
                        on_result(on_failed(job, f"rollout worker died {tries[key]} times under this episode "
                                                 f"({type(e).__name__})"))
                    continue
                ran[index] = ran.get(index, 0) + 1
                if config.actor_spent(ran[index], rss_mb):
                    retire(handle)
                else:
                    idle.append((index, handle))
                counts["episodes"] += 1
                on_result(result)
            now = time.monotonic()
            for ref, (index, handle, job, t0) in list(inflight.items()):
                if now - t0 > config.episode_timeout_s:
                    inflight.pop(ref)
                    replace(index, handle)
                    counts["timeouts"] += 1
                    counts["episodes"] += 1
                    on_result(on_failed(job, f"episode timeout: longer than {config.episode_timeout_s:g} s"))
    finally:
        handles = [h for _, h in idle] + [h for _, h, _, _ in inflight.values()]
        try:
            ray.get([h.close.remote() for h in handles], timeout=120)
        except Exception:  # noqa: BLE001 - a worker that cannot close is killed below all the same
            pass
        for h in handles:
            ray.kill(h, no_restart=True)
    counts["lost_workers"] -= counts["timeouts"]
    return counts
