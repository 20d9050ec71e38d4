"""``files``: data exports (CSV, JSON, PDF, PNG chart) whose names and contents are checkable, invoices with
per-invoice PDF downloads and filters, a contact list, and an upload form that imports contacts from a CSV
file (parsed and validated on the server).

Pages (under ``/files``): ``/``, ``/exports`` (form) and ``/export?dataset=&format=`` (the download),
``/invoices`` (``?customer=&status=``), ``/invoices/<id>`` (preview) and ``/invoices/<id>.pdf``,
``/contacts`` and ``/import`` (multipart POST).

>>> app = FilesApp()
>>> app.facts(app.new_state(2))["import_csv"].splitlines()[0]
'name,email,company'
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .base import EMPTY, App, Html, Request, Response, html_response, join, not_found, page, redirect, render
from .fields import Errors, banner, error_summary, radio_group, select_field
from .filegen import pdf_bytes, png_chart

DATASETS = ("Contacts", "Orders", "Invoices")
FORMATS = {"CSV": "csv", "JSON": "json", "PDF": "pdf", "PNG chart": "png"}
INVOICE_STATUSES = ("Paid", "Open", "Overdue")
ORDER_STATUSES = ("Paid", "Shipped", "Refunded")
_FIRST = ("Aiko", "Bruno", "Carla", "Dmitri", "Esra", "Farid", "Gemma", "Hana", "Ivo", "Jade", "Kofi", "Lena",
          "Mateo", "Nadia", "Omar", "Pia")
_LAST = ("Albers", "Brandt", "Cruz", "Dahl", "Engel", "Fontaine", "Gallo", "Horvat", "Ito", "Jensen", "Keller",
         "Lund", "Mendes", "Nagy")
_COMPANIES = ("Northwind", "Globex", "Initech", "Umbrella Labs", "Stark Freight", "Wayne Foods", "Hooli")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


@dataclass(frozen=True)
class Invoice:
    id: str
    customer: str
    issued: str
    due: str
    amount: int
    status: str


@dataclass
class FilesState:
    seed: int
    contacts: list[dict[str, str]]
    orders: list[dict[str, Any]]
    invoices: list[Invoice]
    facts: dict[str, str]
    downloads: list[str] = field(default_factory=list)
    exports: list[dict[str, str]] = field(default_factory=list)
    imports: list[dict[str, Any]] = field(default_factory=list)
    rejected_uploads: list[dict[str, str]] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)


def _people(rng: random.Random, n: int, taken: set[str]) -> list[dict[str, str]]:
    out = []
    while len(out) < n:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}@{rng.choice(('mail.test', 'example.net', 'corp.test'))}".lower()
        if email in taken:
            continue
        taken.add(email)
        out.append({"name": f"{first} {last}", "email": email, "company": rng.choice(_COMPANIES)})
    return out


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([r[c] for c in columns])
    return buf.getvalue()


class FilesApp(App):
    name = "files"
    title = "Files"
    description = "Export data as CSV, JSON, PDF or a PNG chart, download invoices, import contacts from a CSV."

    def new_state(self, seed: int) -> FilesState:
        rng = random.Random(f"files:{seed}")
        taken: set[str] = set()
        # address books of many sizes, so "how many contacts after the import?" has some 150 answers
        contacts = _people(rng, rng.randint(5, 160), taken)
        incoming = _people(rng, rng.randint(3, 40), taken)
        customers = sorted(rng.sample(_COMPANIES, 5))
        start = date(2024, 1, 1)
        orders = [
            {"id": f"ORD-{n}", "customer": rng.choice(customers),
             "date": (start + timedelta(days=rng.randint(0, 330))).isoformat(),
             "status": rng.choice(ORDER_STATUSES), "total": t}
            for n, t in zip(rng.sample(range(5001, 5999), 14), rng.sample(range(20, 4000), 14), strict=True)
        ]
        target, *others = rng.sample(customers, 3)
        # exactly three overdue invoices belong to the target customer; two more to other customers
        statuses = [rng.choice(("Paid", "Open")) for _ in range(16)] + ["Overdue"] * 5
        owners = [rng.choice(customers) for _ in range(16)] + [target] * 3 + others
        order = rng.sample(range(21), 21)
        ids = rng.sample(range(1001, 1999), 21)
        invoices = []
        for k, i in enumerate(order):
            issued = start + timedelta(days=rng.randint(0, 300))
            invoices.append(Invoice(f"INV-{ids[k]}", owners[i], issued.isoformat(),
                                    (issued + timedelta(days=30)).isoformat(), rng.randint(80, 9000), statuses[i]))
        invoices.sort(key=lambda v: v.id)
        overdue = sorted(v.id for v in invoices if v.customer == target and v.status == "Overdue")
        one = rng.choice(invoices)
        top = max(orders, key=lambda o: o.get("total", 0))
        facts = {
            "contact_count": str(len(contacts)),
            "contact_email": contacts[0]["email"],
            "import_csv": _csv_text(incoming, ["name", "email", "company"]),
            "import_count": str(len(incoming)),
            "import_email": incoming[-1]["email"],
            "import_name": incoming[-1]["name"],
            "contacts_after_import": str(len(contacts) + len(incoming)),
            # an older export with the wrong columns: the importer must reject it
            "old_csv": "Name;E-mail\n" + "".join(f"{p['name']};{p['email']}\n" for p in incoming),
            "order_count": str(len(orders)),
            "top_order": top["id"],
            "top_order_customer": top["customer"],
            "invoice_id": one.id,
            "invoice_customer": one.customer,
            "invoice_amount": f"${one.amount:,}",
            "invoice_pdf": f"invoice-{one.id}.pdf",
            "overdue_customer": target,
            "overdue_1": overdue[0],
            "overdue_2": overdue[1],
            "overdue_3": overdue[2],
            "overdue_set": ",".join(overdue),
            "paid_orders": str(sum(o["status"] == "Paid" for o in orders)),
        }
        return FilesState(seed=seed, contacts=contacts, orders=orders, invoices=invoices, facts=facts)

    def facts(self, state: FilesState) -> dict[str, str]:
        return dict(state.facts)

    def public_state(self, state: FilesState) -> dict[str, Any]:
        invoice_pdfs = sorted({d.removeprefix("invoice-").removesuffix(".pdf") for d in state.downloads
                               if d.startswith("invoice-")})
        return {
            "downloads": list(state.downloads),
            "invoice_pdfs": ",".join(invoice_pdfs),  # distinct invoices downloaded, sorted, comma-separated
            "exports": [dict(e) for e in state.exports],
            "imports": [dict(i) for i in state.imports],
            "rejected_uploads": [dict(r) for r in state.rejected_uploads],
            "contact_count": len(state.contacts),
            "contact_emails": [c["email"] for c in state.contacts],
            "previews": list(state.previews),
        }

    # -- routing --------------------------------------------------------------------------------------
    def handle(self, req: Request, state: FilesState) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == "/import":
            return self._import(req, state)
        if not req.is_read:
            return not_found(self.title)
        if path == "/":
            return self._hub(req)
        if path == "/exports":
            return self._exports(req, {}, "", "")
        if path == "/export":
            return self._export(req, state)
        if path == "/invoices":
            return self._invoices(req, state)
        if path == "/contacts":
            return self._contacts(req, state)
        m = re.fullmatch(r"/invoices/(INV-\d+)(\.pdf)?", path)
        inv = next((v for v in state.invoices if m and v.id == m.group(1)), None)
        if inv is None:
            return not_found(self.title)
        if m and m.group(2):
            return self._download(req, state, f"invoice-{inv.id}.pdf", "application/pdf", pdf_bytes(
                f"Invoice {inv.id}", [f"Customer: {inv.customer}", f"Issued: {inv.issued}", f"Due: {inv.due}",
                                      f"Status: {inv.status}", f"Amount due: ${inv.amount:,}"]))
        if req.method == "GET":
            state.previews.append(inv.id)
        items = join(render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in (
            ("Customer", inv.customer), ("Issued", inv.issued), ("Due", inv.due), ("Amount", f"${inv.amount:,}"),
            ("Status", inv.status)))
        body = render('<h1>Invoice {id}</h1>\n<dl class="review">{i}</dl>\n<div class="actions">'
                      '<a class="button" href="{pdf}">Download PDF</a><a class="button secondary" href="{b}">'
                      "Back to invoices</a></div>", id=inv.id, i=items, pdf=req.url(f"/invoices/{inv.id}.pdf"),
                      b=req.url("/invoices"))
        return self._page(req, f"Invoice {inv.id}", body)

    def _page(self, req: Request, title: str, body: Html, status: int = 200) -> Response:
        nav = [("Exports", req.url("/exports")), ("Invoices", req.url("/invoices")),
               ("Contacts", req.url("/contacts")), ("Import contacts", req.url("/import"))]
        return html_response(page(title, body, app_title=self.title, nav=nav), status=status)

    def _download(self, req: Request, state: FilesState, name: str, ctype: str, data: bytes) -> Response:
        if req.method == "GET":
            state.downloads.append(name)
        return Response(body=data, content_type=ctype,
                        headers=[("Content-Disposition", f'attachment; filename="{name}"')])

    def _hub(self, req: Request) -> Response:
        links = (("Exports", "/exports", "Download contacts, orders or invoices as CSV, JSON, PDF or a chart."),
                 ("Invoices", "/invoices", "Find an invoice and download it as a PDF."),
                 ("Contacts", "/contacts", "Everyone in the address book."),
                 ("Import contacts", "/import", "Add contacts from a CSV file."))
        items = join(render('<li><a href="{h}">{t}</a><span class="meta">{d}</span></li>\n', h=req.url(h), t=t, d=d)
                     for t, h, d in links)
        return self._page(req, "Files", render('<h1>Files</h1>\n<nav aria-label="File tools"><ul class="list">{i}'
                                               "</ul></nav>", i=items))

    # -- exports --------------------------------------------------------------------------------------
    def _exports(self, req: Request, errors: Errors, dataset: str, fmt: str) -> Response:
        inner = select_field("dataset", "Dataset", DATASETS, dataset, errors, prompt="Select a dataset") + radio_group(
            "format", "Format", tuple(FORMATS), fmt, errors)
        body = render(
            "<h1>Exports</h1>\n<p>Choose what to export and in which format. The file downloads at once.</p>\n{s}"
            '<form method="get" action="{a}" novalidate>{i}<div class="actions"><button type="submit">Export</button>'
            "</div></form>", s=error_summary(errors), a=req.url("/export"), i=inner,
        )
        return self._page(req, "Exports", body, 422 if errors else 200)

    def _rows(self, state: FilesState, dataset: str) -> tuple[list[str], list[dict[str, Any]], dict[str, int]]:
        """(columns, rows, chart data) of a dataset."""
        if dataset == "Contacts":
            counts = {c: sum(p["company"] == c for p in state.contacts) for c in _COMPANIES}
            return ["name", "email", "company"], state.contacts, {k: v for k, v in counts.items() if v}
        if dataset == "Orders":
            return (["id", "customer", "date", "status", "total"], state.orders,
                    {s: sum(o["status"] == s for o in state.orders) for s in ORDER_STATUSES})
        rows = [dict(v.__dict__) for v in state.invoices]
        return (["id", "customer", "issued", "due", "amount", "status"], rows,
                {s: sum(v.status == s for v in state.invoices) for s in INVOICE_STATUSES})

    def _export(self, req: Request, state: FilesState) -> Response:
        dataset, fmt = req.query.get("dataset", ""), req.query.get("format", "")
        errors: Errors = {}
        if dataset not in DATASETS:
            errors["dataset"] = "Select a dataset to export."
        if fmt not in FORMATS:
            errors["format"] = "Choose a format."
        if errors:
            return self._exports(req, errors, dataset, fmt)
        columns, rows, chart = self._rows(state, dataset)
        ext, stem = FORMATS[fmt], dataset.lower()
        if ext == "csv":
            data, ctype = _csv_text(rows, columns).encode("utf-8"), "text/csv; charset=utf-8"
        elif ext == "json":
            data = json.dumps({"dataset": stem, "count": len(rows), "rows": [{c: r[c] for c in columns} for r in rows]},
                              indent=2).encode("utf-8")
            ctype = "application/json"
        elif ext == "pdf":
            lines = [", ".join(str(r[c]) for c in columns) for r in rows]
            data, ctype = pdf_bytes(f"{dataset} export ({len(rows)} rows)", lines), "application/pdf"
        else:
            stem, ctype = f"{stem}-chart", "image/png"
            data = png_chart(f"{dataset} by {'company' if dataset == 'Contacts' else 'status'}", chart)
        name = f"{stem}.{ext}"
        if req.method == "GET":
            state.exports.append({"dataset": dataset, "format": fmt, "filename": name, "rows": str(len(rows))})
        return self._download(req, state, name, ctype, data)

    # -- invoices and contacts ------------------------------------------------------------------------
    def _invoices(self, req: Request, state: FilesState) -> Response:
        customers = sorted({v.customer for v in state.invoices})
        cust = req.query.get("customer", "") if req.query.get("customer", "") in customers else ""
        status = req.query.get("status", "") if req.query.get("status", "") in INVOICE_STATUSES else ""
        shown = [v for v in state.invoices if (not cust or v.customer == cust) and (not status or v.status == status)]
        form = render(
            '<form class="search" method="get" action="{a}" aria-label="Filter invoices">{c}{s}'
            '<button type="submit">Filter</button></form>\n', a=req.url("/invoices"),
            c=select_field("customer", "Customer", customers, cust, {}, prompt="All customers"),
            s=select_field("status", "Status", INVOICE_STATUSES, status, {}, prompt="All statuses"),
        )
        rows = join(
            render('<tr><th scope="row"><a href="{p}">{id}</a></th><td>{c}</td><td>{d}</td><td class="num">{a}</td>'
                   '<td>{s}</td><td><a href="{pdf}" aria-label="Download invoice {id} as PDF">Download PDF</a></td>'
                   "</tr>\n", p=req.url(f"/invoices/{v.id}"), id=v.id, c=v.customer, d=v.due, a=f"${v.amount:,}",
                   s=v.status, pdf=req.url(f"/invoices/{v.id}.pdf"))
            for v in shown
        )
        body = render(
            '<h1>Invoices</h1>\n{f}<p role="status">{n} of {t} invoices shown.</p>\n<table><caption>Invoices</caption>'
            '<thead><tr><th scope="col">Invoice</th><th scope="col">Customer</th><th scope="col">Due</th>'
            '<th scope="col" class="num">Amount</th><th scope="col">Status</th><th scope="col">File</th></tr></thead>'
            "<tbody>{r}</tbody></table>", f=form, n=str(len(shown)), t=str(len(state.invoices)), r=rows,
        )
        return self._page(req, "Invoices", body)

    def _contacts(self, req: Request, state: FilesState) -> Response:
        n = req.query.get("imported", "")
        note = banner(f"Imported {n} contact{'' if n == '1' else 's'}.") if n.isdigit() else EMPTY
        rows = join(render('<tr><th scope="row">{n}</th><td>{e}</td><td>{c}</td></tr>\n', n=c["name"], e=c["email"],
                           c=c["company"]) for c in state.contacts)
        body = render(
            '<h1>Contacts</h1>\n{note}<p role="status">{k} contacts in the address book.</p>\n<div class="actions">'
            '<a class="button" href="{exp}">Export contacts (CSV)</a><a class="button secondary" href="{imp}">'
            'Import contacts</a></div>\n<table><caption>Contacts</caption><thead><tr><th scope="col">Name</th>'
            '<th scope="col">Email</th><th scope="col">Company</th></tr></thead><tbody>{r}</tbody></table>',
            note=note, k=str(len(state.contacts)), exp=req.url("/export?dataset=Contacts&format=CSV"),
            imp=req.url("/import"), r=rows,
        )
        return self._page(req, "Contacts", body)

    # -- upload ----------------------------------------------------------------------------------------
    def _import(self, req: Request, state: FilesState) -> Response:
        errors: Errors = {}
        if not req.is_read:
            filename, data = _uploaded_file(req, "file")
            people, problem = _parse_contacts(filename, data)
            if problem:
                errors["file"] = problem
                state.rejected_uploads.append({"filename": filename, "reason": problem})
            else:
                known = {c["email"] for c in state.contacts}
                added = [p for p in people if p["email"] not in known]
                state.contacts.extend(added)
                state.imports.append({"filename": filename, "rows": len(people), "added": len(added),
                                      "emails": [p["email"] for p in added]})
                return redirect(req.url(f"/contacts?imported={len(added)}"))
        msg = render('<p class="error" id="file-error" role="alert">{m}</p>', m=errors["file"]) if errors else EMPTY
        body = render(
            "<h1>Import contacts</h1>\n<p>Upload a CSV file with the columns <code>name</code>, <code>email</code> "
            "and optionally <code>company</code>. Existing email addresses are skipped.</p>\n{s}"
            '<form method="post" action="{a}" enctype="multipart/form-data" novalidate><div class="field">'
            '<label for="file">Contacts file (CSV)</label>{m}<input type="file" id="file" name="file" accept=".csv"{inv}>'
            '</div><div class="actions"><button type="submit">Import contacts</button></div></form>',
            s=error_summary(errors), a=req.url("/import"), m=msg,
            inv=Html(' aria-invalid="true" aria-describedby="file-error"') if errors else EMPTY,
        )
        return self._page(req, "Import contacts", body, 422 if errors else 200)


def _uploaded_file(req: Request, field_name: str) -> tuple[str, bytes]:
    """(filename, content) of a multipart/form-data file field; ("", b"") when there is none."""
    if req.content_type != "multipart/form-data" or not req.body.startswith(b"--"):
        return "", b""
    boundary = req.body.split(b"\r\n", 1)[0][2:].decode("latin-1")  # the server strips the header's parameters
    head = f'Content-Type: multipart/form-data; boundary="{boundary}"\r\n\r\n'.encode("latin-1")
    msg = BytesParser(policy=HTTP).parsebytes(head + req.body)
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == field_name:
            return part.get_filename() or "", part.get_payload(decode=True) or b""
    return "", b""


def _parse_contacts(filename: str, data: bytes) -> tuple[list[dict[str, str]], str]:
    """The contacts in an uploaded CSV, or ([], the reason it is rejected)."""
    if not filename:
        return [], "Choose a CSV file to upload."
    if not filename.lower().endswith(".csv"):
        return [], f"“{filename}” is not a CSV file. Upload a file ending in .csv."
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], "The file is not UTF-8 text."
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "name" not in columns or "email" not in columns:
        return [], "The file must have a header row with the columns name and email."
    people = []
    for n, row in enumerate(reader, 2):
        r = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if not r.get("name") or not _EMAIL_RE.match(r.get("email", "")):
            return [], f"Line {n}: every row needs a name and a valid email address."
        people.append({"name": r["name"], "email": r["email"].lower(), "company": r.get("company", "")})
    if not people:
        return [], "The file has no contacts in it."
    return people, ""
