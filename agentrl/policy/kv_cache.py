"""A preallocated KV cache for transformers models: decoding appends in place instead of concatenating."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer


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
