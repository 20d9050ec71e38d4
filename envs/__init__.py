"""Gymnasium environments: the sandboxed browser env, the desktop env, the episode core they share, their
action language and observation parsing. `make_env(task, config)` builds the env a task runs in."""

from typing import Any


def __getattr__(name: str) -> Any:  # `from agentrl.envs import make_env` without importing every env now
    if name in ("make_env", "make_async_env", "env_config"):
        from agentrl.envs import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'agentrl.envs' has no attribute {name!r}")
