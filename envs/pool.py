"""The rollout interface: `make_pool(config, env_config)` gives the pool of ``config.backend`` (`LocalPool` here,
or `agentrl.envs.ray_pool.RayPool`); both have ``await acquire(spec)``, ``await release(env, broken=)``,
``stats()`` and ``close()``. The config and the per-worker limits are in `agentrl.envs.workers`."""

from __future__ import annotations

import os
from typing import Any

from agentrl.envs.host import BrowserHost
from agentrl.envs.workers import PoolConfig, Recycler, chromium_stats, process_rss_mb

__all__ = ["LocalPool", "make_pool"]


class LocalPool:
    """Every env on `host`'s event loop in this process (one Chromium): the default on one machine."""

    def __init__(self, config: PoolConfig, env_config: Any, host: BrowserHost | None = None) -> None:
        self.config = config
        self.host = host or BrowserHost.shared()
        self.recycler = Recycler(config, env_config, self.host)

    async def acquire(self, spec: Any) -> Any:
        return await self.recycler.acquire(spec)

    async def release(self, env: Any, *, broken: bool = False) -> None:
        await self.recycler.release(env, broken=broken)

    def stats(self) -> list[dict[str, Any]]:
        return [{"pid": os.getpid(), "restarts": self.recycler.restarts, "rss_mb": process_rss_mb(),
                 **chromium_stats()}]

    def close(self) -> None:
        self.host.run(self.recycler.close())


def make_pool(config: PoolConfig, env_config: Any, host: BrowserHost | None = None) -> Any:
    """The pool of `config.backend`: `LocalPool`, or `agentrl.envs.ray_pool.RayPool`."""
    if config.backend == "ray":
        from agentrl.envs.ray_pool import RayPool

        return RayPool(config, env_config)
    return LocalPool(config, env_config, host)
