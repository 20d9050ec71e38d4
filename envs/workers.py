"""A rollout worker's config and limits (the ``rollout:`` mapping), shared by both pool backends.

A pool hands out async envs (``await env.reset(seed)``, ``await env.step(action)``) one episode at a time:

    pool = make_pool(PoolConfig(), env_config)            # the local pool: every env on this process's loop
    pool = make_pool(PoolConfig(backend="ray", workers=4), env_config)   # envs inside Ray actors
    env = await pool.acquire(spec); obs, info = await env.reset(seed); ...; await pool.release(env)

(`make_pool` is in `agentrl.envs.pool`.)

Two backends, one interface. ``local`` (the default on one machine): the envs run on one event loop and one
Chromium in this process (`BrowserHost`). ``ray`` (`agentrl.envs.ray_pool`): each Ray actor owns its
browser (or desktop displays) and its own sandbox server; the env's calls go to the actor and the
observations come back, while the policy stays with the caller. Either way the env an episode sees is
built from (task, seed) alone, so the same seeds give the same observations on either backend.

The limits (`PoolConfig`) hold per worker (the local pool is one worker): at most ``max_envs`` envs at a
time (`Recycler`; for whole-episode runs, at most ``max_envs`` kept: `EnvCache`), an episode wall-clock
timeout (``episode_timeout_s``, enforced by the caller), and the browser restarted after ``restart_after``
episodes or when its processes' memory passes ``restart_above_mb`` (between episodes: the worker first lets
the running ones finish). On Ray, the worker actor itself (its Python process, Playwright driver, sandbox
server and browser) is retired and replaced by a fresh one after ``replace_actor_after`` episodes or once its
process's RSS passes ``replace_actor_above_mb``: it takes no new episode, the running ones finish, then it is
closed and a new actor takes its place, so no episode is cut short.

`WorkerLost` is what an env raises when its worker died under it (a killed actor, a lost node): the episode
is not the policy's doing and is re-run elsewhere from the same seed; never a reward.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.envs.factory import make_async_env
from agentrl.envs.host import BrowserHost, browser_pids

BACKENDS = ("local", "ray")


class WorkerLost(RuntimeError):
    """The worker that owned an env died (its episode is re-run on another worker from the same seed)."""


@dataclass(frozen=True)
class PoolConfig:
    """Where rollouts run and their per-worker limits (the ``rollout:`` mapping of a config)."""

    backend: str = "local"  # local | ray
    address: str | None = None  # ray: a cluster's address ("ray://host:10001", "auto"); None: ray.init() here
    workers: int = 2  # ray: rollout actors
    cpus_per_worker: float = 1.0  # ray: the CPUs each actor reserves (placement never waits on more than exist)
    max_envs: int = 8  # envs (browser contexts, desktop displays) one worker runs at a time
    episode_timeout_s: float = 900.0  # an episode longer than this ends truncated (an infrastructure failure)
    restart_after: int = 0  # restart a worker's browser after this many episodes (0: never)
    restart_above_mb: float = 0.0  # ... or when its Chromium processes' RSS passes this many MB (0: never)
    retries: int = 2  # re-runs of an episode whose worker died, on another worker, before it is recorded failed
    replace_actor_after: int = 0  # ray: retire a worker actor (its whole process) after this many episodes (0: never)
    replace_actor_above_mb: float = 0.0  # ray: ... or once its process's RSS passes this many MB (0: never)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"rollout backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        for name in ("workers", "max_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollout {name} must be >= 1, not {getattr(self, name)}")
        if self.cpus_per_worker <= 0 or self.episode_timeout_s <= 0:
            raise ValueError("rollout cpus_per_worker and episode_timeout_s must be > 0")
        for name in ("restart_after", "restart_above_mb", "retries", "replace_actor_after", "replace_actor_above_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"rollout {name} must be >= 0, not {getattr(self, name)}")
        if self.backend != "ray" and (self.replace_actor_after or self.replace_actor_above_mb):
            raise ValueError("rollout replace_actor_after / replace_actor_above_mb replace Ray actors: they need "
                             "backend: ray (the local pool's browser restarts with restart_after / restart_above_mb)")

    def actor_spent(self, episodes: int, rss_mb: float) -> bool:
        """Whether a Ray worker actor that has run `episodes` episodes and whose process holds `rss_mb` MB is
        to be replaced by a fresh one (between episodes: `replace_actor_after`, `replace_actor_above_mb`)."""
        return bool((self.replace_actor_after and episodes >= self.replace_actor_after)
                    or (self.replace_actor_above_mb and rss_mb > self.replace_actor_above_mb))

    @property
    def concurrency(self) -> int:
        """Envs the pool runs at once: max_envs per worker, times the workers on Ray."""
        return self.max_envs * (self.workers if self.backend == "ray" else 1)

    @classmethod
    def of(cls, mapping: dict[str, Any] | None, **overrides: Any) -> PoolConfig:
        """From a config's ``rollout:`` mapping (unknown keys are an error naming them) and set overrides."""
        mapping = {**(mapping or {}), **{k: v for k, v in overrides.items() if v is not None}}
        unknown = set(mapping) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"rollout: unknown keys {sorted(unknown)} (known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**mapping)


