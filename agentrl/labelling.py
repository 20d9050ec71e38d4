"""A local page for people to label preferences: two trajectories of the same task variant side by side
(goal, actions, milestones, screenshots when recorded, the final page), buttons "Left better", "Right
better", "Tie"; each click is a row in the preference store (source "human").

>>> server = LabelServer([Path("runs/eval")], PrefStore("prefs.sqlite"), labeller="ana").start()  # doctest: +SKIP
>>> server.url                                   # open it in a browser          # doctest: +SKIP
'http://127.0.0.1:8010/'

`agentrl label RUN_DIR --store prefs.sqlite` runs it. Everything shown from a page or an agent is
HTML-escaped: a trajectory cannot script the labelling page.
"""

from __future__ import annotations

import html
import itertools
import random
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agentrl.rewards.prefs import Episode, Pair, PrefStore, compact_observation, read_episodes

_CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1400px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.col{border:1px solid #ccc;padding:.75rem;border-radius:6px}
pre{white-space:pre-wrap;font-size:12px;max-height:22rem;overflow:auto;background:#f6f6f6;padding:.5rem}
.m{color:#176b2c}.buttons{margin:1rem 0;display:flex;gap:1rem}button{font-size:1.1rem;padding:.5rem 1.2rem}
img{max-width:100%;border:1px solid #ddd}"""


def comparisons(episodes: Sequence[Episode], seed: int = 0) -> list[tuple[Episode, Episode]]:
    """Pairs of episodes of the same task variant whose trajectories differ, sides shuffled (seeded) so the
    better one is not always on the left."""
    groups: dict[tuple[str, int], dict[str, Episode]] = defaultdict(dict)
    for e in episodes:
        groups[(e.task_id, e.seed)].setdefault(e.text(), e)
    rng = random.Random(seed)
    out = []
    for key in sorted(groups):
        for a, b in itertools.combinations(groups[key].values(), 2):
            out.append((a, b) if rng.random() < 0.5 else (b, a))
    return out


class LabelServer:
    """The labelling page on 127.0.0.1:`port` (0: any free port)."""

    def __init__(self, run_dirs: Sequence[Path], store: PrefStore, *, labeller: str = "", port: int = 0) -> None:
        self.store, self.labeller = store, labeller
        self.items = comparisons(read_episodes(run_dirs))
        labelled = {tuple(p.meta.get("episodes", ())) for p in store.pairs(source="human") if p.labeller == labeller}
        self.done: set[int] = {i for i, (a, b) in enumerate(self.items)
                               if (a.dir.name, b.dir.name) in labelled or (b.dir.name, a.dir.name) in labelled}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def start(self) -> LabelServer:
        threading.Thread(target=self._httpd.serve_forever, name="label-server", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------ actions
    def label(self, index: int, choice: str) -> Pair:
        """Store the person's choice for comparison `index`: left | right | tie."""
        if not 0 <= index < len(self.items):
            raise IndexError(f"no comparison {index} (there are {len(self.items)})")
        if choice not in ("left", "right", "tie"):
            raise ValueError(f"choice must be left, right or tie, got {choice!r}")
        left, right = self.items[index]
        win, lose = (right, left) if choice == "right" else (left, right)
        pair = Pair(task_id=left.task_id, seed=left.seed, level="trajectory", chosen=win.text(), rejected=lose.text(),
                    tie=choice == "tie", source="human", labeller=self.labeller,
                    meta={"episodes": [left.dir.name, right.dir.name], "choice": choice})
        self.store.add(pair)
        with self._lock:
            self.done.add(index)
        return pair

    def next_index(self) -> int | None:
        with self._lock:
            return next((i for i in range(len(self.items)) if i not in self.done), None)

    # ------------------------------------------------------------------ pages
    def _column(self, index: int, side: str, e: Episode) -> str:
        esc = html.escape
        rows = []
        for s, action in zip(e.steps, e.actions(), strict=True):
            ms = " ".join(f'<span class="m">+{m.reward:.2f} {esc(m.id)}</span>' for m in s.milestones)
            rows.append(f"<li>{esc(action)} {ms}</li>")
            if s.screenshot and (e.dir / s.screenshot).is_file():
                rows.append(f'<li><img alt="screenshot after step {s.t}" src="/shot/{index}/{side}/{esc(s.screenshot)}"></li>')
        final = compact_observation(e.steps[-1].observation, 4000) if e.steps else ""
        return (f'<div class="col" id="{side}"><h2>{side.title()}</h2><ol>{"".join(rows)}</ol>'
                f"<h3>Final page</h3><pre>{esc(final)}</pre></div>")

    def page(self, index: int) -> str:
        left, right = self.items[index]
        buttons = "".join(
            f'<button name="choice" value="{v}">{label}</button>'
            for v, label in (("left", "Left better"), ("tie", "Tie"), ("right", "Right better"))
        )
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>agentrl label {index + 1}/{len(self.items)}"
                f"</title><style>{_CSS}</style></head><body><p>Comparison {index + 1} of {len(self.items)} · "
                f"{len(self.done)} labelled · task <b>{html.escape(left.task_id)}</b> seed {left.seed}</p>"
                f"<h1>Goal: {html.escape(left.goal)}</h1>"
                f'<form method="post" action="/label"><input type="hidden" name="index" value="{index}">'
                f'<div class="buttons">{buttons}</div></form>'
                f'<div class="cols">{self._column(index, "left", left)}{self._column(index, "right", right)}</div>'
                "</body></html>")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "text/html; charset=utf-8", **headers: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
                if parts == [""]:
                    i = server.next_index()
                    if i is None:
                        self._send(200, f"<!doctype html><h1>All {len(server.items)} comparisons labelled</h1>".encode())
                    else:
                        self._send(303, b"", Location=f"/compare/{i}")
                elif parts[0] == "compare" and len(parts) == 2 and parts[1].isdigit() and int(parts[1]) < len(server.items):
                    self._send(200, server.page(int(parts[1])).encode())
                elif parts[0] == "shot" and len(parts) >= 4 and parts[1].isdigit() and int(parts[1]) < len(server.items):
                    ep = server.items[int(parts[1])][0 if parts[2] == "left" else 1]
                    f = (ep.dir / "/".join(parts[3:])).resolve()
                    if f.suffix == ".png" and f.is_file() and f.is_relative_to(ep.dir.resolve()):
                        self._send(200, f.read_bytes(), "image/png")
                    else:
                        self._send(404, b"no such screenshot")
                else:
                    self._send(404, b"not found")

            def do_POST(self) -> None:
                if self.path != "/label":
                    self._send(404, b"not found")
                    return
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                try:
                    server.label(int(form["index"][0]), form["choice"][0])
                except (KeyError, ValueError, IndexError) as e:
                    self._send(400, f"bad label: {html.escape(str(e))}".encode())
                    return
                self._send(303, b"", Location="/")

        return Handler
