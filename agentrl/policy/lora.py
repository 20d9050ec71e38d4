"""LoRA through `peft`: the adapter settings (`LoraSpec`, `apply_lora`), the merged weights a generator
needs (`merged_state_dict`) and a Hugging Face model folder that transformers and vLLM load
(`save_hf_folder`).

>>> model = apply_lora(base_model, LoraSpec(r=16, alpha=32))          # a peft.PeftModel
>>> generator.load_weights(merged_state_dict(model))                    # plain HF names, LoRA merged in
>>> save_hf_folder(model, tokenizer, "runs/x/step-10")                  # merged model + adapter/ subfolder

`merged_state_dict` computes `W + scaling * B @ A` per LoRA layer (peft's `get_delta_weight`, the term
`merge_adapter` adds) without touching the peft model. TRL instead calls `merge_adapter()`, reads the
parameters and calls `unmerge_adapter()`; in bf16 the subtraction does not give the base weights back
exactly, so every sync would drift them. Here the model is only read.

`peft` is imported lazily: this module imports without it, and `apply_lora` without it raises an
ImportError that says how to install it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

ADAPTER_SUBDIR = "adapter"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapter settings (applied with `peft` by `apply_lora` / `load_policy(lora=...)`).

    `r`: rank; `alpha`: scaling numerator (the update is scaled by alpha / r); `dropout` on the LoRA input;
    `target_modules`: names of the linear layers that get adapters; `bias`: peft's bias mode
    ("none", "all", "lora_only"); `extra`: further `peft.LoraConfig` keyword arguments.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    bias: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to peft.LoraConfig


def _import_peft() -> Any:
    try:
        import peft
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "LoRA was requested but the 'peft' package is not installed. Install it with `pip install peft` "
            "(or load the policy without `lora=`)."
        ) from e
    return peft


def apply_lora(model: PreTrainedModel, lora: LoraSpec) -> PreTrainedModel:
    """Wrap `model` with LoRA adapters via `peft` (imported here: it is an optional dependency)."""
    peft = _import_peft()
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias=lora.bias,
        task_type="CAUSAL_LM",
        **lora.extra,
    )
    return peft.get_peft_model(model, config)


def is_peft_model(model: Any) -> bool:
    """True for a `peft.PeftModel` (checked without importing peft when it is not loaded)."""
    return any(c.__module__.startswith("peft.") and c.__name__ == "PeftModel" for c in type(model).__mro__)


def _plain_name(name: str, adapter_names: set[str]) -> str | None:
    """The base architecture's name for a key of the peft-injected model, or None when it has none."""
    parts = name.split(".")
    if any(p.startswith("lora_") for p in parts) or "original_module" in parts:
        return None  # adapter tensors (lora_A/lora_B/lora_embedding_*, DoRA magnitude); a replaced original
    out: list[str] = []
    i = 0
    while i < len(parts):
        if parts[i] == "base_layer":
            i += 1
            continue
        if parts[i] == "modules_to_save" and i + 1 < len(parts) and parts[i + 1] in adapter_names:
            i += 2  # the trained copy of a fully fine-tuned module stands in for the original
            continue
        out.append(parts[i])
        i += 1
    return ".".join(out)


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a plain copy of the base architecture needs to compute what `model` computes.

    For a peft LoRA model: the base model's state dict under its Hugging Face names (no `base_model.model.`
    prefix, no `.base_layer`, no lora_A / lora_B keys), with `scaling * B @ A` of every active, unmerged
    adapter added to its layer's weight (and the LoRA bias, if any). The peft model is not changed.
    Tensors of layers without adapters are the model's own (shared storage, detached): read, don't write.
    For any other module: its `state_dict()`. `iter_merged_weights` gives the same pairs one at a time.

    Raises ValueError for LoRA variants whose merge is not a plain delta (DoRA and the like).
    """
    return dict(iter_merged_weights(model))


def _adapted_layers(model: torch.nn.Module) -> dict[str, tuple[Any, list[str]]]:
    """{peft-side name of an adapted layer's weight: (its LoRA layer, adapters to add)}, checked."""
    peft = _import_peft()
    layers: dict[str, tuple[Any, list[str]]] = {}
    for mod_name, module in model.get_base_model().named_modules():
        if not isinstance(module, peft.tuners.lora.LoraLayer):
            continue
        adapters = set(module.lora_A) | set(getattr(module, "lora_embedding_A", {}))
        todo = [a for a in module.active_adapters if a in adapters and a not in module.merged_adapters]
        if not todo:
            continue  # no active adapter, or merged into the base weight already
        variants = getattr(module, "lora_variant", {})
        if any(a in variants for a in todo):
            raise ValueError(
                f"{mod_name}: LoRA variant {type(variants[todo[0]]).__name__} (e.g. DoRA) is not a plain "
                "delta; merged_state_dict supports vanilla LoRA only"
            )
        layers[f"{mod_name}.base_layer.weight"] = (module, todo)
        if any(getattr(module, "lora_bias", {}).get(a) for a in todo):
            layers[f"{mod_name}.base_layer.bias"] = (module, todo)
    return layers


@torch.no_grad()
def iter_merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """`merged_state_dict(model)` as (name, tensor) pairs, in state-dict order, built lazily: a merged
    layer exists only until the consumer drops it, so a weight sync needs one layer of extra memory, not
    a copy of the model."""
    if not is_peft_model(model):
        yield from model.state_dict().items()
        return
    adapter_names = set(getattr(model, "peft_config", {}) or {})
    layers = _adapted_layers(model)
    seen: set[str] = set()
    for name, tensor in model.get_base_model().state_dict().items():
        plain = _plain_name(name, adapter_names)
        if plain is None:
            continue
        if name not in layers:
            yield plain, tensor.detach()
            continue
        module, todo = layers[name]
        seen.add(name)
        merged = tensor.detach().float()  # sum in fp32, round once to the weight's dtype
        for a in todo:
            if name.endswith(".weight"):
                merged = merged + module.get_delta_weight(a).float()
            elif module.lora_bias.get(a):
                merged = merged + module.lora_B[a].bias.detach().float() * module.scaling[a]
        yield plain, merged.to(tensor.dtype)
    if missed := sorted(set(layers) - seen):  # a delta with no weight to land on would be lost silently
        raise ValueError(f"LoRA layers whose base weights are not in the state dict: {missed[:5]}")


def save_hf_folder(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Save a Hugging Face model folder that `AutoModelForCausalLM.from_pretrained` and vLLM load.

    The folder holds the merged weights (`merged_state_dict`) in safetensors, the base architecture's config
    and generation config, and the tokenizer. For a peft model the adapter is also saved to
    `out_dir/adapter/` (peft's `save_pretrained`: adapter_config.json + adapter weights), so training can
    resume from it with `peft.PeftModel.from_pretrained(base, out_dir / "adapter", is_trainable=True)`.
    Returns `out_dir`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = model.get_base_model() if is_peft_model(model) else model
    state = {k: v.contiguous() for k, v in merged_state_dict(model).items()}
    base.save_pretrained(out, state_dict=state)
    tokenizer.save_pretrained(out)
    if is_peft_model(model):
        model.save_pretrained(out / ADAPTER_SUBDIR)
    return out


def load_adapter_weights(model: torch.nn.Module, adapter_dir: str | Path) -> None:
    """Adapters saved by ``save_hf_folder`` into a live peft model of the same LoRA shape, in place (a
    resumed run keeps the model its optimizer was built on)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_model.safetensors (not a LoRA checkpoint?)")
    res = set_peft_model_state_dict(model, load_file(str(path)))
    if getattr(res, "unexpected_keys", None):
        raise ValueError(f"{path}: adapter weights that the model has no place for: {res.unexpected_keys[:5]}")
