"""``settings``: a settings panel with tabs, switches, selects, radios and text fields, saved server-side.

Pages (under ``/settings``): ``/`` (``?tab=general|notifications|privacy|account``), ``/save`` (POST),
``/reset`` (POST, the "Reset to defaults" decoy) and ``/delete-account`` (a harmless decoy page).
A change counts only once **Save changes** has posted it and the server has validated it: toggling a
switch in the page changes nothing on the server. Each tab's form saves only that tab's fields.

>>> app = SettingsApp()
>>> state = app.new_state(3)
>>> facts = app.facts(state)
>>> facts["target_timezone"] != facts["timezone"]
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
    attr,
    html_response,
    join,
    method_not_allowed,
    not_found,
    page,
    redirect,
    render,
)

TABS = {"general": "General", "notifications": "Notifications", "privacy": "Privacy", "account": "Account"}
LANGUAGES = ("English", "German", "Spanish", "French", "Japanese", "Portuguese")
TIMEZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
)
DATE_FORMATS = ("YYYY-MM-DD", "DD/MM/YYYY", "MM/DD/YYYY")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
VISIBILITY = ("Public", "Team only", "Private")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_NAMES = ("Ada", "Grace", "Maya", "Omar", "Lena", "Ravi", "Sofia", "Kenji", "Amara", "Lucas", "Priya", "Diego")


@dataclass(frozen=True)
class Setting:
    """One setting: its key (in the state and the form), label, tab, control kind and allowed options."""

    key: str
    label: str
    tab: str
    kind: str  # select | switch | checkbox | radio | text | email
    options: tuple[str, ...] = ()
    hint: str = ""


SETTINGS = (
    Setting("language", "Language", "general", "select", LANGUAGES),
    Setting("timezone", "Time zone", "general", "select", TIMEZONES),
    Setting("date_format", "Date format", "general", "select", DATE_FORMATS),
    Setting("email_notifications", "Email notifications", "notifications", "switch"),
    Setting("push_notifications", "Push notifications", "notifications", "switch"),
    Setting("weekly_digest", "Weekly digest", "notifications", "switch"),
    Setting("product_updates", "Product updates", "notifications", "switch"),
    Setting("digest_day", "Digest day", "notifications", "select", DAYS),
    Setting("visibility", "Profile visibility", "privacy", "radio", VISIBILITY),
    Setting("online_status", "Show online status", "privacy", "switch"),
    Setting("share_usage", "Share anonymous usage data", "privacy", "checkbox"),
    Setting("display_name", "Display name", "account", "text", hint="2 to 40 characters."),
    Setting("recovery_email", "Recovery email", "account", "email", hint="Used only to recover your account."),
)
BY_KEY = {s.key: s for s in SETTINGS}
SWITCHES = tuple(s.key for s in SETTINGS if s.tab == "notifications" and s.kind == "switch")


@dataclass
class SettingsState:
    values: dict[str, Any]
    targets: dict[str, str]
    defaults: dict[str, Any]  # what "Reset to defaults" restores: never a task's target value
    flash: str | None = None  # "saved" or "reset": the notice shown once on the next page
    saves: int = 0
    resets: int = 0
    validation_failures: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    decoy_visits: list[str] = field(default_factory=list)


def validate(tab: str, form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(new values of `tab`'s settings, {key: error message}) from a posted form."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for s in SETTINGS:
        if s.tab != tab:
            continue
        raw = form.get(s.key, "").strip()
        if s.kind in ("switch", "checkbox"):
            values[s.key] = raw != ""
        elif s.kind in ("select", "radio"):
            if raw not in s.options:
                errors[s.key] = f"Choose a {s.label.lower()} from the list."
            values[s.key] = raw
        elif s.kind == "text":
            if not 2 <= len(raw) <= 40:
                errors[s.key] = "Enter a display name of 2 to 40 characters."
            values[s.key] = raw
        else:
            if raw and not _EMAIL_RE.match(raw):
                errors[s.key] = "Enter a valid email address, like name@example.com."
            values[s.key] = raw
    return values, errors


class SettingsApp(App):
    """Tabs of settings persisted per episode; only a validated Save changes them."""

    name = "settings"
    title = "Settings"
    description = "A settings panel: tabs, switches, selects; Save changes persists them on the server."

    def new_state(self, seed: int) -> SettingsState:
        rng = random.Random(f"settings:{seed}")
        on = set(rng.sample(SWITCHES, 2))
        first = rng.choice(_NAMES)
        values = {
            "language": rng.choice(LANGUAGES),
            "timezone": rng.choice(TIMEZONES),
            "date_format": rng.choice(DATE_FORMATS),
            **{k: k in on for k in SWITCHES},
            "digest_day": rng.choice(DAYS),
            "visibility": rng.choice(VISIBILITY),
            "online_status": rng.random() < 0.5,
            "share_usage": rng.random() < 0.5,
            "display_name": f"{first} {rng.choice('BCDFGHKLMNPRST')}.",
            "recovery_email": f"{first.lower()}.backup{rng.randint(1, 99)}@example.org",
        }

        def other(key: str) -> str:
            return rng.choice([o for o in BY_KEY[key].options if o != values[key]])

        off_key = rng.choice([k for k in SWITCHES if not values[k]])
        on_key = rng.choice([k for k in SWITCHES if values[k]])
        new_first = rng.choice([n for n in _NAMES if n != first])
        targets = {
            "target_language": other("language"),
            "target_timezone": other("timezone"),
            "target_date_format": other("date_format"),
            "target_digest_day": other("digest_day"),
            "target_visibility": other("visibility"),
            "off_switch_key": off_key,
            "off_switch": BY_KEY[off_key].label,
            "on_switch_key": on_key,
            "on_switch": BY_KEY[on_key].label,
            "target_display_name": f"{new_first} {rng.choice(_NAMES)}",
            "target_recovery_email": f"{new_first.lower()}.{rng.randint(100, 999)}@example.net",
            # the opposite of the current online status: "turn {online_status_flip} Show online status"
            "online_status_flip": "off" if values["online_status"] else "on",
            "online_status_flip_value": str(not values["online_status"]),
        }
        # Organisation defaults differ from every target, so the "Reset to defaults" decoy never completes a task.
        defaults = {
            **values,
            **{k: rng.choice([o for o in BY_KEY[k].options if o != targets[f"target_{k}"]])
               for k in ("language", "timezone", "date_format", "digest_day", "visibility")},
            off_key: False,
            on_key: True,
            "display_name": "New user",
            "recovery_email": "",
        }
        return SettingsState(values=values, targets=targets, defaults=defaults)

    def facts(self, state: SettingsState) -> dict[str, str]:
        shown = {k: ("on" if v else "off") if isinstance(v, bool) else v for k, v in state.values.items()}
        return {**shown, **state.targets}

    def public_state(self, state: SettingsState) -> dict[str, Any]:
        return {
            "values": dict(state.values),
            "saves": state.saves,
            "resets": state.resets,
            "validation_failures": state.validation_failures,
            "history": [dict(h) for h in state.history],
            "decoy_visits": list(state.decoy_visits),
        }

    # -- routing ------------------------------------------------------------------------------------
    def handle(self, req: Request, state: SettingsState) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == "/":
            if not req.is_read:
                return method_not_allowed("GET", self.title)
            tab = req.query.get("tab", "general")
            if tab not in TABS:
                return not_found(self.title)
            flash, state.flash = state.flash, None
            return self._page(req, tab, dict(state.values), {}, flash)
        if path in ("/save", "/reset"):
            if req.method != "POST":
                return method_not_allowed("POST", self.title)
            return self._save(req, state) if path == "/save" else self._reset(req, state)
        if path == "/delete-account" and req.is_read:
            state.decoy_visits.append("delete-account")
            body = render(
                "<h1>Delete your account</h1>\n<p>Account deletion is handled by your administrator. "
                'Nothing has been deleted.</p>\n<p><a href="{back}">Back to settings</a></p>',
                back=req.url("/?tab=account"),
            )
            return html_response(page("Delete your account", body, app_title=self.title))
        return not_found(self.title)

    def _save(self, req: Request, state: SettingsState) -> Response:
        tab = req.form.get("tab", "")
        if tab not in TABS:
            state.validation_failures += 1
            return self._page(req, "general", dict(state.values), {"tab": "Unknown settings section."}, None)
        values, errors = validate(tab, req.form)
        if errors:
            state.validation_failures += 1
            return self._page(req, tab, {**state.values, **values}, errors, None)
        changed = {k: v for k, v in values.items() if state.values[k] != v}
        state.values.update(values)
        state.saves += 1
        state.history.append({"tab": tab, "changed": changed})
        state.flash = "saved"
        return redirect(req.url(f"/?tab={tab}"))

    def _reset(self, req: Request, state: SettingsState) -> Response:
        state.values = dict(state.defaults)
        state.resets += 1
        state.flash = "reset"
        tab = req.form.get("tab", "")
        return redirect(req.url(f"/?tab={tab if tab in TABS else 'general'}"))

    # -- rendering ----------------------------------------------------------------------------------
    def _page(
        self, req: Request, tab: str, values: dict[str, Any], errors: dict[str, str], flash: str | None
    ) -> Response:
        tabs = join(
            render(
                '<a role="tab" id="tab-{t}" href="{href}" aria-selected="{sel}" aria-controls="panel-{t}"{cur}>'
                "{label}</a>",
                t=t,
                href=req.url(f"/?tab={t}"),
                sel="true" if t == tab else "false",
                cur=attr("class", "current" if t == tab else None),
                label=label,
            )
            for t, label in TABS.items()
        )
        notice = Html("")
        if flash == "saved":
            notice = Html('<p class="status" role="status">Changes saved.</p>\n')
        elif flash == "reset":
            notice = Html('<p class="status" role="status">All settings were reset to their defaults.</p>\n')
        elif errors:
            notice = render(
                '<div class="alert" role="alert"><h2>Your changes were not saved</h2><p>{n} setting(s) need '
                "attention.</p></div>\n",
                n=str(len(errors)),
            )
        controls = join(_control(s, values[s.key], errors.get(s.key)) for s in SETTINGS if s.tab == tab)
        extra = Html("")
        if tab == "account":
            extra = render('<p><a href="{href}">Delete account</a></p>\n', href=req.url("/delete-account"))
        body = render(
            "<h1>Settings</h1>\n{notice}"
            '<div role="tablist" aria-label="Settings sections" class="tabs">{tabs}</div>\n'
            '<section role="tabpanel" id="panel-{tab}" aria-labelledby="tab-{tab}">\n'
            '<h2>{label}</h2>\n<form method="post" action="{save}" novalidate>\n'
            '<input type="hidden" name="tab" value="{tab}">\n{controls}'
            '<div class="actions"><button type="submit">Save changes</button>'
            '<a class="button secondary" href="{cancel}">Cancel</a></div>\n</form>\n'
            '<form method="post" action="{reset}" class="danger"><input type="hidden" name="tab" value="{tab}">'
            '<button type="submit" class="secondary">Reset to defaults</button></form>\n{extra}</section>',
            notice=notice,
            tabs=tabs,
            tab=tab,
            label=TABS[tab],
            save=req.url("/save"),
            controls=controls,
            cancel=req.url(f"/?tab={tab}"),
            reset=req.url("/reset"),
            extra=extra,
        )
        style = Html(
            "<style>.tabs{display:flex;gap:.25rem;border-bottom:2px solid var(--border);margin:1rem 0}"
            ".tabs a{padding:.5rem 1rem;text-decoration:none;color:var(--fg);border-radius:6px 6px 0 0}"
            ".tabs a.current{background:var(--accent);color:#fff}"
            ".danger{margin-top:1.5rem;padding-top:1rem;border-top:1px solid var(--border)}"
            "input[role=switch]{width:2.2rem;height:1.2rem;accent-color:var(--ok)}</style>\n"
        )
        return html_response(page(f"{TABS[tab]} settings", style + body, app_title=self.title))


def _control(s: Setting, value: Any, error: str | None) -> Html:
    err = render('<p class="error" id="{k}-error" role="alert">{m}</p>\n', k=s.key, m=error) if error else Html("")
    invalid = attr("aria-invalid", "true" if error else None) + attr(
        "aria-describedby", f"{s.key}-error" if error else None
    )
    if s.kind in ("switch", "checkbox"):
        return render(
            '<div class="field">{err}<div class="choice"><input type="checkbox"{role} id="{k}" name="{k}" value="on"'
            '{chk}{inv}><label for="{k}">{label}</label></div></div>\n',
            err=err,
            role=attr("role", "switch" if s.kind == "switch" else None),
            k=s.key,
            chk=attr("checked", bool(value)),
            inv=invalid,
            label=s.label,
        )
    if s.kind == "select":
        options = join(
            render('<option value="{o}"{sel}>{o}</option>', o=o, sel=attr("selected", o == value)) for o in s.options
        )
        return render(
            '<div class="field"><label for="{k}">{label}</label>\n{err}<select id="{k}" name="{k}"{inv}>{options}'
            "</select></div>\n",
            k=s.key,
            label=s.label,
            err=err,
            inv=invalid,
            options=options,
        )
    if s.kind == "radio":
        radios = join(
            render(
                '<div class="choice"><input type="radio" id="{k}-{i}" name="{k}" value="{o}"{chk}>'
                '<label for="{k}-{i}">{o}</label></div>\n',
                k=s.key,
                i=str(i),
                o=o,
                chk=attr("checked", o == value),
            )
            for i, o in enumerate(s.options)
        )
        return render(
            '<fieldset{inv}><legend>{label}</legend>\n{err}{radios}</fieldset>\n',
            inv=invalid,
            label=s.label,
            err=err,
            radios=radios,
        )
    return render(
        '<div class="field"><label for="{k}">{label}</label>\n<p class="hint" id="{k}-hint">{hint}</p>\n{err}'
        '<input type="{kind}" id="{k}" name="{k}" value="{v}"{inv}></div>\n',
        k=s.key,
        label=s.label,
        hint=s.hint,
        err=err,
        kind="email" if s.kind == "email" else "text",
        v=value,
        inv=attr("aria-describedby", f"{s.key}-hint" + (f" {s.key}-error" if error else ""))
        + attr("aria-invalid", "true" if error else None),
    )
