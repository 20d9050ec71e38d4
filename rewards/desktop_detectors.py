"""Detectors for the desktop env: windows, dialogs, processes, files in the episode's home, the screen.

They register into the same ``DETECTORS`` registry as the browser ones (their keyword-only signature is
the YAML schema) and read a :class:`DesktopStepContext`, which adds the desktop's windows and screenshots
to the browser's :class:`StepContext`. The browser detectors that read the accessibility tree, the answer
or the episode directory (``element_visible``, ``text_visible``, ``answer_matches``, ``file_created``,
``field_matches``) work on the desktop too: the env gives them the AT-SPI tree in the same form.

>>> from agentrl.envs.axtree import AXTree
>>> ctx = DesktopStepContext(step=1, events=[], history=[], url="", title="", ax=AXTree("", ()),
...     episode_dir=Path("."), windows=[WindowInfo(1, "Save As", "notes", 42, 0, 0, 300, 200, True)])
>>> window_shown(ctx, title="Save As", focused=True).detail
'window "Save As" (notes) is shown and focused'
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentrl.rewards.detectors import Regex, StepContext, detector

from agentrl.types import Evidence, FileEvent, ProcessEvent, WindowEvent


@dataclass(frozen=True)
class WindowInfo:
    """A managed top-level window: what `xwininfo` and `xprop` would say about it."""

    id: int
    title: str
    wm_class: str
    pid: int | None
    x: int
    y: int
    width: int
    height: int
    focused: bool

    def line(self) -> str:
        focus = "[focused] " if self.focused else ""
        return (f'- {focus}"{self.title}" class={self.wm_class or "?"} at ({self.x},{self.y}) '
                f"size {self.width}x{self.height}")


@dataclass
class DesktopStepContext(StepContext):
    """StepContext + the desktop's windows after the step and screenshots (when a detector needs them)."""

    windows: list[WindowInfo] = field(default_factory=list)
    screenshot: Any = None  # PIL image after the step (needs "screenshot")
    first_screenshot: Any = None  # PIL image at reset (needs "screenshot")


def _windows(ctx: StepContext) -> list[WindowInfo]:
    return getattr(ctx, "windows", [])


def _title_ok(text: str, title: str | None, title_re: str | None) -> bool:
    if title is not None and text != title:
        return False
    return not (title_re is not None and not re.search(title_re, text))


def _class_ok(cls: str, wm_class: str | None) -> bool:
    return wm_class is None or cls.lower() == wm_class.lower()


# ---------------------------------------------------------------- windows
@detector("window_shown", needs=("windows",))
def window_shown(
    ctx: StepContext, *, title: str | None = None, title_re: Regex | None = None, wm_class: str | None = None,
    focused: bool = False,
) -> Evidence | None:
    """A top-level window with this `title` (exact) / `title_re` (re.search) / `wm_class` is on screen after
    the step; with `focused: true` it must also have the input focus."""
    for w in _windows(ctx):
        if _title_ok(w.title, title, title_re) and _class_ok(w.wm_class, wm_class) and (w.focused or not focused):
            state = "shown and focused" if w.focused else "shown"
            return Evidence(detail=f'window "{w.title}" ({w.wm_class}) is {state}',
                            data={"title": w.title, "wm_class": w.wm_class})
    return None


@detector("dialog_closed", needs=("windows",))
def dialog_closed(
    ctx: StepContext, *, title: str | None = None, title_re: Regex | None = None, wm_class: str | None = None,
) -> Evidence | None:
    """A window with this title/class was closed during the episode and none like it is open now."""
    closed = [e for e in ctx.history if isinstance(e, WindowEvent) and e.change == "closed"
              and _title_ok(e.title, title, title_re) and _class_ok(e.wm_class, wm_class)]
    if not closed:
        return None
    if any(_title_ok(w.title, title, title_re) and _class_ok(w.wm_class, wm_class) for w in _windows(ctx)):
        return None
    return Evidence(detail=f'window "{closed[-1].title}" was closed', data={"title": closed[-1].title})


# ---------------------------------------------------------------- processes
def _proc_ok(e: ProcessEvent, name: str | None, cmd_re: str | None) -> bool:
    if name is not None and e.name != name:
        return False
    return not (cmd_re is not None and not re.search(cmd_re, e.cmdline))


@detector("process_started", needs=("processes",))
def process_started(ctx: StepContext, *, name: str | None = None, cmd_re: Regex | None = None) -> Evidence | None:
    """A process of the episode named `name` (executable, or a python app's script name) / with a command
    line matching `cmd_re` started after the episode began."""
    for e in ctx.history:
        if isinstance(e, ProcessEvent) and e.change == "started" and _proc_ok(e, name, cmd_re):
            return Evidence(detail=f"process {e.name} (pid {e.pid}) started: {e.cmdline[:120]}",
                            data={"pid": e.pid, "name": e.name})
    return None


