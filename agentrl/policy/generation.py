"""Generation records, the `Generator` protocol and the transformers backend (`HFGenerator`).

Everything here works on token ids: prompts come in as ids (see `agentrl.policy.prompt`), completions go
out as the exact ids that were sampled, with their log-probs. The learner trains on those ids; nothing is
ever re-tokenised from text ("the ids sampled are the ids trained on").

Two ways to act:

* `generate`: free sampling (temperature / top-p / stop strings), n samples per prompt.
* `choose`: constrained decoding: the policy scores a list of valid action strings and samples among them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from agentrl.policy.model import ensure_pad_token, stop_token_ids

FinishReason = Literal["stop", "length", "constrained"]
_T = TypeVar("_T")


class WeightSyncError(RuntimeError):
    """Weights could not be pushed into a generation engine (bad state dict, mismatch after copy, timeout)."""


# ---------------------------------------------------------------- records
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


# ---------------------------------------------------------------- shared helpers (also used by vLLM backend)
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


@torch.no_grad()
def score_tokens(
    model: PreTrainedModel, prompt_ids: Sequence[int], completion_ids: Sequence[int]
) -> list[float]:
    """Teacher-forced log-probs of `completion_ids` after `prompt_ids` with one full forward pass."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=device)  # (1, T)
    logits = model(input_ids=ids).logits[0].float()  # (T, V)
    logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)  # (L, V)
    target = torch.tensor(list(completion_ids), device=device).unsqueeze(-1)  # (L, 1)
    return logp.gather(-1, target).squeeze(-1).tolist()


