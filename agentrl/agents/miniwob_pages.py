"""What the `miniwob-heuristic` agent reads from a MiniWoB++ page: plan steps and the resolvers that turn the
current ARIA observation into the next action (``agentrl.agents.miniwob_rules`` maps instruction shapes to
plans made of these).

A plan step names an element by role, name and position (`Step`), or is a resolver that reads the current
observation and returns the next action, or None when it has nothing (more) to do. Resolvers keep what they
must remember across steps (folders opened, the page of results reached) in the agent's `memory` dict,
which is empty at each reset. A resolver never guesses: when the page does not show what it needs, it
returns None, and the agent ends with ``done("")`` when its plan runs out.

>>> from agentrl.envs.axtree import parse_snapshot
>>> ax = parse_snapshot('- generic [ref=e5]: x - 2 = 89')
>>> algebra(ax)
'91'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from agentrl.envs.actions import format_action
from agentrl.envs.axtree import AXTree, Element

Memory = dict[str, Any]
Resolver = Callable[[AXTree, Memory], str | None]


@dataclass(frozen=True)
class Step:
    """One planned action: `op` on the `nth` element of `role` (named `name` when given)."""

    op: str  # click | fill | select | dynamic
    role: str = ""
    name: str | None = None
    nth: int = 0
    text: str = ""  # fill: the text; select: the option
    resolve: Resolver | None = None  # dynamic: computes the action from the page (None: nothing to do)
    repeat: bool = False  # dynamic: stays the current step until its resolver returns None


def nth(ax: AXTree, role: str, name: str | None, n: int) -> Element | None:
    """The `n`-th element of `role` (named `name` when given) that has an id, or None."""
    found = [e for e in ax.find(role, name) if e.ref]
    return found[n] if -len(found) <= n < len(found) else None


def click(role: str, name: str | None = None, n: int = 0) -> Step:
    return Step("click", role, name, n)


def fill(text: str, n: int = 0) -> Step:
    return Step("fill", "textbox", None, n, text)


def dyn(resolve: Resolver, repeat: bool = False) -> Step:
    return Step("dynamic", resolve=resolve, repeat=repeat)


def submit(name: str = "Submit") -> Step:
    return click("button", name)


def label(e: Element) -> str:
    return e.name or e.value or ""


def checks(items: str) -> list[Step]:
    names = [] if items.strip() == "nothing" else [x.strip() for x in items.split(",") if x.strip()]
    return [dyn(check(n)) for n in names]


def check(name: str) -> Resolver:
    """Click the checkbox or radio named `name` (whichever the page has)."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        for role in ("checkbox", "radio"):
            el = nth(ax, role, name, 0)
            if el:
                return format_action("click", el.ref)
        return None

    return resolve


def fill_with(value: Callable[[AXTree], str | None], n: int = 0) -> Resolver:
    """Fill the `n`-th text box with what `value` reads from the page (nothing if it reads nothing)."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        v, box = value(ax), nth(ax, "textbox", None, n)
        return format_action("fill", box.ref, v) if v is not None and box else None

    return resolve


def cell_after(key: str) -> Callable[[AXTree], str | None]:
    """The table cell next to the cell named `key`."""

    def value(ax: AXTree) -> str | None:
        cells = [e for e in ax.elements if e.role == "cell"]
        for i, c in enumerate(cells[:-1]):
            if c.name == key:
                return cells[i + 1].name
        return None

    return value


def read_table_2(ax: AXTree, mem: Memory) -> str | None:
    """read-table-2: fill the next empty box, labelled "Key:", with the table's value for Key."""
    els = ax.elements
    for i, e in enumerate(els):
        if e.role == "textbox" and e.ref and not e.value and i and label(els[i - 1]).endswith(":"):
            key = label(els[i - 1])[:-1]
            if key not in mem.setdefault("filled", set()):
                mem["filled"].add(key)
                v = cell_after(key)(ax)
                return format_action("fill", e.ref, v) if v is not None else None
    return None


