"""``kb``: a help-centre knowledge base with search, filters, pagination and look-alike articles.

Pages (under ``/kb``): ``/`` (search form; ``?q=&category=&product=&page=``: results, 8 per page),
``/articles/<id>`` (one article), ``/articles/<id>/feedback`` (POST "Yes"/"No").
Every topic exists for two or three products ("Rotate an API key — Mobile app" and "— Web app"), each
with its own figure, so the right article must be opened, not a look-alike.

>>> app = KbApp()
>>> facts = app.facts(app.new_state(5))
>>> facts["answer"] != facts["decoy_answer"] and facts["title"] != facts["decoy_title"]
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

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

PRODUCTS = ("Web app", "Mobile app", "Desktop app")
PER_PAGE = 8
# topic title, category, the sentence with the article's figure ({n}), unit, value range (lo, hi, step); the
# ranges are wide, so no one figure answers "what does the article say?" for more than a seed in a hundred
TOPICS = (
    ("Change the session timeout", "Security", "The default session timeout is {n} minutes.", "minutes", (10, 480, 5)),
    ("Rotate an API key", "Integrations", "API keys expire after {n} days unless rotated.", "days", (30, 730, 5)),
    ("Export invoices", "Billing", "One export holds at most {n} invoices.", "invoices", (100, 10000, 100)),
    ("Set up single sign-on", "Security", "Single sign-on supports up to {n} identity providers.", "providers", (2, 60, 1)),
    ("Reset a user password", "Accounts", "Password reset links stay valid for {n} hours.", "hours", (1, 96, 1)),
    ("Add a payment method", "Billing", "You can store up to {n} payment cards.", "cards", (2, 60, 1)),
    ("Configure webhooks", "Integrations", "Failed webhook deliveries are retried {n} times.", "times", (3, 80, 1)),
    ("Invite team members", "Accounts", "The free plan includes {n} seats.", "seats", (3, 150, 1)),
    ("Fix sync errors", "Troubleshooting", "Sync runs every {n} minutes in the background.", "minutes", (5, 300, 5)),
    ("Clear the local cache", "Troubleshooting", "The local cache holds up to {n} MB.", "MB", (50, 5000, 50)),
    ("Download audit logs", "Security", "Audit logs are kept for {n} days.", "days", (30, 1095, 15)),
    ("Import contacts from CSV", "Accounts", "One CSV import can hold up to {n} rows.", "rows", (500, 100000, 500)),
    ("Request a refund", "Billing", "Refunds arrive within {n} business days.", "business days", (3, 90, 1)),
    ("Connect Slack", "Integrations", "One workspace can post to up to {n} Slack channels.", "channels", (1, 100, 1)),
    ("Unlock a locked account", "Troubleshooting", "An account locks after {n} failed sign-in attempts.", "attempts", (3, 60, 1)),
)
CATEGORIES = tuple(sorted({t[1] for t in TOPICS}))
_INTRO = {
    "Security": "Keep your workspace safe.",
    "Integrations": "Connect other tools to your workspace.",
    "Billing": "Manage payments and invoices.",
    "Accounts": "Manage people and their access.",
    "Troubleshooting": "Fix common problems quickly.",
}


@dataclass(frozen=True)
class Article:
    id: str
    topic: str
    product: str
    category: str
    value: int
    unit: str
    sentence: str
    updated: str

    @property
    def title(self) -> str:
        return f"{self.topic} — {self.product}"

    @property
    def answer(self) -> str:
        return f"{self.value} {self.unit}"

    def text(self) -> str:
        """What search matches against (case-insensitive)."""
        return f"{self.title} {self.category} {self.sentence}".casefold()


@dataclass
class KbState:
    articles: list[Article]
    targets: dict[str, str]
    popular: list[str]  # ids on the home page: the target, its look-alike and four others
    searches: list[dict[str, Any]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    feedback: dict[str, str] = field(default_factory=dict)


def search(articles: list[Article], q: str, category: str, product: str) -> list[Article]:
    """Articles containing every word of `q`, in `category`/`product` when given; title matches first."""
    words = q.casefold().split()
    hits = [
        a
        for a in articles
        if all(w in a.text() for w in words)
        and (not category or a.category == category)
        and (not product or a.product == product)
    ]
    return sorted(hits, key=lambda a: (not all(w in a.title.casefold() for w in words), a.title))


class KbApp(App):
    """A searchable help centre; opened articles, searches and feedback are recorded per episode."""

    name = "kb"
    title = "Help Center"
    description = "A knowledge base: search, filter by category and product, page through results, read articles."

    def new_state(self, seed: int) -> KbState:
        rng = random.Random(f"kb:{seed}")
        ids = rng.sample(range(1000, 10000), len(TOPICS) * len(PRODUCTS))
        articles: list[Article] = []
        for topic, category, sentence, unit, (lo, hi, step) in TOPICS:
            products = rng.sample(PRODUCTS, rng.choice((2, 3, 3)))
            values = rng.sample(range(lo, hi + 1, step), len(products))  # distinct per topic
            for product, value in zip(products, values, strict=True):
                articles.append(
                    Article(
                        id=f"KB-{ids.pop()}",
                        topic=topic,
                        product=product,
                        category=category,
                        value=value,
                        unit=unit,
                        sentence=sentence.format(n=value),
                        updated=f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    )
                )
        targets = _targets(rng, articles)
        pair = {targets["article_id"], targets["decoy_article_id"]}
        popular = sorted(pair | {a.id for a in rng.sample([a for a in articles if a.id not in pair], 4)})
        return KbState(articles=articles, targets=targets, popular=popular)

    def facts(self, state: KbState) -> dict[str, str]:
        return dict(state.targets)

    def public_state(self, state: KbState) -> dict[str, Any]:
        viewed: dict[str, int] = {}
        for a in state.opened:
            viewed[a] = viewed.get(a, 0) + 1
        return {
            "searches": [dict(s) for s in state.searches],
            "opened": list(state.opened),
            "viewed": viewed,
            "feedback": dict(state.feedback),
        }

    # -- routing ------------------------------------------------------------------------------------
    def handle(self, req: Request, state: KbState) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == "/":
            return self._search(req, state) if req.is_read else method_not_allowed("GET", self.title)
        parts = path.strip("/").split("/")
        if parts[0] != "articles" or len(parts) not in (2, 3):
            return not_found(self.title)
        article = next((a for a in state.articles if a.id == parts[1]), None)
        if article is None or (len(parts) == 3 and parts[2] != "feedback"):
            return not_found(self.title)
        if len(parts) == 3:
            if req.method != "POST":
                return method_not_allowed("POST", self.title)
            vote = req.form.get("helpful", "")
            if vote in ("yes", "no"):
                state.feedback[article.id] = vote
            return redirect(req.url(f"/articles/{article.id}?thanks=1"))
        if not req.is_read:
            return method_not_allowed("GET", self.title)
        if req.method == "GET":
            state.opened.append(article.id)
        return self._article(req, state, article)

    def _search_form(self, req: Request, q: str, category: str, product: str) -> Html:
        def options(label: str, values: tuple[str, ...], chosen: str) -> Html:
            return render('<option value="">{label}</option>', label=label) + join(
                render('<option value="{v}"{sel}>{v}</option>', v=v, sel=attr("selected", v == chosen))
                for v in values
            )

        return render(
            '<form class="search kb-search" role="search" method="get" action="{action}">'
            '<div><label for="q">Search articles</label><input type="search" id="q" name="q" value="{q}"></div>'
            '<div><label for="category">Category</label><select id="category" name="category">{cats}</select></div>'
            '<div><label for="product">Product</label><select id="product" name="product">{prods}</select></div>'
            '<button type="submit">Search</button></form>\n',
            action=req.url("/"),
            q=q,
            cats=options("All categories", CATEGORIES, category),
            prods=options("All products", PRODUCTS, product),
        )

    def _search(self, req: Request, state: KbState) -> Response:
        q = req.query.get("q", "").strip()
        category = req.query.get("category", "") if req.query.get("category", "") in CATEGORIES else ""
        product = req.query.get("product", "") if req.query.get("product", "") in PRODUCTS else ""
        try:
            page_no = max(1, int(req.query.get("page", "1")))
        except ValueError:
            page_no = 1
        form = self._search_form(req, q, category, product)
        if not (q or category or product):
            popular = sorted((a for a in state.articles if a.id in state.popular), key=lambda a: a.id)
            body = render(
                "<h1>Help Center</h1>\n<p>Search the knowledge base or browse popular articles.</p>\n{form}"
                '<nav aria-label="Browse by category"><ul class="cats">{cats}</ul></nav>\n'
                '<h2 id="popular">Popular articles</h2>\n<ul class="list" aria-labelledby="popular">{items}</ul>',
                form=form,
                cats=join(
                    render('<li><a href="{href}">{c}</a></li>', href=req.url(f"/?category={c}"), c=c) for c in CATEGORIES
                ),
                items=join(_result(req, a) for a in popular),
            )
            return html_response(page("Help Center", _STYLE + body, app_title=self.title))
        hits = search(state.articles, q, category, product)
        pages = max(1, -(-len(hits) // PER_PAGE))
        page_no = min(page_no, pages)
        if req.method == "GET":
            state.searches.append({"q": q, "category": category, "product": product, "page": page_no})
        shown = hits[(page_no - 1) * PER_PAGE : page_no * PER_PAGE]
        what = " · ".join(x for x in (f"“{q}”" if q else "", category, product) if x)
        status = (
            f"{len(hits)} results for {what}. Page {page_no} of {pages}." if hits else f"No articles match {what}."
        )

        def link(n: int, text: str) -> Html:
            query = {"q": q, "category": category, "product": product, "page": str(n)}
            href = req.url("/?" + "&".join(f"{k}={quote_plus(v)}" for k, v in query.items() if v))
            return render('<a href="{href}"{cur}>{text}</a>', href=href, cur=attr("aria-current", n == page_no and "page"), text=text)

        nav = Html("")
        if pages > 1:
            items = [link(page_no - 1, "Previous page")] if page_no > 1 else []
            items += [link(n, f"Page {n}") for n in range(1, pages + 1)]
            items += [link(page_no + 1, "Next page")] if page_no < pages else []
            nav = render('<nav aria-label="Pagination" class="pager">{items}</nav>\n', items=join(items, " "))
        body = render(
            '<h1>Search results</h1>\n{form}<p role="status">{status}</p>\n'
            '<ol class="list" aria-label="Results">{items}</ol>\n{nav}',
            form=form,
            status=status,
            items=join(_result(req, a) for a in shown),
            nav=nav,
        )
        return html_response(page("Search results", _STYLE + body, app_title=self.title))

    def _article(self, req: Request, state: KbState, a: Article) -> Response:
        related = [b for b in state.articles if b.topic == a.topic and b.id != a.id]
        rel = Html("")
        if related:
            rel = render(
                '<h2 id="related">Related articles</h2>\n<ul class="list" aria-labelledby="related">{items}</ul>\n',
                items=join(_result(req, b) for b in related),
            )
        thanks = Html("")
        if req.query.get("thanks") and a.id in state.feedback:
            thanks = Html('<p class="status" role="status">Thanks for your feedback.</p>\n')
        body = render(
            "<h1>{title}</h1>\n"
            '<p class="meta">Article {id} · {category} · {product} · Updated {updated}</p>\n'
            "<p>{intro} This article applies to the {product} only.</p>\n<p>{sentence}</p>\n"
            "<p>If the steps above do not help, contact your workspace administrator.</p>\n{thanks}"
            '<form method="post" action="{fb}" class="actions" aria-label="Feedback">'
            "<span>Was this article helpful?</span>"
            '<button type="submit" name="helpful" value="yes" class="secondary">Yes</button>'
            '<button type="submit" name="helpful" value="no" class="secondary">No</button></form>\n{rel}'
            '<p><a href="{home}">Back to the Help Center</a></p>',
            title=a.title,
            id=a.id,
            category=a.category,
            product=a.product,
            updated=a.updated,
            intro=_INTRO[a.category],
            sentence=a.sentence,
            thanks=thanks,
            fb=req.url(f"/articles/{a.id}/feedback"),
            rel=rel,
            home=req.url("/"),
        )
        return html_response(page(a.title, _STYLE + body, app_title=self.title))


_STYLE = Html(
    "<style>.kb-search{flex-wrap:wrap}.kb-search select{min-width:10rem}"
    ".cats{list-style:none;display:flex;gap:1rem;padding:0;flex-wrap:wrap}"
    ".pager{display:flex;gap:.75rem;margin-top:1rem}.pager a[aria-current]{font-weight:700}</style>\n"
)


def _result(req: Request, a: Article) -> Html:
    return render(
        '<li><a href="{href}">{title}</a><span class="meta">{id} · {category}</span></li>',
        href=req.url(f"/articles/{a.id}"),
        title=a.title,
        id=a.id,
        category=a.category,
    )


def _targets(rng: random.Random, articles: list[Article]) -> dict[str, str]:
    """Seeded targets: an article with a look-alike (same topic, other product), one that is on page 2
    of a search for its product, and a second article for two-part questions."""
    by_topic: dict[str, list[Article]] = {}
    for a in articles:
        by_topic.setdefault(a.topic, []).append(a)
    topic = rng.choice(sorted(by_topic))
    target, decoy = rng.sample(by_topic[topic], 2)
    # the second article is on the first page of its category's listing (search-browse-category opens it there)
    second = rng.choice([
        a for a in articles
        if a.category != target.category and a in search(articles, "", a.category, "")[:PER_PAGE]
    ])
    paged_product = rng.choice([p for p in PRODUCTS if len(search(articles, p, "", "")) > PER_PAGE])
    hits = search(articles, paged_product, "", "")
    paged = rng.choice(hits[PER_PAGE : 2 * PER_PAGE])
    facts: dict[str, str] = {}
    for prefix, a in (("", target), ("decoy_", decoy), ("second_", second), ("paged_", paged)):
        facts |= {
            f"{prefix}title": a.title,
            f"{prefix}article_id": a.id,
            f"{prefix}topic": a.topic,
            f"{prefix}product": a.product,
            f"{prefix}category": a.category,
            f"{prefix}answer": a.answer,
            f"{prefix}value": str(a.value),
            f"{prefix}unit": a.unit,
        }
    larger = max(target, decoy, key=lambda a: a.value)
    facts |= {"larger_title": larger.title, "larger_article_id": larger.id, "larger_product": larger.product}
    facts["paged_query"] = paged_product
    facts["paged_position"] = str(hits.index(paged) + 1)
    facts["article_count"] = str(len(articles))
    return facts
