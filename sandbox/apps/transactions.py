"""The ``reports`` app's transaction ledger: a filterable, sortable, paginated table with a detail page per
transaction and a CSV export of the filtered rows.

Pages (under ``/reports``): ``/transactions`` (GET filters ``region``, ``status``, ``category``, ``sort``,
``page``), ``/transactions/<id>`` (e.g. ``/transactions/TX-1042``) and ``/transactions.csv`` (same filters).

>>> ledger, planted = make_ledger(random.Random(1))
>>> ledger[0].id, planted["filter"] != planted["target"]
('TX-1001', True)
"""

from __future__ import annotations

import csv
import io
import random
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

from .base import Html, join, render

REGIONS = ("North", "South", "East", "West")
STATUSES = ("Approved", "Pending", "Rejected")
CATEGORIES = ("Travel", "Software", "Hardware", "Catering")
SORTS = {  # query value -> (label, key, reverse)
    "newest": ("Newest first", lambda t: t.date, True),
    "oldest": ("Oldest first", lambda t: t.date, False),
    "amount-desc": ("Amount: high to low", lambda t: t.amount, True),
    "amount-asc": ("Amount: low to high", lambda t: t.amount, False),
}
PAGE_SIZE = 10
#: page-local styles (the shared stylesheet has no pager or filter grid)
STYLE = Html(
    "<style>.pager{list-style:none;display:flex;flex-wrap:wrap;gap:.4rem 1rem;padding:0}"
    ".filters{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:0 1rem;align-items:end}"
    ".filters .actions{grid-column:1/-1;margin-top:0}</style>\n"
)
PLANTED_MAX = 160  # rows of each planted region+status pair: 2 to this
#: vendors and approvers: many enough that no one name answers "which vendor / who approved?" for more
#: than a few seeds in a hundred
_VENDORS = tuple(
    f"{a} {b}"
    for a in ("Acme", "Birch", "Cobalt", "Delta", "Evergreen", "Fjord", "Granite", "Harbor", "Iris", "Juniper",
              "Kestrel", "Lumen", "Maple", "Nimbus", "Orchid", "Pioneer", "Quartz", "Redwood", "Summit", "Tidal")
    for b in ("Supplies", "Systems", "Catering", "Travel", "Software", "Hardware", "Hotels", "Training", "Cloud",
              "Rail", "Office", "Logistics")
)
_APPROVERS = tuple(
    f"{i}. {last}"
    for i in "ABCDEFGHJKLMNOPRSTVW"
    for last in ("Laurent", "Adeyemi", "Lindqvist", "Moreau", "Haddad", "Sato", "Varga", "Okafor", "Rossi", "Berg",
                 "Iyer", "Weber", "Silva", "Khan", "Fischer", "Novak")
)


@dataclass(frozen=True)
class Transaction:
    id: str
    date: str  # ISO date
    vendor: str
    region: str
    category: str
    status: str
    amount: int  # whole dollars, unique within a ledger
    approver: str

    @property
    def amount_text(self) -> str:
        return f"${self.amount:,}"


def make_ledger(rng: random.Random) -> tuple[list[Transaction], dict[str, tuple[str, str]]]:
    """A ledger with distinct dates and amounts (so "oldest" and "largest" are well defined), and the two
    region+status pairs planted in it for tasks (``filter``, ``target``). Those two hold 2-160 rows each,
    drawn uniformly, and every other pair 1-12, so "how many match?" has some 160 answers, none of them
    right for more than about one seed in a hundred."""
    pairs = [(r, s) for r in REGIONS for s in STATUSES]
    filter_pair, target_pair = rng.sample(pairs, 2)
    sizes = {p: rng.randint(1, 12) for p in pairs}
    sizes[filter_pair] = rng.randint(2, PLANTED_MAX)
    sizes[target_pair] = rng.randint(2, PLANTED_MAX)
    cells = [p for p, n in sizes.items() for _ in range(n)]
    rng.shuffle(cells)
    count = len(cells)
    days = sorted(rng.sample(range(731), count))
    amounts = rng.sample(range(40, 9_999), count)
    numbers = rng.sample(range(1001, 1001 + count), count)  # ids do not give away the date order
    start = date(2024, 1, 1)
    ledger = [
        Transaction(
            id=f"TX-{numbers[i]}",
            date=(start + timedelta(days=d)).isoformat(),
            vendor=rng.choice(_VENDORS),
            region=cells[i][0],
            category=rng.choice(CATEGORIES),
            status=cells[i][1],
            amount=amounts[i],
            approver=rng.choice(_APPROVERS),
        )
        for i, d in enumerate(days)
    ]
    return sorted(ledger, key=lambda t: t.id), {"filter": filter_pair, "target": target_pair}


