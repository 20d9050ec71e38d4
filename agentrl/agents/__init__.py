"""Agents: anything with ``reset(obs, info, variant)`` and ``act(obs) -> str`` (an action string).

- `base`: the `Agent` contract, `make_agent` and the name tables (lazy entries: a module is imported when
  its agent is first named).
- `scripted`: `ScriptedAgent` (a task's oracle, read from the observation text only), `RandomAgent`
  (uniform over the actions the observation allows), `oracle_action`.
- `miniwob`: `miniwob-heuristic`, the MiniWoB++ utterance rules.
- `llm`: `hf:PATH_OR_ID`, `ckpt:RUN_DIR`, `openai:MODEL`.
"""

from agentrl.agents.base import AGENT_PREFIXES, AGENTS, Agent, make_agent
from agentrl.agents.scripted import OracleStepError, RandomAgent, ScriptedAgent, oracle_action

__all__ = [
    "AGENTS", "AGENT_PREFIXES", "Agent", "OracleStepError", "RandomAgent", "ScriptedAgent", "make_agent", "oracle_action",
]
