"""The sandbox server and its apps over real HTTP on 127.0.0.1 (http.client, cookies handled by hand)."""

from __future__ import annotations

import csv
import http.client
import io
import itertools
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from http.cookies import SimpleCookie
from typing import Any

import pytest
from agentrl.sandbox import ADMIN_HEADER, EPISODE_HEADER, SandboxClient, SandboxError, SandboxServer
from agentrl.sandbox.apps import App, Request, Response
from agentrl.sandbox.apps.accounts import COUNTRIES, PLANS

_ids = itertools.count()


@dataclass
class Resp:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")


class Browser:
    """A tiny HTTP client: one cookie jar, the episode header on every request, no redirect following."""

    def __init__(self, server: SandboxServer, episode: str | None) -> None:
        self.server = server
        self.episode = episode
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Resp:
        hdrs = dict(headers or {})
        if self.episode is not None:
            hdrs[EPISODE_HEADER] = self.episode
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            raw = conn.getresponse()
            resp = Resp(raw.status, raw.headers, raw.read())
        finally:
            conn.close()
        for line in resp.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return resp

    def get(self, path: str) -> Resp:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> Resp:
        return self.request("POST", path, form=form)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as srv:
        yield srv


@pytest.fixture
def episode(server: SandboxServer) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    eid = f"test-{next(_ids)}"
    facts = server.open_episode(eid, seed=1234)
    yield eid, facts
    server.close_episode(eid)


def login(browser: Browser, facts: dict[str, dict[str, str]]) -> Resp:
    acc = facts["accounts"]
    return browser.post("/accounts/login", {"username": acc["username"], "password": acc["password"]})


def valid_form(facts: dict[str, dict[str, str]]) -> dict[str, str]:
    acc = facts["accounts"]
    return {k: acc[k] for k in ("full_name", "email", "phone", "country", "plan")} | {"terms": "yes"}


def admin(
    server: SandboxServer, method: str, path: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers[ADMIN_HEADER] = token
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# -- admin API ---------------------------------------------------------------------------------------
def test_admin_api_requires_token(server: SandboxServer, episode: tuple[str, Any]) -> None:
    eid, _ = episode
    body = json.dumps({"episode_id": "sneaky", "seed": 1}).encode()
    for token in (None, "wrong", server.admin_token[:-1]):
        assert admin(server, "POST", "/__agentrl/episodes", body, token)[0] == 403
        assert admin(server, "GET", f"/__agentrl/episodes/{eid}/state", token=token)[0] == 403
        assert admin(server, "DELETE", f"/__agentrl/episodes/{eid}", token=token)[0] == 403
    assert "sneaky" not in server.episode_ids() and eid in server.episode_ids()
    # an agent in the browser (episode header, no admin token) cannot reach it either
    assert Browser(server, eid).request("POST", "/__agentrl/episodes", body=body).status == 403
    with pytest.raises(SandboxError) as err:
        SandboxClient(server.origin, "not-the-token").episode_state(eid)
    assert err.value.status == 403


def test_admin_api_open_state_close_over_http(server: SandboxServer) -> None:
    client = SandboxClient(server.origin, server.admin_token)
    assert {"accounts", "reports"} <= set(client.health()["apps"])
    facts = client.open_episode("http-ep", 77)
    assert facts == server.episode_facts("http-ep") == client.episode_facts("http-ep")
    assert set(facts["accounts"]) >= {
        "username",
        "password",
        "full_name",
        "email",
        "phone",
        "country",
        "plan",
    }
    assert set(facts["reports"]) >= {
        "report_title",
        "report_slug",
        "csv_filename",
        "total",
        "row_count",
        "top_item",
    }
    assert all(isinstance(v, str) for app in facts.values() for v in app.values())
    state = client.episode_state("http-ep")
    assert state["accounts"] == server.episode_state("http-ep")["accounts"]
    assert state["accounts"]["logged_in"] is False and state["accounts"]["submissions"] == []
    assert state["reports"]["downloads"] == []
    assert client.close_episode("http-ep") is True
    assert client.close_episode("http-ep") is False
    with pytest.raises(KeyError):
        client.episode_state("http-ep")
    with pytest.raises(KeyError):
        server.episode_state("http-ep")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"seed": 1}', "episode_id"),
        (b'{"episode_id": "x"}', "seed"),
        (b'{"episode_id": "x", "seed": "3"}', "seed"),
        (b'{"episode_id": "x", "seed": true}', "seed"),
        (b'{"episode_id": "a/b", "seed": 3}', "episode_id"),
        (b'{"episode_id": "", "seed": 3}', "episode_id"),
    ],
)
def test_admin_api_bad_requests_name_the_field(server: SandboxServer, body: bytes, field: str) -> None:
    status, data = admin(server, "POST", "/__agentrl/episodes", body, server.admin_token)
    assert status == 400
    assert data["field"] == field and data["error"]
    with pytest.raises(ValueError):
        SandboxClient(server.origin, server.admin_token).open_episode("a/b", 1)


