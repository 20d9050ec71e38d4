"""Gymnasium spaces for text: any Unicode string up to a length (gymnasium's Text needs a fixed charset)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


class AnyText(spaces.Text):
    """A string of at most `max_length` characters drawn from any Unicode; samples are printable ASCII."""

    def __init__(self, max_length: int = 1_000_000, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(max_length=max_length, min_length=0, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"AnyText(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, AnyText) and other.max_length == self.max_length
