"""AT-SPI bridge: a small long-lived process that reads the accessibility tree of one X display's apps.

It runs under Debian's ``/usr/bin/python3`` (python3-gi + gir1.2-atspi-2.0 are system packages the
project's venv does not see; building PyGObject into the venv needs -dev packages and a compile), with
the env's own ``DISPLAY`` and ``DBUS_SESSION_BUS_ADDRESS``, so two envs' trees never mix. It imports
nothing from agentrl. Protocol: one JSON request per line on stdin, one JSON reply per line on stdout::

    {"op": "tree", "max_nodes": 400}  ->  {"ok": true, "nodes": [{"depth": 0, "role": "frame",
                                            "name": "Notes", "box": [x, y, w, h], "states": [...],
                                            "text": "...", "value": null, "app": "notes", "pid": 123}, ...]}
    {"op": "ping"}                     ->  {"ok": true}

Only nodes that are showing are sent; unnamed layout containers are left out and their children moved
up a level, so the agent reads controls, not GTK's packing.
"""

import json
import sys

import gi

gi.require_version("Atspi", "2.0")
from gi.repository import Atspi  # noqa: E402

# Unnamed containers that only lay out their children: flattened away.
_LAYOUT = {
    "filler", "panel", "scroll pane", "viewport", "layered pane", "root pane", "glass pane", "split pane",
    "unknown", "redundant object", "section", "tool bar", "menu bar", "page tab list", "table", "tree table",
    "list", "list box", "application",
}
_STATES = {
    Atspi.StateType.FOCUSED: "focused",
    Atspi.StateType.CHECKED: "checked",
    Atspi.StateType.SELECTED: "selected",
    Atspi.StateType.ACTIVE: "active",
    Atspi.StateType.EDITABLE: "editable",
    Atspi.StateType.EXPANDED: "expanded",
    Atspi.StateType.MODAL: "modal",
}
_TEXT_ROLES = {"text", "entry", "password text", "terminal", "paragraph", "document text", "spin button"}
_MAX_TEXT = 4000


def _node(acc, depth, app, pid):
    role = acc.get_role_name() or "unknown"
    name = acc.get_name() or ""
    states = acc.get_state_set()
    box = None
    try:
        ext = acc.get_extents(Atspi.CoordType.SCREEN)
        box = [ext.x, ext.y, ext.width, ext.height]
    except Exception:  # noqa: BLE001  (not a component: no geometry)
        pass
    node = {
        "depth": depth, "role": role, "name": name, "box": box, "app": app, "pid": pid,
        "states": [v for k, v in _STATES.items() if states.contains(k)],
        "sensitive": states.contains(Atspi.StateType.SENSITIVE),
        "text": None, "value": None,
    }
    if role in _TEXT_ROLES:
        try:
            node["text"] = Atspi.Text.get_text(acc, 0, _MAX_TEXT)
        except Exception:  # noqa: BLE001  (no Text interface)
            pass
    if role in ("spin button", "slider", "scroll bar", "progress bar"):
        try:
            node["value"] = Atspi.Value.get_current_value(acc)
        except Exception:  # noqa: BLE001
            pass
    return node


def _walk(acc, depth, app, pid, out, limit):
    if len(out) >= limit:
        return
    try:
        n = acc.get_child_count()
    except Exception:  # noqa: BLE001  (the app went away mid-walk)
        return
    for i in range(n):
        if len(out) >= limit:
            return
        try:
            child = acc.get_child_at_index(i)
            if child is None:
                continue
            states = child.get_state_set()
            if not states.contains(Atspi.StateType.SHOWING):
                continue
            role = child.get_role_name() or "unknown"
            name = child.get_name() or ""
        except Exception:  # noqa: BLE001
            continue
        if role in _LAYOUT and not name:
            _walk(child, depth, app, pid, out, limit)
            continue
        try:
            out.append(_node(child, depth, app, pid))
        except Exception:  # noqa: BLE001
            continue
        _walk(child, depth + 1, app, pid, out, limit)


def tree(max_nodes):
    desktop = Atspi.get_desktop(0)
    out = []
    for i in range(desktop.get_child_count()):
        app = desktop.get_child_at_index(i)
        if app is None:
            continue
        try:
            app_name = app.get_name() or ""
            pid = app.get_process_id()
        except Exception:  # noqa: BLE001
            continue
        _walk(app, 0, app_name, pid, out, max_nodes)
    return out


def main():
    Atspi.init()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "tree":
                reply = {"ok": True, "nodes": tree(int(req.get("max_nodes", 400)))}
            elif op == "ping":
                reply = {"ok": True}
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as e:  # noqa: BLE001  (report, keep serving)
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
