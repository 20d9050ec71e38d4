"""LLM agents: `hf:PATH_OR_ID` (a transformers causal LM), `ckpt:RUN_DIR` (a policy trained by `agentrl
train`) and `openai:MODEL` (any OpenAI-compatible chat-completions endpoint).

All three are ordinary agents (``reset(obs, info, variant)``, ``act(obs) -> str``) and are made by name:

>>> agent = make_agent("hf:runs/x/base-model")                                   # doctest: +SKIP
>>> agent = make_agent("ckpt:runs/tiny-click", checkpoint="best")               # doctest: +SKIP
>>> agent = make_agent("openai:gpt-4o-mini", base_url="http://127.0.0.1:8001/v1")  # doctest: +SKIP

`hf:` and `ckpt:` build prompts with the project's `PromptBuilder` and act with `HFGenerator`, greedy
unless a temperature is given. `hf:` generates free text (the env parses the action out of it); `ckpt:`
acts exactly as the run was trained and evaluated: the run's prompt settings and constrained decoding
over the page's candidate actions. `openai:` sends the same user message (goal, last actions, observation)
and returns the reply as the action: the env parses it with `parse_action` and turns a reply without a
valid action into an error observation, so the trajectory keeps the model's own words.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agentrl.envs.actions import Action, parse_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.policy.prompt import DEFAULT_SYSTEM_PROMPT, format_user_message
from agentrl.taskspec import TaskVariant


class AgentError(RuntimeError):
    """The agent could not produce an action (endpoint down after retries, prompt too long, ...)."""


class _History:
    """The goal and the actions taken so far (shared by every LLM agent: the prompt shows the last k)."""

    def __init__(self) -> None:
        self.goal = ""
        self.actions: list[str] = []

    def reset(self, obs: dict[str, Any]) -> None:
        self.goal, self.actions = obs.get("goal", ""), []

    def add(self, reply: str) -> None:
        parsed = parse_action(reply)
        self.actions.append(str(parsed) if isinstance(parsed, Action) else reply.strip()[:200])


# ---------------------------------------------------------------- transformers policies
class PolicyAgent:
    """A causal LM acting through `PromptBuilder` + `HFGenerator`.

    ``mode="generate"``: free greedy/sampled generation of the action text. ``mode="choose"``: score the
    page's candidate actions (`learner.action_space.ActionSpace`: clicks, and with ``typing`` fills and
    selects, with ``answers`` done("value")) and pick one (argmax at temperature 0).
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, name: str, mode: str = "generate", system: str = DEFAULT_SYSTEM_PROMPT,
        observation: str = "text", max_prompt_tokens: int = 3072, history_k: int = 4, temperature: float = 0.0,
        max_new_tokens: int = 48, click_roles: tuple[str, ...] = ("button", "link"), extra_actions: tuple[str, ...] = (),
        described: bool = False, typing: bool = False, answers: bool = False, seed: int = 0,
    ) -> None:
        from agentrl.learner.action_space import ActionSpace
        from agentrl.policy.hf_backend import HFGenerator
        from agentrl.policy.prompt import PromptBuilder
        from agentrl.policy.tokenizer import CHATML_TEMPLATE

        if mode not in ("generate", "choose"):
            raise ValueError(f"mode must be 'generate' or 'choose', got {mode!r}")
        self.space = ActionSpace(
            mode="free" if mode == "generate" else "candidates", click_roles=tuple(click_roles), extra=tuple(extra_actions),
            described=described, typing=typing, answers=answers, observation=observation,
        )
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = CHATML_TEMPLATE  # a base model without one: use the project's ChatML
        self.name, self.mode, self.observation = name, mode, observation
        self.temperature, self.max_new_tokens, self.seed = temperature, max_new_tokens, seed
        self.generator = HFGenerator(model, tokenizer)
        self.builder = PromptBuilder(tokenizer, system=system, max_prompt_tokens=max_prompt_tokens, history_k=history_k)
        self.history = _History()

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: TaskVariant | None) -> None:
        self.history.reset(obs)

    def act(self, obs: dict[str, Any]) -> str:
        from agentrl.policy.prompt import PromptTooLongError
        from agentrl.policy.records import SamplingParams

        tree = parse_snapshot(obs["axtree"])
        try:
            prompt = self.builder.build(self.history.goal, self.space.view(obs, tree), self.history.actions)
        except PromptTooLongError as e:
            raise AgentError(f"{self.name}: {e}") from None
        params = SamplingParams(
            temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            seed=self.seed * 100_003 + len(self.history.actions),
        )
        if self.mode == "choose":
            cands = self.space.candidates(tree, self.history.goal)
            if not cands:
                raise AgentError(f"{self.name}: no candidate actions on the page (roles {list(self.space.click_roles)})")
            comp = self.generator.choose([prompt.ids], [cands], params)[0][0]
            action = cands[int(comp.candidate_index or 0)]
        else:
            action = self.generator.generate([prompt.ids], params)[0][0].action
        self.history.add(action)
        return action