def test_same_seed_same_facts_and_pages_different_seeds_differ(server: SandboxServer) -> None:
    a, b = server.open_episode("det-a", 42), server.open_episode("det-b", 42)
    assert a == b
    slug = a["reports"]["report_slug"]
    assert (
        Browser(server, "det-a").get(f"/reports/{slug}").body
        == Browser(server, "det-b").get(f"/reports/{slug}").body
    )
    many = [server.open_episode(f"det-{seed}", seed) for seed in range(8)]
    for app, key in [
        ("accounts", "username"),
        ("accounts", "password"),
        ("accounts", "full_name"),
        ("reports", "report_title"),
        ("reports", "total"),
    ]:
        assert len({f[app][key] for f in many}) >= 5, key
    assert {f["accounts"]["country"] for f in many} <= set(COUNTRIES)
    assert {f["accounts"]["plan"] for f in many} <= set(PLANS)
    for eid in ["det-a", "det-b", *(f"det-{s}" for s in range(8))]:
        server.close_episode(eid)


def test_reopening_an_episode_wipes_its_state(server: SandboxServer, episode: tuple[str, Any]) -> None:
    eid, facts = episode
    br = Browser(server, eid)
    assert login(br, facts).status == 303
    assert server.episode_state(eid)["accounts"]["logged_in"] is True
    assert server.open_episode(eid, 1234) == facts
    assert server.episode_state(eid)["accounts"]["logged_in"] is False
    assert br.get("/accounts/apply").location == "/accounts/login"  # the old session cookie is void


