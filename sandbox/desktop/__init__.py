"""The desktop env's apps: the project's own small GTK3 apps and the Debian programs tasks may launch.

The GTK apps (``notes``, ``settings``, ``files``) are scripts run by Debian's ``/usr/bin/python3`` (they
need python3-gi, which the project's venv does not see); each exposes a full AT-SPI tree. ``APPS`` maps the
name a task's ``start.launch`` uses to the command; the env also puts a launcher per name on the desktop's
PATH, so an agent can start them from a terminal (``notes todo.txt &``).

>>> app_command("notes todo.txt")[1:]                                   # doctest: +ELLIPSIS
['.../sandbox/desktop/notes.py', 'todo.txt']
"""

from __future__ import annotations

import shlex
from pathlib import Path

from agentrl.registry import Registry

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"

APPS: Registry[tuple[str, ...]] = Registry("desktop app")
for _name in ("notes", "settings", "files"):
    APPS.register(_name)((SYSTEM_PYTHON, str(HERE / f"{_name}.py")))
# Debian's own programs: a GTK3 text editor (full AT-SPI tree) and a terminal (none: keys and text only).
APPS.register("mousepad")(("mousepad", "--disable-server"))
APPS.register("xterm")(("xterm", "-fa", "DejaVu Sans Mono", "-fs", "11", "-geometry", "90x24", "-title", "Terminal"))


def app_command(line: str) -> list[str]:
    """argv for one ``start.launch`` line: the first word names an app of ``APPS``, the rest are its
    arguments (shell-quoted)."""
    words = shlex.split(line)
    if not words:
        raise ValueError("empty launch line")
    return [*APPS.get(words[0]), *words[1:]]


def write_launchers(bin_dir: Path) -> None:
    """One executable per project app in `bin_dir` (put on the desktop's PATH; Debian's are there already)."""
    for name in APPS:
        if APPS.get(name)[0] == name:
            continue  # a launcher named like the program it runs would exec itself
        argv = " ".join(shlex.quote(a) for a in APPS.get(name))
        f = bin_dir / name
        f.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        f.chmod(0o755)