def hf_agent(path_or_id: str, *, seed: int = 0, device: str = "cpu", dtype: str | None = None, **options: Any) -> PolicyAgent:
    """`hf:PATH_OR_ID`: a local directory or a model id already in the Hugging Face cache (no downloads)."""
    from agentrl.policy.model import load_policy

    if not path_or_id:
        raise ValueError("hf: needs a model path or id, e.g. hf:runs/x/base-model")
    model, tok = load_policy(path_or_id, device=device, dtype=dtype)
    return PolicyAgent(model, tok, name=f"hf:{path_or_id}", seed=seed, **options)


def checkpoint_dir(run_dir: Path, which: str = "best") -> Path:
    """The checkpoint to load: ``best`` (held-out best; falls back to the latest) or ``last``."""
    from agentrl.learner.checkpoint import latest_checkpoint

    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    best = run_dir / "checkpoints" / "best"
    if which == "best" and (best / "model" / "config.json").exists():
        return best
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (expected checkpoints/best or checkpoints/last)")
    return last


def ckpt_agent(
    run_dir: str, *, seed: int = 0, checkpoint: str = "best", device: str | None = None, **options: Any
) -> PolicyAgent:
    """`ckpt:RUN_DIR` (a run of `agentrl train`), or the path of one checkpoint dir inside it. The checkpoint's
    `model/` is a Hugging Face folder (LoRA runs: merged weights), loaded as it is."""
    from agentrl.learner.build import resolve_device
    from agentrl.learner.config import TrainConfig
    from agentrl.policy.model import load_policy

    path = Path(run_dir)
    if (path / "model" / "config.json").exists():  # a checkpoint dir: runs/x/checkpoints/best
        path, ckpt = path.parent.parent, path
    else:
        ckpt = None
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path}: not a training run dir (no config.yaml)")
    cfg = TrainConfig.load(path / "config.yaml")
    ckpt = ckpt or checkpoint_dir(path, checkpoint)
    model, tok = load_policy(ckpt / "model", device=device or resolve_device(cfg.device))
    settings: dict[str, Any] = {
        "mode": "generate" if cfg.actions == "free" else "choose", "system": cfg.system_prompt,
        "observation": cfg.observation, "max_prompt_tokens": cfg.max_prompt_tokens, "history_k": cfg.history_k,
        "click_roles": cfg.click_roles, "extra_actions": cfg.extra_actions, "described": cfg.described_actions,
        "typing": cfg.typing_candidates, "answers": cfg.answer_candidates, "max_new_tokens": cfg.max_new_tokens,
    }
    # the name says which checkpoint was loaded (it goes into the run's summary)
    return PolicyAgent(model.eval(), tok, name=f"ckpt:{ckpt}", seed=seed, **{**settings, **options})


# ---------------------------------------------------------------- OpenAI-compatible endpoints
class OpenAIAgent:
    """Chat-completions agent. Retries connection errors, timeouts, 429 and 5xx with exponential backoff;
    other HTTP errors fail at once (a wrong model name will not get better). Counts are in `calls`/`retries`.
    """

    def __init__(
        self, model: str, *, base_url: str | None = None, api_key: str | None = None, temperature: float = 0.0,
        max_tokens: int = 128, timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 0.5,
        system: str = DEFAULT_SYSTEM_PROMPT, history_k: int = 4, max_obs_chars: int = 24_000, seed: int = 0,
    ) -> None:
        if not model:
            raise ValueError("openai: needs a model name, e.g. openai:gpt-4o-mini")
        self.name = f"openai:{model}"
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.temperature, self.max_tokens, self.timeout_s = temperature, max_tokens, timeout_s
        self.retries, self.backoff_s, self.seed = retries, backoff_s, seed
        self.system, self.history_k, self.max_obs_chars = system, history_k, max_obs_chars
        self.history = _History()
        self.calls = self.retried = 0

    def reset(self, obs: dict[str, Any], info: dict[str, Any], variant: TaskVariant | None) -> None:
        self.history.reset(obs)

    def messages(self, obs: dict[str, Any]) -> list[dict[str, str]]:
        acts = self.history.actions
        kept = acts[max(0, len(acts) - self.history_k) :] if self.history_k else []
        text = obs["text"]
        if len(text) > self.max_obs_chars:
            text = text[: self.max_obs_chars] + f"\n[... observation cut at {self.max_obs_chars} characters]"
        user = format_user_message(self.history.goal, kept, text, first_step=len(acts) - len(kept) + 1)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def act(self, obs: dict[str, Any]) -> str:
        body = {
            "model": self.model, "messages": self.messages(obs), "temperature": self.temperature,
            "max_tokens": self.max_tokens, "seed": self.seed,
        }
        reply = self._post(body)
        self.history.add(reply)
        return reply

    def _post(self, body: dict[str, Any]) -> str:
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.calls += 1
            req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    data = json.loads(r.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code == 429 or e.code >= 500:
                    continue
                raise AgentError(f"{self.name}: {last}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{url}: {getattr(e, 'reason', e)}"
                continue
            except json.JSONDecodeError as e:
                raise AgentError(f"{self.name}: {url} answered with non-JSON: {e}") from None
            try:
                return str(data["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError):
                raise AgentError(f"{self.name}: no choices[0].message.content in the reply: {str(data)[:300]}") from None
        raise AgentError(f"{self.name}: gave up after {self.retries + 1} attempts; last error: {last}")


def openai_agent(model: str, *, seed: int = 0, **options: Any) -> OpenAIAgent:
    return OpenAIAgent(model, seed=seed, **options)
