"""Policy models: a tiny randomly initialised Llama for tests and CPU runs, and loading of any HF causal LM.

>>> model, tok = build_tiny_policy("runs/tiny-policy")          # trains a tokenizer, saves both
>>> model, tok = load_policy("runs/tiny-policy")                 # later: loads by path like any HF model
>>> model, tok = load_policy("Qwen/Qwen2.5-0.5B-Instruct", dtype="bfloat16", device="cuda")
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from agentrl.policy.lora import LoraSpec, apply_lora
from agentrl.policy.tokenizer import train_tokenizer

TINY_DEFAULT_VOCAB = 2048


def tiny_policy_config(
    vocab_size: int,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    *,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_positions: int = 4096,
    tie_embeddings: bool = True,
    pad_token_id: int = 0,
    eos_token_id: int = 2,
    bos_token_id: int | None = None,
) -> LlamaConfig:
    """A small Llama config: with the defaults and a 2048-token vocab, about 3.1M parameters.

    Tied input/output embeddings, SwiGLU MLP of width `2 * hidden`, RoPE, RMSNorm.
    """
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate if intermediate is not None else 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads if kv_heads is not None else heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        use_cache=True,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def build_tiny_policy(
    out_dir: str | Path,
    seed: int = 0,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = TINY_DEFAULT_VOCAB,
    **config_kw: Any,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Train the tokenizer, build a randomly initialised tiny Llama (seeded) and save both to `out_dir`.

    The directory then loads with `load_policy(out_dir)` (or plain `AutoModelForCausalLM.from_pretrained`).
    `config_kw` goes to `tiny_policy_config` (hidden, layers, heads, ...).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(corpus, vocab_size=vocab_size)
    cfg = tiny_policy_config(
        len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, **config_kw
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> None:
    """Give the tokenizer (and model config) a pad token: the eos token when the tokenizer has none."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad nor an eos token; set tokenizer.pad_token first")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def _resolve_dtype(dtype: str | torch.dtype | None) -> str | torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        raise ValueError(f"unknown dtype {dtype!r} (expected e.g. 'float32', 'bfloat16', 'auto')") from None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def load_policy(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    lora: LoraSpec | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer by hub id or local path (e.g. "Qwen/Qwen2.5-0.5B-Instruct").

    `dtype`: None keeps float32 (transformers' default), "auto" uses the checkpoint's dtype, or a name/torch
    dtype. The model is returned in eval mode on `device`, with a pad token guaranteed. With `lora`, the
    model is wrapped by `peft.get_peft_model` (requires `pip install peft`).
    """
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    resolved = _resolve_dtype(dtype)
    if resolved is not None:
        kwargs["dtype"] = resolved
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    ensure_pad_token(tokenizer, model)
    n_embed = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_embed:
        raise ValueError(
            f"tokenizer of {name_or_path} has {len(tokenizer)} tokens but the model embeds only {n_embed}"
        )
    model.to(device)
    model.eval()
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, extra: Sequence[str] = ()) -> list[int]:
    """Ids that end an assistant turn: eos, `<|im_end|>`/`<|endoftext|>` when present, plus `extra` tokens."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in ("<|im_end|>", "<|endoftext|>", *extra):
        if tok in vocab and vocab[tok] not in ids:
            ids.append(int(vocab[tok]))
    return ids
