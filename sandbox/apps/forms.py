"""``forms``: a newsletter sign-up, a feedback form, a support-ticket desk (create, assign, close with a
confirmation dialog), a travel request with a confirmation dialog, and a three-step expense-claim wizard.

Every form is validated on the server (``novalidate`` on the ``<form>``, so the browser never hides the
server's messages), every success shows a ``role="status"`` banner, and every goal is recorded in the
episode state. Confirm steps only act on what an earlier step validated: posting a final form without its
preceding steps records nothing and answers 409 (see ``docs/sandbox.md``).

>>> app = FormsApp()
>>> facts = app.facts(app.new_state(1))
>>> facts["assign_to"] != facts["assign_from"], facts["employee_id"].startswith("E-")
(True, True)
"""

from __future__ import annotations

import random
import re
import secrets
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .base import (
    EMPTY,
    App,
    Html,
    Request,
    Response,
    html_response,
    join,
    message_page,
    not_found,
    page,
    redirect,
    render,
)
from .fields import Errors, banner, checkbox, error_summary, radio_group, select_field, text_field

RATINGS = ("Very poor", "Poor", "Fair", "Good", "Excellent")
TICKET_CATEGORIES = ("Billing", "Technical problem", "Account access", "Feature request", "Other")
PRIORITIES = ("Low", "Normal", "High", "Urgent")
AGENTS = ("Alex Kim", "Bea Costa", "Chen Wei", "Dara Nolan", "Eli Haddad")
TRANSPORT = ("Train", "Flight", "Car", "Bus")
DEPARTMENTS = ("Engineering", "Finance", "Marketing", "Operations", "Sales", "People")
EXPENSE_TYPES = ("Travel", "Meals", "Equipment", "Training", "Software")
_FIRST = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hugo", "Ines", "Jonas", "Kaia", "Luca")
_LAST = ("Moreno", "Novak", "Okoro", "Petrov", "Quinn", "Rahman", "Schmidt", "Tanaka", "Urban", "Vidal")
_CITIES = ("Lisbon", "Oslo", "Prague", "Krakow", "Lyon", "Porto", "Ghent", "Turin", "Bergen", "Leeds")
_SUBJECTS = (
    "Invoice shows the wrong VAT rate", "Cannot reset my password", "Export to CSV times out",
    "Please add dark mode", "Two-factor codes arrive late", "Duplicate charge on my card",
    "Dashboard loads slowly", "Change the billing contact", "Mobile app crashes on login",
)
_MERCHANTS = ("Cafe Rosa", "Metro Taxi", "Office Hub", "Byte Books", "Rail Express", "Hotel Aurora", "CloudDesk")
_PURPOSES = ("Client workshop", "Team offsite", "Trade fair", "Training course", "Partner meeting")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_AMOUNT_RE = re.compile(r"^\$?\s*(\d{1,3}(,\d{3})*|\d+)(\.\d{1,2})?$")
_EMPLOYEE_RE = re.compile(r"^E-\d{5}$")


