"""LoRA policies (peft): saving merged Hugging Face folders and loading adapters back."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn


def save_hf_folder(model: nn.Module, tokenizer: Any, out_dir: str | Path) -> Path:
    """A Hugging Face model folder: merged weights (LoRA deltas folded in) + tokenizer; a peft model also
    writes its adapters alone into ``adapter/``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "get_base_model"):
        model.save_pretrained(out / "adapter")
        copy.deepcopy(model).merge_and_unload().save_pretrained(out)
    else:
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_adapter_weights(model: nn.Module, adapter_dir: str | Path) -> None:
    """Adapters saved by ``save_hf_folder`` into a peft model of the same LoRA shape, in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_model.safetensors (not a LoRA checkpoint?)")
    res = set_peft_model_state_dict(model, load_file(str(path)))
    if getattr(res, "unexpected_keys", None):
        raise ValueError(f"{path}: adapter weights that the model has no place for: {res.unexpected_keys[:5]}")
