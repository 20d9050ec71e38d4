"""vLLM backend without vLLM: import path, error messages, scoring request building and output parsing.

The parsing helpers get inputs shaped like vLLM's outputs (`Logprob(logprob, rank, decoded_token)` records
in `{token_id: Logprob}` dicts; `prompt_logprobs` with None at position 0), filled with the tiny model's
own teacher-forced log-probs, and must give exactly `HFGenerator.score_candidates`. The engine itself is
tested only where CUDA and vLLM are present.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from agentrl.policy import vllm_backend as vb
from agentrl.policy.hf_backend import HFGenerator, score_tokens
from agentrl.policy.model import build_tiny_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.policy.records import SamplingParams, WeightSyncError
from agentrl.policy.tokenizer import default_corpus

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
CANDIDATES = ["click(e3)", "click(e9)", 'fill(e5, "alice")', 'press("Enter")', "back()"]


@dataclass
class Logprob:  # the fields of vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tiny-vllm")
    model, tok = build_tiny_policy(
        out, seed=0, corpus=default_corpus(n_docs=300), hidden=128, layers=2, heads=2
    )
    builder = PromptBuilder(tok, system="You are a web agent.", max_prompt_tokens=256)
    prompts = [
        builder.build("Sign in", '- button "Sign in" [ref=e9]', []).ids,
        builder.build("Open reports", '- link "Reports" [ref=e3]', ["click(e2)"]).ids,
    ]
    return out, model, tok, prompts


def test_vllm_from_model_without_vllm_raises_before_writing(tiny, tmp_path: Path) -> None:
    if HAVE_VLLM:
        pytest.skip("vllm is installed")
    _, model, tok, _ = tiny
    with pytest.raises(ImportError, match="pip install 'vllm"):
        vb.VLLMGenerator.from_model(model, tok, tmp_path / "engine")
    assert not (tmp_path / "engine").exists()


def test_vllm_has_field_reads_structs_dataclasses_and_signatures() -> None:
    class Struct:  # msgspec.Struct keeps its field names here
        __struct_fields__ = ("n", "trace_decode_token_ids")

    @dataclass
    class Args:
        model: str = ""
        enable_trace_replay: bool = False

    assert vb.has_field(Struct, "trace_decode_token_ids") and not vb.has_field(Struct, "x")
    assert vb.has_field(Args, "enable_trace_replay") and not vb.has_field(Args, "x")
    assert vb.has_field(lambda *, tags=None: None, "tags")


def test_vllm_trace_requests_send_each_prompts_first_candidate_first() -> None:
    waves = vb.trace_requests([[1, 2], [3]], [[[7, 2], [8, 2]], [[9, 2], [5, 2], [6, 2]]])
    assert waves[0] == [((0, 0), [1, 2], [7, 2]), ((1, 0), [3], [9, 2])]
    assert waves[1] == [((0, 1), [1, 2], [8, 2]), ((1, 1), [3], [5, 2]), ((1, 2), [3], [6, 2])]


def test_vllm_output_parsing_rejects_wrong_tokens_and_missing_logprobs() -> None:
    steps = [{7: Logprob(-0.5, 1)}, {2: Logprob(-1.25, 3)}]
    assert vb.logprobs_from_trace([7, 2], steps, [7, 2]) == (-0.5, -1.25)
    with pytest.raises(RuntimeError, match="did not follow"):
        vb.logprobs_from_trace([7, 3], steps, [7, 2])
    with pytest.raises(RuntimeError, match="log-prob steps"):
        vb.logprobs_from_trace([7, 2], steps[:1], [7, 2])
    with pytest.raises(RuntimeError, match="no log-prob for forced token 2"):
        vb.logprobs_from_trace([7, 2], [steps[0], {5: Logprob(-0.1)}], [7, 2])

    prompt_lps = [None, {4: Logprob(-3.0)}, {7: Logprob(-0.5)}, {2: Logprob(-1.25)}]  # prompt [1, 4] + [7, 2]
    assert vb.logprobs_from_prompt_logprobs(prompt_lps, 2, [7, 2]) == (-0.5, -1.25)
    with pytest.raises(RuntimeError, match="expected 4 prompt log-prob entries, got 3"):
        vb.logprobs_from_prompt_logprobs(prompt_lps[:3], 2, [7, 2])
    with pytest.raises(RuntimeError, match="candidate token 2 at position 3"):
        vb.logprobs_from_prompt_logprobs([*prompt_lps[:3], None], 2, [7, 2])


def test_vllm_scoring_parsers_reproduce_hf_candidate_scores(tiny) -> None:
    """Outputs built from the model's own log-probs, in vLLM's shapes, parse to HFGenerator's scores."""
    _, model, tok, prompts = tiny
    hf = HFGenerator(model, tok)
    expected = hf.score_candidates(prompts, [CANDIDATES] * len(prompts))
    cids = [hf.candidate_ids(CANDIDATES) for _ in prompts]
    by_trace, by_prompt = {}, {}
    for wave in vb.trace_requests(prompts, cids):
        for (i, j), p, x in wave:
            lps = score_tokens(model, p, x)
            # trace replay: the forced ids come back as the completion, one {id: Logprob} per step
            by_trace[i, j] = vb.logprobs_from_trace(
                list(x), [{t: Logprob(lp, 1)} for t, lp in zip(x, lps, strict=True)], x
            )
            # prompt_logprobs on prompt+candidate: None first, then log-prob of token k given < k
            full = p + x
            row = [None] + [
                {t: Logprob(v)}
                for t, v in zip(full[1:], score_tokens(model, full[:1], full[1:]), strict=True)
            ]
            by_prompt[i, j] = vb.logprobs_from_prompt_logprobs(row, len(p), x)
    for i, exp in enumerate(expected):
        for parsed in (by_trace, by_prompt):
            got = vb.candidate_scores(CANDIDATES, cids[i], [parsed[i, j] for j in range(len(CANDIDATES))])
            assert got.candidates == exp.candidates and got.token_ids == exp.token_ids
            assert max(abs(a - b) for a, b in zip(got.seq_logprobs, exp.seq_logprobs, strict=True)) < 1e-4