def chromium_stats(root_pid: int | None = None) -> dict[str, float]:
    """The Chromium processes under `root_pid` (default: this process): their count and summed RSS in MB
    (RSS counts pages shared between them once per process, so it is an upper bound)."""
    pids = browser_pids(root_pid)
    rss_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return {"chromium_processes": len(pids), "chromium_rss_mb": rss_kb / 1024}


def process_rss_mb(pid: int | None = None) -> float:
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


class Recycler:
    """One worker's envs and its browser's restarts, on the worker's event loop: envs are reused per task
    (at most `max_envs` out at once), and the browser is restarted between episodes when a limit says so."""

    def __init__(self, config: PoolConfig, env_config: Any, host: BrowserHost) -> None:
        self.config, self.env_config, self.host = config, env_config, host
        self.free: dict[str, list[Any]] = {}
        self.all: list[Any] = []
        self.active = 0
        self.episodes = 0  # since the last restart
        self.restarts = 0
        self._changed: asyncio.Condition | None = None
        self._pending = False

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self, spec: Any) -> Any:
        cond = self._cond()
        async with cond:
            await cond.wait_for(lambda: self.active < self.config.max_envs and not (self._pending and self.active))
            if self._pending:  # nothing runs now: restart the browser before the next episode
                await self._restart()
            self.active += 1
        free = self.free.setdefault(spec.id, [])
        if free:
            return free.pop()
        env = make_async_env(spec, self.env_config, host=self.host)
        self.all.append(env)
        return env

    async def release(self, env: Any, *, broken: bool = False) -> None:
        """Hand `env` back after an episode; a `broken` env (timed out mid-call) is closed, not reused."""
        cond = self._cond()
        if broken:
            self.all = [e for e in self.all if e is not env]
            await _close_quietly(env)
        else:
            self.free.setdefault(env.spec.id, []).append(env)
        async with cond:
            self.active -= 1
            self.episodes += 1
            c = self.config
            if (c.restart_after and self.episodes >= c.restart_after) or (
                c.restart_above_mb and chromium_stats()["chromium_rss_mb"] > c.restart_above_mb
            ):
                self._pending = True
            cond.notify_all()

    async def _restart(self) -> None:
        envs, self.all, self.free = self.all, [], {}
        await asyncio.gather(*(_close_quietly(e) for e in envs))
        self.host.spare.clear()
        await self.host.restart()
        self.episodes, self._pending = 0, False
        self.restarts += 1

    async def close(self) -> None:
        envs, self.all, self.free = self.all, [], {}
        await asyncio.gather(*(_close_quietly(e) for e in envs))


async def _close_quietly(env: Any) -> None:
    try:
        await asyncio.wait_for(env.close(), timeout=30)
    except Exception:  # noqa: BLE001 - a broken env is being thrown away; its browser is restarted if dead
        pass


class EnvCache:
    """A worker's envs for whole-episode runs (evaluate, rm collect), by key (a task): at most `max_envs`
    kept (None: no bound). Each kept env holds a browser context made ready for its next episode (and its
    renderer process), so a worker that meets many tasks would otherwise keep one per task it has seen: the
    least recently used env is closed when a new one would pass the bound."""

    def __init__(self, max_envs: int | None = None) -> None:
        self.max_envs = max_envs
        self.envs: dict[Any, Any] = {}  # in use order, the most recent last

    def get(self, key: Any, make: Any) -> Any:
        env = self.envs.pop(key, None)
        if env is None:
            while self.max_envs and len(self.envs) >= self.max_envs:
                self.envs.pop(next(iter(self.envs))).close()
            env = make()
        self.envs[key] = env
        return env

    def close(self) -> None:
        envs, self.envs = self.envs, {}
        for env in envs.values():
            env.close()
