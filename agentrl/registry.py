"""One registry class for everything looked up by name: detectors, agents, advantages, losses, reward sources.

>>> reg = Registry("detector")
>>> @reg.register("url_matches")
... def url_matches(ctx, *, pattern: str): ...
>>> reg.get("url_match")
Traceback (most recent call last):
...
KeyError: "unknown detector 'url_match' (did you mean 'url_matches'?)"
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or a list of the valid ones when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (expected one of: {', '.join(sorted(choices))})" if choices else ""


class Registry(Generic[T]):
    """Name -> object map. Instances are owned by the module that defines the family (no global registry)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> "module:attr", until first asked for

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return deco

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attr"`` under `name`; the module is imported when `get(name)` first asks."""
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._lazy[name] = target
        self._items[name] = None  # type: ignore[assignment]

    def get(self, name: str) -> T:
        try:
            item = self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'{did_you_mean(name, tuple(self._items))}") from None
        if name in self._lazy:
            module, _, attr = self._lazy.pop(name).partition(":")
            item = self._items[name] = getattr(importlib.import_module(module), attr)
        return item

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
