"""``accounts``: a login page plus a multi-field application form with server-side validation,
a review step and a confirmation page.

Pages (under ``/accounts``): ``/login``, ``/apply``, ``/review``, ``/confirm`` (POST only), ``/done``,
``/cancel``, ``/logout`` (POST only) and two harmless decoys, ``/forgot-password`` and ``/register``.
"""

from __future__ import annotations

import random
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from .base import (
    App,
    Html,
    Request,
    Response,
    attr,
    html_response,
    join,
    method_not_allowed,
    not_found,
    page,
    redirect,
    render,
)

SESSION_COOKIE = "agentrl_accounts_session"
COUNTRIES = ("Australia", "Brazil", "Canada", "France", "Germany", "India", "Japan", "Kenya")
PLANS = ("Basic", "Pro", "Enterprise")
FIELDS = ("full_name", "email", "phone", "country", "plan")
FIELD_LABELS = {
    "full_name": "Full name",
    "email": "Email",
    "phone": "Phone",
    "country": "Country",
    "plan": "Plan",
}

_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Maya",
    "Omar",
    "Lena",
    "Ravi",
    "Sofia",
    "Kenji",
    "Amara",
    "Lucas",
    "Ingrid",
    "Tomas",
    "Priya",
    "Diego",
    "Hana",
    "Felix",
    "Zara",
    "Noah",
    "Elena",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Okafor",
    "Haddad",
    "Novak",
    "Sharma",
    "Rossi",
    "Tanaka",
    "Mensah",
    "Silva",
    "Berg",
    "Kovacs",
    "Iyer",
    "Ortega",
    "Sato",
    "Weber",
    "Khan",
    "Fischer",
    "Petrova",
)
_ADJ = (
    "amber",
    "brisk",
    "calm",
    "dusty",
    "eager",
    "fuzzy",
    "gentle",
    "hazel",
    "icy",
    "jolly",
    "keen",
    "lucky",
)
_NOUN = (
    "falcon",
    "otter",
    "maple",
    "river",
    "comet",
    "badger",
    "willow",
    "harbor",
    "pebble",
    "lynx",
    "cedar",
)
_PW_WORDS = (
    "Orchid",
    "Granite",
    "Harbor",
    "Lantern",
    "Meadow",
    "Copper",
    "Summit",
    "Velvet",
    "Thistle",
    "Ember",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()./-]*$")


@dataclass
class AccountsState:
    """One episode's accounts data: seeded credentials/applicant plus everything the agent did."""

    seed: int
    username: str
    password: str
    applicant: dict[str, str]
    sessions: set[str] = field(default_factory=set)
    login_failures: int = 0
    login_successes: int = 0
    validation_failures: int = 0
    rejected_confirms: int = 0
    cancellations: int = 0
    pending: dict[str, Any] | None = None
    submissions: list[dict[str, Any]] = field(default_factory=list)
    decoy_visits: list[str] = field(default_factory=list)


def reference_for(seed: int, index: int) -> str:
    """Deterministic reference number of the ``index``-th (0-based) confirmed application of an episode."""
    return f"APP-{random.Random(f'agentrl-accounts-ref-{seed}-{index}').randint(10000, 99999)}"


def validate(values: dict[str, str], terms: bool) -> dict[str, str]:
    """Server-side validation. Returns ``{field: message}`` (empty when valid)."""
    errors: dict[str, str] = {}
    name = values["full_name"]
    if not name:
        errors["full_name"] = "Enter your full name."
    elif len(name) < 2 or len(name) > 100:
        errors["full_name"] = "Full name must be between 2 and 100 characters."
    email = values["email"]
    if not email:
        errors["email"] = "Enter your email address."
    elif not _EMAIL_RE.match(email):
        errors["email"] = "Enter a valid email address, like name@example.com."
    phone = values["phone"]
    digits = re.sub(r"\D", "", phone)
    if not phone:
        errors["phone"] = "Enter your phone number."
    elif not _PHONE_RE.match(phone) or not 7 <= len(digits) <= 15:
        errors["phone"] = (
            "Enter a valid phone number: 7 to 15 digits, with optional spaces, dashes or a leading +."
        )
    if not values["country"]:
        errors["country"] = "Select your country."
    elif values["country"] not in COUNTRIES:
        errors["country"] = "Select a country from the list."
    if not values["plan"]:
        errors["plan"] = "Choose a plan."
    elif values["plan"] not in PLANS:
        errors["plan"] = "Choose one of the listed plans."
    if not terms:
        errors["terms"] = "You must agree to the terms to continue."
    return errors


