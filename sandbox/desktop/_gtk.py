"""Shared bits of the project's GTK3 desktop apps (run by /usr/bin/python3, never imported by the venv)."""

import os
import sys

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import GLib  # noqa: E402

# The X window class comes from the program name when GTK starts: "notes" (class "Notes"), not "notes.py".
GLib.set_prgname(os.path.splitext(os.path.basename(sys.argv[0]))[0])
from gi.repository import Gtk  # noqa: E402

__all__ = ["GLib", "Gtk", "ask_text", "button", "confirm", "labelled", "name"]


def name(widget, text):
    """Set the accessible name (what AT-SPI, and so the agent, calls this widget)."""
    widget.get_accessible().set_name(text)
    return widget


def button(label, on_click):
    b = Gtk.Button(label=label)
    b.connect("clicked", lambda *_: on_click())
    return b


def labelled(text, widget):
    """A row "label: widget" whose label names the widget for AT-SPI."""
    box = Gtk.Box(spacing=8)
    lab = Gtk.Label(label=text, xalign=0)
    lab.set_mnemonic_widget(widget)
    box.pack_start(lab, False, False, 0)
    box.pack_start(widget, True, True, 0)
    name(widget, text.rstrip(":"))
    return box


def _dialog(parent, title, ok_label):
    d = Gtk.Dialog(title=title, transient_for=parent, modal=True)
    d.add_button("Cancel", Gtk.ResponseType.CANCEL)
    d.add_button(ok_label, Gtk.ResponseType.OK)
    d.set_default_response(Gtk.ResponseType.OK)
    d.set_default_size(360, -1)
    return d


def ask_text(parent, title, label, ok_label, initial=""):
    """A modal dialog with one text entry; returns the text, or None when cancelled."""
    d = _dialog(parent, title, ok_label)
    entry = Gtk.Entry(text=initial, activates_default=True)
    area = d.get_content_area()
    area.set_border_width(12)
    area.add(labelled(label, entry))
    d.show_all()
    resp = d.run()
    text = entry.get_text()
    d.destroy()
    return text if resp == Gtk.ResponseType.OK else None


def confirm(parent, title, message, ok_label):
    """A modal yes/no dialog; True when `ok_label` was chosen."""
    d = _dialog(parent, title, ok_label)
    area = d.get_content_area()
    area.set_border_width(12)
    area.add(Gtk.Label(label=message))
    d.show_all()
    resp = d.run()
    d.destroy()
    return resp == Gtk.ResponseType.OK
