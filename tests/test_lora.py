"""LoRA through peft: merged weights under plain HF names, HF model folders, generator sync from a peft model.

Tiny real architectures built from config with random init: a Qwen2 model and the repo's tiny Llama.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from agentrl.policy.hf_backend import HFGenerator, score_tokens
from agentrl.policy.lora import (
    ADAPTER_SUBDIR,
    LoraSpec,
    apply_lora,
    is_peft_model,
    iter_merged_weights,
    merged_state_dict,
    save_hf_folder,
)
from agentrl.policy.model import build_tiny_policy, load_policy
from agentrl.policy.prompt import PromptBuilder
from agentrl.policy.records import SamplingParams
from agentrl.policy.tokenizer import default_corpus

peft = pytest.importorskip("peft", reason="LoRA tests need peft (pip install peft)")

CANDIDATES = ["click(e3)", "click(e9)", 'fill(e5, "alice")', "back()"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tiny-lora")
    model, tok = build_tiny_policy(
        out, seed=0, corpus=default_corpus(n_docs=300), hidden=64, layers=2, heads=4
    )
    return out, model, tok


def qwen2(tok) -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return Qwen2ForCausalLM(cfg).eval()


def llama(tiny) -> torch.nn.Module:
    return copy.deepcopy(tiny[1]).eval()


def trained_lora(base: torch.nn.Module, ids: torch.Tensor, **extra) -> torch.nn.Module:
    """Wrap with LoRA and take one real AdamW step so B (zero at init) becomes non-zero."""
    model = apply_lora(base, LoraSpec(r=4, alpha=8, extra=extra))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = -torch.log_softmax(model(input_ids=ids).logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).mean()
    loss.backward()
    opt.step()
    model.eval()
    assert any(float(p.detach().abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)
    return model


def sample_ids(tok) -> torch.Tensor:
    return torch.tensor([tok.encode('- button "Sign in" [ref=e9]\nclick(e9)')[:24]] * 2)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "qwen2+lm_head"])
def test_lora_merged_state_dict_matches_peft_logits_and_leaves_peft_unchanged(tiny, arch: str) -> None:
    tok = tiny[2]
    base = llama(tiny) if arch == "llama" else qwen2(tok)
    plain = copy.deepcopy(base)  # same architecture, weights will be overwritten
    ids = sample_ids(tok)
    # "+lm_head": a fully trained copy of lm_head (peft modules_to_save) must replace the original
    model = trained_lora(base, ids, **({"modules_to_save": ["lm_head"]} if "lm_head" in arch else {}))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    merged = merged_state_dict(model)

    assert set(merged) == set(plain.state_dict())  # plain HF names, nothing else
    streamed = iter_merged_weights(model)  # the same pairs, one at a time, in state-dict order
    assert not isinstance(streamed, dict) and [k for k, _ in streamed] == list(merged)
    assert not any("lora_" in k or "base_layer" in k or k.startswith("base_model.") for k in merged)
    plain.load_state_dict(merged, strict=True)
    with torch.no_grad():
        after = model(input_ids=ids).logits
        got = plain(input_ids=ids).logits
    assert torch.equal(before, after)  # the peft model computes what it did before
    assert all(torch.equal(p, params_before[n]) for n, p in model.named_parameters())
    assert torch.allclose(got, before, atol=1e-5), float((got - before).abs().max())
    # the adapter really changed the function: the base weights alone give other logits
    with torch.no_grad(), model.disable_adapter():
        assert not torch.allclose(model(input_ids=ids).logits, before, atol=1e-4)


def test_lora_merged_state_dict_of_plain_model_is_its_state_dict(tiny) -> None:
    model = llama(tiny)
    sd = merged_state_dict(model)
    assert not is_peft_model(model) and sd.keys() == model.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_lora_save_hf_folder_reloads_with_automodel_and_adapter_resumes(tiny, tmp_path: Path) -> None:
    tok = tiny[2]
    ids = sample_ids(tok)
    model = trained_lora(qwen2(tok), ids)
    with torch.no_grad():
        ref = model(input_ids=ids).logits

    out = save_hf_folder(model, tok, tmp_path / "step-1")

    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert (out / ADAPTER_SUBDIR / "adapter_config.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(loaded).__name__ == "Qwen2ForCausalLM"
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, ref, atol=1e-5)
    assert AutoTokenizer.from_pretrained(out).encode("click(e9)") == tok.encode("click(e9)")
    loaded_policy, _ = load_policy(out)  # what `agentrl evaluate --agent hf:DIR` uses
    with torch.no_grad():
        assert torch.allclose(loaded_policy(input_ids=ids).logits, ref, atol=1e-5)
    # resume training from the adapter: base weights + saved adapter give the trained function
    resumed = peft.PeftModel.from_pretrained(qwen2(tok), out / ADAPTER_SUBDIR, is_trainable=True).eval()
    with torch.no_grad():
        assert torch.allclose(resumed(input_ids=ids).logits, ref, atol=1e-5)
    assert any(p.requires_grad for n, p in resumed.named_parameters() if "lora_" in n)


def test_lora_save_hf_folder_of_plain_model_has_no_adapter(tiny, tmp_path: Path) -> None:
    model, tok = llama(tiny), tiny[2]
    out = save_hf_folder(model, tok, tmp_path / "plain")
    assert not (out / ADAPTER_SUBDIR).exists()
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = sample_ids(tok)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_lora_hf_generator_syncs_from_peft_trainer_model(tiny) -> None:
    tok = tiny[2]
    prompt = (
        PromptBuilder(tok, system="You are a web agent.", max_prompt_tokens=256)
        .build("Sign in", '- button "Sign in" [ref=e9]', [])
        .ids
    )
    base = llama(tiny)
    gen = HFGenerator(copy.deepcopy(base), tok)  # the generator holds a plain copy
    before = gen.score_candidates([prompt], [CANDIDATES])[0]
    trainer_model = trained_lora(base, sample_ids(tok))

    gen.load_weights(trainer_model)

    assert gen.weights_version == 1
    after = gen.score_candidates([prompt], [CANDIDATES])[0]
    assert max(abs(a - b) for a, b in zip(before.seq_logprobs, after.seq_logprobs, strict=True)) > 1e-4
    for ids, lps in zip(after.token_ids, after.token_logprobs, strict=True):
        ref = score_tokens(trainer_model, prompt, ids)  # the peft model itself
        assert max(abs(a - b) for a, b in zip(ref, lps, strict=True)) < 1e-4


def test_lora_hf_generator_sharing_the_peft_model_is_a_noop_sync(tiny) -> None:
    tok = tiny[2]
    model = trained_lora(llama(tiny), sample_ids(tok))
    gen = HFGenerator(model, tok)
    prompt = tok.encode("<|im_start|>user\nGo<|im_end|>\n<|im_start|>assistant\n")
    sp = SamplingParams(n=2, seed=0, max_new_tokens=5, stop=())
    first = gen.generate([prompt], sp)
    gen.load_weights(model)
    assert gen.weights_version == 1 and gen.generate([prompt], sp)[0][0].token_ids == first[0][0].token_ids
    c = first[0][0]
    ref = score_tokens(model, prompt, c.token_ids)
    assert max(abs(a - b) for a, b in zip(ref, c.logprobs, strict=True)) < 1e-4
    chosen = gen.choose([prompt], [CANDIDATES], SamplingParams(n=3, seed=0))[0]
    assert all(x.text in CANDIDATES for x in chosen)


def test_lora_load_policy_argument_wraps_with_peft(tiny) -> None:
    path, model, tok = tiny
    wrapped, _ = load_policy(path, lora=LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj")))
    assert is_peft_model(wrapped)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and not any("o_proj" in n for n in trainable)
    ids = sample_ids(tok)
    with torch.no_grad():  # B starts at zero: the wrapped model computes what the base computes
        assert torch.allclose(wrapped(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)