# -- accounts -----------------------------------------------------------------------------------------
def test_login_failure_and_success(server: SandboxServer, episode: tuple[str, Any]) -> None:
    eid, facts = episode
    br = Browser(server, eid)
    page = br.get("/accounts/login")
    assert page.status == 200
    for needle in (
        '<label for="username">Username</label>',
        '<label for="password">Password</label>',
        '<button type="submit">Sign in</button>',
        ">Forgot password?</a>",
        ">Create account</a>",
    ):
        assert needle in page.text
    assert br.get("/accounts/apply").location == "/accounts/login"  # login required
    bad = br.post("/accounts/login", {"username": facts["accounts"]["username"], "password": "nope"})
    assert bad.status == 200 and 'role="alert">Invalid username or password<' in bad.text
    assert (
        f'value="{facts["accounts"]["username"]}"' in bad.text
        and "agentrl_accounts_session" not in br.cookies
    )
    state = server.episode_state(eid)["accounts"]
    assert state["login_failures"] == 1 and state["logged_in"] is False
    ok = login(br, facts)
    assert ok.status == 303 and ok.location == "/accounts/apply" and "agentrl_accounts_session" in br.cookies
    assert "HttpOnly" in ok.headers["Set-Cookie"]
    form = br.get("/accounts/apply")
    assert form.status == 200 and "<h1>Application details</h1>" in form.text
    assert server.episode_state(eid)["accounts"]["logged_in"] is True
    assert br.get("/accounts/login").location == "/accounts/apply"
    assert br.post("/accounts/logout", {}).location == "/accounts/login"
    assert (
        "agentrl_accounts_session" not in br.cookies
        and server.episode_state(eid)["accounts"]["logged_in"] is False
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("full_name", "", "Enter your full name."),
        ("email", "", "Enter your email address."),
        ("email", "not-an-email", "Enter a valid email address"),
        ("email", "a@b", "Enter a valid email address"),
        ("phone", "", "Enter your phone number."),
        ("phone", "555-CALL-NOW", "Enter a valid phone number"),
        ("phone", "12 34", "Enter a valid phone number"),
        ("country", "", "Select your country."),
        ("country", "Atlantis", "Select a country from the list."),
        ("plan", "", "Choose a plan."),
        ("plan", "Platinum", "Choose one of the listed plans."),
        ("terms", None, "You must agree to the terms to continue."),
    ],
)
def test_each_validation_rule(
    server: SandboxServer, episode: tuple[str, Any], field: str, value: str | None, message: str
) -> None:
    eid, facts = episode
    br = Browser(server, eid)
    login(br, facts)
    form = valid_form(facts)
    if value is None:
        del form[field]
    else:
        form[field] = value
    resp = br.post("/accounts/apply", form)
    assert resp.status == 200
    error = re.search(rf'<p class="error" id="{field}-error" role="alert">([^<]*)</p>', resp.text)
    assert error and message in error.group(1)
    assert len(re.findall(r'role="alert"', resp.text)) == 1  # only the broken field is flagged
    if field in ("full_name", "email", "phone", "country", "terms"):
        control = re.search(rf'<(?:input|select)[^>]* id="{field}"[^>]*>', resp.text)
        assert control and 'aria-invalid="true"' in control.group(0) and f"{field}-error" in control.group(0)
    kept = "full_name" if field != "full_name" else "email"
    assert f'value="{facts["accounts"][kept]}"' in resp.text  # entered values are kept
    state = server.episode_state(eid)["accounts"]
    assert state["pending"] is None and state["validation_failures"] == 1 and state["submissions"] == []
    assert br.get("/accounts/review").location == "/accounts/apply"


def test_user_input_is_escaped(server: SandboxServer, episode: tuple[str, Any]) -> None:
    eid, facts = episode
    br = Browser(server, eid)
    login(br, facts)
    resp = br.post(
        "/accounts/apply", valid_form(facts) | {"full_name": '<script>x()</script>"', "email": "bad"}
    )
    assert "<script>" not in resp.text and "&lt;script&gt;x()&lt;/script&gt;&quot;" in resp.text


def test_happy_path_form_review_confirm_records_submission(
    server: SandboxServer, episode: tuple[str, Any]
) -> None:
    eid, facts = episode
    acc = facts["accounts"]
    br = Browser(server, eid)
    login(br, facts)
    form_page = br.get("/accounts/apply").text
    for needle in (
        '<label for="full_name">Full name</label>',
        '<label for="email">Email</label>',
        '<label for="phone">Phone</label>',
        '<label for="country">Country</label>',
        "<legend>Plan</legend>",
        '<label for="terms">I agree to the terms</label>',
        '<button type="submit">Continue</button>',
        ">Cancel</a>",
        'type="email"',
        'type="tel"',
    ):
        assert needle in form_page
    resp = br.post("/accounts/apply", valid_form(facts))
    assert resp.status == 303 and resp.location == "/accounts/review"
    assert server.episode_state(eid)["accounts"]["pending"] == {**valid_form(facts), "terms": True}
    review = br.get("/accounts/review")
    assert "<h1>Review your application</h1>" in review.text
    for key in ("full_name", "email", "phone", "country", "plan"):
        assert f"<dd>{acc[key]}</dd>" in review.text
    assert '<button type="submit">Confirm</button>' in review.text and ">Edit</button>" in review.text
    edit = br.get("/accounts/apply")  # "Edit" goes back to the form with the values filled in
    assert f'value="{acc["email"]}"' in edit.text and f'value="{acc["plan"]}" checked' in edit.text
    assert f'<option value="{acc["country"]}" selected>' in edit.text
    confirm = br.post("/accounts/confirm", {})
    assert confirm.status == 303 and confirm.location == "/accounts/done"
    done = br.get("/accounts/done")
    assert "<h1>Application submitted</h1>" in done.text
    assert re.search(
        rf'role="status">Your reference number is <strong>{acc["reference"]}</strong>', done.text
    )
    assert re.fullmatch(r"APP-\d{5}", acc["reference"])
    state = server.episode_state(eid)["accounts"]
    assert state["pending"] is None
    assert state["submissions"] == [{**valid_form(facts), "terms": True, "reference": acc["reference"]}]
    # replaying the confirm POST does not submit twice
    assert br.post("/accounts/confirm", {}).status == 409
    assert len(server.episode_state(eid)["accounts"]["submissions"]) == 1


