"""vLLM generation backend: `VLLMGenerator` runs `vllm.LLM` in-process and implements `Generator`.

vLLM is imported lazily (inside `VLLMGenerator.__init__`), so this module imports without it; creating a
`VLLMGenerator` without vLLM raises an ImportError that says how to install it. It needs a CUDA GPU.

In a trainer (one GPU shared by the engine and the learner)::

    gen = VLLMGenerator.from_model(model, tok, run_dir / "vllm-init", gpu_memory_utilization=0.4)
    ...rollout with gen.generate / gen.choose...
    gen.sleep()                 # level 1: weights offloaded to CPU RAM, KV cache freed
    learner.update(batch)       # the learner has the GPU
    gen.wake_up(model)          # weights back, new weights pushed and verified, then KV cache re-allocated

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
  `worker.get_model()` (V1) or `worker.model_runner.model`. A module (also a peft LoRA model) is pushed as
  its merged weights (`agentrl.policy.lora.iter_merged_weights`), streamed lazily into the loader when the
  engine is in this process on one GPU, so the sync holds one merged layer, not a merged copy.
* `in_process=True` (default) sets `VLLM_ENABLE_V1_MULTIPROCESSING=0` before the engine starts, so the
  engine core runs in this process and weights are handed over without serialisation (the engine must be
  the first one created in the process for this to take effect).

Sleep mode (`LLM(enable_sleep_mode=True)`, `LLM.sleep(level)`, `LLM.wake_up(tags)`; docs.vllm.ai
features/sleep_mode): level 1 offloads the weights to CPU RAM and discards the KV cache; level 2 discards
both (buffers such as RoPE tables are kept). The default here is level 1: it needs CPU RAM for one copy of
the weights, but the engine holds valid weights after any wake-up, also when the caller does not sync. Level
2 saves that RAM and the offload copy; then `wake_up` requires the new weights (`wake_up(model)`) and the
generator refuses to generate until a sync has succeeded. `wake_up(model)` wakes the weights first, pushes
and verifies the new weights, and only then re-allocates the KV cache, so the sync never needs the memory of
both. While asleep, `generate`, `choose`, `score_candidates` and `load_weights` raise RuntimeError.

Candidate scoring and the prefix cache (`choose`, `score_candidates`). The exact quantity is the model's
log-prob (temperature 1) of each candidate token after the prompt, the same as `HFGenerator`'s. Two ways:

* `scoring="trace"` (vLLM with `SamplingParams.trace_decode_token_ids`, engine argument
  `enable_trace_replay`, vLLM PR #46701): one request per candidate whose prompt is the *shared prompt*
  and whose decode is forced to follow the candidate's ids; vLLM still computes the real log-prob of each
  forced token. The shared prompt is an ordinary prompt, so its full KV blocks come from the prefix cache:
  each prompt's first candidate is sent first, then the others reuse its blocks and only recompute the
  prompt's last partial block plus their own tokens.
* `scoring="prompt_logprobs"` (any vLLM >= 0.8): one `prompt_logprobs=0` request per candidate on
  prompt+candidate. vLLM serves these WITHOUT the prefix cache: `KVCacheManager.get_computed_blocks`
  skips the lookup for any request with prompt_logprobs ("When the request requires prompt logprobs, we skip
  prefix caching", vllm/v1/core/kv_cache_manager.py; newer versions express it as
  `SamplingParams.skip_reading_prefix_cache`, defaulting to True whenever prompt_logprobs is set, because the
  cached positions get no logits and their prompt log-probs would be stale, vllm PR #42245). So the prompt
  is recomputed for every candidate. No other exact way exists on these versions: forcing a token with
  `allowed_token_ids` or `logit_bias` makes the processed log-prob of the forced token 0, and top-k
  `logprobs` miss candidates outside the top k. This is the fallback when trace replay is absent.

`scoring="auto"` (default) picks "trace" when the installed vLLM has it, else "prompt_logprobs";
`VLLMGenerator.scoring` says which was used. Both verify what came back (the forced ids, one log-prob per
candidate token) and raise rather than return a number for the wrong token.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from agentrl.policy.lora import iter_merged_weights, save_hf_folder
from agentrl.policy.model import stop_token_ids
from agentrl.policy.records import CandidateScores, Completion, FinishReason, SamplingParams, WeightSyncError
from agentrl.policy.sampling import CandidateChooser, call_with_timeout, check_candidates, prompt_seeds

_INSTALL_HINT = (
    "VLLMGenerator needs vLLM and a CUDA GPU: pip install 'vllm>=0.8' (or pip install 'agentrl[vllm]')"
)
Scoring = Literal["auto", "trace", "prompt_logprobs"]


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return vllm


def require_vllm() -> Any:
    """vLLM and a CUDA GPU, or a clear error saying what is missing."""
    vllm = _import_vllm()
    if not torch.cuda.is_available():
        raise RuntimeError("VLLMGenerator needs a CUDA GPU (torch.cuda.is_available() is False)")
    return vllm


def has_field(cls: Any, name: str) -> bool:
    """Whether a vLLM config/params class takes `name` (msgspec struct, dataclass or plain signature)."""
    if name in getattr(cls, "__struct_fields__", ()):
        return True
    if dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
        return True
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- candidate scoring: requests and parsing
def trace_requests(
    prompts: Sequence[Sequence[int]], cids: Sequence[Sequence[Sequence[int]]]
) -> list[list[tuple]]:
    """Trace-replay scoring requests in two waves: ((prompt i, candidate j), prompt ids, forced ids).

    Wave 0 holds each prompt's first candidate, wave 1 the rest, so that the rest find the prompt's KV
    blocks in the prefix cache instead of racing to compute them in the same scheduler step.
    """
    waves: list[list[tuple]] = [[], []]
    for i, (p, ids) in enumerate(zip(prompts, cids, strict=True)):
        for j, x in enumerate(ids):
            waves[0 if j == 0 else 1].append(((i, j), list(p), list(x)))
    return waves


def logprobs_from_trace(
    token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Any]], cand: Sequence[int]
) -> tuple[float, ...]:
    """Per-token log-probs of `cand` from a trace-replay output (`CompletionOutput.token_ids`, `.logprobs`).

    Raises RuntimeError when the engine did not follow the trace or a log-prob is missing: a number for
    another token must never pass as the candidate's.
    """
    got = [int(t) for t in token_ids]
    if got != list(cand):
        raise RuntimeError(f"vLLM did not follow the candidate trace: forced {list(cand)}, got {got}")
    if logprobs is None or len(logprobs) != len(cand):
        n = None if logprobs is None else len(logprobs)
        raise RuntimeError(f"vLLM returned {n} log-prob steps for a {len(cand)}-token candidate")
    out = []
    for step, (lp, t) in enumerate(zip(logprobs, cand, strict=True)):
        if t not in lp:
            raise RuntimeError(f"no log-prob for forced token {t} at step {step} (got ids {sorted(lp)[:5]})")
        out.append(float(lp[t].logprob))
    return tuple(out)


def logprobs_from_prompt_logprobs(
    prompt_logprobs: Sequence[Mapping[int, Any] | None], prompt_len: int, cand: Sequence[int]
) -> tuple[float, ...]:
    """Per-token log-probs of `cand` from `RequestOutput.prompt_logprobs` of the request prompt+cand.

    `prompt_logprobs[k]` holds the log-prob of token k given tokens < k (entry 0 is None).
    """
    if prompt_logprobs is None or len(prompt_logprobs) != prompt_len + len(cand):
        n = None if prompt_logprobs is None else len(prompt_logprobs)
        raise RuntimeError(f"expected {prompt_len + len(cand)} prompt log-prob entries, got {n}")
    out = []
    for j, t in enumerate(cand):
        entry = prompt_logprobs[prompt_len + j]
        if entry is None or t not in entry:
            raise RuntimeError(f"no prompt log-prob for candidate token {t} at position {prompt_len + j}")
        out.append(float(entry[t].logprob))
    return tuple(out)


def candidate_scores(
    cands: Sequence[str], cids: Sequence[Sequence[int]], token_lps: Sequence[Sequence[float]]
) -> CandidateScores:
    return CandidateScores(
        candidates=tuple(cands),
        token_ids=tuple(tuple(x) for x in cids),
        token_logprobs=tuple(tuple(x) for x in token_lps),
        seq_logprobs=tuple(float(sum(x)) for x in token_lps),
    )


_PROBE_NAMES, _PROBE_ROWS = 8, 4


def is_probe_name(name: str) -> bool:
    """Parameters vLLM keeps under their HF names (embeddings, norms), read back to verify a sync; fused
    ones (q/k/v -> qkv_proj, gate/up -> gate_up_proj) have no HF name in the engine."""
    return "embed_tokens" in name or name.endswith("norm.weight")


def checked_weights(
    pairs: Iterable[tuple[str, Any]], probe: dict[str, torch.Tensor], *, to_cpu: bool
) -> Iterator[tuple[str, torch.Tensor]]:
    """Check each (name, tensor) as it passes to the engine (tensor, finite) and keep the first rows of a
    few `is_probe_name` parameters in `probe` for the read-back. Raises WeightSyncError, also when empty."""
    n = 0
    for k, v in pairs:
        if not isinstance(v, torch.Tensor):
            raise WeightSyncError(f"non-tensor value for {k!r} ({type(v).__name__})")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise WeightSyncError(f"non-finite values in {k!r}")
        if is_probe_name(k) and len(probe) < _PROBE_NAMES:
            probe[k] = v.detach()[:_PROBE_ROWS].cpu()
        n += 1
        yield k, (v.detach().cpu() if to_cpu else v.detach())
    if n == 0:
        raise WeightSyncError("no weights to load")


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
    `build_tiny_policy` or `save_hf_folder`). Extra keyword arguments go to `vllm.LLM`.
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
        enable_sleep_mode: bool = False,
        scoring: Scoring = "auto",
        **llm_kwargs: Any,
    ) -> None:
        vllm = require_vllm()
        if scoring not in ("auto", "trace", "prompt_logprobs"):
            raise ValueError(f"scoring must be 'auto', 'trace' or 'prompt_logprobs', got {scoring!r}")
        trace_ok = has_field(vllm.SamplingParams, "trace_decode_token_ids") and has_field(
            vllm.EngineArgs, "enable_trace_replay"
        )
        if scoring == "trace" and not trace_ok:
            raise RuntimeError(
                f"scoring='trace' needs vLLM with SamplingParams.trace_decode_token_ids and the "
                f"enable_trace_replay engine argument; vLLM {getattr(vllm, '__version__', '?')} has not. "
                "Use scoring='prompt_logprobs' (exact, but without the prefix cache) or upgrade vLLM."
            )
        self.scoring: Scoring = "trace" if scoring != "prompt_logprobs" and trace_ok else "prompt_logprobs"
        self.in_process = in_process
        if in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # Weights can be streamed (a lazy iterator, never pickled) only into one worker in this process.
        world = int(llm_kwargs.get("tensor_parallel_size", 1)) * int(
            llm_kwargs.get("pipeline_parallel_size", 1)
        )
        self._stream_weights = (
            in_process and world == 1 and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        )
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
        if enable_sleep_mode:
            kwargs["enable_sleep_mode"] = True
        if self.scoring == "trace":
            kwargs["enable_trace_replay"] = True
        try:
            self.llm = vllm.LLM(**kwargs, logprobs_mode=logprobs_mode)
            self.logprobs_processed = logprobs_mode.startswith("processed")
        except TypeError as e:  # vLLM < 0.10.2: no logprobs_mode engine argument
            if "logprobs_mode" not in str(e):
                raise
            self.llm = vllm.LLM(**kwargs)
            self.logprobs_processed = False
        self._vllm = vllm
        self.sleep_mode = enable_sleep_mode
        self._asleep: Literal["all", "kv_cache"] | None = None
        self._sleep_level = 0
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = stop_token_ids(self.tokenizer)
        vocab = self.tokenizer.get_vocab()
        self.end_id = int(vocab.get("<|im_end|>", self.tokenizer.eos_token_id))
        self.sync_timeout_s = sync_timeout_s
        self.weights_version = 0
        self._poisoned: str | None = None

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, tokenizer: Any, workdir: str | Path, **engine_kwargs: Any
    ) -> VLLMGenerator:
        """Start an engine on the trainer's current weights: `save_hf_folder(model, tokenizer, workdir)` (LoRA
        merged), then `VLLMGenerator(workdir, enable_sleep_mode=True, **engine_kwargs)`. No network: the
        engine loads the local folder. vLLM and CUDA are checked before anything is written."""
        require_vllm()
        path = save_hf_folder(model, tokenizer, workdir)
        engine_kwargs.setdefault("enable_sleep_mode", True)
        return cls(path, **engine_kwargs)

    # ------------------------------------------------------------ helpers
    def _tokens_prompt(self, ids: list[int]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=list(ids))

    def _check_awake(self, what: str) -> None:
        if self._asleep is not None:
            raise RuntimeError(
                f"VLLMGenerator is asleep (sleep(level={self._sleep_level})): call wake_up() before {what}"
            )

    def _check_usable(self) -> None:
        self._check_awake("generating or scoring")
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
        """Model log-probs (temperature 1) of each candidate's tokens (+ `<|im_end|>`) after its prompt."""
        self._check_usable()
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
        for cands in candidates:
            check_candidates(cands)
        cids = [self.candidate_ids(cands) for cands in candidates]
        if self.scoring == "trace":
            token_lps = self._score_trace(prompts, cids)
        else:
            token_lps = self._score_prompt_logprobs(prompts, cids)
        return [candidate_scores(c, x, lp) for c, x, lp in zip(candidates, cids, token_lps, strict=True)]

    def _score_trace(self, prompts: list[list[int]], cids: list[list[list[int]]]) -> list[list[tuple]]:
        out: list[list[tuple]] = [[()] * len(x) for x in cids]
        for wave in trace_requests(prompts, cids):
            if not wave:
                continue
            params = [
                self._vllm.SamplingParams(
                    max_tokens=len(x),
                    min_tokens=len(x),
                    ignore_eos=True,
                    temperature=1.0,
                    top_p=1.0,
                    logprobs=0,
                    detokenize=False,
                    trace_decode_token_ids=x,
                )
                for _, _, x in wave
            ]
            results = self.llm.generate([self._tokens_prompt(p) for _, p, _ in wave], params, use_tqdm=False)
            for ((i, j), _, x), res in zip(wave, results, strict=True):
                o = res.outputs[0]
                out[i][j] = logprobs_from_trace(o.token_ids, o.logprobs, x)
        return out

    def _score_prompt_logprobs(
        self, prompts: list[list[int]], cids: list[list[list[int]]]
    ) -> list[list[tuple]]:
        requests = [
            self._tokens_prompt(list(p) + x) for p, ids in zip(prompts, cids, strict=True) for x in ids
        ]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        outs = iter(self.llm.generate(requests, params, use_tqdm=False))
        return [
            [logprobs_from_prompt_logprobs(next(outs).prompt_logprobs, len(p), x) for x in ids]
            for p, ids in zip(prompts, cids, strict=True)
        ]

    # ------------------------------------------------------------ sleep / wake
    def sleep(self, level: int = 1) -> None:
        """Free the GPU for the learner: level 1 offloads weights to CPU RAM and drops the KV cache; level 2
        drops both (then `wake_up` needs the new weights). Needs `enable_sleep_mode=True`."""
        if not self.sleep_mode:
            raise RuntimeError(
                "this VLLMGenerator was created without enable_sleep_mode=True (VLLMGenerator.from_model "
                "enables it); sleep() is not available"
            )
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, got {level}")
        if self._asleep is not None:
            raise RuntimeError(f"VLLMGenerator is already asleep (level {self._sleep_level})")
        self.llm.sleep(level=level)
        self._asleep, self._sleep_level = "all", level
        if level == 2:
            self._poisoned = "weights were discarded by sleep(level=2) and not reloaded (use wake_up(model))"

    def wake_up(self, weights: Any = None, *, timeout_s: float | None = None) -> None:
        """Wake the engine; with `weights` (a model, peft model or state dict), push them between waking
        the weights and re-allocating the KV cache. After `sleep(level=2)`, `weights` is required.

        A failed sync raises WeightSyncError after the engine is awake; it then refuses to generate until
        a later `load_weights` succeeds.
        """
        if self._asleep is None:
            raise RuntimeError("wake_up() called but the VLLMGenerator is not asleep")
        if self._sleep_level == 2 and weights is None:
            raise ValueError(
                "after sleep(level=2) the engine's weights are gone: pass the trainer's model to wake_up(model)"
            )
        tags_ok = "tags" in inspect.signature(self.llm.wake_up).parameters
        if weights is None or not tags_ok:
            self.llm.wake_up()
            self._asleep = None
            if weights is not None:
                self.load_weights(weights, timeout_s=timeout_s)
        else:
            self.llm.wake_up(tags=["weights"])
            self._asleep = "kv_cache"
            try:
                self.load_weights(weights, timeout_s=timeout_s)
            finally:
                self.llm.wake_up(tags=["kv_cache"])
                self._asleep = None
        self._reset_prefix_cache()

    @property
    def asleep(self) -> bool:
        return self._asleep is not None

    def _reset_prefix_cache(self) -> None:
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()  # cached KV blocks were computed with the old weights (or were discarded)

    # ------------------------------------------------------------ weight sync
    def load_weights(self, state_dict_or_model: Any, *, timeout_s: float | None = None) -> None:
        """Push HF-named weights into the running engine, then read a few back and compare them.

        A module is read with `iter_merged_weights` (a peft LoRA model gives its merged weights under plain
        HF names); with the in-process engine on one GPU the pairs are streamed into vLLM's loader, so only
        one merged layer exists at a time. A state dict is checked whole before the engine is touched.
        Raises WeightSyncError on a bad state dict or tensor (non-tensor, non-finite), an RPC that fails or
        exceeds `timeout_s` (default `sync_timeout_s`), or weights that read back different. After a
        failure, generation is refused until a later load succeeds. While fully asleep, raises RuntimeError
        (use `wake_up(model)`).
        """
        if self._asleep == "all":
            raise RuntimeError(
                "VLLMGenerator is asleep: its weights are not on the GPU; sync with wake_up(model) instead"
            )
        src = state_dict_or_model
        if isinstance(src, torch.nn.Module):
            pairs: Iterator[tuple[str, Any]] = iter_merged_weights(src)
        elif isinstance(src, Mapping) and src:
            pairs = iter(src.items())
        else:
            raise WeightSyncError(f"expected a non-empty state dict or nn.Module, got {type(src).__name__}")
        probe: dict[str, torch.Tensor] = {}
        weights: Iterable[tuple[str, torch.Tensor]] = checked_weights(
            pairs, probe, to_cpu=not self.in_process
        )
        if not (self._stream_weights and isinstance(src, torch.nn.Module)):
            weights = list(weights)  # every check runs here, before the engine is touched
        timeout = self.sync_timeout_s if timeout_s is None else timeout_s

        self._poisoned = "an earlier load_weights failed part-way"
        call_with_timeout(
            lambda: self.llm.collective_rpc(_rpc_load_weights, args=(weights,)), timeout, "vLLM load_weights"
        )
        self._reset_prefix_cache()
        self._verify(probe, timeout)
        self._poisoned = None
        self.weights_version += 1

    def _verify(self, probe: Mapping[str, torch.Tensor], timeout: float | None) -> None:
        """Compare the first rows of the `probe` parameters, read back from every worker."""
        names = list(probe)
        per_worker = call_with_timeout(
            lambda: self.llm.collective_rpc(_rpc_param_rows, args=(names, _PROBE_ROWS)),
            timeout,
            "vLLM weight check",
        )
        checked = 0
        for rank, got in enumerate(per_worker):
            for name, value in got.items():
                if "embed_tokens" in name and rank > 0:
                    continue  # vocab-parallel shard: rows of rank > 0 are other token ids
                expected = probe[name].to(dtype=value.dtype)
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
