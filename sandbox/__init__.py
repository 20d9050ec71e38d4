"""Local sandbox web server with real, stateful web apps (``accounts``, ``reports``) for web-agent episodes.

>>> from agentrl.sandbox import SandboxServer
>>> with SandboxServer() as server:
...     facts = server.open_episode("ep-1", seed=3)
...     # point a browser at server.origin with header X-Agentrl-Episode: ep-1

Names are imported lazily so ``python -m agentrl.sandbox.server`` runs without a double import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .apps import App, default_apps
    from .server import (
        ADMIN_HEADER,
        DEMO_EPISODE,
        EPISODE_HEADER,
        SandboxClient,
        SandboxError,
        SandboxServer,
    )

__all__ = [
    "ADMIN_HEADER",
    "DEMO_EPISODE",
    "EPISODE_HEADER",
    "App",
    "SandboxClient",
    "SandboxError",
    "SandboxServer",
    "default_apps",
]

_FROM_APPS = {"App", "default_apps"}


def __getattr__(name: str) -> Any:
    if name in _FROM_APPS:
        from . import apps

        return getattr(apps, name)
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