def test_direct_confirm_without_pending_application_records_nothing(
    server: SandboxServer, episode: tuple[str, Any]
) -> None:
    eid, facts = episode
    br = Browser(server, eid)
    assert br.post("/accounts/confirm", {}).location == "/accounts/login"  # not even signed in
    login(br, facts)
    resp = br.post("/accounts/confirm", valid_form(facts))
    assert resp.status == 409 and 'role="alert">There is no application to confirm.' in resp.text
    br.post(
        "/accounts/apply", valid_form(facts) | {"email": "broken"}
    )  # an invalid form leaves nothing pending
    assert br.post("/accounts/confirm", {}).status == 409
    assert br.get("/accounts/done").location == "/accounts/apply"
    state = server.episode_state(eid)["accounts"]
    assert state["submissions"] == [] and state["rejected_confirms"] == 2


def test_cancel_discards_the_pending_application(server: SandboxServer, episode: tuple[str, Any]) -> None:
    eid, facts = episode
    br = Browser(server, eid)
    login(br, facts)
    br.post("/accounts/apply", valid_form(facts))
    assert "<h1>Application cancelled</h1>" in br.get("/accounts/cancel").text
    assert br.post("/accounts/confirm", {}).status == 409
    state = server.episode_state(eid)["accounts"]
    assert state["submissions"] == [] and state["cancellations"] == 1 and state["decoy_visits"] == ["cancel"]


# -- reports ------------------------------------------------------------------------------------------
def test_report_list_search_and_archive(server: SandboxServer, episode: tuple[str, Any]) -> None:
    eid, facts = episode
    rep = facts["reports"]
    br = Browser(server, eid)
    listing = br.get("/reports/")
    titles = re.findall(r'<li><a href="/reports/[a-z0-9-]+">([^<]+)</a><span class="meta">', listing.text)
    assert len(titles) == int(rep["report_count"]) and 6 <= len(titles) <= 10
    assert rep["report_title"] in titles and '<label for="q">Search reports</label>' in listing.text
    word = rep["report_title"].split()[0]
    found = br.get("/reports/?q=" + urllib.parse.quote(word.lower()))
    shown = re.findall(r'<li><a href="/reports/[a-z0-9-]+">([^<]+)</a><span class="meta">', found.text)
    assert rep["report_title"] in shown and all(word.lower() in t.lower() for t in shown)
    assert "No reports match" in br.get("/reports/?q=zzzz").text
    archive = br.get("/reports/archive")
    old = re.findall(r'<li><a href="(/reports/archive/[a-z0-9-]+)">([^<]+)</a>', archive.text)
    assert 3 <= len(old) <= 4 and all(re.search(r"\(\d{4}\)$", title) for _, title in old)
    old_csv = br.get(old[0][0] + ".csv")
    assert old_csv.status == 200 and old_csv.headers["Content-Type"].startswith("text/csv")
    assert server.episode_state(eid)["reports"]["downloads"] == [old[0][0].rsplit("/", 1)[1] + ".csv"]
    assert server.episode_state(eid)["reports"]["searches"] == [word.lower(), "zzzz"]


