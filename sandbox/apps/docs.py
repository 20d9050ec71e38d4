"""``docs``: a simple document editor: a list of seeded documents, new document, edit (Title, Body),
Save with a "Saved" notice, and a version number that grows with every save.

Pages (under ``/docs``): ``/`` (list), ``/new``, ``/create`` (POST), ``/<id>`` (view), ``/<id>/edit``,
``/<id>/save`` (POST), ``/<id>/delete`` (POST, the "Delete document" decoy). A change exists only once
Save has posted it: typing in the editor changes nothing on the server.

>>> app = DocsApp()
>>> facts = app.facts(app.new_state(1))
>>> facts["doc_title"] != facts["doc_new_title"]
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .base import (
    App,
    Html,
    Request,
    Response,
    html_response,
    join,
    method_not_allowed,
    not_found,
    page,
    redirect,
    render,
)

_KINDS = (
    ("Meeting notes — {m}", "Notes from the {m} planning meeting. Owner: {o}. Next meeting in two weeks."),
    ("Onboarding checklist {y}", "Laptop, accounts, badge and a buddy for every new starter. Owner: {o}."),
    ("Travel policy {y}", "Book economy for flights under six hours. Owner: {o}."),
    ("Release notes {m}", "Bug fixes and performance work shipped in {m}. Owner: {o}."),
    ("Office move plan", "The move to the new office starts in {m}. Owner: {o}."),
    ("Hiring plan {y}", "Four roles open this year, two in engineering. Owner: {o}."),
    ("Budget draft {m}", "The first budget draft for {m}, pending review. Owner: {o}."),
)
_MONTHS = ("January", "March", "May", "July", "September", "November")
#: owners: many enough that no one name answers "who owns it?" for more than a few seeds in a hundred
_OWNERS = tuple(
    f"{first} {last}"
    for first in ("Priya", "Omar", "Lena", "Kenji", "Amara", "Diego", "Ines", "Tomas", "Yara", "Felix", "Noor",
                  "Hugo", "Selin", "Marek", "Zoe", "Ravi")
    for last in ("Iyer", "Haddad", "Novak", "Tanaka", "Mensah", "Ortega", "Larsen", "Costa", "Becker", "Moreau",
                 "Sato", "Varga", "Quinn", "Dubois", "Kowalski", "Reyes")
)
_NEW = ("Launch checklist", "Vendor comparison", "Retro notes", "Support rota", "Security review", "Team charter")


@dataclass
class DocsState:
    documents: dict[str, dict[str, Any]]  # id -> {title, body, version}
    targets: dict[str, str]
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    saves: int = 0
    rejected_saves: int = 0
    flash: str | None = None


class DocsApp(App):
    """Documents with an editor; saved titles, bodies and versions are public state."""

    name = "docs"
    title = "Docs"
    description = "A document editor: open, edit and save documents (Saved notice, versions)."

    def new_state(self, seed: int) -> DocsState:
        rng = random.Random(f"docs:{seed}")
        year = rng.randint(2023, 2025)
        docs: dict[str, dict[str, Any]] = {}
        for i, (title, body) in enumerate(rng.sample(_KINDS, 5)):
            m = rng.choice(_MONTHS)
            docs[f"d{i + 1}"] = {
                "title": title.format(m=m, y=year),
                "body": body.format(m=m, o=rng.choice(_OWNERS)),
                "version": rng.randint(1, 6),
            }
        doc_id = rng.choice(sorted(docs))
        target = docs[doc_id]
        targets = {
            "doc_id": doc_id,
            "doc_title": target["title"],
            "doc_body": target["body"],
            "doc_version": str(target["version"]),
            "doc_owner": target["body"].split("Owner: ")[1].split(".")[0],
            "doc_new_title": f"{target['title']} (final)",
            "new_title": rng.choice(_NEW),
            "new_body": f"Prepared by Sam Rivera. Review on {rng.choice(_MONTHS)} {rng.randint(2, 27)}.",
            "doc_count": str(len(docs)),
        }
        return DocsState(documents=docs, targets=targets)

    def facts(self, state: DocsState) -> dict[str, str]:
        return dict(state.targets)

    def public_state(self, state: DocsState) -> dict[str, Any]:
        return {
            "documents": {k: dict(v) for k, v in state.documents.items()},
            "created": [dict(state.documents[i], id=i) for i in state.created if i in state.documents],
            "deleted": list(state.deleted),
            "viewed": {i: state.opened.count(i) for i in dict.fromkeys(state.opened)},
            "saves": state.saves,
            "rejected_saves": state.rejected_saves,
        }

    def handle(self, req: Request, state: DocsState) -> Response:
        path = req.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if path == "/":
            return self._list(req, state) if req.is_read else method_not_allowed("GET", self.title)
        if path == "/new":
            return self._editor(req, state, None, {"title": "", "body": ""}, "")
        if path == "/create":
            return self._save(req, state, None) if req.method == "POST" else method_not_allowed("POST", self.title)
        doc = state.documents.get(parts[0])
        if doc is None or len(parts) > 2:
            return not_found(self.title)
        action = parts[1] if len(parts) == 2 else ""
        if action in ("save", "delete"):
            if req.method != "POST":
                return method_not_allowed("POST", self.title)
            if action == "save":
                return self._save(req, state, parts[0])
            del state.documents[parts[0]]
            state.deleted.append(parts[0])
            state.flash = "Document deleted."
            return redirect(req.url("/"))
        if action == "edit":
            return self._editor(req, state, parts[0], doc, "")
        if action == "":
            if req.method == "GET":
                state.opened.append(parts[0])
            return self._view(req, state, parts[0], doc)
        return not_found(self.title)

    def _page(self, req: Request, state: DocsState, title: str, body: Html) -> Response:
        notice = Html("")
        if state.flash:
            notice = render('<p class="status" role="status">{m}</p>\n', m=state.flash)
            state.flash = None
        nav = [("All documents", req.url("/")), ("New document", req.url("/new"))]
        return html_response(page(title, notice + body, app_title=self.title, nav=nav))

    def _list(self, req: Request, state: DocsState) -> Response:
        rows = join(
            render(
                '<tr><td><a href="{href}">{t}</a></td><td class="num">{v}</td></tr>\n',
                href=req.url(f"/{i}"),
                t=d["title"],
                v=str(d["version"]),
            )
            for i, d in sorted(state.documents.items(), key=lambda kv: kv[1]["title"])
        )
        body = render(
            "<h1>Documents</h1>\n<table>\n<caption>Documents</caption>\n"
            '<thead><tr><th scope="col">Title</th><th scope="col" class="num">Version</th></tr></thead>\n'
            "<tbody>\n{rows}</tbody>\n</table>",
            rows=rows,
        )
        return self._page(req, state, "Documents", body)

    def _view(self, req: Request, state: DocsState, doc_id: str, doc: dict[str, Any]) -> Response:
        body = render(
            '<h1>{t}</h1>\n<p class="meta">Version {v}</p>\n<article aria-label="Document body"><p>{b}</p></article>\n'
            '<div class="actions"><a class="button" href="{edit}">Edit</a>'
            '<form method="post" action="{delete}"><button type="submit" class="secondary">Delete document</button></form></div>',
            t=doc["title"],
            v=str(doc["version"]),
            b=doc["body"],
            edit=req.url(f"/{doc_id}/edit"),
            delete=req.url(f"/{doc_id}/delete"),
        )
        return self._page(req, state, doc["title"], body)

    def _editor(self, req: Request, state: DocsState, doc_id: str | None, values: dict[str, Any], error: str) -> Response:
        err = render('<p class="error" id="title-error" role="alert">{m}</p>\n', m=error) if error else Html("")
        body = render(
            "<h1>{h}</h1>\n"
            '<form method="post" action="{action}" novalidate>\n'
            '<div class="field"><label for="title">Title</label>\n{err}<input type="text" id="title" name="title" value="{t}"{inv}></div>\n'
            '<div class="field"><label for="body">Body</label>\n<textarea id="body" name="body" rows="10">{b}</textarea></div>\n'
            '<div class="actions"><button type="submit">Save</button><a href="{cancel}">Cancel</a></div>\n</form>',
            h="Edit document" if doc_id else "New document",
            action=req.url(f"/{doc_id}/save" if doc_id else "/create"),
            err=err,
            t=values["title"],
            inv=Html(' aria-invalid="true" aria-describedby="title-error"') if error else Html(""),
            b=values["body"],
            cancel=req.url(f"/{doc_id}" if doc_id else "/"),
        )
        style = Html("<style>textarea{width:100%;max-width:40rem;font:inherit;padding:.5rem}</style>\n")
        return self._page(req, state, "Edit document" if doc_id else "New document", style + body)

    def _save(self, req: Request, state: DocsState, doc_id: str | None) -> Response:
        title, text = req.form.get("title", "").strip(), req.form.get("body", "").strip()
        if not title:
            state.rejected_saves += 1
            return self._editor(req, state, doc_id, {"title": title, "body": text}, "Enter a title.")
        if doc_id is None:
            doc_id = f"d{len(state.documents) + len(state.deleted) + 1}"
            state.documents[doc_id] = {"title": title, "body": text, "version": 1}
            state.created.append(doc_id)
        else:
            doc = state.documents[doc_id]
            doc.update(title=title, body=text, version=doc["version"] + 1)
        state.saves += 1
        state.flash = "Saved."
        return redirect(req.url(f"/{doc_id}"))
