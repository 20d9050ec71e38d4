"""Which sandbox server an env talks to: a process-wide in-process server by default, or a shared one.

Set ``AGENTRL_SANDBOX="http://127.0.0.1:PORT TOKEN"`` (origin and admin token, as printed by
``python -m agentrl.sandbox.server``) to make every env in a process use one server started elsewhere.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_default: Any = None
_default_pid: int | None = None


def default_sandbox() -> Any:
    """The process's sandbox: started on first use on 127.0.0.1 (fork-safe), or the one in AGENTRL_SANDBOX."""
    global _default, _default_pid
    with _lock:
        if _default is not None and _default_pid == os.getpid():
            return _default
        spec = os.environ.get("AGENTRL_SANDBOX", "").split()
        if spec:
            from agentrl.sandbox.server import SandboxClient

            if len(spec) != 2:
                raise ValueError("AGENTRL_SANDBOX must be 'ORIGIN ADMIN_TOKEN', e.g. 'http://127.0.0.1:8000 3f9a…'")
            _default = SandboxClient(spec[0], spec[1])
        else:
            from agentrl.sandbox.server import SandboxServer

            _default = SandboxServer().start()
        _default_pid = os.getpid()
        return _default
