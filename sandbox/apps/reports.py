"""``reports``: a list of seeded reports, a detail page per report with a real table and a total, and
CSV/JSON downloads that are recorded in the episode state.

Pages (under ``/reports``): ``/`` (list, ``?q=`` filters by title), ``/<slug>``, ``/<slug>.csv``,
``/<slug>.json``, the look-alike decoys ``/archive``, ``/archive/<slug>`` (+ ``.csv``/``.json``), and the
transaction ledger ``/transactions`` (filters, sort, pagination), ``/transactions/<id>``, ``/transactions.csv``
(see :mod:`.transactions`).
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import transactions as tx
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
    render,
)

_REGIONS = ("North", "South", "East", "West", "Central", "Coastal")
#: table labels: many enough that no one label is the answer to "which item is on top?" for more than a few
#: seeds in a hundred
_PRODUCTS = tuple(
    f"{p} {series}"
    for p in ("Desk lamp", "Office chair", "Standing desk", "Monitor arm", "Keyboard", "Mouse", "Webcam", "Headset",
              "USB hub", "Notebook", "Whiteboard", "Cable kit", "Laptop stand", "Desk mat")
    for series in ("Lite", "Plus", "Pro", "Max", "Mini", "Air", "One", "Duo")
)
_AGENTS = tuple(
    f"{i}. {last}"
    for i in "ABCDEFGHIJKLMNOPRSTUVWYZ"
    for last in ("Novak", "Okafor", "Rossi", "Tanaka", "Mensah", "Silva", "Berg", "Iyer", "Ortega", "Weber", "Khan",
                 "Fischer")
)
_PAGES = tuple(
    f"/{lang}/{p}"
    for lang in ("en", "de", "fr", "es", "it", "nl", "pt", "ja")
    for p in ("home", "pricing", "blog", "docs", "signup", "contact", "about", "careers", "faq", "status", "changelog",
              "partners")
)
_CATEGORIES = tuple(
    f"{c} ({d})"
    for c in ("Travel", "Software", "Hardware", "Training", "Catering", "Rent", "Utilities", "Marketing", "Consulting",
              "Insurance", "Postage", "Cleaning")
    for d in ("Engineering", "Finance", "Marketing", "Operations", "Sales", "People")
)
_TEAMS = ("Billing", "Onboarding", "Hardware", "Mobile", "Enterprise")
_DEPARTMENTS = ("Engineering", "Finance", "Marketing", "Operations", "Sales", "People")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WAREHOUSES = ("A", "B", "C", "D", "E")


@dataclass
class Report:
    """One report: a labelled table of integers and which column its total is over."""

    kind: str
    slug: str
    title: str
    label_column: str
    columns: tuple[str, ...]
    rows: list[tuple[str, list[int]]]
    total_column: str
    updated: str
    archived_year: int | None = None

    @property
    def total(self) -> int:
        i = self.columns.index(self.total_column)
        return sum(values[i] for _, values in self.rows)

    @property
    def top_item(self) -> tuple[str, int]:
        i = self.columns.index(self.total_column)
        label, values = max(self.rows, key=lambda row: row[1][i])
        return label, values[i]

    @property
    def total_label(self) -> str:
        return f"Total {self.total_column.lower()}"


@dataclass
class ReportsState:
    """One episode's reports data plus what the agent downloaded, viewed and searched."""

    seed: int
    reports: list[Report]
    archived: list[Report]
    target: str
    ledger: list[tx.Transaction] = field(default_factory=list)
    ledger_facts: dict[str, str] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    tx_views: list[str] = field(default_factory=list)
    tx_queries: list[dict[str, str]] = field(default_factory=list)
    tx_exports: list[dict[str, str]] = field(default_factory=list)