def test_report_page_and_csv_download_match_the_facts(
    server: SandboxServer, episode: tuple[str, Any]
) -> None:
    eid, facts = episode
    rep = facts["reports"]
    br = Browser(server, eid)
    page = br.get(rep["report_path"])
    assert page.status == 200
    assert (
        f"<h1>{rep['report_title']}</h1>" in page.text
        and f"<caption>{rep['report_title']}</caption>" in page.text
    )
    assert f"{rep['total_label']}: <strong>{rep['total']}</strong>" in page.text
    assert page.text.count('<th scope="row">') == int(rep["row_count"])
    # a plain link (no download attribute): the navigation carries the episode header, the server's
    # Content-Disposition makes it a download
    assert f'href="/reports/{rep["csv_filename"]}">Download CSV</a>' in page.text
    assert ">Download JSON</a>" in page.text
    resp = br.get(f"/reports/{rep['csv_filename']}")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{rep["csv_filename"]}"'
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == int(rep["row_count"])
    col = rep["total_column"]
    assert sum(int(r[col]) for r in rows) == int(rep["total_raw"]) == int(rep["total"].replace(",", ""))
    label_col = next(iter(rows[0]))
    assert max(rows, key=lambda r: int(r[col]))[label_col] == rep["top_item"]
    for r in rows:  # every CSV row is a row of the HTML table
        assert f'<th scope="row">{r[label_col]}</th><td class="num">' in page.text
        assert f'<td class="num">{int(r[col]):,}</td>' in page.text
    as_json = br.get(f"/reports/{rep['json_filename']}")
    assert as_json.headers["Content-Disposition"] == f'attachment; filename="{rep["json_filename"]}"'
    assert json.loads(as_json.body)["total"] == {col: int(rep["total_raw"])}
    br.request("HEAD", f"/reports/{rep['csv_filename']}")  # HEAD is not a download
    state = server.episode_state(eid)["reports"]
    assert state["downloads"] == [rep["csv_filename"], rep["json_filename"]]
    assert state["download_counts"] == {rep["csv_filename"]: 1, rep["json_filename"]: 1}
    assert state["views"] == [rep["report_slug"]]


# -- episodes, isolation, demo, plumbing ----------------------------------------------------------------
def test_two_episodes_are_isolated(server: SandboxServer) -> None:
    facts_a = server.open_episode("iso-a", 5)
    facts_b = server.open_episode("iso-b", 5)  # same seed, so even the credentials are the same
    a, b = Browser(server, "iso-a"), Browser(server, "iso-b")
    login(a, facts_a)
    a.post("/accounts/apply", valid_form(facts_a))
    a.post("/accounts/confirm", {})
    a.get(f"/reports/{facts_a['reports']['csv_filename']}")
    assert b.get("/accounts/apply").location == "/accounts/login"
    b.cookies = dict(a.cookies)  # a's session cookie is worthless in episode b
    assert b.get("/accounts/apply").location == "/accounts/login"
    state_a, state_b = server.episode_state("iso-a"), server.episode_state("iso-b")
    assert state_a["accounts"]["logged_in"] and len(state_a["accounts"]["submissions"]) == 1
    assert not state_b["accounts"]["logged_in"] and state_b["accounts"]["submissions"] == []
    assert state_a["reports"]["downloads"] and state_b["reports"]["downloads"] == []
    login(b, facts_b)
    b.post(
        "/accounts/apply",
        valid_form(facts_b) | {"plan": "Basic" if facts_b["accounts"]["plan"] != "Basic" else "Pro"},
    )
    b.post("/accounts/confirm", {})
    subs_a = server.episode_state("iso-a")["accounts"]["submissions"]
    subs_b = server.episode_state("iso-b")["accounts"]["submissions"]
    assert len(subs_a) == len(subs_b) == 1 and subs_a[0]["plan"] != subs_b[0]["plan"]
    server.close_episode("iso-a")
    server.close_episode("iso-b")


def test_unknown_or_closed_episode_is_refused(server: SandboxServer) -> None:
    resp = Browser(server, "never-opened").get("/accounts/login")
    assert resp.status == 403 and "<h1>Episode not open</h1>" in resp.text
    server.open_episode("short-lived", 3)
    assert Browser(server, "short-lived").get("/reports/").status == 200
    server.close_episode("short-lived")
    assert Browser(server, "short-lived").get("/reports/").status == 403


