"""Notes: a small GTK3 text editor with Save and Save As (a desktop-env app).

    /usr/bin/python3 notes.py [FILE]

Paths are relative to the working directory (the episode's home). The title reads ``todo.txt — Notes``
(``*todo.txt — Notes`` with unsaved changes; ``Untitled — Notes`` before the first save). Ctrl+S saves
(asking for a name the first time), Ctrl+Shift+S is Save As, Ctrl+Q quits.
"""

import os
import sys

from _gtk import Gtk, ask_text, button, name


class Notes:
    def __init__(self, path):
        self.path = path
        self.win = Gtk.Window(title="Notes")
        self.win.set_default_size(640, 420)
        self.win.connect("destroy", Gtk.main_quit)
        self.buffer = Gtk.TextBuffer()
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.buffer.set_text(f.read())
        self.buffer.set_modified(False)
        self.buffer.connect("modified-changed", lambda *_: self.update_title())

        bar = Gtk.Box(spacing=4)
        bar.pack_start(button("Save", self.save), False, False, 0)
        bar.pack_start(button("Save As…", self.save_as), False, False, 0)
        bar.pack_start(button("Quit", self.quit), False, False, 0)
        self.view = name(Gtk.TextView(buffer=self.buffer), "Document")
        scroll = Gtk.ScrolledWindow(vexpand=True)
        scroll.add(self.view)
        self.status = Gtk.Label(label="", xalign=0)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4, border_width=6)
        box.pack_start(bar, False, False, 0)
        box.pack_start(scroll, True, True, 0)
        box.pack_start(self.status, False, False, 0)
        self.win.add(box)

        accel = Gtk.AccelGroup()
        self.win.add_accel_group(accel)
        for key, mods, fn in (("s", Gtk.accelerator_parse("<Control>s")[1], self.save),
                              ("s", Gtk.accelerator_parse("<Control><Shift>s")[1], self.save_as),
                              ("q", Gtk.accelerator_parse("<Control>q")[1], self.quit)):
            accel.connect(Gtk.accelerator_parse(key)[0], mods, 0, lambda *_, fn=fn: fn() or True)
        self.update_title()
        self.win.show_all()
        self.view.grab_focus()

    def update_title(self):
        base = os.path.basename(self.path) if self.path else "Untitled"
        dirty = "*" if self.buffer.get_modified() else ""
        self.win.set_title(f"{dirty}{base} — Notes")

    def text(self):
        return self.buffer.get_text(self.buffer.get_start_iter(), self.buffer.get_end_iter(), True)

    def save(self):
        if not self.path:
            return self.save_as()
        try:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(self.text())
        except OSError as e:
            self.status.set_text(f"Could not save: {e.strerror}")
            return None
        self.buffer.set_modified(False)
        self.status.set_text(f"Saved {self.path}")
        self.update_title()
        return None

    def save_as(self):
        new = ask_text(self.win, "Save As", "File name:", "Save", os.path.basename(self.path or ""))
        if new:
            self.path = new.strip()
            self.save()

    def quit(self):
        self.win.destroy()


if __name__ == "__main__":
    Notes(sys.argv[1] if len(sys.argv) > 1 else None)
    Gtk.main()
