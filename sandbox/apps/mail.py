"""``mail``: a webmail with a seeded inbox, compose (To, Cc, Subject, Message, Attach a file), send,
Sent and Drafts folders, reply, forward, archive and a contact list with look-alike addresses.

Pages (under ``/mail``): ``/inbox``, ``/messages/<id>`` (+ ``/archive`` POST), ``/compose``
(``?reply=<id>`` or ``?forward=<id>``), ``/send`` (POST, multipart), ``/drafts`` (GET list, POST save),
``/sent``, ``/sent/<n>``, ``/contacts``. A message counts as sent only when ``/send`` has validated it
(recipients, subject, attachment size); it is then in ``sent`` with its attachment's name and text.

>>> app = MailApp()
>>> facts = app.facts(app.new_state(2))
>>> facts["contact_email"] != facts["lookalike_email"] and facts["code"] != facts["decoy_code"]
True
"""

from __future__ import annotations

import random
import re
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

ME = ("Sam Rivera", "sam.rivera@northwind.example")
MAX_ATTACHMENT = 256 * 1024
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_PEOPLE = (
    ("Priya", "Iyer", "Finance"),
    ("Omar", "Haddad", "Facilities"),
    ("Lena", "Novak", "Engineering"),
    ("Kenji", "Tanaka", "Sales"),
    ("Amara", "Mensah", "Legal"),
    ("Diego", "Ortega", "Support"),
    ("Ingrid", "Berg", "People"),
    ("Felix", "Weber", "Marketing"),
    ("Hana", "Sato", "Operations"),
    ("Tomas", "Kovacs", "Procurement"),
)
_TOPICS = ("Vendor contract", "Conference booking", "Office move", "Server upgrade", "Budget review", "Client workshop")
_FILLER = (
    ("Lunch on Friday?", "Anyone up for the new noodle place on Friday at noon?"),
    ("Your weekly summary", "You have 4 new comments and 2 mentions this week."),
    ("Parking garage closed", "The parking garage is closed on Saturday for cleaning."),
    ("Printer on floor 3", "The printer on floor 3 is fixed. Thanks for your patience."),
    ("Team photo", "The team photo is on the shared drive in the Photos folder."),
    ("Security training reminder", "Please finish the security training by the end of the month."),
)


@dataclass
class Message:
    id: str
    sender: tuple[str, str]  # (name, address)
    to: str
    subject: str
    body: str
    date: str


