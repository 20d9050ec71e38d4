"""vLLM generation backend: `VLLMGenerator` runs `vllm.LLM` in-process and implements `Generator`.

vLLM is imported lazily (inside `VLLMGenerator.__init__`), so this module imports without it; creating a
`VLLMGenerator` without vLLM raises an ImportError that says how to install it. It needs a CUDA GPU.

Version assumptions (vLLM >= 0.8, V1 engine):

* Prompts are passed as token ids: `vllm.inputs.TokensPrompt(prompt_token_ids=...)`.
* Per-token log-probs of the sampled tokens come from `SamplingParams(logprobs=0)` (the sampled token is
  always included). From vLLM 0.10.2, `LLM(logprobs_mode="processed_logprobs")` makes them the log-probs of
  the distribution actually sampled from (after temperature / top-p), like `HFGenerator`; on older
  versions the engine is built without it and the log-probs are the model's raw ones (equal at
  temperature 1, top_p 1). `VLLMGenerator.logprobs_processed` says which.
* Weights are pushed with `LLM.collective_rpc(callable, args=...)`: the callable runs on each worker and
  calls the vLLM model's `load_weights(weights=[(hf_name, tensor), ...])`, which accepts HF checkpoint names
  (q/k/v are fused into vLLM's qkv_proj by the model's loader). The model is reached with
  `worker.get_model()` (V1) or `worker.model_runner.model`.
* `in_process=True` (default) sets `VLLM_ENABLE_V1_MULTIPROCESSING=0` before the engine starts, so the
  engine core runs in this process and weights are handed over without serialisation (the engine must be
  the first one created in the process for this to take effect).
* `choose` scores candidates with `prompt_logprobs=0` on prompt+candidate sequences (raw model log-probs).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from agentrl.policy.generation import (
    CandidateChooser,
    CandidateScores,
    Completion,
    FinishReason,
    SamplingParams,
    WeightSyncError,
    call_with_timeout,
    check_candidates,
    prompt_seeds,
)
from agentrl.policy.model import stop_token_ids

_INSTALL_HINT = (
    "VLLMGenerator needs vLLM and a CUDA GPU: pip install 'vllm>=0.8' (or pip install 'agentrl[vllm]')"
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return vllm


# ---------------------------------------------------------------- functions run on vLLM workers
def _worker_model(worker: Any) -> torch.nn.Module:
    get_model = getattr(worker, "get_model", None)
    if callable(get_model):
        return get_model()
    return worker.model_runner.model


def _rpc_load_weights(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> int:
    model = _worker_model(worker)
    device = next(model.parameters()).device
    loaded = model.load_weights(weights=((name, t.to(device)) for name, t in weights))
    return len(loaded) if loaded is not None else -1


def _rpc_param_rows(worker: Any, names: list[str], rows: int) -> dict[str, torch.Tensor]:
    """First `rows` rows (CPU copies) of the named parameters that exist unfused in the vLLM model."""
    params = dict(_worker_model(worker).named_parameters())
    return {n: params[n].detach()[:rows].cpu() for n in names if n in params}


# ---------------------------------------------------------------- generator
class VLLMGenerator(CandidateChooser):
    """`Generator` backed by an in-process `vllm.LLM`. `model` is a hub id or a local dir (e.g. one made by
    `build_tiny_policy`). Extra keyword arguments go to `vllm.LLM`.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = 4096,
        seed: int = 0,
        enforce_eager: bool = True,
        in_process: bool = True,
        sync_timeout_s: float | None = 300.0,
        logprobs_mode: str = "processed_logprobs",
        **llm_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        if not torch.cuda.is_available():
            raise RuntimeError("VLLMGenerator needs a CUDA GPU (torch.cuda.is_available() is False)")
        self.in_process = in_process
        if in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        kwargs: dict[str, Any] = dict(
            model=str(model),
            tokenizer=tokenizer,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            **llm_kwargs,
        )
        try:
            self.llm = vllm.LLM(**kwargs, logprobs_mode=logprobs_mode)
            self.logprobs_processed = logprobs_mode.startswith("processed")
        except TypeError as e:  # vLLM < 0.10.2: no logprobs_mode engine argument
            if "logprobs_mode" not in str(e):
                raise
            self.llm = vllm.LLM(**kwargs)
            self.logprobs_processed = False
        self._vllm = vllm
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = stop_token_ids(self.tokenizer)
        vocab = self.tokenizer.get_vocab()
        self.end_id = int(vocab.get("<|im_end|>", self.tokenizer.eos_token_id))
        self.sync_timeout_s = sync_timeout_s
        self.weights_version = 0
        self._poisoned: str | None = None

    # ------------------------------------------------------------ helpers
    def _tokens_prompt(self, ids: list[int]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=list(ids))

    def _check_usable(self) -> None:
        if self._poisoned is not None:
            raise WeightSyncError(f"vLLM weights are in an unknown state: {self._poisoned}")

    def _stop_rules(self, stop: tuple[str, ...]) -> tuple[list[int], list[str]]:
        ids = set(self.stop_ids)
        strings: list[str] = []
        vocab = self.tokenizer.get_vocab()
        special = set(self.tokenizer.all_special_tokens)
        for s in stop:
            if s in special and s in vocab:
                ids.add(int(vocab[s]))
            elif s:
                strings.append(s)
        return sorted(ids), strings

    # ------------------------------------------------------------ free sampling
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Completion]]:
        """Sample `sampling.n` completions per prompt; token ids and their log-probs come from vLLM."""
        self._check_usable()
        stop_ids, stop_strings = self._stop_rules(sampling.stop)
        params = [
            self._vllm.SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                stop=stop_strings or None,
                stop_token_ids=stop_ids,
                include_stop_str_in_output=True,
                logprobs=0,
                seed=seed,
                skip_special_tokens=True,
            )
            for seed in prompt_seeds(sampling.seed, prompts, salt="generate")
        ]
        outs = self.llm.generate([self._tokens_prompt(p) for p in prompts], params, use_tqdm=False)
        results: list[list[Completion]] = []
        for p, out in zip(prompts, outs, strict=True):
            comps = []
            for o in sorted(out.outputs, key=lambda o: o.index):
                ids = [int(t) for t in o.token_ids]
                lps = [float(step[t].logprob) for step, t in zip(o.logprobs, ids, strict=True)]
                reason: FinishReason = "stop" if o.finish_reason == "stop" else "length"
                comps.append(
                    Completion(
                        prompt_ids=tuple(p),
                        token_ids=tuple(ids),
                        logprobs=tuple(lps),
                        text=self.tokenizer.decode(ids, skip_special_tokens=True),
                        finish_reason=reason,
                        weights_version=self.weights_version,
                    )
                )
            results.append(comps)
        return results

    # ------------------------------------------------------------ constrained decoding
    def score_candidates(
        self, prompts: list[list[int]], candidates: list[list[str]]
    ) -> list[CandidateScores]:
        """Token log-probs of each candidate (+ `<|im_end|>`) after its prompt, via `prompt_logprobs`."""
        self._check_usable()
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
        cids: list[list[list[int]]] = []
        requests = []
        for p, cands in zip(prompts, candidates, strict=True):
            check_candidates(cands)
            ids = [self.tokenizer.encode(c, add_special_tokens=False) + [self.end_id] for c in cands]
            cids.append(ids)
            requests.extend(self._tokens_prompt(list(p) + x) for x in ids)
        params = self._vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        outs = iter(self.llm.generate(requests, params, use_tqdm=False))
        scores = []
        for p, cands, ids in zip(prompts, candidates, cids, strict=True):
            token_lps = []
            for x in ids:
                pl = next(outs).prompt_logprobs  # [None, {id: Logprob}, ...] one entry per prompt position
                token_lps.append(tuple(float(pl[len(p) + j][t].logprob) for j, t in enumerate(x)))
            scores.append(
                CandidateScores(
                    candidates=tuple(cands),
                    token_ids=tuple(tuple(x) for x in ids),
                    token_logprobs=tuple(token_lps),
                    seq_logprobs=tuple(float(sum(x)) for x in token_lps),
                )
            )
        return scores

    # ------------------------------------------------------------ weight sync
    def load_weights(self, state_dict_or_model: Any, *, timeout_s: float | None = None) -> None:
        """Push HF-named weights into the running engine, then read a few back and compare them.

        Raises WeightSyncError on a bad state dict, an RPC that fails or exceeds `timeout_s` (default
        `sync_timeout_s`), or weights that read back different. After a failure, generation is refused
        until a later load succeeds.
        """
        src = state_dict_or_model
        if isinstance(src, torch.nn.Module):
            src = src.state_dict()
        if not isinstance(src, Mapping) or not src:
            raise WeightSyncError(f"expected a non-empty state dict or nn.Module, got {type(src).__name__}")
        bad = [k for k, v in src.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise WeightSyncError(f"non-tensor values for {bad[:5]}")
        nonfinite = [k for k, v in src.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if nonfinite:
            raise WeightSyncError(f"non-finite values in {nonfinite[:5]}")
        weights = [(k, v.detach() if self.in_process else v.detach().cpu()) for k, v in src.items()]
        timeout = self.sync_timeout_s if timeout_s is None else timeout_s

        self._poisoned = "an earlier load_weights failed part-way"
        call_with_timeout(
            lambda: self.llm.collective_rpc(_rpc_load_weights, args=(weights,)), timeout, "vLLM load_weights"
        )
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()  # cached KV blocks were computed with the old weights
        self._verify(src, timeout)
        self._poisoned = None
        self.weights_version += 1

    def _verify(self, src: Mapping[str, torch.Tensor], timeout: float | None) -> None:
        # Parameters vLLM keeps under their HF names (embeddings, norms); fused ones (qkv_proj) are skipped.
        names = [k for k in src if "embed_tokens" in k or k.endswith("norm.weight")][:8]
        rows = 4
        per_worker = call_with_timeout(
            lambda: self.llm.collective_rpc(_rpc_param_rows, args=(names, rows)), timeout, "vLLM weight check"
        )
        checked = 0
        for rank, got in enumerate(per_worker):
            for name, value in got.items():
                if "embed_tokens" in name and rank > 0:
                    continue  # vocab-parallel shard: rows of rank > 0 are other token ids
                expected = src[name].detach()[:rows].to(device="cpu", dtype=value.dtype)
                if not torch.equal(value, expected):
                    raise WeightSyncError(f"weight {name!r} on worker {rank} differs after load_weights")
                checked += 1
        if checked == 0:
            raise WeightSyncError(
                f"could not read back any of {names} from the vLLM model to verify the sync"
            )

    def close(self) -> None:
        """Shut the engine down and free its GPU memory."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            gc.collect()
            torch.cuda.empty_cache()
