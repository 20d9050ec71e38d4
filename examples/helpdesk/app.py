"""A small helpdesk web app: tickets, comments, assignment, search. Not an agentrl sandbox app: its own
server process (the standard library's http.server) and its own SQLite file. agentrl starts it from
`tasks/suite.yaml` and resets it per episode.

    python app.py --port 8765 --db /tmp/helpdesk.db

Per-episode state (the reset contract agentrl calls "header"): every row belongs to an episode, the one in
the request's ``X-Agentrl-Episode`` header (``default`` without one), so parallel episodes share this one
process without seeing each other's tickets. ``POST /reset`` with ``{"episode": ID, "seed": N}`` puts that
episode back to the starting tickets (one detail drawn from the seed) and answers with the start's facts,
which task templates name (``{{asset_tag}}``). ``--shared`` ignores the header (one state for everyone), for the
"http" and "command" contracts; ``--reset-db`` rewrites the database to the starting state and exits.
"""

from __future__ import annotations

import argparse
import html
import json
import random
import sqlite3
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EPISODE_HEADER = "X-Agentrl-Episode"
PEOPLE = ["Ana Ruiz", "Ben Okafor", "Chen Wei", "Dara Novak"]
PRIORITIES = ["Low", "Normal", "High", "Urgent"]
START = [  # title, status, priority, assignee
    ("Printer on floor 3 jams", "open", "High", "Ben Okafor"),
    ("VPN drops every hour", "open", "Urgent", "Chen Wei"),
    ("New laptop for Maria", "open", "Normal", ""),
    ("Email quota exceeded", "closed", "Low", "Ana Ruiz"),
    ("Projector in room B has no signal", "open", "High", ""),
    ("Password reset for the payroll tool", "closed", "Normal", "Dara Novak"),
]
SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (episode TEXT, id INTEGER, title TEXT, body TEXT, status TEXT,
                                    priority TEXT, assignee TEXT, PRIMARY KEY (episode, id));
CREATE TABLE IF NOT EXISTS comments (episode TEXT, ticket INTEGER, text TEXT);
CREATE TABLE IF NOT EXISTS episodes (episode TEXT PRIMARY KEY, seed INTEGER);
"""


class Store:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def reset(self, episode: str, seed: int = 0) -> dict[str, str]:
        """The episode's starting tickets; returns the facts of this start that tasks may name."""
        tag = f"AT-{random.Random(seed).randint(10000, 99999)}"  # seeded: the same seed, the same start
        with self.lock:
            self.db.execute("BEGIN")
            for table in ("tickets", "comments", "episodes"):
                self.db.execute(f"DELETE FROM {table} WHERE episode = ?", (episode,))
            self.db.executemany(
                "INSERT INTO tickets VALUES (?, ?, ?, '', ?, ?, ?)",
                [(episode, i + 1, *row) for i, row in enumerate(START)],
            )
            self.db.execute("UPDATE tickets SET body = ? WHERE episode = ? AND id = 3",
                            (f"Maria's old laptop (asset tag {tag}) goes back to IT.", episode))
            self.db.execute("INSERT INTO episodes VALUES (?, ?)", (episode, seed))
            self.db.execute("COMMIT")
        return {"asset_tag": tag}

    def ensure(self, episode: str) -> None:
        if self.db.execute("SELECT 1 FROM episodes WHERE episode = ?", (episode,)).fetchone() is None:
            self.reset(episode)

    def tickets(self, episode: str, where: str = "", args: tuple = ()) -> list[dict]:
        rows = self.db.execute(
            f"SELECT id, title, body, status, priority, assignee FROM tickets WHERE episode = ? {where} ORDER BY id",
            (episode, *args),
        ).fetchall()
        keys = ("id", "title", "body", "status", "priority", "assignee")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for t in out:
            t["comments"] = [c for (c,) in self.db.execute(
                "SELECT text FROM comments WHERE episode = ? AND ticket = ? ORDER BY rowid", (episode, t["id"]))]
        return out

    def ticket(self, episode: str, tid: int) -> dict | None:
        found = self.tickets(episode, "AND id = ?", (tid,))
        return found[0] if found else None

    def add(self, episode: str, title: str, body: str, priority: str) -> int:
        with self.lock:
            (n,) = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM tickets WHERE episode = ?", (episode,)).fetchone()
            self.db.execute("INSERT INTO tickets VALUES (?, ?, ?, ?, 'open', ?, '')", (episode, n, title, body, priority))
            return n

    def update(self, episode: str, tid: int, **values: str) -> None:
        with self.lock:
            for k, v in values.items():
                assert k in ("status", "priority", "assignee")
                self.db.execute(f"UPDATE tickets SET {k} = ? WHERE episode = ? AND id = ?", (v, episode, tid))

    def comment(self, episode: str, tid: int, text: str) -> None:
        with self.lock:
            self.db.execute("INSERT INTO comments VALUES (?, ?, ?)", (episode, tid, text))