# ---------------------------------------------------------------- transformers backend
class _BufferedLayer(DynamicLayer):
    """A `DynamicLayer` that appends into a preallocated (B, H, capacity, D) buffer.

    The stock layer concatenates the whole cache at every decoding step (O(T) copy per token); this one
    writes the new step in place and hands attention a view of the filled part.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def _sync(self) -> None:
        assert self._kbuf is not None and self._vbuf is not None
        self.keys = self._kbuf[:, :, : self._len]  # (B, H, T, D) view
        self.values = self._vbuf[:, :, : self._len]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[-2]
        if self._kbuf is None or self._len + q > self._kbuf.shape[-2]:
            cap = max(self.capacity, self._len + q, 2 * (0 if self._kbuf is None else self._kbuf.shape[-2]))
            B, H, _, D = key_states.shape
            kbuf, vbuf = key_states.new_empty((B, H, cap, D)), value_states.new_empty((B, H, cap, D))
            if self._kbuf is not None:
                kbuf[:, :, : self._len] = self._kbuf[:, :, : self._len]
                vbuf[:, :, : self._len] = self._vbuf[:, :, : self._len]  # type: ignore[index]
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, self._len : self._len + q] = key_states
        self._vbuf[:, :, self._len : self._len + q] = value_states  # type: ignore[index]
        self._len += q
        self._sync()
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._kbuf is not None:
            self._kbuf = self._kbuf.repeat_interleave(repeats, dim=0)
            self._vbuf = self._vbuf.repeat_interleave(repeats, dim=0)  # type: ignore[union-attr]
            self._sync()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._kbuf is not None:
            self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]  # type: ignore[index]
            self._sync()

    def crop(self, tokens_to_remove: int) -> None:
        if self._kbuf is not None and tokens_to_remove:
            self._len = max(0, self._len - abs(tokens_to_remove))
            self._sync()

    def reset(self) -> None:
        super().reset()
        self._kbuf = self._vbuf = None
        self._len = 0


def make_cache(model: PreTrainedModel, capacity: int) -> DynamicCache:
    """A DynamicCache for `model` whose full-attention layers are preallocated for `capacity` tokens."""
    cache = DynamicCache(config=model.config)
    cache.layers = [
        _BufferedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout), restoring train mode after: the trainer may share the model."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class CandidateChooser:
    """`choose` for any backend that implements `score_candidates`: constrained decoding, shared by the
    transformers and vLLM generators so both sample candidates identically."""

    tokenizer: Any
    weights_version: int
    score_candidates: Callable[[list[list[int]], list[list[str]]], list[CandidateScores]]

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


class HFGenerator(CandidateChooser):
    """`Generator` over a transformers causal LM, with a KV cache, left-padded batches and n samples per
    prompt sharing one prompt forward pass.

    Sampling is reproducible per prompt: with a seed, a prompt's completions depend only on the seed, the
    prompt ids, n and the weights (not on batch composition).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device | None = None,
        *,
        prompt_batch_size: int = 16,
        choose_mode: Literal["auto", "packed", "shared", "concat"] = "auto",
        choose_batch_size: int = 64,
        sync_timeout_s: float | None = 120.0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if next(model.parameters()).device != self.device:
            self.model.to(self.device)
        ensure_pad_token(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id)
        self.stop_ids = stop_token_ids(tokenizer)
        vocab = tokenizer.get_vocab()
        self.end_id = int(vocab.get("<|im_end|>", tokenizer.eos_token_id))  # appended to choose() candidates
        self.prompt_batch_size = prompt_batch_size
        if choose_mode == "auto":  # packed needs an attention that takes a custom 4D mask
            impl = getattr(model.config, "_attn_implementation", None)
            choose_mode = "packed" if impl in ("sdpa", "eager") else "shared"
        self.choose_mode = choose_mode
        self.choose_batch_size = choose_batch_size
        self.sync_timeout_s = sync_timeout_s
        self.weights_version = 0
        self._poisoned: str | None = None

    # ------------------------------------------------------------ free sampling
    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Completion]]:
        """Sample `sampling.n` completions for each prompt (lists of token ids)."""
        self._check_usable()
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt")
        seeds = prompt_seeds(sampling.seed, prompts, salt="generate")
        out: list[list[Completion]] = []
        with eval_mode(self.model):
            for i in range(0, len(prompts), self.prompt_batch_size):
                chunk = slice(i, i + self.prompt_batch_size)
                out.extend(self._generate_batch(prompts[chunk], seeds[chunk], sampling))
        return out

    def _stop_rules(self, stop: Sequence[str]) -> tuple[set[int], list[str]]:
        ids = set(self.stop_ids)
        strings: list[str] = []
        vocab = self.tokenizer.get_vocab()
        special = set(self.tokenizer.all_special_tokens)
        for s in stop:
            if s in special and s in vocab:
                ids.add(int(vocab[s]))  # a special token never appears inside decoded text of other tokens
            elif s:
                strings.append(s)
        return ids, strings

    def _generate_batch(
        self, prompts: list[list[int]], seeds: list[int], sampling: SamplingParams
    ) -> list[list[Completion]]:
        n, max_new = sampling.n, sampling.max_new_tokens
        B, R = len(prompts), len(prompts) * sampling.n
        stop_ids, stop_strings = self._stop_rules(sampling.stop)
        greedy = sampling.temperature == 0

        Tp = max(len(p) for p in prompts)
        ids = torch.full((B, Tp), self.pad_id, dtype=torch.long)  # (B, Tp) left-padded
        mask = torch.zeros((B, Tp), dtype=torch.long)  # (B, Tp)
        for b, p in enumerate(prompts):
            ids[b, Tp - len(p) :] = torch.tensor(p)
            mask[b, Tp - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, Tp)

        cache = make_cache(self.model, Tp + max_new)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
        )
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()  # (B, V)
        if n > 1:  # share the prompt pass across the n samples
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)  # (R, V)
            mask = mask.repeat_interleave(n, dim=0)  # (R, Tp)
        next_pos = pos[:, -1].repeat_interleave(n) + 1  # (R,)

        # One uniform per (row, step), from a generator keyed on (prompt seed, sample index).
        u_all = torch.stack(
            [
                torch.rand(max_new, generator=torch.Generator().manual_seed(seeds[r // n] + r % n))
                for r in range(R)
            ]
        ).to(self.device)  # (R, max_new)

        toks: list[list[int]] = [[] for _ in range(R)]
        lps: list[list[float]] = [[] for _ in range(R)]
        finish: list[FinishReason] = ["length"] * R
        active = torch.arange(R, device=self.device)  # (A,) row index of each live batch row
        for t in range(max_new):
            logp = sampling_logprobs(logits, sampling.temperature, sampling.top_p)  # (A, V)
            tok = sample_from_logprobs(logp, u_all[active, t], greedy)  # (A,)
            tok_lp = logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)  # (A,)
            keep: list[int] = []
            for a, (r, tk, lp) in enumerate(zip(active.tolist(), tok.tolist(), tok_lp.tolist(), strict=True)):
                toks[r].append(tk)
                lps[r].append(lp)
                if tk in stop_ids or (
                    stop_strings and any(s in self.tokenizer.decode(toks[r]) for s in stop_strings)
                ):
                    finish[r] = "stop"
                else:
                    keep.append(a)
            if not keep or t == max_new - 1:
                break
            if len(keep) < len(active):  # drop finished rows from the batch
                sel = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(sel)
                active, tok, mask, next_pos = active[sel], tok[sel], mask[sel], next_pos[sel]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (A, T+1)
            out = self.model(
                input_ids=tok.unsqueeze(-1),  # (A, 1)
                attention_mask=mask,
                position_ids=next_pos.unsqueeze(-1),  # (A, 1)
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()  # (A, V)
            next_pos = next_pos + 1

        results: list[list[Completion]] = []
        for b, p in enumerate(prompts):
            rows = range(b * n, (b + 1) * n)
            results.append(
                [
                    Completion(
                        prompt_ids=tuple(p),
                        token_ids=tuple(toks[r]),
                        logprobs=tuple(lps[r]),
                        text=self.tokenizer.decode(toks[r], skip_special_tokens=True),
                        finish_reason=finish[r],
                        weights_version=self.weights_version,
                    )
                    for r in rows
                ]
            )
        return results

    # ------------------------------------------------------------ constrained decoding
    def candidate_ids(self, candidates: Sequence[str]) -> list[list[int]]:
        """Token ids of each candidate as the assistant reply: its own tokens, then `<|im_end|>`."""
        return [self.tokenizer.encode(c, add_special_tokens=False) + [self.end_id] for c in candidates]

    @torch.no_grad()
    def score_candidates(
        self, prompts: list[list[int]], candidates: list[list[str]]
    ) -> list[CandidateScores]:
        """Unrestricted token log-probs of every candidate after its prompt (one batched pass per prompt)."""
        self._check_usable()
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
        with eval_mode(self.model):
            return [self._score_one(p, cands) for p, cands in zip(prompts, candidates, strict=True)]

    @torch.no_grad()
    def _score_one(self, prompt: list[int], cands: list[str]) -> CandidateScores:
        check_candidates(cands)
        cids = self.candidate_ids(cands)
        step = self.choose_batch_size
        chunks = [cids[i : i + step] for i in range(0, len(cids), step)]
        token_lps: list[list[float]] = []
        if self.choose_mode == "concat":
            for chunk in chunks:
                token_lps.extend(self._score_concat(prompt, chunk))
        else:
            packed = self.choose_mode == "packed"
            room = max(sum(map(len, c)) for c in chunks) if packed else max(map(len, cids))
            prefix = self._prompt_prefix(prompt, room)
            score = self._score_packed if packed else self._score_shared
            for chunk in chunks:
                token_lps.extend(score(prompt, chunk, prefix))
        return CandidateScores(
            candidates=tuple(cands),
            token_ids=tuple(tuple(c) for c in cids),
            token_logprobs=tuple(tuple(x) for x in token_lps),
            seq_logprobs=tuple(float(sum(x)) for x in token_lps),
        )

    def _prompt_prefix(self, prompt: list[int], max_candidate_len: int) -> tuple[Any, torch.Tensor]:
        ids = torch.tensor([prompt], device=self.device)  # (1, Tp)
        cache = make_cache(self.model, len(prompt) + max_candidate_len)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        return out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # cache, (V,)

    def _score_packed(
        self, prompt: list[int], cids: list[list[int]], prefix: tuple[Any, torch.Tensor]
    ) -> list[list[float]]:
        """Prompt run once; all candidates packed into ONE row after it, kept apart by a 4D attention mask.

        Each candidate token sees the whole prompt and the earlier tokens of its own candidate; positions
        restart at len(prompt) for every candidate. No copy of the prompt's KV cache per candidate.
        """
        prompt_cache, first_logp = prefix
        Tp, S = len(prompt), sum(len(c) for c in cids)
        cache = copy.deepcopy(prompt_cache)  # (1 row) the forward below appends to it
        flat = torch.tensor([t for c in cids for t in c], device=self.device)  # (S,)
        seg = torch.repeat_interleave(torch.arange(len(cids)), torch.tensor([len(c) for c in cids]))  # (S,)
        offs = torch.cat([torch.arange(len(c)) for c in cids])  # (S,) index within its candidate
        allowed = (seg[:, None] == seg[None, :]) & (offs[None, :] <= offs[:, None])  # (S, S) block causal
        allowed = torch.cat([torch.ones((S, Tp), dtype=torch.bool), allowed], dim=1)  # (S, Tp+S)
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros((S, Tp + S), dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        logits = (
            self.model(
                input_ids=flat[None],  # (1, S)
                attention_mask=mask[None, None].to(self.device),  # (1, 1, S, Tp+S)
                position_ids=(offs + Tp)[None].to(self.device),  # (1, S)
                past_key_values=cache,
                use_cache=True,
            )
            .logits[0]
            .float()
        )  # (S, V)
        logp = torch.log_softmax(logits, dim=-1)
        out, start = [], 0
        for x in cids:
            first = first_logp[x[0]].unsqueeze(0)  # (1,)
            idx = torch.arange(start, start + len(x) - 1, device=self.device)  # positions predicting x[1:]
            rest = logp[idx, flat[idx + 1]]  # (len-1,)
            out.append(torch.cat([first, rest]).tolist())
            start += len(x)
        return out

    def _score_shared(
        self, prompt: list[int], cids: list[list[int]], prefix: tuple[Any, torch.Tensor]
    ) -> list[list[float]]:
        """Prompt run once; candidates (right-padded) run against the prompt's KV cache expanded C times."""
        prompt_cache, first_logp = prefix
        C, L, Tp = len(cids), max(len(c) for c in cids), len(prompt)
        cache = copy.deepcopy(prompt_cache)
        cache.batch_repeat_interleave(C)
        ids = torch.full((C, L), self.pad_id, dtype=torch.long)  # (C, L)
        cmask = torch.zeros((C, L), dtype=torch.long)
        for c, x in enumerate(cids):
            ids[c, : len(x)] = torch.tensor(x)
            cmask[c, : len(x)] = 1
        mask = torch.cat([torch.ones((C, Tp), dtype=torch.long), cmask], dim=1).to(self.device)  # (C, Tp+L)
        pos = torch.arange(Tp, Tp + L, device=self.device).expand(C, L)  # (C, L)
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        ).logits.float()  # (C, L, V)
        logp = torch.log_softmax(logits, dim=-1)
        ids = ids.to(self.device)
        out = []
        for c, x in enumerate(cids):
            first = first_logp[x[0]].unsqueeze(0)  # (1,)
            rest = logp[c, : len(x) - 1].gather(-1, ids[c, 1 : len(x)].unsqueeze(-1)).squeeze(-1)  # (len-1,)
            out.append(torch.cat([first, rest]).tolist())
        return out

    def _score_concat(self, prompt: list[int], cids: list[list[int]]) -> list[list[float]]:
        """Prompt+candidate rows, left-padded so every candidate ends at the last position; one forward."""
        C, L = len(cids), max(len(c) for c in cids)
        T = len(prompt) + L
        ids = torch.full((C, T), self.pad_id, dtype=torch.long)  # (C, T)
        mask = torch.zeros((C, T), dtype=torch.long)
        for c, x in enumerate(cids):
            row = prompt + x
            ids[c, T - len(row) :] = torch.tensor(row)
            mask[c, T - len(row) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=L + 1
        ).logits.float()  # (C, L+1, V): predictions for positions T-L-1 .. T-1
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (C, L, V) predicts tokens T-L .. T-1
        target = ids[:, T - L :]  # (C, L)
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (C, L)
        return [tok_lp[c, L - len(x) :].tolist() for c, x in enumerate(cids)]

    # ------------------------------------------------------------ weight sync
    def load_weights(self, state_dict_or_model: Any, *, timeout_s: float | None = None) -> None:
        """Copy trainer weights into the generation model and check they took effect.

        Accepts a module (a no-op when it is this generator's own model) or a state dict. Raises
        WeightSyncError on missing/unexpected keys, shape mismatch, non-finite values, a copy that does not
        verify, or a copy slower than `timeout_s` (default: the generator's `sync_timeout_s`). After a
        failed copy the generator refuses to generate until a later load succeeds.
        """
        src = state_dict_or_model
        if isinstance(src, torch.nn.Module):
            if src is self.model:
                self.weights_version += 1
                return
            src = src.state_dict()
        if not isinstance(src, Mapping):
            raise WeightSyncError(f"expected a state dict or nn.Module, got {type(src).__name__}")
        target = self.model.state_dict()
        self._check_state_dict(src, target)
        timeout = self.sync_timeout_s if timeout_s is None else timeout_s

        def copy_all() -> None:
            with torch.no_grad():
                for k, v in src.items():
                    target[k].copy_(v)

        self._poisoned = "an earlier load_weights failed part-way"
        call_with_timeout(copy_all, timeout, "load_weights")
        keys = sorted(src)
        for k in {keys[0], keys[len(keys) // 2], keys[-1]}:
            expected = src[k].to(device=target[k].device, dtype=target[k].dtype)
            if not torch.equal(target[k], expected):
                raise WeightSyncError(
                    f"weight {k!r} differs after copy (checksum {float(target[k].double().sum()):.6g} "
                    f"!= {float(expected.double().sum()):.6g})"
                )
        self._poisoned = None
        self.weights_version += 1

    @staticmethod
    def _check_state_dict(src: Mapping[str, Any], target: Mapping[str, torch.Tensor]) -> None:
        bad_types = [k for k, v in src.items() if not isinstance(v, torch.Tensor)]
        if bad_types:
            raise WeightSyncError(f"non-tensor values for {bad_types[:5]}")
        unexpected = sorted(set(src) - set(target))
        # A key may be absent when it shares storage with a key that is present (tied embeddings).
        ptr_of = {k: (v.untyped_storage().data_ptr(), v.storage_offset()) for k, v in target.items()}
        present_ptrs = {ptr_of[k] for k in src if k in ptr_of}
        missing = sorted(k for k in set(target) - set(src) if ptr_of[k] not in present_ptrs)
        if missing or unexpected:
            raise WeightSyncError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        shapes = [
            (k, tuple(v.shape), tuple(target[k].shape)) for k, v in src.items() if v.shape != target[k].shape
        ]
        if shapes:
            raise WeightSyncError(f"shape mismatch (name, given, expected): {shapes[:5]}")
        nonfinite = [k for k, v in src.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if nonfinite:
            raise WeightSyncError(f"non-finite values in {nonfinite[:5]}")

    def _check_usable(self) -> None:
        if self._poisoned is not None:
            raise WeightSyncError(f"generator weights are in an unknown state: {self._poisoned}")