class AccountsApp(App):
    """Login + application form + review + confirmation, all state per episode."""

    name = "accounts"
    title = "Accounts"
    description = "Sign in and submit an application form (validation, review and confirmation steps)."

    # -- episode data -------------------------------------------------------------------------------
    def new_state(self, seed: int) -> AccountsState:
        rng = random.Random(f"agentrl-accounts-{seed}")
        username = f"{rng.choice(_ADJ)}{rng.choice(_NOUN)}{rng.randint(10, 99)}"
        password = f"{rng.choice(_PW_WORDS)}-{rng.choice(_NOUN)}-{rng.randint(1000, 9999)}"
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        applicant = {
            "full_name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{rng.choice(_EMAIL_DOMAINS)}",
            "phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
            "country": rng.choice(COUNTRIES),
            "plan": rng.choice(PLANS),
        }
        return AccountsState(seed=seed, username=username, password=password, applicant=applicant)

    def facts(self, state: AccountsState) -> dict[str, str]:
        return {
            "username": state.username,
            "password": state.password,
            **state.applicant,
            "reference": reference_for(state.seed, 0),
        }

    def public_state(self, state: AccountsState) -> dict[str, Any]:
        return {
            "logged_in": bool(state.sessions),
            "login_failures": state.login_failures,
            "login_successes": state.login_successes,
            "validation_failures": state.validation_failures,
            "rejected_confirms": state.rejected_confirms,
            "cancellations": state.cancellations,
            "pending": dict(state.pending) if state.pending is not None else None,
            "submissions": [dict(s) for s in state.submissions],
            "decoy_visits": list(state.decoy_visits),
        }

    # -- routing ------------------------------------------------------------------------------------
    def handle(self, req: Request, state: AccountsState) -> Response:
        path = req.path.rstrip("/") or "/"
        logged_in = req.cookies.get(SESSION_COOKIE, "") in state.sessions
        if path == "/":
            return redirect(req.url("/apply" if logged_in else "/login"))
        routes = {
            "/login": ("GET, POST", self._login),
            "/logout": ("POST", self._logout),
            "/apply": ("GET, POST", self._apply),
            "/review": ("GET", self._review),
            "/confirm": ("POST", self._confirm),
            "/done": ("GET", self._done),
            "/cancel": ("GET", self._cancel),
            "/forgot-password": ("GET", self._forgot),
            "/register": ("GET", self._register),
        }
        if path not in routes:
            return not_found(self.title)
        allow, handler = routes[path]
        method = "GET" if req.method == "HEAD" else req.method
        if method not in allow.split(", "):
            if path == "/confirm" and req.is_read:
                return redirect(req.url("/review"))
            return method_not_allowed(allow, self.title)
        if path not in ("/login", "/forgot-password", "/register") and not logged_in:
            return redirect(req.url("/login"))
        return handler(req, state)

    def _page(
        self,
        req: Request,
        state: AccountsState,
        title: str,
        body: Html,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        logged_in = req.cookies.get(SESSION_COOKIE, "") in state.sessions
        nav: list[tuple[str, str]] = [("Application form", req.url("/apply"))] if logged_in else []
        user = Html("")
        if logged_in:
            user = render(
                '<div class="user"><span>Signed in as <strong>{u}</strong></span>'
                '<form method="post" action="{action}"><button type="submit">Sign out</button></form></div>',
                u=state.username,
                action=req.url("/logout"),
            )
        return html_response(
            page(title, body, app_title=self.title, nav=nav, user_area=user), status, headers or []
        )

    # -- login / logout -----------------------------------------------------------------------------
    def _login(self, req: Request, state: AccountsState) -> Response:
        if req.is_read:
            if req.cookies.get(SESSION_COOKIE, "") in state.sessions:
                return redirect(req.url("/apply"))
            return self._login_page(req, state, username="", failed=False)
        username = req.form.get("username", "").strip()
        password = req.form.get("password", "")
        if username == state.username and password == state.password:
            token = secrets.token_urlsafe(18)
            state.sessions.add(token)
            state.login_successes += 1
            cookie = f"{SESSION_COOKIE}={token}; Path={req.prefix}; HttpOnly; SameSite=Lax"
            return redirect(req.url("/apply"), headers=[("Set-Cookie", cookie)])
        state.login_failures += 1
        return self._login_page(req, state, username=username, failed=True)

    def _login_page(self, req: Request, state: AccountsState, username: str, failed: bool) -> Response:
        invalid = {"aria-invalid": "true", "aria-describedby": "login-error"} if failed else {}
        extra = join(attr(k, v) for k, v in invalid.items())
        body = render(
            "<h1>Sign in</h1>\n{alert}"
            '<form method="post" action="{action}" novalidate>\n'
            '<div class="field"><label for="username">Username</label>\n'
            '<input type="text" id="username" name="username" autocomplete="username" required value="{u}"{extra}>'
            "</div>\n"
            '<div class="field"><label for="password">Password</label>\n'
            '<input type="password" id="password" name="password" autocomplete="current-password" required{extra}>'
            "</div>\n"
            '<div class="actions"><button type="submit">Sign in</button></div>\n</form>\n'
            '<p><a href="{forgot}">Forgot password?</a> · <a href="{register}">Create account</a></p>',
            alert=Html(
                '<div class="alert" id="login-error" role="alert">Invalid username or password</div>\n'
            )
            if failed
            else Html(""),
            action=req.url("/login"),
            u=username,
            extra=extra,
            forgot=req.url("/forgot-password"),
            register=req.url("/register"),
        )
        return self._page(req, state, "Sign in", body)

    def _logout(self, req: Request, state: AccountsState) -> Response:
        state.sessions.discard(req.cookies.get(SESSION_COOKIE, ""))
        cookie = f"{SESSION_COOKIE}=; Path={req.prefix}; Max-Age=0; HttpOnly; SameSite=Lax"
        return redirect(req.url("/login"), headers=[("Set-Cookie", cookie)])

    # -- application form ---------------------------------------------------------------------------
    def _apply(self, req: Request, state: AccountsState) -> Response:
        if req.is_read:
            values = (
                {f: str(state.pending[f]) for f in FIELDS} if state.pending else dict.fromkeys(FIELDS, "")
            )
            terms = bool(state.pending and state.pending.get("terms"))
            return self._form_page(req, state, values, terms, {})
        values = {f: req.form.get(f, "").strip() for f in FIELDS}
        terms = req.form.get("terms", "") != ""
        errors = validate(values, terms)
        state.pending = None  # any new submission of the form must be validated again
        if errors:
            state.validation_failures += 1
            return self._form_page(req, state, values, terms, errors)
        state.pending = {**values, "terms": True}
        return redirect(req.url("/review"))

    def _form_page(
        self, req: Request, state: AccountsState, values: dict[str, str], terms: bool, errors: dict[str, str]
    ) -> Response:
        def described(name: str, hint: bool = False) -> Html:
            ids = ([f"{name}-hint"] if hint else []) + ([f"{name}-error"] if name in errors else [])
            return attr("aria-describedby", " ".join(ids) or None) + attr(
                "aria-invalid", name in errors and "true"
            )

        def error(name: str) -> Html:
            if name not in errors:
                return Html("")
            return render('<p class="error" id="{n}-error" role="alert">{m}</p>\n', n=name, m=errors[name])

        def text_field(name: str, kind: str, autocomplete: str, hint: str = "") -> Html:
            return render(
                '<div class="field"><label for="{n}">{label}</label>\n{hint}{error}'
                '<input type="{kind}" id="{n}" name="{n}" autocomplete="{ac}" required value="{v}"{desc}></div>\n',
                n=name,
                label=FIELD_LABELS[name],
                kind=kind,
                ac=autocomplete,
                v=values[name],
                hint=render('<p class="hint" id="{n}-hint">{h}</p>\n', n=name, h=hint) if hint else Html(""),
                error=error(name),
                desc=described(name, bool(hint)),
            )

        options = join(
            render('<option value="{c}"{sel}>{c}</option>', c=c, sel=attr("selected", values["country"] == c))
            for c in COUNTRIES
        )
        radios = join(
            render(
                '<div class="choice"><input type="radio" id="plan-{low}" name="plan" value="{p}"{chk}{inv}>'
                '<label for="plan-{low}">{p}</label></div>\n',
                low=p.lower(),
                p=p,
                chk=attr("checked", values["plan"] == p),
                inv=attr("aria-invalid", "plan" in errors and "true"),
            )
            for p in PLANS
        )
        summary = Html("")
        if errors:
            summary = render(
                '<div class="alert"><h2>There is a problem</h2><p>{n} of the fields below need attention.</p></div>\n',
                n=str(len(errors)),
            )
        body = render(
            "<h1>Application details</h1>\n{summary}"
            "<p>All fields are required. You can review your answers before you submit.</p>\n"
            '<form method="post" action="{action}" novalidate>\n{name}{email}{phone}'
            '<div class="field"><label for="country">Country</label>\n{cerr}'
            '<select id="country" name="country" required{cdesc}>'
            '<option value=""{nosel}>Select a country</option>{options}</select></div>\n'
            "<fieldset{pdesc}><legend>Plan</legend>\n{perr}{radios}</fieldset>\n"
            '<div class="field">{terr}<div class="choice">'
            '<input type="checkbox" id="terms" name="terms" value="yes" required{tchk}{tdesc}>'
            '<label for="terms">I agree to the terms</label></div></div>\n'
            '<div class="actions"><button type="submit">Continue</button>'
            '<a class="button secondary" href="{cancel}">Cancel</a></div>\n</form>',
            summary=summary,
            action=req.url("/apply"),
            name=text_field("full_name", "text", "name"),
            email=text_field("email", "email", "email", "We will send the confirmation to this address."),
            phone=text_field("phone", "tel", "tel", "Include the country code, for example +1 555 123 4567."),
            cerr=error("country"),
            cdesc=described("country"),
            nosel=attr("selected", values["country"] not in COUNTRIES),
            options=options,
            perr=error("plan"),
            pdesc=attr("aria-describedby", "plan" in errors and "plan-error"),
            radios=radios,
            terr=error("terms"),
            tchk=attr("checked", terms),
            tdesc=described("terms"),
            cancel=req.url("/cancel"),
        )
        return self._page(req, state, "Application details", body)

    # -- review / confirm / done --------------------------------------------------------------------
    def _review(self, req: Request, state: AccountsState) -> Response:
        if state.pending is None:
            return redirect(req.url("/apply"))
        rows = join(
            render("<dt>{label}</dt><dd>{value}</dd>\n", label=FIELD_LABELS[f], value=state.pending[f])
            for f in FIELDS
        )
        body = render(
            "<h1>Review your application</h1>\n<p>Check your details, then confirm to submit.</p>\n"
            '<dl class="review">\n{rows}<dt>Terms</dt><dd>Accepted</dd>\n</dl>\n'
            '<div class="actions"><form method="post" action="{confirm}"><button type="submit">Confirm</button></form>'
            '<form method="get" action="{apply}"><button type="submit" class="secondary">Edit</button></form></div>',
            rows=rows,
            confirm=req.url("/confirm"),
            apply=req.url("/apply"),
        )
        return self._page(req, state, "Review your application", body)

    def _confirm(self, req: Request, state: AccountsState) -> Response:
        if state.pending is None:
            state.rejected_confirms += 1
            body = render(
                "<h1>Nothing to confirm</h1>\n"
                '<div class="alert" role="alert">There is no application to confirm. '
                "Fill in the application form first.</div>\n"
                '<p><a href="{apply}">Go to the application form</a></p>',
                apply=req.url("/apply"),
            )
            return self._page(req, state, "Nothing to confirm", body, status=409)
        submission = {**state.pending, "reference": reference_for(state.seed, len(state.submissions))}
        state.submissions.append(submission)
        state.pending = None
        return redirect(req.url("/done"))

    def _done(self, req: Request, state: AccountsState) -> Response:
        if not state.submissions:
            return redirect(req.url("/apply"))
        last = state.submissions[-1]
        body = render(
            "<h1>Application submitted</h1>\n"
            '<p class="status" role="status">Your reference number is <strong>{ref}</strong>.</p>\n'
            "<p>A confirmation has been sent to {email}.</p>\n"
            '<p><a href="{apply}">Start a new application</a></p>',
            ref=last["reference"],
            email=last["email"],
            apply=req.url("/apply"),
        )
        return self._page(req, state, "Application submitted", body)

    # -- decoys -------------------------------------------------------------------------------------
    def _cancel(self, req: Request, state: AccountsState) -> Response:
        state.pending = None
        state.cancellations += 1
        state.decoy_visits.append("cancel")
        body = render(
            "<h1>Application cancelled</h1>\n<p>Your application was not submitted.</p>\n"
            '<p><a href="{apply}">Start a new application</a></p>',
            apply=req.url("/apply"),
        )
        return self._page(req, state, "Application cancelled", body)

    def _forgot(self, req: Request, state: AccountsState) -> Response:
        state.decoy_visits.append("forgot-password")
        body = render(
            "<h1>Reset your password</h1>\n"
            "<p>Password resets are handled by your administrator. Your password has not been changed.</p>\n"
            '<p><a href="{login}">Back to sign in</a></p>',
            login=req.url("/login"),
        )
        return self._page(req, state, "Reset your password", body)

    def _register(self, req: Request, state: AccountsState) -> Response:
        state.decoy_visits.append("register")
        body = render(
            "<h1>Create an account</h1>\n<p>New accounts are created by invitation only.</p>\n"
            '<p><a href="{login}">Back to sign in</a></p>',
            login=req.url("/login"),
        )
        return self._page(req, state, "Create an account", body)