@dataclass(frozen=True)
class Query:
    """The ledger view's filters, sort and page (unknown values fall back to "all" / the default)."""

    region: str = ""
    status: str = ""
    category: str = ""
    sort: str = "newest"
    page: int = 1

    @classmethod
    def parse(cls, q: dict[str, str]) -> Query:
        try:
            page = max(1, int(q.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            region=q.get("region", "") if q.get("region", "") in REGIONS else "",
            status=q.get("status", "") if q.get("status", "") in STATUSES else "",
            category=q.get("category", "") if q.get("category", "") in CATEGORIES else "",
            sort=q.get("sort", "newest") if q.get("sort", "newest") in SORTS else "newest",
            page=page,
        )

    def apply(self, ledger: list[Transaction]) -> list[Transaction]:
        rows = [
            t for t in ledger
            if (not self.region or t.region == self.region)
            and (not self.status or t.status == self.status)
            and (not self.category or t.category == self.category)
        ]
        _, key, reverse = SORTS[self.sort]
        return sorted(rows, key=key, reverse=reverse)

    @property
    def filtered(self) -> bool:
        return bool(self.region or self.status or self.category)

    def record(self) -> dict[str, str]:
        return {"region": self.region, "status": self.status, "category": self.category, "sort": self.sort}

    def href(self, base: str, page: int | None = None) -> str:
        params = {k: v for k, v in self.record().items() if v and not (k == "sort" and v == "newest")}
        if page is not None and page > 1:
            params["page"] = str(page)
        return base + ("?" + urllib.parse.urlencode(params) if params else "")


def ledger_facts(rng: random.Random, ledger: list[Transaction], planted: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Seeded targets for tasks: a transaction deep in the list (of the planted ``target`` pair when it has
    one there), the planted ``filter`` pair, and their answers."""
    newest = sorted(ledger, key=lambda t: t.date, reverse=True)
    deep = newest[2 * PAGE_SIZE :]  # on page 3 or later: reaching it takes pagination
    target = rng.choice([t for t in deep if (t.region, t.status) == planted["target"]] or deep)
    pair = Counter((t.region, t.status) for t in ledger)
    region_n = Counter(t.region for t in ledger)
    # the filter pair's region has rows of every status, so its count differs from the region's own
    f_region, f_status = planted["filter"]
    triple = Counter((t.region, t.status, t.category) for t in ledger)
    best = max(triple.values())
    b_region, b_status, b_category = rng.choice(sorted(k for k, n in triple.items() if n == best))
    big = max(
        (t for t in ledger if (t.region, t.status, t.category) == (b_region, b_status, b_category)),
        key=lambda t: t.amount,
    )
    oldest = min(ledger, key=lambda t: t.date)
    return {
        "tx_id": target.id,
        "tx_vendor": target.vendor,
        "tx_amount": target.amount_text,
        "tx_amount_raw": str(target.amount),
        "tx_date": target.date,
        "tx_approver": target.approver,
        "tx_region": target.region,
        "tx_status": target.status,
        "tx_category": target.category,
        "tx_page": str(newest.index(target) // PAGE_SIZE + 1),
        "tx_pages": str(-(-len(ledger) // PAGE_SIZE)),
        "tx_region_status_count": str(pair[(target.region, target.status)]),
        "tx_region_count": str(region_n[target.region]),
        "filter_region": f_region,
        "filter_status": f_status,
        "filter_count": str(pair[(f_region, f_status)]),
        "filter_region_count": str(region_n[f_region]),
        "big_region": b_region,
        "big_status": b_status,
        "big_category": b_category,
        "big_id": big.id,
        "big_approver": big.approver,
        "big_vendor": big.vendor,
        "big_amount": big.amount_text,
        "oldest_id": oldest.id,
        "oldest_date": oldest.date,
        "oldest_vendor": oldest.vendor,
        "tx_count": str(len(ledger)),
    }


def _select(name: str, label: str, options: list[tuple[str, str]], current: str) -> Html:
    opts = join(
        render('<option value="{v}"{sel}>{t}</option>', v=v, t=t, sel=Html(" selected") if v == current else "")
        for v, t in options
    )
    return render(
        '<div class="field"><label for="{name}">{label}</label><select id="{name}" name="{name}">{opts}</select></div>',
        name=name, label=label, opts=opts,
    )


def ledger_page(base: str, ledger: list[Transaction], query: Query) -> Html:
    """The body of ``/transactions``: filter form, status line, one page of the table, pagination links."""
    rows = query.apply(ledger)
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page_no = min(query.page, pages)
    shown = rows[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
    form = render(
        '<form class="filters" method="get" action="{action}" aria-label="Filter transactions">{r}{s}{c}{o}'
        '<div class="actions"><button type="submit">Apply filters</button>'
        '<a class="button secondary" href="{action}">Clear filters</a></div></form>\n',
        action=base,
        r=_select("region", "Region", [("", "All regions"), *((x, x) for x in REGIONS)], query.region),
        s=_select("status", "Status", [("", "All statuses"), *((x, x) for x in STATUSES)], query.status),
        c=_select("category", "Category", [("", "All categories"), *((x, x) for x in CATEGORIES)], query.category),
        o=_select("sort", "Sort by", [(k, v[0]) for k, v in SORTS.items()], query.sort),
    )
    if rows:
        first, last = (page_no - 1) * PAGE_SIZE + 1, (page_no - 1) * PAGE_SIZE + len(shown)
        noun = "transaction matches" if len(rows) == 1 else "transactions match"
        msg = (f"{len(rows)} {noun} these filters. " if query.filtered else "") + (
            f"Showing {first}–{last} of {len(rows)}, page {page_no} of {pages}."
        )
    else:
        msg = "No transactions match these filters."
    body_rows = join(
        render(
            '<tr><th scope="row"><a href="{href}">{id}</a></th><td>{date}</td><td>{vendor}</td><td>{region}</td>'
            '<td>{category}</td><td>{status}</td><td class="num">{amount}</td></tr>\n',
            href=f"{base}/{t.id}", id=t.id, date=t.date, vendor=t.vendor, region=t.region,
            category=t.category, status=t.status, amount=t.amount_text,
        )
        for t in shown
    )
    table = render(
        '<table>\n<caption>Transactions</caption>\n<thead><tr><th scope="col">ID</th><th scope="col">Date</th>'
        '<th scope="col">Vendor</th><th scope="col">Region</th><th scope="col">Category</th>'
        '<th scope="col">Status</th><th scope="col" class="num">Amount</th></tr></thead>\n<tbody>\n{rows}</tbody>\n'
        "</table>\n",
        rows=body_rows,
    ) if rows else Html("")
    links = []
    if page_no > 1:
        links.append(render('<li><a href="{h}">Previous page</a></li>', h=query.href(base, page_no - 1)))
    for n in range(1, pages + 1):
        current = Html(' aria-current="page"') if n == page_no else ""
        links.append(render('<li><a href="{h}"{c}>Page {n}</a></li>', h=query.href(base, n), c=current, n=str(n)))
    if page_no < pages:
        links.append(render('<li><a href="{h}">Next page</a></li>', h=query.href(base, page_no + 1)))
    pager = render('<nav aria-label="Pagination"><ul class="pager">{li}</ul></nav>\n', li=join(links))
    export = render(
        '<p><a href="{h}">Export these transactions (CSV)</a></p>', h=query.href(base + ".csv")
    )
    return render(
        "{style}<h1>Transactions</h1>\n<p>Every expense transaction of the year. Filter, sort and open one for its details.</p>\n"
        '{form}<p role="status">{msg}</p>\n{table}{pager}{export}',
        style=STYLE, form=form, msg=msg, table=table, pager=pager, export=export,
    )


def detail_page(base: str, t: Transaction) -> Html:
    """The body of ``/transactions/<id>``."""
    items = [
        ("Date", t.date), ("Vendor", t.vendor), ("Region", t.region), ("Category", t.category),
        ("Status", t.status), ("Amount", t.amount_text), ("Approved by" if t.status == "Approved" else "Approver",
                                                            t.approver),
    ]
    dl = join(render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in items)
    return render(
        '<h1>Transaction {id}</h1>\n<dl class="review">{dl}</dl>\n'
        '<div class="actions"><a class="button secondary" href="{base}">Back to transactions</a></div>',
        id=t.id, dl=dl, base=base,
    )


def ledger_csv(rows: list[Transaction]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["ID", "Date", "Vendor", "Region", "Category", "Status", "Amount", "Approver"])
    for t in rows:
        w.writerow([t.id, t.date, t.vendor, t.region, t.category, t.status, t.amount, t.approver])
    return buf.getvalue().encode("utf-8")
