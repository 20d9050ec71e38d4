"""The agent contract and the two name tables: ``AGENTS`` (plain names) and ``AGENT_PREFIXES`` (``PREFIX:ARG``).

Every entry is lazy, a ``"module:attr"`` string imported the first time it is asked for: naming the
scripted agent never imports transformers, and the table needs no import of the modules it lists.
Your own agent: ``AGENTS.register_lazy("mine", "my_pkg.agents:MyAgent")``, or ``py:MODULE:CLASS``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from agentrl.registry import Registry
from agentrl.taskspec import TaskVariant


class Agent(Protocol):
    name: str

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: TaskVariant | None) -> None: ...

    def act(self, obs: dict[str, Any]) -> str: ...


AGENTS: Registry[Any] = Registry("agent")
AGENTS.register_lazy("scripted", "agentrl.agents.scripted:ScriptedAgent")
AGENTS.register_lazy("random", "agentrl.agents.scripted:RandomAgent")
AGENTS.register_lazy("miniwob-heuristic", "agentrl.agents.miniwob:MiniWoBHeuristicAgent")

# Prefixed agent names (`hf:PATH_OR_ID`, `openai:MODEL`, `ckpt:RUN_DIR`, `py:MODULE:CLASS`): prefix ->
# factory(arg, seed=, **options).
AGENT_PREFIXES: Registry[Any] = Registry("agent prefix")
AGENT_PREFIXES.register_lazy("hf", "agentrl.agents.llm:hf_agent")
AGENT_PREFIXES.register_lazy("ckpt", "agentrl.agents.llm:ckpt_agent")
AGENT_PREFIXES.register_lazy("openai", "agentrl.agents.llm:openai_agent")


def make_agent(name: str, seed: int = 0, **options: Any) -> Agent:
    """An agent by name: a registered one (`scripted`, `random`) or `PREFIX:ARG` (`hf:`, `openai:`, `ckpt:`,
    `py:MODULE:CLASS`).

    `options` (None values are ignored) go to prefixed agents, e.g. ``temperature=0.7`` or ``base_url=...``.

    >>> make_agent("random", seed=3).name
    'random'
    """
    given = {k: v for k, v in options.items() if v is not None}
    prefix, colon, arg = name.partition(":")
    if colon:
        return AGENT_PREFIXES.get(prefix)(arg, seed=seed, **given)
    if given:
        raise ValueError(f"agent {name!r} takes no options, got {sorted(given)}")
    return AGENTS.get(name)(seed=seed)


@AGENT_PREFIXES.register("py")
def _python_agent(target: str, *, seed: int = 0, **options: Any) -> Agent:
    """`py:MODULE:CLASS`: your own agent class, imported by name (so worker processes can build it too)."""
    module, _, attr = target.rpartition(":")
    if not module:
        raise ValueError(f"py: agent must be 'py:MODULE:CLASS', got 'py:{target}'")
    return getattr(importlib.import_module(module), attr)(seed=seed, **options)
