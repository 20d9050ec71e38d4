"""Generation records and the `Generator` protocol shared by every backend.

Everything works on token ids: prompts come in as ids (see `agentrl.policy.prompt`), completions go out as
the exact ids that were sampled, with their log-probs. The learner trains on those ids; nothing is ever
re-tokenised from text ("the ids sampled are the ids trained on").

Two ways to act:

* `generate`: free sampling (temperature / top-p / stop strings), n samples per prompt.
* `choose`: constrained decoding: the policy scores a list of valid action strings and samples among them.

Backends: `agentrl.policy.hf_backend.HFGenerator` (transformers) and
`agentrl.policy.vllm_backend.VLLMGenerator` (vLLM, GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

FinishReason = Literal["stop", "length", "constrained"]


class WeightSyncError(RuntimeError):
    """Weights could not be pushed into a generation engine (bad state dict, mismatch after copy, timeout)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `temperature=0` is greedy. `seed=None` draws a fresh seed per call.

    `stop`: strings that end a completion (the token that completes a stop string is kept in `token_ids`).
    The tokenizer's end-of-turn tokens (eos, `<|im_end|>`) always stop generation.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n", "<|im_end|>")
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.temperature < 0 or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be >= 1")


@dataclass(frozen=True)
class Completion:
    """One sampled completion of one prompt.

    `logprobs[i]` is the log-prob of `token_ids[i]` under the distribution it was sampled from (free
    sampling: after temperature and top-p; greedy and `choose`: the model's own token distribution).
    For `choose`, `seq_logprob_restricted` is the log-prob of the chosen candidate under the distribution over
    candidates it was sampled from, and `candidate_entropy` the entropy of that distribution (nats).
    """

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    text: str
    finish_reason: FinishReason
    seq_logprob_restricted: float | None = None
    candidate_entropy: float | None = None
    candidate_index: int | None = None
    weights_version: int = 0

    @property
    def logprob(self) -> float:
        """Sum of the token log-probs (the sequence log-prob)."""
        return float(sum(self.logprobs))

    @property
    def action(self) -> str:
        """The action text to send to the env: `text` up to the first newline, stripped."""
        return self.text.split("\n", 1)[0].strip()


@dataclass(frozen=True)
class CandidateScores:
    """Model scores of candidate action strings after one prompt (unrestricted token log-probs)."""

    candidates: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]  # candidate ids + end-of-turn id
    token_logprobs: tuple[tuple[float, ...], ...]
    seq_logprobs: tuple[float, ...]  # sum of token_logprobs per candidate

    def log_probs(self, temperature: float = 1.0) -> torch.Tensor:
        """(C,) log-softmax of sequence log-probs / temperature (temperature 0 is treated as 1)."""
        t = temperature if temperature > 0 else 1.0
        return torch.log_softmax(torch.tensor(self.seq_logprobs, dtype=torch.float64) / t, dim=0)

    def probs(self, temperature: float = 1.0) -> torch.Tensor:
        return self.log_probs(temperature).exp()

    def entropy(self, temperature: float = 1.0) -> float:
        """Entropy (nats) of the distribution over candidates; 0 for greedy."""
        if temperature == 0:
            return 0.0
        lp = self.log_probs(temperature)
        return float(-(lp.exp() * lp).sum())


@runtime_checkable
class Generator(Protocol):
    """A generation backend. `weights_version` increases by one on each successful `load_weights`."""

    weights_version: int

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Completion]]: ...

    def choose(
        self, prompts: list[list[int]], candidates: list[list[str]], sampling: SamplingParams
    ) -> list[list[Completion]]: ...

    def load_weights(self, state_dict_or_model: Any) -> None: ...