@dataclass
class Ticket:
    id: str
    subject: str
    priority: str
    category: str
    assignee: str = "Unassigned"
    status: str = "Open"
    description: str = ""

    def public(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class FormsState:
    seed: int
    facts: dict[str, str]
    tickets: list[Ticket]
    subscribers: list[str] = field(default_factory=list)
    feedback: list[dict[str, str]] = field(default_factory=list)
    created_tickets: list[str] = field(default_factory=list)
    travel_pending: dict[str, str] | None = None
    travel_requests: list[dict[str, str]] = field(default_factory=list)
    draft: dict[str, str] = field(default_factory=dict)  # the expense wizard's validated steps so far
    draft_steps: list[str] = field(default_factory=list)  # "details", "costs"
    token: str = ""  # issued with the review page; the submit must echo it
    claims: list[dict[str, str]] = field(default_factory=list)
    validation_failures: int = 0
    rejected: list[str] = field(default_factory=list)  # final posts without their preceding steps
    decoy_visits: list[str] = field(default_factory=list)


def _date_text(rng: random.Random, lo: int = 1, hi: int = 300) -> str:
    return date.fromordinal(date(2024, 1, 1).toordinal() + rng.randint(lo, hi)).isoformat()


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return f"{first} {last}", f"{first}.{last}@example.org".lower()


class FormsApp(App):
    name = "forms"
    title = "Forms"
    description = "Sign-up, feedback, support tickets, a travel request and an expense-claim wizard."

    def new_state(self, seed: int) -> FormsState:
        rng = random.Random(f"forms:{seed}")
        numbers = rng.sample(range(2001, 2999), 6)
        subjects = rng.sample(_SUBJECTS, 7)
        tickets = [
            Ticket(f"TCK-{n}", s, rng.choice(PRIORITIES), rng.choice(TICKET_CATEGORIES), rng.choice(AGENTS))
            for n, s in zip(numbers, subjects[:6], strict=True)
        ]
        close_t, assign_t = rng.sample(tickets, 2)
        new_assignee = rng.choice([a for a in AGENTS if a != assign_t.assignee])
        name, email = _person(rng)
        depart = _date_text(rng, 30, 200)
        back = date.fromisoformat(depart).toordinal() + rng.randint(1, 9)
        facts = {
            "subscriber_name": name,
            "subscriber_email": email,
            "rating": rng.choice(RATINGS),
            "comment": rng.choice(("Quick answers, thanks", "The form was confusing", "Great support")),
            "close_ticket": close_t.id,
            "close_subject": close_t.subject,
            "assign_ticket": assign_t.id,
            "assign_subject": assign_t.subject,
            "assign_to": new_assignee,
            "assign_from": assign_t.assignee,
            "ticket_subject": subjects[-1],
            "ticket_category": rng.choice(TICKET_CATEGORIES),
            "ticket_priority": rng.choice(PRIORITIES),
            "ticket_description": f"Since {_date_text(rng)} this happens every time, please help.",
            "travel_destination": rng.choice(_CITIES),
            "travel_depart": depart,
            "travel_return": date.fromordinal(back).isoformat(),
            "travel_transport": rng.choice(TRANSPORT),
            "travel_hotel": rng.choice(("yes", "no")),
            "travel_purpose": rng.choice(_PURPOSES),
            "employee_id": f"E-{rng.randint(10000, 99999)}",
            "department": rng.choice(DEPARTMENTS),
            "expense_amount": f"{rng.randint(12, 900)}.{rng.randint(0, 99):02d}",
            "expense_date": _date_text(rng),
            "expense_type": rng.choice(EXPENSE_TYPES),
            "merchant": rng.choice(_MERCHANTS),
            "ticket_count": str(len(tickets)),
        }
        return FormsState(seed=seed, facts=facts, tickets=tickets)

    def facts(self, state: FormsState) -> dict[str, str]:
        return dict(state.facts)

    def public_state(self, state: FormsState) -> dict[str, Any]:
        return {
            "subscribers": list(state.subscribers),
            "feedback": [dict(f) for f in state.feedback],
            "tickets": {t.id: t.public() for t in state.tickets},
            "created_tickets": [t.public() for t in state.tickets if t.id in state.created_tickets],
            "closed": ",".join(t.id for t in state.tickets if t.status == "Closed"),  # in table order
            "travel_pending": dict(state.travel_pending) if state.travel_pending else None,
            "travel_requests": [dict(r) for r in state.travel_requests],
            "expense_steps": list(state.draft_steps),
            "claims": [dict(c) for c in state.claims],
            "validation_failures": state.validation_failures,
            "rejected": list(state.rejected),
            "decoy_visits": list(state.decoy_visits),
        }

    # -- routing ------------------------------------------------------------------------------------
    def handle(self, req: Request, state: FormsState) -> Response:
        path = req.path.rstrip("/") or "/"
        routes = {
            "/": self._hub,
            "/newsletter": self._newsletter,
            "/newsletter/thanks": lambda r, s: self._thanks(r, "Subscribed", "Thank you, you are now subscribed."),
            "/feedback": self._feedback,
            "/feedback/thanks": lambda r, s: self._thanks(r, "Feedback sent", "Thank you for your feedback."),
            "/tickets": self._tickets,
            "/tickets/new": self._new_ticket,
            "/travel": self._travel,
            "/travel/confirm": self._travel_confirm,
            "/travel/done": lambda r, s: self._thanks(r, "Travel request sent", "Your travel request was sent."),
            "/expense": self._expense_details,
            "/expense/costs": self._expense_costs,
            "/expense/review": self._expense_review,
            "/expense/submit": self._expense_submit,
            "/expense-old": self._retired,
        }
        if path in routes:
            return routes[path](req, state)
        m = re.fullmatch(r"/tickets/(TCK-\d+)(/close)?", path)
        ticket = next((t for t in state.tickets if m and t.id == m.group(1)), None)
        if ticket is None:
            return not_found(self.title)
        return self._close(req, state, ticket) if m and m.group(2) else self._ticket(req, state, ticket)

    def _page(self, req: Request, title: str, body: Html, status: int = 200) -> Response:
        nav = [("All forms", req.url("/")), ("Support tickets", req.url("/tickets"))]
        return html_response(page(title, body, app_title=self.title, nav=nav), status=status)

    def _form(self, req: Request, action: str, inner: Html, button: str, extra: Html = EMPTY) -> Html:
        return render(
            '<form method="post" action="{a}" novalidate>{inner}<div class="actions"><button type="submit">{b}</button>'
            "{extra}</div></form>\n",
            a=req.url(action), inner=inner, b=button, extra=extra,
        )

    def _fail(self, state: FormsState, errors: Errors) -> bool:
        if errors:
            state.validation_failures += 1
        return bool(errors)

    def _hub(self, req: Request, state: FormsState) -> Response:
        links = [
            ("Newsletter sign-up", "/newsletter", "Get the monthly product letter."),
            ("Feedback", "/feedback", "Tell us how we did."),
            ("Support tickets", "/tickets", "Open, assign and close support tickets."),
            ("Travel request", "/travel", "Ask for approval before you book a trip."),
            ("Expense claim", "/expense", "Claim back money you spent for work (three steps)."),
            ("Expense claim (old form)", "/expense-old", "The form used until 2023."),
        ]
        items = join(
            render('<li><a href="{h}">{t}</a><span class="meta">{d}</span></li>\n', h=req.url(h), t=t, d=d)
            for t, h, d in links
        )
        body = render('<h1>Forms</h1>\n<nav aria-label="Form list"><ul class="list">{i}</ul></nav>', i=items)
        return self._page(req, "Forms", body)

    def _retired(self, req: Request, state: FormsState) -> Response:
        state.decoy_visits.append("expense-old")
        return message_page(
            410, "This form has been retired", "Use the current expense claim form instead.",
            link=("Expense claim", req.url("/expense")), app_title=self.title,
        )

    def _thanks(self, req: Request, heading: str, text: str) -> Response:
        body = render("<h1>{h}</h1>\n{b}<p><a href=\"{u}\">Back to all forms</a></p>", h=heading, b=banner(text),
                      u=req.url("/"))
        return self._page(req, heading, body)

    # -- newsletter and feedback --------------------------------------------------------------------
    def _newsletter(self, req: Request, state: FormsState) -> Response:
        email, errors = req.form.get("email", "").strip(), {}
        if not req.is_read:
            if not email:
                errors["email"] = "Enter your email address."
            elif not _EMAIL_RE.match(email):
                errors["email"] = "Enter a valid email address, like name@example.com."
            if not self._fail(state, errors):
                state.subscribers.append(email)
                return redirect(req.url("/newsletter/thanks"))
        inner = text_field("email", "Email address", email, errors, type="email")
        body = render(
            "<h1>Newsletter sign-up</h1>\n<p>One letter a month. Unsubscribe at any time.</p>\n{s}{f}",
            s=error_summary(errors), f=self._form(req, "/newsletter", inner, "Subscribe"),
        )
        return self._page(req, "Newsletter sign-up", body, 422 if errors else 200)

    def _feedback(self, req: Request, state: FormsState) -> Response:
        rating, comment, errors = req.form.get("rating", ""), req.form.get("comments", "").strip(), {}
        if not req.is_read:
            if rating not in RATINGS:
                errors["rating"] = "Choose a rating."
            if not self._fail(state, errors):
                state.feedback.append({"rating": rating, "comments": comment})
                return redirect(req.url("/feedback/thanks"))
        inner = radio_group("rating", "How was your last support contact?", RATINGS, rating, errors) + text_field(
            "comments", "Comments (optional)", comment, errors, multiline=True
        )
        body = render("<h1>Feedback</h1>\n{s}{f}", s=error_summary(errors),
                      f=self._form(req, "/feedback", inner, "Send feedback"))
        return self._page(req, "Feedback", body, 422 if errors else 200)

    # -- tickets --------------------------------------------------------------------------------------
    def _tickets(self, req: Request, state: FormsState) -> Response:
        rows = join(
            render(
                '<tr><th scope="row"><a href="{h}">{id}</a></th><td>{subj}</td><td>{p}</td><td>{a}</td><td>{st}</td>'
                "<td>{btn}</td></tr>\n",
                h=req.url(f"/tickets/{t.id}"), id=t.id, subj=t.subject, p=t.priority, a=t.assignee, st=t.status,
                btn=render(
                    '<button type="button" class="secondary" aria-label="Close ticket {id}" data-close="{id}" '
                    'data-subject="{s}">Close</button>', id=t.id, s=t.subject,
                ) if t.status == "Open" else "—",
            )
            for t in state.tickets
        )
        notice = banner(f"Ticket {req.query['closed']} was closed.") if req.query.get("closed") else EMPTY
        body = render(
            '{style}<h1>Support tickets</h1>\n{n}<p><a class="button" href="{new}">New ticket</a></p>\n'
            '<table><caption>Support tickets</caption><thead><tr><th scope="col">Ticket</th><th scope="col">Subject</th>'
            '<th scope="col">Priority</th><th scope="col">Assignee</th><th scope="col">Status</th>'
            '<th scope="col">Action</th></tr></thead><tbody>{rows}</tbody></table>\n'
            '<dialog id="confirm-close" aria-labelledby="confirm-close-title">'
            '<h2 id="confirm-close-title">Close this ticket?</h2><p id="confirm-close-text"></p>'
            '<form method="post" id="confirm-close-form"><div class="actions">'
            '<button type="submit">Yes, close ticket</button>'
            '<button type="button" class="secondary" id="confirm-close-cancel">Cancel</button></div></form></dialog>\n'
            "<script>{js}</script>",
            style=_DIALOG_STYLE, n=notice, new=req.url("/tickets/new"), rows=rows, js=Html(_CLOSE_JS.replace("{base}", req.url("/tickets/"))),
        )
        return self._page(req, "Support tickets", body)

    def _close(self, req: Request, state: FormsState, ticket: Ticket) -> Response:
        if req.is_read:
            return redirect(req.url("/tickets"))
        ticket.status = "Closed"
        return redirect(req.url(f"/tickets?closed={ticket.id}"))

    def _ticket(self, req: Request, state: FormsState, ticket: Ticket) -> Response:
        errors: Errors = {}
        notice = banner(f"Ticket {ticket.id} was created.") if req.query.get("created") == "1" else EMPTY
        if not req.is_read:
            assignee = req.form.get("assignee", "")
            if assignee not in AGENTS:
                errors["assignee"] = "Choose someone from the list."
            if not self._fail(state, errors):
                ticket.assignee = assignee
                notice = banner(f"Ticket {ticket.id} is now assigned to {assignee}.")
        items = join(
            render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v)
            for k, v in (("Subject", ticket.subject), ("Category", ticket.category), ("Priority", ticket.priority),
                         ("Status", ticket.status), ("Assignee", ticket.assignee))
        )
        current = ticket.assignee if ticket.assignee in AGENTS else ""
        inner = select_field("assignee", "Assignee", AGENTS, current, errors, prompt="Choose an agent")
        body = render(
            '<h1>Ticket {id}</h1>\n{n}{s}<dl class="review">{items}</dl>\n<h2>Reassign</h2>\n{f}'
            '<p><a href="{back}">Back to tickets</a></p>',
            id=ticket.id, n=notice, s=error_summary(errors), items=items,
            f=self._form(req, f"/tickets/{ticket.id}", inner, "Save changes"), back=req.url("/tickets"),
        )
        return self._page(req, f"Ticket {ticket.id}", body, 422 if errors else 200)

    def _new_ticket(self, req: Request, state: FormsState) -> Response:
        f = {k: req.form.get(k, "").strip() for k in ("subject", "category", "priority", "description")}
        errors: Errors = {}
        if not req.is_read:
            if not 5 <= len(f["subject"]) <= 80:
                errors["subject"] = "Enter a subject of 5 to 80 characters."
            if f["category"] not in TICKET_CATEGORIES:
                errors["category"] = "Select a category."
            if f["priority"] not in PRIORITIES:
                errors["priority"] = "Choose a priority."
            if len(f["description"]) < 20:
                errors["description"] = "Describe the problem in at least 20 characters."
            if not self._fail(state, errors):
                number = 3001 + len(state.created_tickets)
                t = Ticket(f"TCK-{number}", f["subject"], f["priority"], f["category"], description=f["description"])
                state.tickets.append(t)
                state.created_tickets.append(t.id)
                return redirect(req.url(f"/tickets/{t.id}?created=1"))
        inner = join([
            text_field("subject", "Subject", f["subject"], errors),
            select_field("category", "Category", TICKET_CATEGORIES, f["category"], errors, prompt="Select a category"),
            radio_group("priority", "Priority", PRIORITIES, f["priority"], errors),
            text_field("description", "Description", f["description"], errors, multiline=True,
                       hint="What happened, and what did you expect?"),
        ])
        cancel = render('<a class="button secondary" href="{h}">Cancel</a>', h=req.url("/tickets"))
        body = render("<h1>New support ticket</h1>\n{s}{f}", s=error_summary(errors),
                      f=self._form(req, "/tickets/new", inner, "Submit ticket", cancel))
        return self._page(req, "New support ticket", body, 422 if errors else 200)

    # -- travel request: validate, then a confirmation dialog rendered by the server -------------------
    def _travel(self, req: Request, state: FormsState) -> Response:
        keys = ("destination", "depart", "return", "transport", "purpose")
        f = {k: req.form.get(k, "").strip() for k in keys}
        hotel = req.form.get("hotel") == "yes"
        errors: Errors = {}
        dialog = EMPTY
        if not req.is_read:
            state.travel_pending = None
            if len(f["destination"]) < 2:
                errors["destination"] = "Enter a destination."
            for k, label in (("depart", "departure"), ("return", "return")):
                if not _DATE_RE.match(f[k]) or not _valid_date(f[k]):
                    errors[k] = f"Enter the {label} date as YYYY-MM-DD."
            if "depart" not in errors and "return" not in errors and f["return"] < f["depart"]:
                errors["return"] = "The return date must be on or after the departure date."
            if f["transport"] not in TRANSPORT:
                errors["transport"] = "Choose how you will travel."
            if len(f["purpose"]) < 3:
                errors["purpose"] = "Enter the purpose of the trip."
            if not self._fail(state, errors):
                state.travel_pending = {**f, "hotel": "yes" if hotel else "no"}
                dialog = render(
                    '<div class="dialog" role="alertdialog" aria-modal="true" aria-labelledby="send-title" '
                    'aria-describedby="send-text"><h2 id="send-title">Send this travel request?</h2>'
                    '<p id="send-text">{d}, {a} to {b}, by {t}.</p>'
                    '<form method="post" action="{u}"><div class="actions"><button type="submit">Send request</button>'
                    '<a class="button secondary" href="{e}">Keep editing</a></div></form></div>\n',
                    d=f["destination"], a=f["depart"], b=f["return"], t=f["transport"].lower(),
                    u=req.url("/travel/confirm"), e=req.url("/travel"),
                )
        inner = join([
            text_field("destination", "Destination", f["destination"], errors),
            text_field("depart", "Departure date", f["depart"], errors, hint="YYYY-MM-DD"),
            text_field("return", "Return date", f["return"], errors, hint="YYYY-MM-DD"),
            select_field("transport", "Transport", TRANSPORT, f["transport"], errors, prompt="Choose transport"),
            checkbox("hotel", "I need a hotel", hotel),
            text_field("purpose", "Purpose of the trip", f["purpose"], errors),
        ])
        body = render("{style}<h1>Travel request</h1>\n{dialog}{s}{f}", style=_DIALOG_STYLE, dialog=dialog,
                      s=error_summary(errors), f=self._form(req, "/travel", inner, "Review request"))
        return self._page(req, "Travel request", body, 422 if errors else 200)

    def _travel_confirm(self, req: Request, state: FormsState) -> Response:
        if req.is_read:
            return redirect(req.url("/travel"))
        if state.travel_pending is None:
            return self._reject(req, state, "travel", "There is no travel request to send. Fill in the form first.")
        state.travel_requests.append(state.travel_pending)
        state.travel_pending = None
        return redirect(req.url("/travel/done"))

    def _reject(self, req: Request, state: FormsState, what: str, text: str) -> Response:
        state.rejected.append(what)
        body = render('<h1>Nothing to send</h1>\n<div class="alert" role="alert">{t}</div><p><a href="{u}">'
                      "Back to all forms</a></p>", t=text, u=req.url("/"))
        return self._page(req, "Nothing to send", body, 409)

    # -- expense claim wizard: details -> costs -> review (+ dialog) -> submit ----------------------------
    def _steps(self, n: int) -> Html:
        names = ("Your details", "The expense", "Review")
        items = join(
            render('<li{c}>{t}</li>', c=Html(' aria-current="step"') if i == n else "", t=f"Step {i + 1}: {t}")
            for i, t in enumerate(names)
        )
        return render('<ol class="steps" aria-label="Progress">{i}</ol>\n', i=items)

    def _expense_details(self, req: Request, state: FormsState) -> Response:
        f = {k: req.form.get(k, state.draft.get(k, "")).strip() for k in ("employee_id", "department")}
        errors: Errors = {}
        if not req.is_read:
            state.draft_steps, state.token = [], ""  # a new first step starts the claim over
            if not _EMPLOYEE_RE.match(f["employee_id"]):
                errors["employee_id"] = "Enter your employee ID, like E-12345."
            if f["department"] not in DEPARTMENTS:
                errors["department"] = "Select your department."
            if not self._fail(state, errors):
                state.draft.update(f)
                state.draft_steps = ["details"]
                return redirect(req.url("/expense/costs"))
        inner = text_field("employee_id", "Employee ID", f["employee_id"], errors, hint="Like E-12345") + select_field(
            "department", "Department", DEPARTMENTS, f["department"], errors, prompt="Select a department"
        )
        body = render("{style}<h1>Expense claim</h1>\n{steps}<h2>Your details</h2>\n{s}{f}", style=_DIALOG_STYLE,
                      steps=self._steps(0),
                      s=error_summary(errors), f=self._form(req, "/expense", inner, "Next"))
        return self._page(req, "Expense claim: your details", body, 422 if errors else 200)

    def _expense_costs(self, req: Request, state: FormsState) -> Response:
        if "details" not in state.draft_steps:
            return redirect(req.url("/expense"))
        keys = ("amount", "date", "type", "merchant")
        f = {k: req.form.get(k, state.draft.get(k, "")).strip() for k in keys}
        errors: Errors = {}
        if not req.is_read:
            state.draft_steps, state.token = ["details"], ""
            if not _AMOUNT_RE.match(f["amount"]) or _money(f["amount"]) <= 0:
                errors["amount"] = "Enter the amount in dollars, like 42.50."
            if not _DATE_RE.match(f["date"]) or not _valid_date(f["date"]) or not f["date"].startswith("2024"):
                errors["date"] = "Enter a date in 2024 as YYYY-MM-DD."
            if f["type"] not in EXPENSE_TYPES:
                errors["type"] = "Select the type of expense."
            if len(f["merchant"]) < 2:
                errors["merchant"] = "Enter where you spent the money."
            if not self._fail(state, errors):
                state.draft.update({**f, "amount": f"{_money(f['amount']):.2f}"})
                state.draft_steps = ["details", "costs"]
                return redirect(req.url("/expense/review"))
        inner = join([
            text_field("amount", "Amount", f["amount"], errors, hint="In dollars, like 42.50"),
            text_field("date", "Date of the expense", f["date"], errors, hint="YYYY-MM-DD"),
            select_field("type", "Expense type", EXPENSE_TYPES, f["type"], errors, prompt="Select a type"),
            text_field("merchant", "Merchant", f["merchant"], errors),
        ])
        back = render('<a class="button secondary" href="{h}">Back</a>', h=req.url("/expense"))
        body = render("{style}<h1>Expense claim</h1>\n{steps}<h2>The expense</h2>\n{s}{f}", style=_DIALOG_STYLE,
                      steps=self._steps(1),
                      s=error_summary(errors), f=self._form(req, "/expense/costs", inner, "Next", back))
        return self._page(req, "Expense claim: the expense", body, 422 if errors else 200)

    def _expense_review(self, req: Request, state: FormsState) -> Response:
        if state.draft_steps != ["details", "costs"]:
            return redirect(req.url("/expense"))
        state.token = secrets.token_hex(8)
        d = state.draft
        rows = (("Employee ID", d["employee_id"]), ("Department", d["department"]), ("Amount", f"${d['amount']}"),
                ("Date", d["date"]), ("Expense type", d["type"]), ("Merchant", d["merchant"]))
        items = join(render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in rows)
        body = render(
            '{style}<h1>Expense claim</h1>\n{steps}<h2>Review your claim</h2>\n<dl class="review">{items}</dl>\n'
            '<div class="actions"><button type="button" id="open-submit">Submit claim</button>'
            '<a class="button secondary" href="{edit}">Edit expense</a></div>\n'
            '<dialog id="confirm-submit" aria-labelledby="confirm-submit-title">'
            '<h2 id="confirm-submit-title">Submit this claim?</h2><p>You cannot change it after it is submitted.</p>'
            '<form method="post" action="{submit}"><input type="hidden" name="token" value="{token}">'
            '<div class="actions"><button type="submit">Yes, submit claim</button>'
            '<button type="button" class="secondary" id="cancel-submit">Cancel</button></div></form></dialog>\n'
            "<script>{js}</script>",
            style=_DIALOG_STYLE, steps=self._steps(2), items=items, edit=req.url("/expense/costs"),
            submit=req.url("/expense/submit"), token=state.token, js=Html(_SUBMIT_JS),
        )
        return self._page(req, "Expense claim: review", body)

    def _expense_submit(self, req: Request, state: FormsState) -> Response:
        if req.is_read:
            return redirect(req.url("/expense"))
        token = req.form.get("token", "")
        if state.draft_steps != ["details", "costs"] or not state.token or token != state.token:
            return self._reject(req, state, "expense", "There is no claim to submit. Complete the expense claim first.")
        ref = f"EXP-{random.Random(f'forms-claim:{state.seed}:{len(state.claims)}').randint(10000, 99999)}"
        state.claims.append({**{k: state.draft[k] for k in ("employee_id", "department", "amount", "date", "type",
                                                            "merchant")}, "reference": ref})
        state.draft, state.draft_steps, state.token = {}, [], ""
        body = render("<h1>Claim submitted</h1>\n{b}<p><a href=\"{u}\">Back to all forms</a></p>",
                      b=banner(f"Claim {ref} has been submitted for approval."), u=req.url("/"))
        return self._page(req, "Claim submitted", body)


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _money(text: str) -> float:
    return float(text.replace("$", "").replace(",", "").strip() or 0)