@dataclass
class MailState:
    contacts: list[tuple[str, str, str]]  # (name, address, team), look-alikes included
    inbox: list[Message]
    targets: dict[str, str]
    sent: list[dict[str, Any]] = field(default_factory=list)
    drafts: list[dict[str, Any]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    rejected_sends: int = 0
    flash: str | None = None


def addresses(raw: str) -> list[str]:
    """``"a@x.org, B@y.org;"`` -> ``["a@x.org", "b@y.org"]`` (split on commas/semicolons, lower-cased)."""
    return [a.strip().lower() for a in re.split(r"[,;]", raw) if a.strip()]


def validate(form: dict[str, str], attachment_size: int) -> dict[str, str]:
    """{field: message} for a compose form (empty when it may be sent)."""
    errors: dict[str, str] = {}
    for key, label in (("to", "To"), ("cc", "Cc")):
        bad = [a for a in addresses(form.get(key, "")) if not _EMAIL_RE.match(a)]
        if bad:
            errors[key] = f"“{bad[0]}” in {label} is not a valid email address."
    if not addresses(form.get("to", "")) and "to" not in errors:
        errors["to"] = "Enter at least one recipient."
    if not form.get("subject", "").strip():
        errors["subject"] = "Enter a subject."
    if attachment_size > MAX_ATTACHMENT:
        errors["attachment"] = "The attachment is larger than 256 KB."
    return errors


class MailApp(App):
    """Seeded inbox, compose/send with attachments, Sent and Drafts; what was sent is public state."""

    name = "mail"
    title = "Mail"
    description = "Webmail: read the inbox, compose with recipients and attachments, send, Sent folder."

    def new_state(self, seed: int) -> MailState:
        rng = random.Random(f"mail:{seed}")
        people = rng.sample(_PEOPLE, 7)
        contacts = [(f"{a} {b}", f"{a.lower()}.{b.lower()}@northwind.example", team) for a, b, team in people]
        contact, cc, sender, decoy_sender = contacts[0], contacts[1], contacts[2], contacts[3]
        others = contacts[4:]
        first, last = contact[0].split()
        lookalike = rng.choice(
            (
                f"{first.lower()}.{last.lower()}@northwind-mail.example",
                f"{first.lower()}{last.lower()}@northwind.example",
                f"{first.lower()}.{last.lower()}@northwind.example.net",
            )
        )
        contacts.append((f"{contact[0]} (personal)", lookalike, "External"))
        contacts.sort()
        topic = rng.choice(_TOPICS)
        code, decoy_code = (f"{topic[:2].upper()}-{n}" for n in rng.sample(range(10000, 99999), 2))
        day = rng.randint(3, 20)
        target = Message(
            "", sender[:2], ME[1], f"{topic} details",
            f"Hi Sam, the {topic.lower()} is confirmed. The reference code is {code}. "
            f"Please pass it on to whoever needs it. Thanks, {sender[0].split()[0]}",
            f"2024-05-{day:02d}",
        )
        decoy = Message(
            "", decoy_sender[:2], ME[1], f"Re: {topic} details (old)",
            f"Sam, for the record: the old reference code was {decoy_code}. It is no longer valid. "
            f"{decoy_sender[0].split()[0]}",
            f"2024-05-{day - 2:02d}",
        )
        filler = [
            Message("", rng.choice(others)[:2], ME[1], s, b, f"2024-05-{rng.randint(1, 24):02d}")
            for s, b in rng.sample(_FILLER, rng.randint(3, 5))
        ]
        inbox = sorted([target, decoy, *filler], key=lambda m: (m.date, m.subject), reverse=True)
        ids = rng.sample(range(100, 1000), len(inbox))
        for m, i in zip(inbox, ids, strict=True):
            m.id = f"m{i}"
        targets = {
            "me": ME[1],
            "contact_name": contact[0],
            "contact_email": contact[1],
            "contact_team": contact[2],
            "lookalike_email": lookalike,
            "cc_name": cc[0],
            "cc_email": cc[1],
            "msg_id": target.id,
            "msg_subject": target.subject,
            "msg_from_name": sender[0],
            "msg_from": sender[1],
            "topic": topic,
            "code": code,
            "decoy_id": decoy.id,
            "decoy_subject": decoy.subject,
            "decoy_code": decoy_code,
            "inbox_count": str(len(inbox)),
        }
        return MailState(contacts=contacts, inbox=inbox, targets=targets)

    def facts(self, state: MailState) -> dict[str, str]:
        return dict(state.targets)

    def public_state(self, state: MailState) -> dict[str, Any]:
        viewed: dict[str, int] = {}
        for m in state.opened:
            viewed[m] = viewed.get(m, 0) + 1
        return {
            "sent": [dict(m) for m in state.sent],
            "drafts": [dict(m) for m in state.drafts],
            "opened": list(state.opened),
            "viewed": viewed,
            "archived": list(state.archived),
            "rejected_sends": state.rejected_sends,
        }

    # -- routing ------------------------------------------------------------------------------------
    def handle(self, req: Request, state: MailState) -> Response:
        path = req.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if path == "/":
            return redirect(req.url("/inbox"))
        if path in ("/send", "/drafts") and req.method == "POST":
            return self._send(req, state) if path == "/send" else self._save_draft(req, state)
        if path == "/send":  # typing the send URL sends nothing
            return method_not_allowed("POST", self.title)
        if parts[0] == "messages" and len(parts) == 3 and parts[2] == "archive":
            if req.method != "POST":
                return method_not_allowed("POST", self.title)
            msg = self._message(state, parts[1])
            if msg is None:
                return not_found(self.title)
            state.inbox.remove(msg)
            state.archived.append(msg.id)
            state.flash = "Conversation archived."
            return redirect(req.url("/inbox"))
        if not req.is_read:
            return method_not_allowed("GET", self.title)
        if path == "/inbox":
            return self._inbox(req, state)
        if path == "/compose":
            return self._compose(req, state, self._prefill(req, state), {})
        if path in ("/sent", "/drafts"):
            return self._folder(req, state, path[1:])
        if path == "/contacts":
            return self._contacts(req, state)
        if parts[0] == "sent" and len(parts) == 2 and parts[1].isdigit() and 0 < int(parts[1]) <= len(state.sent):
            return self._sent_message(req, state, int(parts[1]))
        if parts[0] == "messages" and len(parts) == 2 and (msg := self._message(state, parts[1])):
            if req.method == "GET":
                state.opened.append(msg.id)
            return self._read(req, msg)
        return not_found(self.title)

    @staticmethod
    def _message(state: MailState, msg_id: str) -> Message | None:
        return next((m for m in state.inbox if m.id == msg_id), None)

    def _page(self, req: Request, state: MailState | None, title: str, body: Html) -> Response:
        nav = [("Inbox", req.url("/inbox")), ("Sent", req.url("/sent")), ("Drafts", req.url("/drafts")),
               ("Contacts", req.url("/contacts"))]
        notice = Html("")
        if state is not None and state.flash:
            notice = render('<p class="status" role="status">{m}</p>\n', m=state.flash)
            state.flash = None
        user = render('<div class="user"><span>{me}</span></div>', me=ME[1])
        compose = render('<p><a class="button" href="{href}">Compose</a></p>\n', href=req.url("/compose"))
        return html_response(page(title, notice + compose + body, app_title=self.title, nav=nav, user_area=user))

    # -- folders ------------------------------------------------------------------------------------
    def _inbox(self, req: Request, state: MailState) -> Response:
        rows = join(
            render(
                '<tr><td>{name}</td><td><a href="{href}">{subject}</a></td><td>{date}</td></tr>\n',
                name=m.sender[0],
                href=req.url(f"/messages/{m.id}"),
                subject=m.subject,
                date=m.date,
            )
            for m in state.inbox
        )
        body = render(
            "<h1>Inbox</h1>\n<table>\n<caption>Inbox, {n} conversations</caption>\n"
            '<thead><tr><th scope="col">From</th><th scope="col">Subject</th><th scope="col">Date</th></tr></thead>\n'
            "<tbody>\n{rows}</tbody>\n</table>",
            n=str(len(state.inbox)),
            rows=rows,
        )
        return self._page(req, state, "Inbox", body)

    def _folder(self, req: Request, state: MailState, which: str) -> Response:
        items = state.sent if which == "sent" else state.drafts
        heading = "Sent" if which == "sent" else "Drafts"
        if not items:
            listing = render("<p>No messages in {h}.</p>", h=heading)
        else:
            listing = render(
                '<ul class="list" aria-label="{h} messages">{items}</ul>',
                h=heading,
                items=join(
                    render(
                        '<li>{link}<span class="meta">to {to}</span></li>',
                        link=render('<a href="{href}">{s}</a>', href=req.url(f"/sent/{i + 1}"), s=m["subject"] or "(no subject)")
                        if which == "sent"
                        else render("<strong>{s}</strong>", s=m["subject"] or "(no subject)"),
                        to=m["to"] or "(no recipients)",
                    )
                    for i, m in enumerate(items)
                ),
            )
        return self._page(req, state, heading, render("<h1>{h}</h1>\n{l}", h=heading, l=listing))

    def _contacts(self, req: Request, state: MailState) -> Response:
        rows = join(
            render("<tr><td>{n}</td><td>{a}</td><td>{t}</td></tr>\n", n=n, a=a, t=t) for n, a, t in state.contacts
        )
        body = render(
            "<h1>Contacts</h1>\n<table>\n<caption>Contacts</caption>\n"
            '<thead><tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Team</th></tr></thead>\n'
            "<tbody>\n{rows}</tbody>\n</table>",
            rows=rows,
        )
        return self._page(req, state, "Contacts", body)

    # -- reading ------------------------------------------------------------------------------------
    def _read(self, req: Request, m: Message) -> Response:
        body = render(
            "<h1>{subject}</h1>\n<dl class=\"review\"><dt>From</dt><dd>{name} &lt;{addr}&gt;</dd>"
            "<dt>To</dt><dd>{to}</dd><dt>Date</dt><dd>{date}</dd></dl>\n"
            '<article aria-label="Message body"><p>{text}</p></article>\n'
            '<div class="actions"><a class="button" href="{reply}">Reply</a>'
            '<a class="button secondary" href="{fwd}">Forward</a>'
            '<form method="post" action="{archive}"><button type="submit" class="secondary">Archive</button></form></div>',
            subject=m.subject,
            name=m.sender[0],
            addr=m.sender[1],
            to=m.to,
            date=m.date,
            text=m.body,
            reply=req.url(f"/compose?reply={m.id}"),
            fwd=req.url(f"/compose?forward={m.id}"),
            archive=req.url(f"/messages/{m.id}/archive"),
        )
        return self._page(req, None, m.subject, body)

    def _sent_message(self, req: Request, state: MailState, n: int) -> Response:
        m = state.sent[n - 1]
        att = render("<dt>Attachment</dt><dd>{a} ({s} bytes)</dd>", a=m["attachment_name"], s=str(m["attachment_size"])) if m["attachment_name"] else Html("")
        body = render(
            '<h1>{subject}</h1>\n<dl class="review"><dt>To</dt><dd>{to}</dd><dt>Cc</dt><dd>{cc}</dd>{att}</dl>\n'
            '<article aria-label="Message body"><p>{text}</p></article>',
            subject=m["subject"], to=m["to"], cc=m["cc"] or "—", att=att, text=m["body"],
        )
        return self._page(req, state, m["subject"], body)

    # -- compose / send -----------------------------------------------------------------------------
    def _prefill(self, req: Request, state: MailState) -> dict[str, str]:
        values = {"to": "", "cc": "", "subject": "", "body": "", "reply_to": "", "forward_of": ""}
        reply = self._message(state, req.query.get("reply", ""))
        fwd = self._message(state, req.query.get("forward", ""))
        if reply is not None:
            values |= {"to": reply.sender[1], "subject": f"Re: {reply.subject}", "reply_to": reply.id}
        elif fwd is not None:
            values |= {
                "subject": f"Fwd: {fwd.subject}",
                "body": f"---------- Forwarded message ---------- From: {fwd.sender[0]} <{fwd.sender[1]}> "
                f"Subject: {fwd.subject} {fwd.body}",
                "forward_of": fwd.id,
            }
        return values

    def _compose(self, req: Request, state: MailState, values: dict[str, str], errors: dict[str, str]) -> Response:
        def err(key: str) -> Html:
            if key not in errors:
                return Html("")
            return render('<p class="error" id="{k}-error" role="alert">{m}</p>\n', k=key, m=errors[key])

        def inv(key: str, hint: str = "") -> Html:
            ids = " ".join(x for x in (hint, f"{key}-error" if key in errors else "") if x)
            extra = Html(' aria-invalid="true"') if key in errors else Html("")
            return (render(' aria-describedby="{i}"', i=ids) if ids else Html("")) + extra

        summary = Html("")
        if errors:
            summary = render(
                '<div class="alert"><h2>The message was not sent</h2><p>{n} field(s) need attention.{again}</p></div>\n',
                n=str(len(errors)),
                again=" Attach the file again." if values.get("had_attachment") else "",
            )
        body = render(
            "<h1>New message</h1>\n{summary}"
            '<form method="post" action="{send}" enctype="multipart/form-data" novalidate>\n'
            '<input type="hidden" name="reply_to" value="{reply_to}"><input type="hidden" name="forward_of" value="{fwd}">\n'
            '<div class="field"><label for="to">To</label>\n<p class="hint" id="to-hint">Separate addresses with commas.</p>\n'
            '{to_err}<input type="text" id="to" name="to" value="{to}" autocomplete="off"{to_inv}></div>\n'
            '<div class="field"><label for="cc">Cc</label>\n{cc_err}<input type="text" id="cc" name="cc" value="{cc}"'
            ' autocomplete="off"{cc_inv}></div>\n'
            '<div class="field"><label for="subject">Subject</label>\n{s_err}<input type="text" id="subject" name="subject"'
            ' value="{subject}"{s_inv}></div>\n'
            '<div class="field"><label for="body">Message</label>\n<textarea id="body" name="body" rows="8">{text}</textarea></div>\n'
            '<div class="field"><label for="attachment">Attach a file</label>\n{a_err}'
            '<input type="file" id="attachment" name="attachment"{a_inv}></div>\n'
            '<div class="actions"><button type="submit">Send</button>'
            '<button type="submit" class="secondary" formaction="{drafts}">Save draft</button>'
            '<a href="{discard}">Discard</a></div>\n</form>',
            summary=summary,
            send=req.url("/send"),
            reply_to=values["reply_to"],
            fwd=values["forward_of"],
            to=values["to"],
            to_err=err("to"),
            to_inv=inv("to", "to-hint"),
            cc=values["cc"],
            cc_err=err("cc"),
            cc_inv=inv("cc"),
            subject=values["subject"],
            s_err=err("subject"),
            s_inv=inv("subject"),
            text=values["body"],
            a_err=err("attachment"),
            a_inv=inv("attachment"),
            drafts=req.url("/drafts"),
            discard=req.url("/inbox"),
        )
        style = Html("<style>textarea{width:100%;max-width:40rem;font:inherit;padding:.5rem}</style>\n")
        return self._page(req, state, "New message", style + body)

    def _fields(self, req: Request) -> dict[str, str]:
        keys = ("to", "cc", "subject", "body", "reply_to", "forward_of")
        return {k: req.form.get(k, "").strip() if k != "body" else req.form.get(k, "") for k in keys}

    def _send(self, req: Request, state: MailState) -> Response:
        values = self._fields(req)
        upload = req.files.get("attachment")
        errors = validate(values, len(upload.data) if upload else 0)
        if errors:
            state.rejected_sends += 1
            return self._compose(req, state, values | {"had_attachment": "1" if upload else ""}, errors)
        state.sent.append(
            {
                "to": ", ".join(addresses(values["to"])),
                "cc": ", ".join(addresses(values["cc"])),
                "subject": values["subject"],
                "body": values["body"].strip(),
                "attachment_name": upload.filename if upload else "",
                "attachment_size": len(upload.data) if upload else 0,
                "attachment_text": upload.data.decode("utf-8", "replace")[:4000] if upload else "",
                "in_reply_to": values["reply_to"] if self._message(state, values["reply_to"]) else "",
                "forwarded": values["forward_of"] if self._message(state, values["forward_of"]) else "",
            }
        )
        state.flash = "Message sent."
        return redirect(req.url("/sent"))

    def _save_draft(self, req: Request, state: MailState) -> Response:
        values = self._fields(req)
        state.drafts.append({k: values[k] for k in ("to", "cc", "subject", "body")})
        state.flash = "Draft saved. It has not been sent."
        return redirect(req.url("/drafts"))
