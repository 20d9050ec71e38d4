"""Files: a GTK3 file organiser for one folder (the working directory) (a desktop-env app).

    /usr/bin/python3 files.py [FOLDER]

Lists the folder's entries (folders end in "/"); select one by clicking it, then Rename…, Move to…
(a sub-folder, created when missing), Delete (asks first) or Open (a folder: go into it). New Folder…
and Up work on the folder shown. Hidden files are not shown.
"""

import os
import shutil
import sys

from _gtk import Gtk, ask_text, button, confirm, name


class Files:
    def __init__(self, folder):
        self.root = os.path.abspath(folder)
        self.cwd = self.root
        self.win = Gtk.Window(title="Files")
        self.win.set_default_size(520, 440)
        self.win.connect("destroy", Gtk.main_quit)
        bar = Gtk.Box(spacing=4)
        for label, fn in (("Up", self.up), ("Open", self.open), ("New Folder…", self.new_folder),
                          ("Rename…", self.rename), ("Move to…", self.move), ("Delete", self.delete)):
            bar.pack_start(button(label, fn), False, False, 0)
        self.where = Gtk.Label(xalign=0)
        self.list = name(Gtk.ListBox(), "Folder contents")
        self.list.connect("row-activated", lambda *_: self.open())
        scroll = Gtk.ScrolledWindow(vexpand=True)
        scroll.add(self.list)
        self.status = Gtk.Label(label="", xalign=0)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4, border_width=6)
        for w, grow in ((bar, False), (self.where, False), (scroll, True), (self.status, False)):
            box.pack_start(w, grow, grow, 0)
        self.win.add(box)
        self.refresh()
        self.win.show_all()

    def refresh(self):
        for row in self.list.get_children():
            self.list.remove(row)
        rel = os.path.relpath(self.cwd, self.root)
        self.where.set_text("Folder: " + ("home" if rel == "." else rel))
        entries = sorted(e for e in os.listdir(self.cwd) if not e.startswith("."))
        for e in entries:
            shown = e + "/" if os.path.isdir(os.path.join(self.cwd, e)) else e
            row = name(Gtk.ListBoxRow(), shown)
            row.entry = e
            row.add(Gtk.Label(label=shown, xalign=0, margin=4))
            self.list.add(row)
        self.list.show_all()

    def selected(self):
        row = self.list.get_selected_row()
        if row is None:
            self.status.set_text("Select a file first")
            return None
        return row.entry

    def done(self, message):
        self.refresh()
        self.status.set_text(message)

    def up(self):
        if self.cwd != self.root:
            self.cwd = os.path.dirname(self.cwd)
            self.done("")

    def open(self):
        e = self.selected()
        if e and os.path.isdir(os.path.join(self.cwd, e)):
            self.cwd = os.path.join(self.cwd, e)
            self.done("")

    def new_folder(self):
        n = ask_text(self.win, "New Folder", "Folder name:", "Create")
        if n:
            os.makedirs(os.path.join(self.cwd, n.strip()), exist_ok=True)
            self.done(f"Created {n.strip()}/")

    def rename(self):
        e = self.selected()
        if not e:
            return
        n = ask_text(self.win, "Rename", "New name:", "Rename", e)
        if n and n.strip() != e:
            os.rename(os.path.join(self.cwd, e), os.path.join(self.cwd, n.strip()))
            self.done(f"Renamed {e} to {n.strip()}")

    def move(self):
        e = self.selected()
        if not e:
            return
        dest = ask_text(self.win, "Move", "Destination folder:", "Move")
        if dest:
            target = os.path.normpath(os.path.join(self.cwd, dest.strip()))
            if not target.startswith(self.root):
                self.status.set_text("Destination must be inside the home folder")
                return
            os.makedirs(target, exist_ok=True)
            shutil.move(os.path.join(self.cwd, e), os.path.join(target, e))
            self.done(f"Moved {e} to {dest.strip()}/")

    def delete(self):
        e = self.selected()
        if e and confirm(self.win, "Delete", f"Delete {e}? This cannot be undone.", "Delete"):
            p = os.path.join(self.cwd, e)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
            self.done(f"Deleted {e}")


if __name__ == "__main__":
    Files(sys.argv[1] if len(sys.argv) > 1 else ".")
    Gtk.main()
