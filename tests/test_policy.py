"""Policy: tokenizer, tiny model, prompt building, HF generation / constrained decoding, weight sync, vLLM."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from transformers import AutoTokenizer

from agentrl.policy.hf_backend import HFGenerator, score_tokens
from agentrl.policy.lora import LoraSpec
from agentrl.policy.model import build_tiny_policy, count_parameters, load_policy
from agentrl.policy.prompt import (
    TRUNCATION_MARKER,
    PromptBuilder,
    PromptTooLongError,
    join_completion,
    join_turns,
)
from agentrl.policy.records import Completion, Generator, SamplingParams, WeightSyncError
from agentrl.policy.sampling import call_with_timeout, sampling_logprobs, truncated_is_weights
from agentrl.policy.tokenizer import CHATML_TEMPLATE, default_corpus, train_tokenizer

OBS = """- generic [ref=e1]:
  - heading "Hello" [level=1] [ref=e2]
  - link "Reports" [ref=e3]
  - textbox "Username" [ref=e5]
  - button "Sign in" [ref=e9]"""
CANDIDATES = ["click(e3)", "click(e9)", 'fill(e5, "alice")', 'press("Enter")', "back()", 'done("42")']


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, object]:
    out = tmp_path_factory.mktemp("tiny-policy")
    model, tok = build_tiny_policy(out, seed=0, corpus=default_corpus(n_docs=600))
    return out, model, tok


@pytest.fixture(scope="module")
def prompts(tiny) -> list[list[int]]:
    _, _, tok = tiny
    builder = PromptBuilder(tok, system="You are a web agent.", max_prompt_tokens=512, history_k=2)
    return [
        builder.build("Open the reports page", OBS, ["click(e2)"]).ids,
        builder.build("Sign in as alice", OBS.replace("Hello", "Welcome back to the portal"), []).ids,
        builder.build("Log in", '- generic [ref=e1]:\n  - button "OK" [ref=e2]', ["back()", "wait()"]).ids,
    ]


# ---------------------------------------------------------------- tokenizer
def test_tokenizer_save_load_same_ids(tiny, tmp_path: Path) -> None:
    _, _, tok = tiny
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [OBS, 'fill(e5, "Ünïcode ✓ 123")', "<|im_start|>assistant\nclick(e12)<|im_end|>\n", *CANDIDATES]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert loaded.encode(text, add_special_tokens=False) == ids
        assert tok.decode(ids) == text  # byte-level: exact round trip
    assert len(loaded) == len(tok) == 2048
    assert loaded.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert loaded.pad_token == "<|endoftext|>" and loaded.eos_token == "<|im_end|>"
    # special tokens are single tokens, never split
    assert tok.encode("<|im_start|>user", add_special_tokens=False)[0] == 1


def test_tokenizer_training_is_deterministic() -> None:
    corpus = default_corpus(n_docs=150, seed=3)
    a, b = train_tokenizer(corpus, vocab_size=400), train_tokenizer(corpus, vocab_size=400)
    assert a.get_vocab() == b.get_vocab()


def test_chat_template_renders_chatml(tiny) -> None:
    _, _, tok = tiny
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert tok.chat_template == CHATML_TEMPLATE
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    no_gen = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    assert no_gen == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"


# ---------------------------------------------------------------- model
def test_tiny_model_builds_and_reloads_by_path(tiny) -> None:
    path, model, tok = tiny
    n = count_parameters(model)
    assert 1_000_000 <= n <= 5_000_000, n
    loaded, ltok = load_policy(str(path))
    assert type(loaded).__name__ == "LlamaForCausalLM" and not loaded.training
    assert ltok.pad_token_id == 0 and loaded.config.eos_token_id == ltok.eos_token_id == 2
    ids = torch.tensor([tok.encode(OBS)])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_lora_without_peft_explains_how_to_install(tiny) -> None:
    if importlib.util.find_spec("peft") is not None:
        pytest.skip("peft is installed")
    with pytest.raises(ImportError, match="pip install peft"):
        load_policy(str(tiny[0]), lora=LoraSpec(r=4))


# ---------------------------------------------------------------- free generation
def test_generate_seeded_n_samples_logprobs_match_full_forward(tiny, prompts) -> None:
    _, model, tok = tiny
    gen = HFGenerator(model, tok)
    assert isinstance(gen, Generator)
    sp = SamplingParams(n=3, seed=7, max_new_tokens=10, stop=())
    out = gen.generate(prompts, sp)
    assert [len(o) for o in out] == [3, 3, 3]
    assert out == gen.generate(prompts, sp)  # seeded -> deterministic
    assert out != gen.generate(prompts, SamplingParams(n=3, seed=8, max_new_tokens=10, stop=()))
    for p, comps in zip(prompts, out, strict=True):
        assert len({c.token_ids for c in comps}) > 1  # the n samples differ
        for c in comps:
            assert c.prompt_ids == tuple(p) and len(c.token_ids) == len(c.logprobs) >= 1
            assert c.text == tok.decode(list(c.token_ids), skip_special_tokens=True)
            # the ids sampled are the ids trained on: a fresh teacher-forced pass gives the same log-probs
            ref = score_tokens(model, c.prompt_ids, c.token_ids)
            assert max(abs(a - b) for a, b in zip(ref, c.logprobs, strict=True)) < 1e-4


def test_logprobs_are_under_the_tempered_top_p_distribution(tiny, prompts) -> None:
    _, model, tok = tiny
    gen = HFGenerator(model, tok)
    sp = SamplingParams(n=2, seed=1, temperature=0.7, top_p=0.9, max_new_tokens=6, stop=())
    for comps in gen.generate(prompts[:2], sp):
        for c in comps:
            ids = torch.tensor([list(c.prompt_ids) + list(c.token_ids)])
            with torch.no_grad():
                logits = model(ids).logits[0, len(c.prompt_ids) - 1 : -1]  # (L, V)
            ref = sampling_logprobs(logits, 0.7, 0.9).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
            assert torch.isfinite(ref).all()  # every sampled token is inside the nucleus
            assert torch.allclose(ref, torch.tensor(c.logprobs), atol=1e-4)


def test_greedy_follows_argmax(tiny, prompts) -> None:
    _, model, tok = tiny
    c = HFGenerator(model, tok).generate(
        prompts[:1], SamplingParams(temperature=0, max_new_tokens=6, stop=())
    )[0][0]
    ids = list(c.prompt_ids)
    for t in c.token_ids:
        with torch.no_grad():
            assert int(model(torch.tensor([ids])).logits[0, -1].argmax()) == t
        ids.append(t)


def test_stop_strings_respected(tiny, prompts) -> None:
    _, model, tok = tiny
    gen = HFGenerator(model, tok)
    stops = ("e", " ")  # frequent in this vocabulary, so most samples stop early
    out = gen.generate(prompts, SamplingParams(n=4, seed=0, max_new_tokens=12, stop=stops))
    reasons = [c.finish_reason for comps in out for c in comps]
    assert "stop" in reasons
    for c in (c for comps in out for c in comps):
        full, before = tok.decode(list(c.token_ids)), tok.decode(list(c.token_ids[:-1]))
        if c.finish_reason == "stop":
            assert any(s in full for s in stops) or c.token_ids[-1] in gen.stop_ids
            assert not any(s in before for s in stops)  # stopped at the first occurrence
        else:
            assert len(c.token_ids) == 12 and not any(s in full for s in stops)
    ids, strings = gen._stop_rules(("\n", "<|im_end|>"))  # special-token stops are matched by id
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids and strings == ["\n"]


def test_left_padded_batch_matches_unbatched(tiny, prompts) -> None:
    _, model, tok = tiny
    gen = HFGenerator(model, tok)
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths -> real left padding
    sp = SamplingParams(n=2, seed=3, max_new_tokens=8, stop=())
    batched = gen.generate(prompts, sp)
    for p, comps in zip(prompts, batched, strict=True):
        alone = gen.generate([p], sp)[0]
        for a, b in zip(comps, alone, strict=True):
            assert a.token_ids == b.token_ids
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


# ---------------------------------------------------------------- constrained decoding
@pytest.mark.parametrize("mode", ["packed", "shared", "concat"])
def test_choose_matches_separately_scored_candidates(tiny, prompts, mode: str) -> None:
    _, model, tok = tiny
    gen = HFGenerator(model, tok, choose_mode=mode, choose_batch_size=4)  # 6 candidates -> 2 chunks
    p = prompts[0]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    cand_ids = [tok.encode(c, add_special_tokens=False) + [end] for c in CANDIDATES]
    token_lps = [score_tokens(model, p, ids) for ids in cand_ids]
    seq = torch.tensor([sum(x) for x in token_lps], dtype=torch.float64)
    for temp in (1.0, 0.5, 20.0):  # random weights: at T=1 one candidate has nearly all the mass
        ref_lp = torch.log_softmax(seq / temp, dim=0)
        out = gen.choose([p], [CANDIDATES], SamplingParams(n=40, seed=0, temperature=temp))[0]
        assert len(out) == 40 and (temp < 20 or len({c.candidate_index for c in out}) > 2)
        for c in out:
            k = CANDIDATES.index(c.text)  # only candidates come back
            assert c.candidate_index == k and c.finish_reason == "constrained"
            assert list(c.token_ids) == cand_ids[k]
            assert max(abs(a - b) for a, b in zip(c.logprobs, token_lps[k], strict=True)) < 1e-4
            assert abs(c.seq_logprob_restricted - float(ref_lp[k])) < 1e-4
            assert abs(c.candidate_entropy - float(-(ref_lp.exp() * ref_lp).sum())) < 1e-4


def test_choose_greedy_picks_argmax_and_sampling_follows_probs(tiny, prompts) -> None:
    _, model, tok = tiny
    gen = HFGenerator(model, tok)
    scores = gen.score_candidates(prompts[1:2], [CANDIDATES])[0]
    best = max(range(len(CANDIDATES)), key=lambda i: scores.seq_logprobs[i])
    greedy = gen.choose(prompts[1:2], [CANDIDATES], SamplingParams(n=3, temperature=0))[0]
    assert [c.candidate_index for c in greedy] == [best] * 3 and greedy[0].candidate_entropy == 0.0
    cold = gen.choose(prompts[1:2], [CANDIDATES], SamplingParams(n=20, seed=0, temperature=1e-4))[0]
    assert all(c.candidate_index == best for c in cold)
    draws = gen.choose(prompts[1:2], [CANDIDATES], SamplingParams(n=4000, seed=0, temperature=10.0))[0]
    freq = torch.bincount(torch.tensor([c.candidate_index for c in draws]), minlength=len(CANDIDATES)) / 4000
    assert scores.probs(10.0).max() < 0.9  # a spread-out distribution, so the check means something
    assert torch.allclose(freq.double(), scores.probs(10.0), atol=0.03)
    with pytest.raises(ValueError, match="duplicate"):
        gen.choose(prompts[:1], [["click(e3)", "click(e3)"]], SamplingParams())


def test_generation_keeps_a_shared_training_model_in_train_mode(tiny, prompts) -> None:
    _, model, tok = tiny
    gen = HFGenerator(model, tok)
    assert gen.choose_mode == "packed"  # sdpa takes the custom 4D mask
    model.train()
    try:
        gen.generate(prompts[:1], SamplingParams(max_new_tokens=2))
        gen.choose(prompts[:1], [CANDIDATES[:2]], SamplingParams())
        assert model.training
    finally:
        model.eval()


# ---------------------------------------------------------------- weight sync
def test_load_weights_changes_generation_and_rejects_bad_state(tiny, prompts) -> None:
    _, model, tok = tiny
    trainer = copy.deepcopy(model)
    gen = HFGenerator(copy.deepcopy(model), tok)
    sp = SamplingParams(n=2, seed=0, max_new_tokens=8, stop=())
    before = gen.generate(prompts[:1], sp)
    gen.load_weights(trainer)  # identical weights: same output, version bumped
    assert gen.weights_version == 1
    assert gen.generate(prompts[:1], sp) == [[dataclasses.replace(c, weights_version=1) for c in before[0]]]
    with torch.no_grad():
        for p in trainer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    gen.load_weights(trainer.state_dict())
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        assert torch.allclose(gen.model(ids).logits, trainer(ids).logits)
        assert not torch.allclose(gen.model(ids).logits, model(ids).logits, atol=1e-3)
    after = gen.generate(prompts[:1], sp)
    assert after[0][0].weights_version == 2 and after[0][0].logprobs != before[0][0].logprobs

    good = trainer.state_dict()
    bad_cases = {
        "missing": {k: v for k, v in good.items() if "layers.0.mlp" not in k},
        "shape": {**good, "model.norm.weight": torch.ones(3)},
        "non-finite": {**good, "model.norm.weight": torch.full_like(good["model.norm.weight"], float("nan"))},
        "unexpected": {**good, "extra.weight": torch.ones(1)},
    }
    for case, sd in bad_cases.items():
        with pytest.raises(WeightSyncError):
            gen.load_weights(sd)
        assert gen.weights_version == 2, case
    gen.generate(prompts[:1], sp)  # rejected before copying: the generator is still usable

    same = HFGenerator(model, tok)
    same.load_weights(model)  # the trainer model is the generation model: no copy, still a new version
    assert same.weights_version == 1


def test_weight_sync_timeout_raises_and_blocks_generation(tiny, prompts) -> None:
    _, model, tok = tiny
    gen = HFGenerator(copy.deepcopy(model), tok)

    class SlowStateDict(dict):
        def items(self):  # slow only inside the copy thread
            if threading.current_thread() is not threading.main_thread():
                time.sleep(0.5)
            return super().items()

    with pytest.raises(WeightSyncError, match="did not finish"):
        gen.load_weights(SlowStateDict(model.state_dict()), timeout_s=0.05)
    with pytest.raises(WeightSyncError, match="unknown state"):
        gen.generate(prompts[:1], SamplingParams(max_new_tokens=2))
    time.sleep(0.6)
    gen.load_weights(model.state_dict())  # a later successful sync makes it usable again
    assert gen.weights_version == 1 and gen.generate(prompts[:1], SamplingParams(max_new_tokens=2))
    with pytest.raises(WeightSyncError, match="failed"):
        call_with_timeout(lambda: 1 / 0, 1.0, "op")


# ---------------------------------------------------------------- prompts
def test_prompt_builder_fits_and_keeps_last_k(tiny) -> None:
    _, _, tok = tiny
    b = PromptBuilder(tok, system="SYS", max_prompt_tokens=1000, history_k=2)
    history = ["click(e2)", "back()", 'fill(e5, "bob")']
    r = b.build("Open the reports", OBS, history)
    assert not r.truncated and r.dropped_history == 1
    assert r.ids == tok.encode(r.text, add_special_tokens=False) and r.n_tokens <= 1000
    assert r.text.startswith("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nGoal: Open the reports")
    assert r.text.endswith(OBS + "<|im_end|>\n<|im_start|>assistant\n")
    assert '2. back()\n3. fill(e5, "bob")' in r.text and "click(e2)" not in r.text


def test_prompt_builder_cuts_observation_tail_under_tight_budget(tiny) -> None:
    _, _, tok = tiny
    long_obs = "\n".join(f'  - link "Report number {i} for the quarter" [ref=e{i}]' for i in range(1, 300))
    b = PromptBuilder(tok, system="SYS", max_prompt_tokens=200, history_k=3)
    r = b.build("Download report 7", long_obs, ["click(e1)", 'scroll("down")'])
    assert r.truncated and r.n_tokens <= 200 and r.ids == tok.encode(r.text, add_special_tokens=False)
    assert "Goal: Download report 7" in r.text and 'scroll("down")' in r.text and "click(e1)" in r.text
    assert "[ref=e1]" in r.text and "[ref=e299]" not in r.text  # head kept, tail cut
    assert TRUNCATION_MARKER.split("{")[0] in r.text
    assert r.n_tokens > 150  # the budget is used, not wasted
    with pytest.raises(PromptTooLongError):
        PromptBuilder(tok, system="SYS " * 100, max_prompt_tokens=50).build("goal", long_obs, [])
    # when even an empty observation does not fit, the oldest actions go (and are counted)
    tight = PromptBuilder(tok, system="SYS", max_prompt_tokens=60, history_k=3)
    r2 = tight.build("g", long_obs, ['fill(e5, "a long value to type into the box")'] * 3)
    assert r2.truncated and r2.n_tokens <= 60 and r2.dropped_history >= 1


def test_training_sequences_concatenate_ids_never_retokenise(tiny, prompts) -> None:
    _, model, tok = tiny
    prompt_ids = prompts[0]
    prompt_text = tok.decode(prompt_ids)
    # 1) a sampled but non-canonical spelling (one token per character) re-tokenises differently
    completion = [tok.convert_tokens_to_ids(ch) for ch in "click(e3)"]
    joined = join_turns(prompt_ids, completion)
    assert joined.input_ids == prompt_ids + completion and sum(joined.completion_mask) == len(completion)
    assert tok.encode(prompt_text + "click(e3)", add_special_tokens=False) != joined.input_ids
    # 2) BPE merges across a boundary that falls inside a word: "Ali" + "ce" re-tokenises as "Alice"
    head, tail = (
        tok.encode('fill(e5, "Ali', add_special_tokens=False),
        tok.encode('ce")', add_special_tokens=False),
    )
    assert tok.encode('fill(e5, "Alice")', add_special_tokens=False) != head + tail
    # 3) our path: completion records carry the ids; joining them reproduces exactly what was sampled
    c = HFGenerator(model, tok).generate([prompt_ids], SamplingParams(seed=0, max_new_tokens=6, stop=()))[0][
        0
    ]
    assert isinstance(c, Completion)
    assert join_completion(c).input_ids == prompt_ids + list(c.token_ids)


# ---------------------------------------------------------------- vLLM
def test_vllm_backend_imports_without_vllm() -> None:
    import agentrl.policy.vllm_backend as vb

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="pip install"):
            vb.VLLMGenerator("unused")


@pytest.mark.skipif(
    not (torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None),
    reason="needs CUDA and vllm",
)
def test_vllm_generator_tokens_and_logprobs(tiny, prompts) -> None:
    from agentrl.policy.vllm_backend import VLLMGenerator

    path, model, tok = tiny
    gen = VLLMGenerator(path, dtype="float16", gpu_memory_utilization=0.2, max_model_len=1024)
    try:
        sp = SamplingParams(n=2, seed=0, max_new_tokens=8, stop=())
        out = gen.generate(prompts, sp)
        assert [len(o) for o in out] == [2, 2, 2] and out == gen.generate(prompts, sp)
        for comps in out:
            for c in comps:
                assert 1 <= len(c.token_ids) == len(c.logprobs) <= 8
                assert all(0 <= t < len(tok) for t in c.token_ids)
                ref = score_tokens(model, c.prompt_ids, c.token_ids)  # fp32 on CPU vs fp16 on GPU
                assert max(abs(a - b) for a, b in zip(ref, c.logprobs, strict=True)) < 0.05
        chosen = gen.choose(prompts[:1], [CANDIDATES], SamplingParams(n=5, seed=0))[0]
        assert all(c.text in CANDIDATES for c in chosen)
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            for p in perturbed.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        gen.load_weights(perturbed)
        assert gen.weights_version == 1
        after = gen.generate(prompts[:1], sp)[0][0]
        ref = score_tokens(perturbed, after.prompt_ids, after.token_ids)
        assert max(abs(a - b) for a, b in zip(ref, after.logprobs, strict=True)) < 0.05
    finally:
        gen.close()


# ---------------------------------------------------------------- truncated importance sampling
def test_truncated_is_weights_hand_computed() -> None:
    learner = torch.tensor([0.0, -1.0, -2.0, 0.5], requires_grad=True)
    behaviour = torch.tensor([0.0, -2.0, -1.0, -3.0])
    w = truncated_is_weights(learner, behaviour, cap=2.0)
    # exp(0) = 1; exp(1) = 2.718 -> capped at 2; exp(-1) = 0.3679; exp(3.5) = 33.1 -> 2
    assert torch.allclose(w, torch.tensor([1.0, 2.0, 0.36787944, 2.0]))
    assert not w.requires_grad  # a weight on the loss, never a path for gradients
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(learner, behaviour, cap=0.0)
    with pytest.raises(ValueError, match="differ"):
        truncated_is_weights(learner, behaviour[:3], cap=2.0)