_DIALOG_STYLE = Html(
    "<style>dialog,.dialog{border:2px solid var(--accent);border-radius:8px;padding:1rem 1.5rem;background:#fff;"
    "max-width:30rem}.dialog{margin:0 0 1.5rem}dialog::backdrop{background:rgba(15,23,42,.45)}"
    ".steps{display:flex;flex-wrap:wrap;gap:.5rem 2rem;list-style:none;padding:0;color:var(--muted)}"
    ".steps [aria-current]{color:var(--fg);font-weight:700}</style>\n"
)

_CLOSE_JS = """
const dlg = document.getElementById('confirm-close');
document.querySelectorAll('button[data-close]').forEach(b => b.addEventListener('click', () => {
  document.getElementById('confirm-close-form').action = '{base}' + b.dataset.close + '/close';
  document.getElementById('confirm-close-title').textContent = 'Close ticket ' + b.dataset.close + '?';
  document.getElementById('confirm-close-text').textContent = b.dataset.subject;
  dlg.showModal();
}));
document.getElementById('confirm-close-cancel').addEventListener('click', () => dlg.close());
"""

_SUBMIT_JS = """
const dlg = document.getElementById('confirm-submit');
document.getElementById('open-submit').addEventListener('click', () => dlg.showModal());
document.getElementById('cancel-submit').addEventListener('click', () => dlg.close());
"""