def slugify(text: str) -> str:
    """``"Q1 Sales — North"`` -> ``"q1-sales-north"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_Gen = Callable[[random.Random], list[int]]


def _sales(rng: random.Random) -> list[int]:
    units = rng.randint(5, 400)
    return [units, units * rng.randint(3, 120)]


def _inventory(rng: random.Random) -> list[int]:
    return [rng.randint(0, 900), rng.randint(20, 200)]


def _returns(rng: random.Random) -> list[int]:
    returned = rng.randint(0, 60)
    return [returned, returned * rng.randint(5, 90)]


def _support(rng: random.Random) -> list[int]:
    opened = rng.randint(10, 200)
    return [opened, rng.randint(opened // 2, opened)]


def _traffic(rng: random.Random) -> list[int]:
    visits = rng.randint(100, 20000)
    return [visits, rng.randint(0, max(1, visits // 20))]


def _expenses(rng: random.Random) -> list[int]:
    budget = rng.randint(10, 500) * 100
    return [budget, int(budget * rng.uniform(0.6, 1.2))]


# kind -> (title maker, label column, label pool, columns, total column, row generator)
_KINDS: dict[str, tuple[Callable[[random.Random], str], str, tuple[str, ...], tuple[str, ...], str, _Gen]] = {
    "sales": (
        lambda r: f"Q{r.randint(1, 4)} Sales — {r.choice(_REGIONS)}",
        "Item",
        _PRODUCTS,
        ("Units", "Revenue"),
        "Revenue",
        _sales,
    ),
    "inventory": (
        lambda r: f"Inventory — Warehouse {r.choice(_WAREHOUSES)}",
        "Item",
        _PRODUCTS,
        ("On hand", "Reorder level"),
        "On hand",
        _inventory,
    ),
    "returns": (
        lambda r: f"Returns — {r.choice(_MONTHS)}",
        "Item",
        _PRODUCTS,
        ("Returned", "Refunds"),
        "Refunds",
        _returns,
    ),
    "support": (
        lambda r: f"Support tickets — {r.choice(_TEAMS)} team",
        "Agent",
        _AGENTS,
        ("Opened", "Resolved"),
        "Resolved",
        _support,
    ),
    "traffic": (
        lambda r: f"Web traffic — {r.choice(_MONTHS)}",
        "Page",
        _PAGES,
        ("Visits", "Signups"),
        "Visits",
        _traffic,
    ),
    "expenses": (
        lambda r: f"Expenses — {r.choice(_DEPARTMENTS)}",
        "Category",
        _CATEGORIES,
        ("Budget", "Spent"),
        "Spent",
        _expenses,
    ),
}


def _make_report(rng: random.Random, kind: str, title: str, archived_year: int | None = None) -> Report:
    _, label_column, pool, columns, total_column, gen = _KINDS[kind]
    ti = columns.index(total_column)
    while True:  # regenerate until the largest value of the total column is unique (top_item is well defined)
        labels = rng.sample(pool, rng.randint(5, min(12, len(pool))))
        rows = [(label, gen(rng)) for label in labels]
        best = max(values[ti] for _, values in rows)
        if sum(1 for _, values in rows if values[ti] == best) == 1:
            break
    year = archived_year or 2024
    updated = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return Report(
        kind=kind,
        slug=slugify(title),
        title=title,
        label_column=label_column,
        columns=columns,
        rows=rows,
        total_column=total_column,
        updated=updated,
        archived_year=archived_year,
    )


class ReportsApp(App):
    """Seeded reports with tables, totals and downloads; downloads are recorded per episode."""

    name = "reports"
    title = "Reports"
    description = "Browse seeded reports, read their tables and totals, and download CSV exports."

    # -- episode data -------------------------------------------------------------------------------
    def new_state(self, seed: int) -> ReportsState:
        rng = random.Random(f"agentrl-reports-{seed}")
        count = rng.randint(6, 10)
        kinds = list(_KINDS)
        reports: list[Report] = []
        seen: set[str] = set()
        while len(reports) < count:
            kind = rng.choice(kinds)
            title = _KINDS[kind][0](rng)
            if title in seen:
                continue
            seen.add(title)
            reports.append(_make_report(rng, kind, title))
        reports.sort(key=lambda r: r.title)
        archived: list[Report] = []
        for base in rng.sample(reports, rng.randint(3, 4)):
            year = rng.randint(2019, 2022)
            archived.append(_make_report(rng, base.kind, f"{base.title} ({year})", archived_year=year))
        archived.sort(key=lambda r: r.title)
        target = rng.choice(reports).slug
        # the ledger has its own generator, so the reports and their facts stay what they were before it
        ledger_rng = random.Random(f"agentrl-reports-ledger-{seed}")
        ledger, planted = tx.make_ledger(ledger_rng)
        return ReportsState(
            seed=seed, reports=reports, archived=archived, target=target, ledger=ledger,
            ledger_facts=tx.ledger_facts(ledger_rng, ledger, planted),
        )

    def facts(self, state: ReportsState) -> dict[str, str]:
        report = next(r for r in state.reports if r.slug == state.target)
        top_label, top_value = report.top_item
        return {
            "report_title": report.title,
            "report_slug": report.slug,
            "report_path": f"/{self.name}/{report.slug}",
            "csv_filename": f"{report.slug}.csv",
            "json_filename": f"{report.slug}.json",
            "total": f"{report.total:,}",
            "total_raw": str(report.total),
            "total_label": report.total_label,
            "total_column": report.total_column,
            "row_count": str(len(report.rows)),
            "report_updated": report.updated,
            "top_item": top_label,
            "top_value": f"{top_value:,}",
            "report_count": str(len(state.reports)),
            **state.ledger_facts,
        }

    def public_state(self, state: ReportsState) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for name in state.downloads:
            counts[name] = counts.get(name, 0) + 1
        return {
            "downloads": list(state.downloads),
            "download_counts": counts,
            "views": list(state.views),
            "searches": list(state.searches),
            "tx_views": list(state.tx_views),
            "tx_queries": [dict(q) for q in state.tx_queries],
            "tx_exports": [dict(q) for q in state.tx_exports],
        }

    # -- routing ------------------------------------------------------------------------------------
    def handle(self, req: Request, state: ReportsState) -> Response:
        if not req.is_read:
            return method_not_allowed("GET", self.title)
        path = req.path.rstrip("/") or "/"
        if path == "/":
            return self._list(req, state, state.reports, archive=False)
        if path == "/archive":
            return self._list(req, state, state.archived, archive=True)
        if path == "/transactions" or path.startswith("/transactions/") or path == "/transactions.csv":
            return self._ledger(req, state, path)
        collection, rest = (
            (state.archived, path[len("/archive/") :])
            if path.startswith("/archive/")
            else (state.reports, path[1:])
        )
        slug, _, ext = rest.partition(".")
        report = next((r for r in collection if r.slug == slug), None)
        if report is None or "/" in rest or ext not in ("", "csv", "json"):
            return not_found(self.title)
        if ext == "":
            if req.method == "GET":
                state.views.append(path[1:])
            return self._detail(req, report)
        filename = f"{report.slug}.{ext}"
        if req.method == "GET":
            state.downloads.append(filename)
        if ext == "csv":
            return _attachment(_csv_bytes(report), "text/csv; charset=utf-8", filename)
        return _attachment(_json_bytes(report), "application/json", filename)

    def _nav(self, req: Request) -> list[tuple[str, str]]:
        return [
            ("All reports", req.url("/")),
            ("Archived reports", req.url("/archive")),
            ("Transactions", req.url("/transactions")),
        ]

    def _ledger(self, req: Request, state: ReportsState, path: str) -> Response:
        base = req.url("/transactions")
        query = tx.Query.parse(req.query)
        if path == "/transactions.csv":
            if req.method == "GET":
                state.tx_exports.append(query.record())
            return _attachment(tx.ledger_csv(query.apply(state.ledger)), "text/csv; charset=utf-8", "transactions.csv")
        if path == "/transactions":
            if req.method == "GET" and (query.filtered or query.sort != "newest"):
                state.tx_queries.append(query.record())
            body = tx.ledger_page(base, state.ledger, query)
            return html_response(page("Transactions", body, app_title=self.title, nav=self._nav(req)))
        found = next((t for t in state.ledger if t.id == path[len("/transactions/") :]), None)
        if found is None:
            return not_found(self.title)
        if req.method == "GET":
            state.tx_views.append(found.id)
        body = tx.detail_page(base, found)
        return html_response(page(f"Transaction {found.id}", body, app_title=self.title, nav=self._nav(req)))

    def _list(self, req: Request, state: ReportsState, reports: list[Report], archive: bool) -> Response:
        q = req.query.get("q", "").strip()
        shown = [r for r in reports if q.casefold() in r.title.casefold()] if q else reports
        if q and req.method == "GET":
            state.searches.append(q)
        status = Html("")
        if q:
            status = render(
                '<p role="status">{msg}</p>\n',
                msg=(
                    f"Showing {len(shown)} of {len(reports)} reports matching “{q}”."
                    if shown
                    else f"No reports match “{q}”."
                ),
            )
        base = req.url("/archive/" if archive else "/")
        items = join(
            render(
                '<li><a href="{href}">{title}</a><span class="meta">{n} rows · updated {u}</span></li>\n',
                href=base + r.slug,
                title=r.title,
                n=str(len(r.rows)),
                u=r.updated,
            )
            for r in shown
        )
        heading = "Archived reports" if archive else "Reports"
        intro = (
            "Older reports kept for reference. They are no longer updated."
            if archive
            else "Current reports for this quarter. Open a report to see its figures and download them."
        )
        body = render(
            "<h1>{heading}</h1>\n<p>{intro}</p>\n"
            '<form class="search" role="search" method="get" action="{action}">'
            '<div><label for="q">Search reports</label><input type="search" id="q" name="q" value="{q}"></div>'
            '<button type="submit">Search</button></form>\n{status}'
            '<nav aria-label="{nav_label}"><ul class="list">\n{items}</ul></nav>',
            heading=heading,
            intro=intro,
            action=req.url("/archive" if archive else "/"),
            q=q,
            status=status,
            nav_label="Archived report list" if archive else "Report list",
            items=items,
        )
        return html_response(page(heading, body, app_title=self.title, nav=self._nav(req)))

    def _detail(self, req: Request, report: Report) -> Response:
        head = join(
            [render('<th scope="col">{c}</th>', c=report.label_column)]
            + [render('<th scope="col" class="num">{c}</th>', c=c) for c in report.columns]
        )
        rows = join(
            render(
                '<tr><th scope="row">{label}</th>{cells}</tr>\n',
                label=label,
                cells=join(render('<td class="num">{v}</td>', v=f"{v:,}") for v in values),
            )
            for label, values in report.rows
        )
        base = req.url("/archive/" if report.archived_year else "/")
        notice = Html("")
        if report.archived_year:
            notice = render(
                '<p class="notice">Archived report from {y}. Figures may be out of date.</p>\n',
                y=str(report.archived_year),
            )
        body = render(
            "<h1>{title}</h1>\n{notice}"
            '<p class="meta">Updated {updated} · {n} rows</p>\n'
            "<table>\n<caption>{title}</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"
            '<p class="summary">{total_label}: <strong>{total}</strong></p>\n'
            '<div class="actions"><a class="button" href="{csv}">Download CSV</a>'
            '<a class="button secondary" href="{json}">Download JSON</a></div>',
            title=report.title,
            notice=notice,
            updated=report.updated,
            n=str(len(report.rows)),
            head=head,
            rows=rows,
            total_label=report.total_label,
            total=f"{report.total:,}",
            csv=f"{base}{report.slug}.csv",
            json=f"{base}{report.slug}.json",
        )
        return html_response(page(report.title, body, app_title=self.title, nav=self._nav(req)))


def _csv_bytes(report: Report) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([report.label_column, *report.columns])
    for label, values in report.rows:
        writer.writerow([label, *values])
    return buf.getvalue().encode("utf-8")


def _json_bytes(report: Report) -> bytes:
    data = {
        "title": report.title,
        "updated": report.updated,
        "columns": [report.label_column, *report.columns],
        "rows": [
            {report.label_column: label, **dict(zip(report.columns, values, strict=True))}
            for label, values in report.rows
        ],
        "total": {report.total_column: report.total},
    }
    return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")


def _attachment(body: bytes, content_type: str, filename: str) -> Response:
    return Response(
        status=200,
        body=body,
        content_type=content_type,
        headers=[("Content-Disposition", f'attachment; filename="{filename}"')],
    )