@detector("process_exited", needs=("processes",))
def process_exited(
    ctx: StepContext, *, name: str | None = None, cmd_re: Regex | None = None, returncode: int | None = None,
) -> Evidence | None:
    """A process of the episode named `name` / matching `cmd_re` exited (with `returncode`, when given and
    known: the env knows it for the apps it launched)."""
    for e in ctx.history:
        if isinstance(e, ProcessEvent) and e.change == "exited" and _proc_ok(e, name, cmd_re):
            if returncode is not None and e.returncode != returncode:
                continue
            return Evidence(detail=f"process {e.name} (pid {e.pid}) exited ({e.returncode})",
                            data={"pid": e.pid, "name": e.name, "returncode": e.returncode})
    return None


# ---------------------------------------------------------------- files
@detector("file_changed", needs=("file_events",))
def file_changed(
    ctx: StepContext,
    *,
    change: Literal["created", "modified", "deleted", "any"] = "any",
    glob: str = "*",
    ext: str | None = None,
    contains: str | None = None,
    pattern: Regex | None = None,
    min_bytes: int = 0,
) -> Evidence | None:
    """A file of the episode's home was created / modified / deleted during the episode (inotify, via
    watchdog) with a name matching `glob` (relative path or base name) and extension `ext`. For created and
    modified files the file as it is now must also pass the content checks (`contains`, `pattern`,
    `min_bytes`); a deleted file must still be gone. A folder counts when no content check is given."""
    root = ctx.episode_dir
    seen: set[str] = set()
    for e in reversed(ctx.history):
        if not isinstance(e, FileEvent) or e.path in seen:
            continue
        if change != "any" and e.change != change:
            continue
        if not (fnmatch.fnmatch(e.path, glob) or fnmatch.fnmatch(Path(e.path).name, glob)):
            continue
        if ext is not None and Path(e.path).suffix.lower() != "." + ext.lower().lstrip("."):
            continue
        seen.add(e.path)
        p = root / e.path
        if e.change == "deleted":
            if p.exists():
                continue
            return Evidence(detail=f"file {e.path} deleted", data={"path": e.path, "change": e.change})
        if p.is_dir() and contains is None and pattern is None and min_bytes == 0:
            return Evidence(detail=f"folder {e.path} {e.change}", data={"path": e.path, "change": e.change})
        if not p.is_file() or p.stat().st_size < min_bytes:
            continue
        if contains is not None or pattern is not None:
            text = p.read_bytes().decode("utf-8", errors="replace")
            if contains is not None and contains not in text:
                continue
            if pattern is not None and not re.search(pattern, text):
                continue
        return Evidence(detail=f"file {e.path} {e.change} ({p.stat().st_size} bytes)",
                        data={"path": e.path, "change": e.change})
    return None


# ---------------------------------------------------------------- the screen
@detector("screen_changed", needs=("screenshot",))
def screen_changed(
    ctx: StepContext,
    *,
    region: tuple[int, int, int, int] | None = None,
    window_title_re: Regex | None = None,
    min_fraction: float = 0.02,
    threshold: int = 24,
) -> Evidence | None:
    """At least `min_fraction` of the pixels of a screen region differ (any channel by more than
    `threshold`) from the screen at reset. `region` is ``[x, y, width, height]``, relative to the window
    whose title matches `window_title_re` when given (its geometry now; the same screen rectangle is cut from
    the reset screenshot), else to the screen; no region: the window, or the whole screen."""
    shot, first = getattr(ctx, "screenshot", None), getattr(ctx, "first_screenshot", None)
    if shot is None or first is None:
        return None
    x0, y0, w, h = 0, 0, shot.width, shot.height
    if window_title_re is not None:
        win = next((w_ for w_ in _windows(ctx) if re.search(window_title_re, w_.title)), None)
        if win is None:
            return None
        x0, y0, w, h = win.x, win.y, win.width, win.height
    if region is not None:
        x0, y0, w, h = x0 + region[0], y0 + region[1], region[2], region[3]
    box = (max(0, x0), max(0, y0), min(shot.width, x0 + w), min(shot.height, y0 + h))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    import numpy as np

    a = np.asarray(shot.crop(box).convert("RGB"), dtype=np.int16)
    b = np.asarray(first.crop(box).convert("RGB"), dtype=np.int16)
    frac = float((np.abs(a - b).max(axis=2) > threshold).mean())
    if frac < min_fraction:
        return None
    return Evidence(detail=f"{frac:.1%} of region {list(box)} changed since reset", data={"fraction": round(frac, 4)})