def page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} - Helpdesk</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left}</style></head>"
            f"<body><nav><a href='/'>All tickets</a> | <a href='/tickets/new'>New ticket</a> | "
            f"<a href='/about'>About</a></nav><main><h1>{html.escape(title)}</h1>{body}</main></body></html>").encode()


def ticket_table(tickets: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>#{t['id']}</td><td><a href='/tickets/{t['id']}'>{html.escape(t['title'])}</a></td>"
        f"<td>{t['status']}</td><td>{t['priority']}</td><td>{html.escape(t['assignee'] or 'unassigned')}</td></tr>"
        for t in tickets)
    return ("<table><thead><tr><th>ID</th><th>Title</th><th>Status</th><th>Priority</th><th>Assignee</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>") if tickets else "<p>No tickets.</p>"


def options(values: list[str], selected: str) -> str:
    return "".join(f"<option{' selected' if v == selected else ''}>{html.escape(v)}</option>" for v in values)


class Handler(BaseHTTPRequestHandler):
    store: Store
    shared: bool = False

    def log_message(self, format: str, *args: object) -> None:
        return

    @property
    def episode(self) -> str:
        ep = "default" if self.shared else (self.headers.get(EPISODE_HEADER) or "default")
        self.store.ensure(ep)
        return ep

    def send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", location: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)

    def json(self, data: object, status: int = 200) -> None:
        self.send(status, json.dumps(data).encode(), "application/json")

    def form(self) -> dict[str, str]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode()
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(raw or "{}")
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if url.path == "/health":
            return self.json({"ok": True})
        ep = self.episode
        if url.path == "/":
            return self.send(200, page("All tickets", "<form action='/search'><label for='q'>Search tickets</label> "
                                       "<input id='q' name='q'> <button>Search</button></form>"
                                       + ticket_table(self.store.tickets(ep))))
        if url.path == "/search":
            term = q.get("q", "")
            found = self.store.tickets(ep, "AND title LIKE ?", (f"%{term}%",))
            return self.send(200, page(f"Search: {term}", ticket_table(found)))
        if url.path == "/tickets/new":
            return self.send(200, page("New ticket", (
                "<form method='post' action='/tickets'><p><label for='title'>Title</label> "
                "<input id='title' name='title' required></p><p><label for='body'>Description</label> "
                "<textarea id='body' name='body'></textarea></p><p><label for='priority'>Priority</label> "
                f"<select id='priority' name='priority'>{options(PRIORITIES, 'Normal')}</select></p>"
                "<button>Create ticket</button></form>")))
        if len(parts) == 2 and parts[0] == "tickets" and parts[1].isdigit():
            t = self.store.ticket(ep, int(parts[1]))
            if t is None:
                return self.send(404, page("Not found", "<p>No such ticket.</p>"))
            comments = "".join(f"<li>{html.escape(c)}</li>" for c in t["comments"]) or "<li>No comments yet.</li>"
            toggle = "Reopen ticket" if t["status"] == "closed" else "Close ticket"
            body = (
                f"<p>Status: {t['status']} · Priority: {t['priority']} · Assignee: "
                f"{html.escape(t['assignee'] or 'unassigned')}</p><p>{html.escape(t['body'])}</p>"
                f"<form method='post' action='/tickets/{t['id']}/status'><button>{toggle}</button></form>"
                f"<form method='post' action='/tickets/{t['id']}/update'><label for='assignee'>Assign to</label> "
                f"<select id='assignee' name='assignee'>{options(['', *PEOPLE], t['assignee'])}</select> "
                f"<label for='prio'>Set priority</label> <select id='prio' name='priority'>"
                f"{options(PRIORITIES, t['priority'])}</select> <button>Save changes</button></form>"
                f"<h2>Comments</h2><ul>{comments}</ul><form method='post' action='/tickets/{t['id']}/comments'>"
                "<label for='comment'>Add a comment</label> <input id='comment' name='text'> "
                "<button>Post comment</button></form>")
            return self.send(200, page(f"#{t['id']} {t['title']}", body))
        if url.path == "/about":  # loads a status badge from elsewhere (what the wall keeps out)
            badge = html.escape(q.get("badge", "http://status.example.com/badge.svg"), quote=True)
            return self.send(200, page("About", f"<p>Helpdesk demo.</p><img alt='status' src='{badge}'>"
                                                f"<script>fetch('{badge}').catch(() => 0)</script>"))
        if url.path == "/api/tickets":
            where, args = "", ()
            if "title" in q:
                where, args = "AND title = ?", (q["title"],)
            return self.json(self.store.tickets(ep, where, args))
        if len(parts) == 3 and parts[:2] == ["api", "tickets"] and parts[2].isdigit():
            t = self.store.ticket(ep, int(parts[2]))
            return self.json(t if t else {"error": "no such ticket"}, 200 if t else 404)
        return self.send(404, page("Not found", "<p>No such page.</p>"))

    def do_POST(self) -> None:
        parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
        if parts == ["reset"]:
            data = self.form()
            episode = "default" if self.shared else str(data.get("episode") or "default")
            facts = self.store.reset(episode, int(data.get("seed") or 0))
            return self.json({"reset": episode, "facts": facts})
        ep, data = self.episode, self.form()
        if parts == ["tickets"]:
            if data.get("priority") not in PRIORITIES or not data.get("title", "").strip():
                return self.send(400, page("Bad request", "<p>A ticket needs a title and a priority.</p>"))
            n = self.store.add(ep, data["title"].strip(), data.get("body", ""), data["priority"])
            return self.send(303, b"", location=f"/tickets/{n}")
        if len(parts) == 3 and parts[0] == "tickets" and parts[1].isdigit():
            tid = int(parts[1])
            t = self.store.ticket(ep, tid)
            if t is None:
                return self.send(404, page("Not found", "<p>No such ticket.</p>"))
            if parts[2] == "status":
                self.store.update(ep, tid, status="open" if t["status"] == "closed" else "closed")
            elif parts[2] == "update":
                if data.get("assignee", "") not in ["", *PEOPLE] or data.get("priority") not in PRIORITIES:
                    return self.send(400, page("Bad request", "<p>Unknown assignee or priority.</p>"))
                self.store.update(ep, tid, assignee=data.get("assignee", ""), priority=data["priority"])
            elif parts[2] == "comments" and data.get("text", "").strip():
                self.store.comment(ep, tid, data["text"].strip())
            return self.send(303, b"", location=f"/tickets/{tid}")
        return self.send(404, page("Not found", "<p>No such page.</p>"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--db", default="helpdesk.db")
    ap.add_argument("--shared", action="store_true", help="one state for every request (ignore the episode header)")
    ap.add_argument("--reset-db", action="store_true", help="put the database back to the start and exit")
    args = ap.parse_args()
    store = Store(args.db)
    if args.reset_db:
        store.db.executescript("DELETE FROM tickets; DELETE FROM comments; DELETE FROM episodes;")
        store.reset("default")
        return
    Handler.store, Handler.shared = store, args.shared
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"helpdesk on http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
