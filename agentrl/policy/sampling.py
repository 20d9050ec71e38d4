"""Sampling maths shared by the transformers and vLLM backends: per-prompt seeds, the tempered / top-p
distribution, inverse-CDF sampling, sampling among scored candidates (`CandidateChooser`), the timed call
that guards a weight sync, and the truncated importance-sampling weights a learner applies when the
generator's log-probs come from another engine (`truncated_is_weights`).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from transformers import PreTrainedTokenizerBase

from agentrl.policy.records import CandidateScores, Completion, SamplingParams, WeightSyncError

_T = TypeVar("_T")


def prompt_seeds(seed: int | None, prompts: Sequence[Sequence[int]], salt: str = "") -> list[int]:
    """A 63-bit seed per prompt from (seed, prompt ids, how many equal prompts came before it, salt).

    Keying on the prompt content (not its position) makes a prompt's samples independent of what else is
    in the batch, so batched and unbatched calls draw the same tokens.
    """
    base = secrets.randbits(63) if seed is None else seed
    seen: dict[bytes, int] = {}
    out = []
    for p in prompts:
        key = ",".join(map(str, p)).encode()
        occ = seen.get(key, 0)
        seen[key] = occ + 1
        h = hashlib.blake2b(f"{base}|{occ}|{salt}|".encode() + key, digest_size=8).digest()
        out.append(int.from_bytes(h, "little") >> 1)
    return out


def candidate_completions(
    scores: CandidateScores,
    prompt_ids: Sequence[int],
    sampling: SamplingParams,
    seed: int,
    tokenizer: PreTrainedTokenizerBase,
    weights_version: int = 0,
) -> list[Completion]:
    """Sample `sampling.n` candidates (with replacement) from softmax(seq_logprobs / temperature)."""
    lp = scores.log_probs(sampling.temperature)  # (C,)
    entropy = scores.entropy(sampling.temperature)
    if sampling.temperature == 0:
        picks = [int(torch.argmax(torch.tensor(scores.seq_logprobs)))] * sampling.n
    else:
        g = torch.Generator().manual_seed(seed)
        picks = torch.multinomial(lp.exp(), sampling.n, replacement=True, generator=g).tolist()
    return [
        Completion(
            prompt_ids=tuple(prompt_ids),
            token_ids=scores.token_ids[c],
            logprobs=scores.token_logprobs[c],
            text=tokenizer.decode(list(scores.token_ids[c]), skip_special_tokens=True),
            finish_reason="constrained",
            seq_logprob_restricted=float(lp[c]),
            candidate_entropy=entropy,
            candidate_index=int(c),
            weights_version=weights_version,
        )
        for c in picks
    ]


def check_candidates(candidates: Sequence[str]) -> None:
    if not candidates:
        raise ValueError("choose() needs at least one candidate action per prompt")
    if len(set(candidates)) != len(candidates):
        raise ValueError(
            f"duplicate candidate actions: {sorted(c for c in set(candidates) if candidates.count(c) > 1)}"
        )


def call_with_timeout(fn: Callable[[], _T], timeout_s: float | None, what: str) -> _T:
    """Run `fn` in a worker thread; raise WeightSyncError if it fails or takes longer than `timeout_s`."""
    if timeout_s is None:
        try:
            return fn()
        except Exception as e:
            raise WeightSyncError(f"{what} failed: {e}") from e
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    th = threading.Thread(target=run, name=f"agentrl-{what}", daemon=True)
    th.start()
    th.join(timeout_s)
    if th.is_alive():
        raise WeightSyncError(f"{what} did not finish within {timeout_s:.0f}s")
    if "error" in box:
        raise WeightSyncError(f"{what} failed: {box['error']}") from box["error"]
    return box["value"]


def sampling_logprobs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(R, V) log-probs of the distribution actually sampled from: temperature, then top-p (renormalised).

    Tokens outside the nucleus get -inf. Temperature 0 returns the model's log-softmax (greedy).
    """
    if temperature == 0:
        return torch.log_softmax(logits, dim=-1)
    logp = torch.log_softmax(logits / temperature, dim=-1)  # (R, V)
    if top_p < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)  # (R, V)
        p = sorted_lp.exp()
        drop_sorted = (p.cumsum(dim=-1) - p) >= top_p  # mass before the token already reaches top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logp = logp.masked_fill(drop, float("-inf"))
        logp = logp - logp.logsumexp(dim=-1, keepdim=True)
    return logp


def sample_from_logprobs(logp: torch.Tensor, u: torch.Tensor, greedy: bool) -> torch.Tensor:
    """(R,) token ids: inverse-CDF sampling of each row of `logp` (R, V) with its uniform `u` (R,)."""
    if greedy:
        return logp.argmax(dim=-1)
    probs = logp.exp()  # (R, V)
    cdf = probs.cumsum(dim=-1)  # (R, V)
    target = (u * cdf[:, -1]).unsqueeze(-1)  # (R, 1)
    tok = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=logp.shape[-1] - 1)  # (R,)
    bad = torch.isinf(logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1))  # rounding at the top end
    return torch.where(bad, logp.argmax(dim=-1), tok)


class CandidateChooser:
    """`choose` for any backend that implements `score_candidates`: constrained decoding, shared by the
    transformers and vLLM generators so both sample candidates identically."""

    tokenizer: Any
    end_id: int  # the end-of-turn id closing every candidate (`<|im_end|>`, else eos)
    weights_version: int
    score_candidates: Callable[[list[list[int]], list[list[str]]], list[CandidateScores]]

    def candidate_ids(self, candidates: Sequence[str]) -> list[list[int]]:
        """Token ids of each candidate as the assistant reply: its own tokens, then the end-of-turn id."""
        return [self.tokenizer.encode(c, add_special_tokens=False) + [self.end_id] for c in candidates]

    def choose(
        self, prompts: list[list[int]], candidates: list[list[str]], sampling: SamplingParams
    ) -> list[list[Completion]]:
        """Sample `sampling.n` of each prompt's candidate actions from softmax(seq log-prob / temperature)."""
        scores = self.score_candidates(prompts, candidates)
        seeds = prompt_seeds(sampling.seed, prompts, salt="choose")
        return [
            candidate_completions(s, p, sampling, seed, self.tokenizer, self.weights_version)
            for s, p, seed in zip(scores, prompts, seeds, strict=True)
        ]


def truncated_is_weights(
    learner_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float
) -> torch.Tensor:
    """Truncated importance-sampling weights min(exp(learner_logp - behaviour_logp), cap), detached.

    For a generator that is not the learner (vLLM: other kernels, other precision), the tokens were drawn
    from the generator's distribution (`behaviour_logp`, as it reported them) while the learner's old
    policy (`learner_logp`, recomputed by the learner before the update) is what the loss treats as the
    sampler. Multiplying each token's loss by this weight corrects the mismatch; the cap bounds the variance
    (TIS, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"; TRL's
    `vllm_importance_sampling_cap`, verl's `tis_imp_ratio_cap`). Shapes must match, e.g. (B, T); padded
    positions are the caller's to mask. Raises ValueError for a cap <= 0 or mismatched shapes.
    """
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if learner_logp.shape != behaviour_logp.shape:
        raise ValueError(
            f"learner_logp {tuple(learner_logp.shape)} and behaviour_logp {tuple(behaviour_logp.shape)} differ"
        )
    return torch.exp(learner_logp.detach() - behaviour_logp.detach()).clamp(max=cap)
