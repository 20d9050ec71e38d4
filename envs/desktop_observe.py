"""What the desktop env observes besides windows: the AT-SPI tree as observation text, file changes.

The tree is written in the browser's snapshot format (``- button "Save" [ref=e2] [at=231,204]``), so
`agentrl.envs.axtree.parse_snapshot`, the scripted agent and the tree detectors read it unchanged.

>>> text, refs = tree_text([{"depth": 0, "role": "push button", "name": "Save", "box": [10, 10, 40, 20],
...                          "states": ["focused"], "sensitive": True, "text": None, "value": None}])
>>> text
'- button "Save" [ref=e1] [focused] [at=30,20]'
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from agentrl.types import FileEvent

# AT-SPI role names -> the ARIA-like role words of the observation (and of oracle steps).
ROLES = {
    "frame": "window", "window": "window", "dialog": "dialog", "alert": "alertdialog", "file chooser": "dialog",
    "push button": "button", "toggle button": "button", "check box": "checkbox", "radio button": "radio",
    "text": "textbox", "entry": "textbox", "password text": "textbox", "spin button": "spinbutton",
    "combo box": "combobox", "menu item": "menuitem", "check menu item": "menuitemcheckbox",
    "radio menu item": "menuitemradio", "page tab": "tab", "list item": "listitem", "table cell": "cell",
    "tree item": "treeitem", "drawing area": "img", "image": "img", "icon": "img", "status bar": "status",
    "panel": "group", "filler": "group",
}
SKIP_ROLES = {"separator", "scroll bar"}


class FileWatch(FileSystemEventHandler):
    """watchdog (inotify) events of the episode's home, as FileEvents relative to it."""

    def __init__(self, root: Path, existing: set[str]) -> None:
        self.root = root
        self.known = set(existing)
        self.events: list[FileEvent] = []
        self.lock = threading.Lock()

    def _rel(self, path: str | bytes) -> str | None:
        p = Path(os.fsdecode(path))
        try:
            rel = p.relative_to(self.root).as_posix()
        except ValueError:
            return None
        return None if rel == "." else rel

    def _add(self, change: str, rel: str | None) -> None:
        if rel is None:
            return
        with self.lock:
            if change == "created" and rel in self.known:
                change = "modified"  # replaced in place (GTK saves by rename over the old file)
            if change == "deleted":
                self.known.discard(rel)
            else:
                self.known.add(rel)
            last = self.events[-1] if self.events else None
            if last is None or (last.change, last.path) != (change, rel):
                self.events.append(FileEvent(change=change, path=rel))

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            return  # a directory's mtime changed because a file in it did: reported as that file
        if event.event_type == "moved":
            self._add("deleted", self._rel(event.src_path))
            self._add("created", self._rel(event.dest_path))
        elif event.event_type in ("created", "modified", "deleted"):
            self._add(event.event_type, self._rel(event.src_path))

    def drain(self) -> list[FileEvent]:
        with self.lock:
            out, self.events = self.events, []
        return out


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def tree_text(nodes: list[dict[str, Any]]) -> tuple[str, dict[str, dict[str, Any]]]:
    """AT-SPI nodes -> the observation's tree text (the browser's snapshot format, so `parse_snapshot`, the
    scripted agent and the tree detectors read it unchanged) and ref -> node."""
    lines: list[str] = []
    refs: dict[str, dict[str, Any]] = {}
    parents: list[str] = []  # names along the current path, to drop labels that repeat their parent
    for n in nodes:
        if "error" in n:
            lines.append(f"- note {json.dumps(n['error'])}")
            continue
        role = n["role"]
        if role in SKIP_ROLES:
            continue
        depth = n["depth"]
        del parents[depth:]
        name = n["name"] or ""
        if role == "label" and name and name in parents[-1:]:
            continue
        parents.append(name)
        ref = f"e{len(refs) + 1}"
        refs[ref] = n
        word = ROLES.get(role, role.replace(" ", ""))
        attrs = [f"[ref={ref}]"]
        attrs += [f"[{s}]" for s in n["states"] if s not in ("editable", "active")]
        if not n.get("sensitive", True):
            attrs.append("[disabled]")
        box = n.get("box")
        if box and box[2] > 0 and box[3] > 0:
            attrs.append(f"[at={box[0] + box[2] // 2},{box[1] + box[3] // 2}]")
        line = "  " * depth + f"- {word}" + (f" {json.dumps(name, ensure_ascii=False)}" if name else "")
        line += " " + " ".join(attrs)
        value = n.get("text")
        if value is None and n.get("value") is not None:
            value = f"{n['value']:g}"
        if value is not None and role != "label":
            line += f": {json.dumps(value, ensure_ascii=False)}"
        lines.append(line)
    return "\n".join(lines), refs
