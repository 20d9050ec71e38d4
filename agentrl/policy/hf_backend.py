"""The transformers generation backend: `HFGenerator` (KV cache, left-padded batches, n samples sharing one
prompt pass, constrained decoding in three scoring modes, guarded weight sync), `score_tokens` and
`eval_mode`."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agentrl.policy.kv_cache import make_cache
from agentrl.policy.lora import merged_state_dict
from agentrl.policy.model import ensure_pad_token, stop_token_ids
from agentrl.policy.records import CandidateScores, Completion, FinishReason, SamplingParams, WeightSyncError
from agentrl.policy.sampling import (
    CandidateChooser,
    call_with_timeout,
    check_candidates,
    prompt_seeds,
    sample_from_logprobs,
    sampling_logprobs,
)


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


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout), restoring train mode after: the trainer may share the model."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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

        Accepts a module (a no-op when it is this generator's own model; a peft LoRA model is read through
        `merged_state_dict`, so a plain copy of the base model can follow a LoRA trainer) or a state dict. Raises
        WeightSyncError on missing/unexpected keys, shape mismatch, non-finite values, a copy that does not
        verify, or a copy slower than `timeout_s` (default: the generator's `sync_timeout_s`). After a
        failed copy the generator refuses to generate until a later load succeeds.
        """
        src = state_dict_or_model
        if isinstance(src, torch.nn.Module):
            if src is self.model:
                self.weights_version += 1
                return
            src = merged_state_dict(src)  # a peft model gives its LoRA-merged weights under plain HF names
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