def arithmetic(ax: AXTree) -> str | None:
    for e in ax.elements:
        m = re.fullmatch(r"\s*(-?\d+)\s*([-+*x/])\s*(-?\d+)\s*=\s*", label(e))
        if m:
            a, op, b = int(m[1]), m[2], int(m[3])
            return str({"+": a + b, "-": a - b, "*": a * b, "x": a * b, "/": a // b if b else 0}[op])
    return None


def algebra(ax: AXTree) -> str | None:
    """simple-algebra: x from "a*x + b = c" in any of the page's forms ("x - 2 = 89", "3 + x = 7", ...)."""
    for e in ax.elements:
        m = re.fullmatch(r"\s*(-?\d*)\s*x\s*([-+])\s*(\d+)\s*=\s*(-?\d+)\s*", label(e))
        if m:
            a = int(m[1]) if m[1] not in ("", "-") else (-1 if m[1] == "-" else 1)
            b = int(m[3]) * (1 if m[2] == "+" else -1)
            x = Fraction(int(m[4]) - b, a)
            return str(x.numerator) if x.denominator == 1 else None
        m = re.fullmatch(r"\s*(-?\d+)\s*([-+])\s*x\s*=\s*(-?\d+)\s*", label(e))
        if m:
            a, c = int(m[1]), int(m[3])
            return str(c - a if m[2] == "+" else a - c)
    return None


def tree(target: str) -> Resolver:
    """navigate-tree: click the item named `target` if shown, else open the next folder not opened yet."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        named = [e for e in ax.elements if e.ref and e.role in ("generic", "listitem") and e.name == target]
        if not named:
            named = [e for e in ax.elements if e.ref and e.role == "generic" and e.value == target]
        if named:
            return format_action("click", named[0].ref)
        opened = mem.setdefault("opened", set())
        for e in ax.elements:
            text = label(e)
            if e.ref and e.role == "generic" and text and text not in opened:
                opened.add(text)
                return format_action("click", e.ref)
        return None

    return resolve


def nth_word(n: int) -> Callable[[AXTree], str | None]:
    def value(ax: AXTree) -> str | None:
        para = nth(ax, "paragraph", None, 0)
        words = label(para).split() if para else []
        return re.sub(r"[^a-zA-Z0-9]", "", words[n]) if len(words) > n else None

    return value


def last_word(ax: AXTree) -> str | None:
    box = nth(ax, "textbox", None, 0)
    words = (box.value or "").split() if box else []
    return re.sub(r"[^a-zA-Z0-9]", "", words[-1]) if words else None


def copy_paste(n: int) -> list[Step]:
    """copy-paste(-2): copy the `n`-th filled text box with the keyboard into the empty one (the observation
    trims the text's trailing space, so typing it from the tree would not be the same text)."""

    def box(filled: bool, k: int) -> Resolver:
        def resolve(ax: AXTree, mem: Memory) -> str | None:
            boxes = [e for e in ax.elements if e.role == "textbox" and e.ref and bool(e.value) == filled]
            return format_action("click", boxes[k].ref) if -len(boxes) <= k < len(boxes) else None
        return resolve

    keys = [Step("dynamic", resolve=lambda ax, mem, k=k: format_action("press", k)) for k in ("Control+a", "Control+c")]
    paste = Step("dynamic", resolve=lambda ax, mem: format_action("press", "Control+v"))
    return [dyn(box(True, n)), *keys, dyn(box(False, 0)), paste, submit()]


def captcha(ax: AXTree) -> str | None:
    """text-transform: the characters shown one per element before the text field."""
    chars: list[str] = []
    for e in ax.elements:
        if e.role == "textbox":
            return "".join(chars) or None
        if e.role == "generic" and e.ref and len(label(e)) == 1:
            chars.append(label(e))
    return None


def click_where(pick: Callable[[AXTree], Element | None]) -> Resolver:
    def resolve(ax: AXTree, mem: Memory) -> str | None:
        el = pick(ax)
        return format_action("click", el.ref) if el else None

    return resolve


def greatest_card(ax: AXTree) -> Element | None:
    cards = [e for e in ax.elements if e.ref and e.role == "generic" and re.fullmatch(r"-?\d+", label(e))]
    return max(cards, key=lambda e: int(label(e))) if cards else None


def odd_even(ax: AXTree, mem: Memory) -> str | None:
    """odd-or-even: for each number (between its Odd and Even buttons) press the right one, once."""
    els, done = ax.elements, mem.setdefault("marked", set())
    for i, e in enumerate(els):
        if e.role == "generic" and re.fullmatch(r"-?\d+", label(e)) and 0 < i < len(els) - 1 and i not in done:
            odd, even = els[i - 1], els[i + 1]
            if odd.role == even.role == "button" and odd.name == "Odd" and even.name == "Even":
                done.add(i)
                return format_action("click", (odd if int(label(e)) % 2 else even).ref)
    return None


def ticket(cmp: str) -> Resolver:
    """buy-ticket: the "Book for $N" button of the cheapest / most expensive / shortest / longest ticket."""

    def minutes(s: str) -> int | None:
        m = re.fullmatch(r"\s*(\d+)h\s*(\d+)m\s*", s)
        return int(m[1]) * 60 + int(m[2]) if m else None

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        tickets, duration = [], None
        for e in ax.elements:
            if e.role == "generic" and minutes(label(e)) is not None:
                duration = minutes(label(e))
            m = re.fullmatch(r"Book for \$(\d+)", e.name or "") if e.role == "button" else None
            if m and e.ref and duration is not None:
                tickets.append((int(m[1]), duration, e.ref))
        if not tickets:
            return None
        key = {"cheapest": (0, min), "most expensive": (0, max), "shortest": (1, min), "longest": (1, max)}[cmp]
        return format_action("click", key[1](tickets, key=lambda t: t[key[0]])[2])

    return resolve


def generate(op: str, bound: int) -> Resolver:
    """generate-number: press Generate until the shown number meets the condition (then the plan submits)."""
    ok = {"less": lambda v: v < bound, "greater": lambda v: v > bound}

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        gen = nth(ax, "button", "Generate", 0)
        shown = [int(label(e)) for e in ax.elements if e.role == "generic" and re.fullmatch(r"-?\d+", label(e))]
        if shown and ok[op](shown[0]) or gen is None or mem.setdefault("tries", 0) >= 12:
            return None
        mem["tries"] += 1
        return format_action("click", gen.ref)

    return resolve


def guess(ax: AXTree, mem: Memory) -> str | None:
    """guess-number: binary search on the page's "higher"/"lower" feedback, one guess per two steps."""
    lo, hi = mem.setdefault("lo", 0), mem.setdefault("hi", 9)
    box, submit = nth(ax, "spinbutton", None, 0), nth(ax, "button", "Submit", 0)
    if box is None or submit is None:
        return None
    if mem.get("typed") is not None:  # the guess is in the box: submit it
        mem["last"], mem["typed"] = mem["typed"], None
        return format_action("click", submit.ref)
    text = " ".join(label(e).lower() for e in ax.elements if e.role == "generic")
    if "last" in mem:
        if "higher" in text:
            lo = mem["last"] + 1
        elif "lower" in text:
            hi = mem["last"] - 1
        else:
            return None
    if lo > hi:
        return None
    mem["lo"], mem["hi"] = lo, hi
    mem["typed"] = (lo + hi) // 2
    return format_action("fill", box.ref, str(mem["typed"]))


def stock(threshold: float) -> Resolver:
    """stock-market: wait until the shown price is at most the threshold, then press Buy."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        buy = nth(ax, "button", "Buy", 0)
        prices = [float(m[1]) for e in ax.elements if e.role != "heading" and (m := re.search(r"\$(\d+(?:\.\d+)?)", label(e)))]
        if buy and prices and prices[0] <= threshold:
            mem["bought"] = True
            return format_action("click", buy.ref)
        return None if mem.get("bought") else format_action("wait")

    return resolve


def page_then(n: int, per_page: int, pick: Callable[[list[Element], int], Element | None]) -> Resolver:
    """search-engine: go to the page of result `n` (pagination links "1", "2", ...), then click it there."""
    page = n // per_page + 1

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        if mem.get("clicked"):
            return None
        links = [e for e in ax.elements if e.role == "link" and e.ref]
        results = [e for e in links if not re.fullmatch(r"\d+|[<>«»]|Next|Prev", e.name or "")]
        if not results:
            return None
        if page > 1 and not mem.get("paged"):
            to = next((e for e in links if e.name == str(page)), None)
            if to is None:
                return None
            mem["paged"] = True
            return format_action("click", to.ref)
        el = pick(results, n % per_page)
        mem["clicked"] = el is not None
        return format_action("click", el.ref) if el else None

    return resolve


def autocomplete(start: str, end: str) -> Resolver:
    """use-autocomplete: after typing the start, click a suggestion that ends right (the box takes it); the
    suggestions come a moment after the typing, so it waits for them (a few steps at most)."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        if mem.get("picked"):
            return None
        for e in ax.elements:
            if e.ref and e.role in ("listitem", "option", "menuitem", "generic") and label(e).lower().startswith(start.lower()) \
                    and label(e).endswith(end) and label(e) != start:
                mem["picked"] = True
                return format_action("click", e.ref)
        mem["waits"] = mem.get("waits", 0) + 1
        return format_action("wait") if mem["waits"] <= 3 else None

    return resolve


def row_of(els: list[Element], i: int, words: dict[str, str]) -> str | None:
    """The field of the box at `i`: the one keyword of `words` in the smallest enclosing element that has one."""
    depth, j = els[i].depth, i
    while j > 0:
        j -= 1
        if els[j].depth >= depth:
            continue
        depth, k, found = els[j].depth, j + 1, set()
        while k < len(els) and els[k].depth > depth:
            found |= {f for w, f in words.items() if w in label(els[k])}
            k += 1
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def movie_form(values: dict[str, str]) -> Resolver:
    """multi-layouts / multi-orderings: fill each box with the field its row's label names ("Genre", "Movie
    Genre", "Director Name", "Released Date", ...; the layouts put the label before or after the box)."""
    words = {"Genre": "genre", "Director": "director", "Year": "year", "Date": "year"}

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        done, els = mem.setdefault("filled", set()), ax.elements
        for i, e in enumerate(els):
            field = row_of(els, i, words) if e.role == "textbox" and e.ref else None
            if field and field not in done:
                done.add(field)
                return format_action("fill", e.ref, values[field])
        return None

    return resolve


def click_submit_any(ax: AXTree, mem: Memory) -> str | None:
    """The form's submit: a button, or a clickable text named Submit / Search / Go! (the layouts differ)."""
    for e in reversed(ax.elements):
        if e.ref and (e.role == "button" or e.role == "generic" and label(e) in ("Submit", "Search", "Go!")):
            return format_action("click", e.ref)
    return None


def contact(name: str, prop: str) -> Resolver:
    """phone-book: page with ">" until the contact's heading is `name`, then click its phone / email / address
    (the contact card lists them in that order)."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        els = ax.elements
        at = next((i for i, e in enumerate(els) if e.role == "heading" and e.attrs.get("level") == "2"), None)
        if at is not None and els[at].name == name:
            fields = [e for e in els[at + 1:] if e.ref and e.role in ("generic", "link") and label(e)]
            k = ("phone", "email", "address").index(prop)
            mem["found"] = True
            return format_action("click", fields[k].ref) if len(fields) > k else None
        nxt = nth(ax, "link", ">", 0)
        mem["pages"] = mem.get("pages", 0) + 1
        return format_action("click", nxt.ref) if nxt and not mem.get("found") and mem["pages"] <= 20 else None

    return resolve


def count_text(kind: str) -> Resolver:
    """count-shape, "How many digits / letters are there?": the figure's characters are text in the tree."""
    test = str.isdigit if kind == "digit" else str.isalpha

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        n = sum(1 for e in ax.elements if e.role == "generic" and len(label(e)) == 1 and test(label(e)))
        el = nth(ax, "button", str(n), 0)
        return format_action("click", el.ref) if el else None

    return resolve


def identify(ax: AXTree, mem: Memory) -> str | None:
    """identify-shape when the figure is a character (a digit or a letter, text in the tree); a drawn shape
    has no text, so no answer."""
    chars = [label(e) for e in ax.elements if e.role == "generic" and len(label(e)) == 1 and label(e).isalnum()]
    if len(chars) != 1:
        return None
    el = nth(ax, "button", "Number" if chars[0].isdigit() else "Letter", 0)
    return format_action("click", el.ref) if el else None


def login(user: str, password: str) -> Resolver:
    """login-user(-popup): fill both boxes and press the form's button; a popup that interrupts (it disables
    the form) is dismissed with its "Cancel", and the password (not shown in the tree) is typed again."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        if mem.get("sent"):
            return None
        cancel = nth(ax, "button", "Cancel", 0)
        if cancel and "disabled" not in cancel.attrs:
            mem.pop("password", None)
            return format_action("click", cancel.ref)
        user_box, pass_box = nth(ax, "textbox", None, 0), nth(ax, "textbox", None, 1)
        if user_box is None or pass_box is None:
            return None
        if user_box.value != user:
            return format_action("fill", user_box.ref, user)
        if not mem.get("password"):
            mem["password"] = True
            return format_action("fill", pass_box.ref, password)
        button = nth(ax, "button", "Login", 0) or nth(ax, "button", None, 0)
        mem["sent"] = True
        return format_action("click", button.ref) if button else None

    return resolve


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def datepicker(month: int, day: int, year: int) -> Resolver:
    """choose-date-*: open the date picker, step Prev / Next to the month, click the day's link."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        if mem.get("picked"):
            return None
        shown = next((m for e in ax.elements if (m := re.fullmatch(rf"({'|'.join(MONTHS)}) (\d{{4}})", label(e)))), None)
        if shown is None:
            box = nth(ax, "textbox", None, 0)
            mem["opens"] = mem.get("opens", 0) + 1
            return format_action("click", box.ref) if box and mem["opens"] <= 2 else None
        at, want = (int(shown[2]), MONTHS.index(shown[1]) + 1), (year, month)
        if at == want:
            link = nth(ax, "link", str(day), 0)
            mem["picked"] = link is not None
            return format_action("click", link.ref) if link else None
        move = nth(ax, "generic", "Prev" if at > want else "Next", 0)
        return format_action("click", move.ref) if move else None

    return resolve


def click_text(text: str) -> Resolver:
    """Click the first element whose name or text is `text` (a clickable label, e.g. the email's "Reply")."""
    return click_where(lambda ax: next((e for e in ax.elements if e.ref and label(e) == text), None))


def email(sender: str, action: str, text: str = "") -> list[Step]:
    """email-inbox-*: open the sender's email, then star / trash (the unnamed icons of the email bar, in the
    page's fixed order: close, trash, star), reply (type, send) or forward (recipient, send)."""

    def open_email(ax: AXTree, mem: Memory) -> str | None:
        els = ax.elements
        for i, e in enumerate(els[:-1]):
            if e.ref and e.role == "generic" and "pointer" in e.attrs.get("cursor", "") and label(els[i + 1]) == sender:
                return format_action("click", e.ref)
        return None

    def icon(k: int) -> Resolver:
        def resolve(ax: AXTree, mem: Memory) -> str | None:
            icons = [e for e in ax.elements if e.ref and e.role == "generic" and not label(e)
                     and "pointer" in e.attrs.get("cursor", "")]
            return format_action("click", icons[k].ref) if len(icons) > k else None
        return resolve

    steps = [dyn(open_email)]
    if action in ("star", "trash"):
        return steps + [dyn(icon({"trash": 1, "star": 2}[action]))]
    if action == "reply":
        return steps + [dyn(click_text("Reply")), fill(text), dyn(icon(1))]
    return steps + [dyn(click_text("Forward")), fill(text), dyn(icon(1))]