def test_episode_cookie_routes_requests_the_browser_sends_without_the_header(
    server: SandboxServer, episode: tuple[str, Any]
) -> None:
    # Chromium's download manager (e.g. <a download>) does not send extra HTTP headers, only cookies.
    eid, facts = episode
    with_header = Browser(server, eid)
    first = with_header.get("/reports/")
    assert (
        f"agentrl_episode={eid}" in first.headers["Set-Cookie"]
        and with_header.cookies["agentrl_episode"] == eid
    )
    assert with_header.get("/reports/").headers["Set-Cookie"] is None  # set once, not on every response
    download_manager = Browser(server, None)
    download_manager.cookies = dict(with_header.cookies)
    resp = download_manager.get(f"/reports/{facts['reports']['csv_filename']}")
    assert resp.status == 200 and resp.headers["Content-Disposition"].endswith(
        f'"{facts["reports"]["csv_filename"]}"'
    )
    assert server.episode_state(eid)["reports"]["downloads"] == [facts["reports"]["csv_filename"]]
    assert server.episode_state("demo")["reports"]["downloads"] == []
    other = server.open_episode("cookie-other", 99)  # the header always wins over the cookie
    assert (
        Browser(server, "cookie-other")
        .request("GET", "/reports/", headers={"Cookie": f"agentrl_episode={eid}"})
        .headers["Set-Cookie"]
        .startswith("agentrl_episode=cookie-other;")
    )
    assert other["reports"]["csv_filename"]
    server.close_episode("cookie-other")
    server.close_episode(eid)  # a stale cookie falls back to the demo episode and is cleared
    stale = download_manager.get("/reports/")
    assert stale.status == 200 and "Max-Age=0" in stale.headers["Set-Cookie"] and not download_manager.cookies


def test_demo_episode_without_header(server: SandboxServer) -> None:
    br = Browser(server, None)
    index = br.get("/")
    assert index.status == 200 and 'href="/accounts/"' in index.text and 'href="/reports/"' in index.text
    demo = server.episode_facts("demo")
    assert demo == server.open_episode("seed-zero", 0)
    server.close_episode("seed-zero")
    assert login(br, demo).location == "/accounts/apply"
    assert br.get("/accounts/apply").status == 200
    assert server.episode_state("demo")["accounts"]["logged_in"] is True
    server.open_episode("demo", 0)  # reset the demo for other tests


def test_not_found_redirects_and_headers(server: SandboxServer) -> None:
    br = Browser(server, None)
    for path in ("/nope", "/accounts/nope", "/reports/no-such-report", "/reports/no-such-report.csv"):
        resp = br.get(path)
        assert resp.status == 404 and "<h1>Page not found</h1>" in resp.text, path
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert br.get("/reports").location == "/reports/"
    assert br.get("/accounts/").location == "/accounts/login"
    resp = br.get("/accounts/login")
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<main" in resp.text and "<header" in resp.text and '<html lang="en">' in resp.text
    assert "http://" not in resp.text and "https://" not in resp.text  # no external resources
    assert br.post("/reports/", {}).status == 405


def test_only_immutable_files_are_cacheable_and_connections_are_kept(server: SandboxServer) -> None:
    eid = f"test-{next(_ids)}"
    server.open_episode(eid, seed=3)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        heads = {}
        for path in ("/miniwob/core/core.js", "/miniwob/miniwob/click-test.html", "/accounts/login", "/nope"):
            conn.request("GET", path, headers={EPISODE_HEADER: eid})  # one connection for all: HTTP/1.1
            raw = conn.getresponse()
            raw.read()
            heads[path] = raw.headers["Cache-Control"]
    finally:
        conn.close()
    assert heads == {
        "/miniwob/core/core.js": "public, max-age=31536000, immutable",  # a package file, the same for everyone
        "/miniwob/miniwob/click-test.html": "no-store",  # carries the episode's seed
        "/accounts/login": "no-store",
        "/nope": "no-store",
    }
    server.close_episode(eid)