@pytest.mark.skipif(not (torch.cuda.is_available() and HAVE_VLLM), reason="needs CUDA and vllm")
def test_vllm_from_lora_model_sleep_wake_sync_and_cached_scoring(tiny, tmp_path: Path) -> None:
    from agentrl.policy.lora import LoraSpec, apply_lora

    _, model, tok, prompts = tiny
    trainer = apply_lora(copy.deepcopy(model).cuda(), LoraSpec(r=4, alpha=8))
    with torch.no_grad():
        for n, p in trainer.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    gen = vb.VLLMGenerator.from_model(
        trainer, tok, tmp_path / "engine", dtype="float16", gpu_memory_utilization=0.2, max_model_len=1024
    )
    try:
        assert (tmp_path / "engine" / "adapter" / "adapter_config.json").exists()
        hf = HFGenerator(trainer, tok)  # fp32 reference; vLLM runs fp16, hence the 0.05 tolerance
        ref = hf.score_candidates(prompts, [CANDIDATES] * 2)
        got = gen.score_candidates(prompts, [CANDIDATES] * 2)
        for r, g in zip(ref, got, strict=True):
            assert max(abs(a - b) for a, b in zip(r.seq_logprobs, g.seq_logprobs, strict=True)) < 0.05
        gen.sleep()
        with pytest.raises(RuntimeError, match="asleep"):
            gen.generate(prompts, SamplingParams(max_new_tokens=4))
        with torch.no_grad():
            for n, p in trainer.named_parameters():
                if "lora_B" in n:
                    p.add_(0.05)
        gen.wake_up(trainer)
        assert gen.weights_version == 1
        ref = HFGenerator(trainer, tok).score_candidates(prompts[:1], [CANDIDATES])[0]
        got = gen.score_candidates(prompts[:1], [CANDIDATES])[0]
        assert max(abs(a - b) for a, b in zip(ref.seq_logprobs, got.seq_logprobs, strict=True)) < 0.05
        gen.sleep(level=2)
        with pytest.raises(ValueError, match="level=2"):
            gen.wake_up()
        gen.wake_up(trainer)
        assert gen.weights_version == 2 and gen.generate(prompts, SamplingParams(max_new_tokens=4, seed=0))
        with pytest.raises(WeightSyncError):
            gen.load_weights({"model.embed_tokens.weight": torch.full((3, 3), float("nan"))})
    finally:
        gen.close()


def test_vllm_checked_weights_stream_checks_and_keeps_probe_rows(tiny) -> None:
    from agentrl.policy.lora import LoraSpec, apply_lora, iter_merged_weights, merged_state_dict

    _, model, _, _ = tiny
    peft_model = apply_lora(copy.deepcopy(model), LoraSpec(r=2, alpha=4))
    probe: dict[str, torch.Tensor] = {}
    stream = vb.checked_weights(iter_merged_weights(peft_model), probe, to_cpu=True)
    assert not probe  # lazy: nothing is read before the engine pulls
    got = dict(stream)
    merged = merged_state_dict(peft_model)
    assert got.keys() == merged.keys() and all(torch.equal(got[k], merged[k]) for k in merged)
    assert probe and all(vb.is_probe_name(k) for k in probe) and len(probe) <= 8
    assert all(torch.equal(v, merged[k][:4]) for k, v in probe.items())
    assert "model.embed_tokens.weight" in probe and not any("q_proj" in k for k in probe)

    bad = [("model.norm.weight", torch.ones(3)), ("lm_head.weight", torch.tensor([1.0, float("inf")]))]
    with pytest.raises(WeightSyncError, match="non-finite values in 'lm_head.weight'"):
        list(vb.checked_weights(bad, {}, to_cpu=False))
    with pytest.raises(WeightSyncError, match="non-tensor value for 'x'"):
        list(vb.checked_weights([("x", [1.0])], {}, to_cpu=False))
    with pytest.raises(WeightSyncError, match="no weights"):
        list(vb.checked_weights([], {}, to_cpu=False))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None and torch.cuda.is_available(), reason="vLLM can run here")
def test_vllm_train_cli_refuses_before_building_anything(tmp_path: Path) -> None:
    """`agentrl train` with `generator: vllm` where vLLM or CUDA is missing: a clear error, exit != 0,
    and no run dir (nothing was built or started)."""
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "configs/ci-smoke.yaml").read_text())
    cfg.update(generator="vllm")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "agentrl.cli", "train", str(tmp_path / "c.yaml"), "--out", str(run)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "VLLMGenerator needs" in p.stdout + p.stderr
    assert not run.exists()
