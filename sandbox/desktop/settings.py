"""Settings: a GTK3 preferences window that reads and writes ``settings.json`` (a desktop-env app).

    /usr/bin/python3 settings.py

Fields: Display name (entry), Theme (Light / Dark), Accent colour (Blue / Green / Orange / Purple, shown
in a swatch), Font size (8-32), Enable notifications (check box). Apply writes the file, OK writes it
and quits, Cancel quits without writing, About opens a dialog.
"""

import json
import os

from _gtk import Gtk, button, labelled, name

FILE = "settings.json"
DEFAULTS = {"display_name": "", "theme": "Light", "accent": "Blue", "font_size": 11, "notifications": True}
ACCENTS = {"Blue": (0.21, 0.42, 0.85), "Green": (0.18, 0.62, 0.27), "Orange": (0.95, 0.52, 0.10),
           "Purple": (0.50, 0.25, 0.70)}


def radio_group(title, options, current):
    frame = Gtk.Frame(label=title)
    box = Gtk.Box(spacing=10, border_width=6)
    buttons, first = {}, None
    for opt in options:
        b = Gtk.RadioButton.new_with_label_from_widget(first, opt)
        first = first or b
        b.set_active(opt == current)
        box.pack_start(b, False, False, 0)
        buttons[opt] = b
    frame.add(box)
    return frame, buttons


class Settings:
    def __init__(self):
        s = dict(DEFAULTS)
        if os.path.exists(FILE):
            with open(FILE, encoding="utf-8") as f:
                s.update(json.load(f))
        self.win = Gtk.Window(title="Settings")
        self.win.set_default_size(460, -1)
        self.win.connect("destroy", Gtk.main_quit)
        self.name = Gtk.Entry(text=s["display_name"])
        theme_frame, self.theme = radio_group("Theme", ["Light", "Dark"], s["theme"])
        accent_frame, self.accent = radio_group("Accent colour", list(ACCENTS), s["accent"])
        for b in self.accent.values():
            b.connect("toggled", lambda *_: self.swatch.queue_draw())
        self.swatch = name(Gtk.DrawingArea(), "Accent preview")
        self.swatch.set_size_request(120, 40)
        self.swatch.connect("draw", self.draw_swatch)
        self.size = Gtk.SpinButton.new_with_range(8, 32, 1)
        self.size.set_value(int(s["font_size"]))
        self.notify = Gtk.CheckButton(label="Enable notifications", active=bool(s["notifications"]))
        self.status = Gtk.Label(label="", xalign=0)

        actions = Gtk.Box(spacing=6)
        actions.pack_start(button("About", self.about), False, False, 0)
        for label, fn in (("OK", self.ok), ("Apply", self.apply), ("Cancel", self.win.destroy)):
            actions.pack_end(button(label, fn), False, False, 0)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=8, border_width=12)
        for w in (labelled("Display name:", self.name), theme_frame, accent_frame, self.swatch,
                  labelled("Font size:", self.size), self.notify, self.status, actions):
            box.pack_start(w, False, False, 0)
        self.win.add(box)
        self.win.show_all()

    def chosen(self, group):
        return next(k for k, b in group.items() if b.get_active())

    def draw_swatch(self, area, cr):
        cr.set_source_rgb(*ACCENTS[self.chosen(self.accent)])
        cr.rectangle(0, 0, area.get_allocated_width(), area.get_allocated_height())
        cr.fill()

    def apply(self):
        data = {"display_name": self.name.get_text(), "theme": self.chosen(self.theme),
                "accent": self.chosen(self.accent), "font_size": int(self.size.get_value()),
                "notifications": self.notify.get_active()}
        with open(FILE, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        self.status.set_text("Settings saved")

    def ok(self):
        self.size.update()  # take a typed but not yet committed font size
        self.apply()
        self.win.destroy()

    def about(self):
        d = Gtk.Dialog(title="About Settings", transient_for=self.win, modal=True)
        d.add_button("Close", Gtk.ResponseType.CLOSE)
        d.get_content_area().add(Gtk.Label(label="Settings 1.0, a test app of agentrl", margin=12))
        d.show_all()
        d.run()
        d.destroy()


if __name__ == "__main__":
    Settings()
    Gtk.main()