def test_preload_requests_belong_to_no_episode(server: SandboxServer) -> None:
    before = server.episode_state("demo")["miniwob"]["pages"]
    br = Browser(server, None)
    page = br.request("GET", "/miniwob/miniwob/click-test.html", headers={"X-Agentrl-Preload": "1"})
    assert page.status == 200 and "window.__agentrlStart = function (seed)" in page.text
    assert "__agentrlStart(0)" not in page.text  # not started: the env gives it the seed of its episode
    assert "Set-Cookie" not in page.headers
    assert server.episode_state("demo")["miniwob"]["pages"] == before  # no episode saw it, not even demo
    # with an episode header, the header wins: a normal, seeded page of that episode
    eid = f"test-{next(_ids)}"
    server.open_episode(eid, seed=5)
    seeded = Browser(server, eid).request("GET", "/miniwob/miniwob/click-test.html", headers={"X-Agentrl-Preload": "1"})
    assert "__agentrlStart(5)" in seeded.text and server.episode_state(eid)["miniwob"]["pages"] == ["click-test"]
    server.close_episode(eid)


def test_concurrent_requests(server: SandboxServer, episode: tuple[str, Any]) -> None:
    eid, facts = episode
    statuses: list[int] = []

    def hit() -> None:
        br = Browser(server, eid)
        for _ in range(5):
            statuses.append(br.get(f"/reports/{facts['reports']['csv_filename']}").status)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 40
    assert len(server.episode_state(eid)["reports"]["downloads"]) == 40


def test_server_binds_localhost_and_closes() -> None:
    srv = SandboxServer().start()
    assert srv.origin == f"http://127.0.0.1:{srv.port}"
    assert srv._httpd.server_address[0] == "127.0.0.1"
    assert len(srv.admin_token) == 32
    srv.close()
    srv.close()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", srv.port, timeout=1).request("GET", "/")


class EchoApp(App):
    """A minimal custom app: answers what it was sent as JSON and counts requests per episode."""

    name = "echo"
    title = "Echo"

    def new_state(self, seed: int) -> dict[str, int]:
        return {"seed": seed, "hits": 0}

    def facts(self, state: dict[str, int]) -> dict[str, str]:
        return {"seed": str(state["seed"])}

    def public_state(self, state: dict[str, int]) -> dict[str, Any]:
        return dict(state)

    def handle(self, req: Request, state: dict[str, int]) -> Response:
        state["hits"] += 1
        data = {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "form": req.form,
            "body": req.body.decode(),
            "content_type": req.content_type,
        }
        return Response(body=json.dumps(data).encode(), content_type="application/json")


def test_custom_apps_and_request_parsing() -> None:
    with SandboxServer(apps=[EchoApp()], demo_seed=9) as srv:
        assert srv.open_episode("e", 4) == {"echo": {"seed": "4"}}
        br = Browser(srv, "e")
        got = json.loads(br.post("/echo/x/y?a=1&a=2&b=", {"name": "Ada", "tags": "x"}).body)
        assert got["path"] == "/x/y" and got["query"] == {"a": "1", "b": ""}
        assert (
            got["form"] == {"name": "Ada", "tags": "x"}
            and got["content_type"] == "application/x-www-form-urlencoded"
        )
        payload = {"message": "hi", "n": 3, "nested": {"k": [1]}}
        got = json.loads(
            br.request(
                "POST",
                "/echo/api",
                body=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
            ).body
        )
        assert got["form"] == {"message": "hi", "n": "3", "nested": '{"k": [1]}'}
        assert json.loads(got["body"]) == payload and got["content_type"] == "application/json"
        assert srv.episode_state("e") == {"echo": {"seed": 4, "hits": 2}}
        assert srv.episode_facts("demo") == {"echo": {"seed": "9"}}
        assert Browser(srv, None).get("/accounts/login").status == 404  # only the given apps are mounted


def test_command_line_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrl.sandbox.server", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        origin = proc.stdout.readline().split()[-1].rstrip("/")
        token = proc.stdout.readline().split()[2]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", origin)
        assert SandboxClient(origin, token).health()["ok"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
