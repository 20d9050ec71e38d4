"""The `miniwob-heuristic` agent's rules: one per MiniWoB++ instruction shape, each a plan of steps on the
element ids of the ARIA observation (``agentrl.agents.miniwob`` runs them).

A plan step names an element by role, name and position (`Step`), or is a resolver that reads the current
observation and returns the next action, or None when it has nothing (more) to do. Resolvers keep what they
must remember across steps (folders opened, the page of results reached) in the agent's `memory` dict,
which is empty at each reset. A rule never guesses: when the page does not show what it needs, the plan
runs out and the agent says ``done("")``.

>>> [(s.op, s.role, s.name, s.text) for s in utterance_plan('Enter "aIGD" into the text field and press Submit.')]
[('fill', 'textbox', None, 'aIGD'), ('click', 'button', 'Submit', '')]
>>> [(s.op, s.text) for s in utterance_plan("Enter 3:08 PM as the time and press submit.")][0]
('fill', '15:08')
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


def _click(role: str, name: str | None = None, n: int = 0) -> Step:
    return Step("click", role, name, n)


def _fill(text: str, n: int = 0) -> Step:
    return Step("fill", "textbox", None, n, text)


def _dyn(resolve: Resolver, repeat: bool = False) -> Step:
    return Step("dynamic", resolve=resolve, repeat=repeat)


def _submit(name: str = "Submit") -> Step:
    return _click("button", name)


def _label(e: Element) -> str:
    return e.name or e.value or ""


def _checks(items: str) -> list[Step]:
    names = [] if items.strip() == "nothing" else [x.strip() for x in items.split(",") if x.strip()]
    return [_dyn(_check(n)) for n in names]


def _check(name: str) -> Resolver:
    """Click the checkbox or radio named `name` (whichever the page has)."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        for role in ("checkbox", "radio"):
            el = nth(ax, role, name, 0)
            if el:
                return format_action("click", el.ref)
        return None

    return resolve


def _fill_with(value: Callable[[AXTree], str | None], n: int = 0, role: str = "textbox") -> Resolver:
    """Fill the `n`-th box of `role` with what `value` reads from the page (nothing if it reads nothing)."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        v, box = value(ax), nth(ax, role, None, n)
        return format_action("fill", box.ref, v) if v is not None and box else None

    return resolve


def _cell_after(key: str) -> Callable[[AXTree], str | None]:
    """The table cell next to the cell named `key`."""

    def value(ax: AXTree) -> str | None:
        cells = [e for e in ax.elements if e.role == "cell"]
        for i, c in enumerate(cells[:-1]):
            if c.name == key:
                return cells[i + 1].name
        return None

    return value


def _read_table_2(ax: AXTree, mem: Memory) -> str | None:
    """read-table-2: fill the next empty box, labelled "Key:", with the table's value for Key."""
    els = ax.elements
    for i, e in enumerate(els):
        if e.role == "textbox" and e.ref and not e.value and i and _label(els[i - 1]).endswith(":"):
            key = _label(els[i - 1])[:-1]
            if key not in mem.setdefault("filled", set()):
                mem["filled"].add(key)
                v = _cell_after(key)(ax)
                return format_action("fill", e.ref, v) if v is not None else None
    return None


def _arithmetic(ax: AXTree) -> str | None:
    for e in ax.elements:
        m = re.fullmatch(r"\s*(-?\d+)\s*([-+*x/])\s*(-?\d+)\s*=\s*", _label(e))
        if m:
            a, op, b = int(m[1]), m[2], int(m[3])
            return str({"+": a + b, "-": a - b, "*": a * b, "x": a * b, "/": a // b if b else 0}[op])
    return None


def _algebra(ax: AXTree) -> str | None:
    """simple-algebra: x from "a*x + b = c" in any of the page's forms ("x - 2 = 89", "3 + x = 7", ...)."""
    for e in ax.elements:
        m = re.fullmatch(r"\s*(-?\d*)\s*x\s*([-+])\s*(\d+)\s*=\s*(-?\d+)\s*", _label(e))
        if m:
            a = int(m[1]) if m[1] not in ("", "-") else (-1 if m[1] == "-" else 1)
            b = int(m[3]) * (1 if m[2] == "+" else -1)
            x = Fraction(int(m[4]) - b, a)
            return str(x.numerator) if x.denominator == 1 else None
        m = re.fullmatch(r"\s*(-?\d+)\s*([-+])\s*x\s*=\s*(-?\d+)\s*", _label(e))
        if m:
            a, c = int(m[1]), int(m[3])
            return str(c - a if m[2] == "+" else a - c)
    return None


def _tree(target: str) -> Resolver:
    """navigate-tree: click the item named `target` if shown, else open the next folder not opened yet."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        named = [e for e in ax.elements if e.ref and e.role in ("generic", "listitem") and e.name == target]
        if not named:
            named = [e for e in ax.elements if e.ref and e.role == "generic" and e.value == target]
        if named:
            return format_action("click", named[0].ref)
        opened = mem.setdefault("opened", set())
        for e in ax.elements:
            label = _label(e)
            if e.ref and e.role == "generic" and label and label not in opened:
                opened.add(label)
                return format_action("click", e.ref)
        return None

    return resolve


def _nth_word(n: int) -> Callable[[AXTree], str | None]:
    def value(ax: AXTree) -> str | None:
        para = nth(ax, "paragraph", None, 0)
        words = _label(para).split() if para else []
        return re.sub(r"[^a-zA-Z0-9]", "", words[n]) if len(words) > n else None

    return value


def _last_word(ax: AXTree) -> str | None:
    box = nth(ax, "textbox", None, 0)
    words = (box.value or "").split() if box else []
    return re.sub(r"[^a-zA-Z0-9]", "", words[-1]) if words else None


def _copy_paste(n: int) -> list[Step]:
    """copy-paste(-2): copy the `n`-th filled text box with the keyboard into the empty one (the observation
    trims the text's trailing space, so typing it from the tree would not be the same text)."""

    def box(filled: bool, k: int) -> Resolver:
        def resolve(ax: AXTree, mem: Memory) -> str | None:
            boxes = [e for e in ax.elements if e.role == "textbox" and e.ref and bool(e.value) == filled]
            return format_action("click", boxes[k].ref) if -len(boxes) <= k < len(boxes) else None
        return resolve

    keys = [Step("dynamic", resolve=lambda ax, mem, k=k: format_action("press", k)) for k in ("Control+a", "Control+c")]
    paste = Step("dynamic", resolve=lambda ax, mem: format_action("press", "Control+v"))
    return [_dyn(box(True, n)), *keys, _dyn(box(False, 0)), paste, _submit()]


def _captcha(ax: AXTree) -> str | None:
    """text-transform: the characters shown one per element before the text field."""
    chars: list[str] = []
    for e in ax.elements:
        if e.role == "textbox":
            return "".join(chars) or None
        if e.role == "generic" and e.ref and len(_label(e)) == 1:
            chars.append(_label(e))
    return None


def _click_where(pick: Callable[[AXTree], Element | None]) -> Resolver:
    def resolve(ax: AXTree, mem: Memory) -> str | None:
        el = pick(ax)
        return format_action("click", el.ref) if el else None

    return resolve


def _greatest_card(ax: AXTree) -> Element | None:
    cards = [e for e in ax.elements if e.ref and e.role == "generic" and re.fullmatch(r"-?\d+", _label(e))]
    return max(cards, key=lambda e: int(_label(e))) if cards else None


def _odd_even(ax: AXTree, mem: Memory) -> str | None:
    """odd-or-even: for each number (between its Odd and Even buttons) press the right one, once."""
    els, done = ax.elements, mem.setdefault("marked", set())
    for i, e in enumerate(els):
        if e.role == "generic" and re.fullmatch(r"-?\d+", _label(e)) and 0 < i < len(els) - 1 and i not in done:
            odd, even = els[i - 1], els[i + 1]
            if odd.role == even.role == "button" and odd.name == "Odd" and even.name == "Even":
                done.add(i)
                return format_action("click", (odd if int(_label(e)) % 2 else even).ref)
    return None


def _ticket(cmp: str) -> Resolver:
    """buy-ticket: the "Book for $N" button of the cheapest / most expensive / shortest / longest ticket."""

    def minutes(s: str) -> int | None:
        m = re.fullmatch(r"\s*(\d+)h\s*(\d+)m\s*", s)
        return int(m[1]) * 60 + int(m[2]) if m else None

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        tickets, duration = [], None
        for e in ax.elements:
            if e.role == "generic" and minutes(_label(e)) is not None:
                duration = minutes(_label(e))
            m = re.fullmatch(r"Book for \$(\d+)", e.name or "") if e.role == "button" else None
            if m and e.ref and duration is not None:
                tickets.append((int(m[1]), duration, e.ref))
        if not tickets:
            return None
        key = {"cheapest": (0, min), "most expensive": (0, max), "shortest": (1, min), "longest": (1, max)}[cmp]
        return format_action("click", key[1](tickets, key=lambda t: t[key[0]])[2])

    return resolve


def _generate(op: str, bound: int) -> Resolver:
    """generate-number: press Generate until the shown number meets the condition (then the plan submits)."""
    ok = {"less": lambda v: v < bound, "greater": lambda v: v > bound, "equal": lambda v: v == bound}

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        gen = nth(ax, "button", "Generate", 0)
        shown = [int(_label(e)) for e in ax.elements if e.role == "generic" and re.fullmatch(r"-?\d+", _label(e))]
        if shown and ok[op](shown[0]) or gen is None or mem.setdefault("tries", 0) >= 12:
            return None
        mem["tries"] += 1
        return format_action("click", gen.ref)

    return resolve


def _guess(ax: AXTree, mem: Memory) -> str | None:
    """guess-number: binary search on the page's "higher"/"lower" feedback, one guess per two steps."""
    lo, hi = mem.setdefault("lo", 0), mem.setdefault("hi", 9)
    box, submit = nth(ax, "spinbutton", None, 0), nth(ax, "button", "Submit", 0)
    if box is None or submit is None:
        return None
    if mem.get("typed") is not None:  # the guess is in the box: submit it
        mem["last"], mem["typed"] = mem["typed"], None
        return format_action("click", submit.ref)
    text = " ".join(_label(e).lower() for e in ax.elements if e.role == "generic")
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


def _stock(threshold: float) -> Resolver:
    """stock-market: wait until the shown price is at most the threshold, then press Buy."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        buy = nth(ax, "button", "Buy", 0)
        prices = [float(m[1]) for e in ax.elements if e.role != "heading" and (m := re.search(r"\$(\d+(?:\.\d+)?)", _label(e)))]
        if buy and prices and prices[0] <= threshold:
            mem["bought"] = True
            return format_action("click", buy.ref)
        return None if mem.get("bought") else format_action("wait")

    return resolve


def _page_then(n: int, per_page: int, pick: Callable[[list[Element], int], Element | None]) -> Resolver:
    """search-engine: go to the page of result `n` (pagination links "1", "2", ...), then click it there."""
    page = n // per_page + 1

    def resolve(ax: AXTree, mem: Memory) -> str | None:
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


def _autocomplete(start: str, end: str) -> Resolver:
    """use-autocomplete: after typing the start, click a suggestion that ends right (the box takes it); the
    suggestions come a moment after the typing, so it waits for them (a few steps at most)."""

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        if mem.get("picked"):
            return None
        for e in ax.elements:
            if e.ref and e.role in ("listitem", "option", "menuitem", "generic") and _label(e).lower().startswith(start.lower()) \
                    and _label(e).endswith(end) and _label(e) != start:
                mem["picked"] = True
                return format_action("click", e.ref)
        mem["waits"] = mem.get("waits", 0) + 1
        return format_action("wait") if mem["waits"] <= 3 else None

    return resolve


def _row_of(els: list[Element], i: int, words: dict[str, str]) -> str | None:
    """The field of the box at `i`: the one keyword of `words` in the smallest enclosing element that has one."""
    depth, j = els[i].depth, i
    while j > 0:
        j -= 1
        if els[j].depth >= depth:
            continue
        depth, k, found = els[j].depth, j + 1, set()
        while k < len(els) and els[k].depth > depth:
            found |= {f for w, f in words.items() if w in _label(els[k])}
            k += 1
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def _movie_form(values: dict[str, str]) -> Resolver:
    """multi-layouts / multi-orderings: fill each box with the field its row's label names ("Genre", "Movie
    Genre", "Director Name", "Released Date", ...; the layouts put the label before or after the box)."""
    words = {"Genre": "genre", "Director": "director", "Year": "year", "Date": "year"}

    def resolve(ax: AXTree, mem: Memory) -> str | None:
        done, els = mem.setdefault("filled", set()), ax.elements
        for i, e in enumerate(els):
            field = _row_of(els, i, words) if e.role == "textbox" and e.ref else None
            if field and field not in done:
                done.add(field)
                return format_action("fill", e.ref, values[field])
        return None

    return resolve


def _click_submit_any(ax: AXTree, mem: Memory) -> str | None:
    """The form's submit: a button, or a clickable text named Submit / Search / Go! (the layouts differ)."""
    for e in reversed(ax.elements):
        if e.ref and (e.role == "button" or e.role == "generic" and _label(e) in ("Submit", "Search", "Go!")):
            return format_action("click", e.ref)
    return None


def _click_text(text: str) -> Resolver:
    """Click the first element whose name or text is `text` (a clickable label, e.g. the email's "Reply")."""
    return _click_where(lambda ax: next((e for e in ax.elements if e.ref and _label(e) == text), None))


def _email(sender: str, action: str, text: str = "") -> list[Step]:
    """email-inbox-*: open the sender's email, then star / trash (the unnamed icons of the email bar, in the
    page's fixed order: close, trash, star), reply (type, send) or forward (recipient, send)."""

    def open_email(ax: AXTree, mem: Memory) -> str | None:
        els = ax.elements
        for i, e in enumerate(els[:-1]):
            if e.ref and e.role == "generic" and "pointer" in e.attrs.get("cursor", "") and _label(els[i + 1]) == sender:
                return format_action("click", e.ref)
        return None

    def icon(k: int) -> Resolver:
        def resolve(ax: AXTree, mem: Memory) -> str | None:
            icons = [e for e in ax.elements if e.ref and e.role == "generic" and not _label(e)
                     and "pointer" in e.attrs.get("cursor", "")]
            return format_action("click", icons[k].ref) if len(icons) > k else None
        return resolve

    steps = [_dyn(open_email)]
    if action in ("star", "trash"):
        return steps + [_dyn(icon({"trash": 1, "star": 2}[action]))]
    if action == "reply":
        return steps + [_dyn(_click_text("Reply")), _fill(text), _dyn(icon(1))]
    return steps + [_dyn(_click_text("Forward")), _fill(text), _dyn(icon(1))]


_ORDINAL = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4, "6th": 5, "7th": 6, "8th": 7, "9th": 8}
_WIDGETS = {"button": "button", "checkbox": "checkbox", "radio": "radio", "text": "textbox", "textarea": "textbox"}


def _ord(s: str) -> int:
    return _ORDINAL.get(s, int(re.sub(r"\D", "", s) or 1) - 1)


def _time24(h: str, m: str, ampm: str) -> str:
    return f"{int(h) % 12 + (12 if ampm == 'PM' else 0):02d}:{m}"


Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], list[Step]]]
# email-inbox-forward-nl's own templates (NAME: the sender, DEST: the recipient)
_EMAIL_FWD = [
    "Find the email by NAME and forward that email to DEST.", "Locate the email by NAME. Forward that email to DEST.",
    "Look for the email from NAME and forward to DEST.", "Forward to DEST the email from NAME.",
    "Send DEST the email you got from NAME.", "Go to the email by NAME. Send it to DEST.",
    "Send to DEST the email you got from NAME.", "Forward the email from NAME to DEST.", "Send DEST the email from NAME.",
    "Please find the message by NAME, then send it to DEST.", "Please forward the information from NAME to DEST.",
    "DEST wants the email you got from NAME.", "DEST wants the email NAME sent to you.",
    "The mail by NAME should be forwarded to DEST.", "Please forward to DEST the email by NAME.",
    "Give DEST the message you received from NAME,", "Forward the mail by NAME to DEST.",
    "Go to the message from NAME and send it to DEST.", "DEST is waiting for the email by NAME.",
    "NAME wants his or her message to be sent to DEST.", "I want the mail by NAME to be sent to DEST.",
    "Forward to DEST the email you got from NAME.", "Please forward the message from NAME to DEST.",
    "Please find the mail by NAME. Forward it to DEST.", "Navigate to the message from NAME and send it to DEST.",
    "Forward DEST the email from NAME.", "Forward DEST the message NAME sent you.",
    "Send DEST the information NAME sent to you.", "Search for the mail NAME sent you and send it to DEST.",
    "Get NAME email and then forward it to DEST please.", "Open the e-mail from NAME and forward it to DEST.",
]

# (utterance pattern, plan from its match); first match wins
RULES: list[Rule] = [
    (re.compile(r"Click the button\."), lambda m: [_click("button")]),
    (re.compile(r"Click button (\S+), then click button (\S+)\."), lambda m: [_click("button", m[1]), _click("button", m[2])]),
    (re.compile(r"Click button (\S+?)\.?"), lambda m: [_click("button", m[1])]),
    (re.compile(r'Click on the "(.*)" button\.'), lambda m: [_click("button", m[1])]),
    (re.compile(r'Close the dialog box by clicking the "x"\.'), lambda m: [_click("button", "Close")]),
    (
        re.compile(r'Click the button in the dialog box labeled "(.*)"\.'),
        lambda m: [_click("button", "Close" if m[1] == "x" else m[1])],  # the "x" is named "Close"
    ),
    (re.compile(r"Click on Tab #(\d+)\."), lambda m: [_click("link", f"Tab #{m[1]}")]),
    (re.compile(r'Click on a "(.*)" widget\.'), lambda m: [_click(_WIDGETS.get(m[1], m[1]))]),
    (re.compile(r"Expand the section below and click submit\."), lambda m: [_click("tab"), _submit()]),
    (re.compile(r"Focus into the textbox\."), lambda m: [_click("textbox")]),
    (re.compile(r"Focus into the (\w+) input textbox\."), lambda m: [_click("textbox", None, _ord(m[1]))]),
    (re.compile(r'Enter "(.*)" into the text field and press Submit\.'), lambda m: [_fill(m[1]), _submit()]),
    (
        re.compile(r'Type "(.*)" in all (lower|upper) case letters in the text input and press Submit\.'),
        lambda m: [_fill(m[1].lower() if m[2] == "lower" else m[1].upper()), _submit()],
    ),
    (
        re.compile(r'Enter the password "(.*)" into both text fields and press submit\.'),
        lambda m: [_fill(m[1], 0), _fill(m[1], 1), _submit()],
    ),
    (
        re.compile(r'Enter the username "(.*)" and the password "(.*)" into the text fields and press login\.'),
        lambda m: [_fill(m[1], 0), _fill(m[2], 1), _dyn(_click_where(
            lambda ax: nth(ax, "button", "Login", 0) or nth(ax, "button", None, 0)))],
    ),
    (
        re.compile(r"Select (.*) from the list and click Submit\."),
        lambda m: [Step("select", "combobox", None, 0, m[1]), _submit()],
    ),
    (
        re.compile(r"Select ([^,]*) from the scroll list and click Submit\."),
        lambda m: [Step("select", "listbox", None, 0, m[1]), _submit()],
    ),
    (re.compile(r"Select (.*) and click Submit\."), lambda m: [*_checks(m[1]), _submit()]),
    (
        re.compile(r"Enter the value of (.*) into the text field and press Submit\."),
        lambda m: [_dyn(_fill_with(_cell_after(m[1]))), _submit()],
    ),
    (
        re.compile(r"Enter the value that corresponds with each label into the form and submit when done\."),
        lambda m: [_dyn(_read_table_2, repeat=True), _submit()],
    ),
    (
        re.compile(r"Solve the math problem and type your answer into the textbox\. Press submit when done\."),
        lambda m: [_dyn(_fill_with(_arithmetic)), _submit()],
    ),
    (
        re.compile(r"Solve for x and type your answer into the textbox\. Press Submit when done\."),
        lambda m: [_dyn(_fill_with(_algebra)), _submit()],
    ),
    (
        re.compile(r'Navigate through the file tree\. Find and click on the folder or file named "(.*)"\.'),
        lambda m: [_dyn(_tree(m[1]), repeat=True)],
    ),
    (
        re.compile(r"Enter (\d\d)/(\d\d)/(\d{4}) as the date and hit submit\."),
        lambda m: [_fill(f"{m[3]}-{m[1]}-{m[2]}"), _submit()],
    ),
    (
        re.compile(r"Enter (\d+):(\d\d) (AM|PM) as the time and press submit\."),
        lambda m: [_fill(_time24(m[1], m[2], m[3])), _submit()],
    ),
    (
        re.compile(r'Check the (\w+) radio button and enter the number "(.*)" into the (\w+) textbox\.'),
        lambda m: [_click("radio", None, _ord(m[1])), _fill(m[2], _ord(m[3])), _submit()],
    ),
    (
        re.compile(r'Choose (.*) from the dropdown, then click the button labeled "(.*)"\.'),
        lambda m: [Step("select", "combobox", None, 0, m[1]), _click("button", m[2])],
    ),
    (
        re.compile(r'Find the (\d+)(?:st|nd|rd|th) word in the paragraph, type that into the textbox and press "Submit"\.'),
        lambda m: [_dyn(_fill_with(_nth_word(int(m[1]) - 1))), _submit()],
    ),
    (
        re.compile(r"Find the last word in the text area, enter it into the text field and hit Submit\."),
        lambda m: [_dyn(_fill_with(_last_word, 1)), _submit()],
    ),
    (
        re.compile(r"Type the text below into the text field and press Submit\."),
        lambda m: [_dyn(_fill_with(_captcha)), _submit()],
    ),
    (
        re.compile(r"Copy the text in the textarea below, paste it into the textbox and press Submit\."),
        lambda m: _copy_paste(0),
    ),
    (
        re.compile(r"Copy the text from the (\w+) text area below and paste it into the text input, then press Submit\."),
        lambda m: _copy_paste(_ord(m[1])),
    ),
    (re.compile(r"Select (-?\d+) with the spinner and hit Submit\."), lambda m: [Step("fill", "spinbutton", None, 0, m[1]), _submit()]),
    (
        re.compile(r"Find and pick the card with the greatest number, then press submit\."),
        lambda m: [_dyn(_click_where(_greatest_card)), _submit()],
    ),
    (
        re.compile(r"Mark the numbers below as odd or even and press submit when done\."),
        lambda m: [_dyn(_odd_even, repeat=True), _submit()],
    ),
    (
        re.compile(r"Buy the ticket with the (cheapest|most expensive|shortest|longest) (?:cost|duration)\."),
        lambda m: [_dyn(_ticket(m[1]))],
    ),
    (
        re.compile(r"Generate a number (less|greater) than (-?\d+), then press submit\."),
        lambda m: [_dyn(_generate(m[1], int(m[2])), repeat=True), _submit()],
    ),
    (
        re.compile(r"Guess the number between 0-9 and press Submit\. Use the feedback below to find the right number\."),
        lambda m: [_dyn(_guess, repeat=True)],
    ),
    (
        re.compile(r"Buy \w+ stock when the price is less than \$(\d+(?:\.\d+)?)\."),
        lambda m: [_dyn(_stock(float(m[1])), repeat=True)],
    ),
    (re.compile(r"Select (\w+)"), lambda m: [_click("menuitem", m[1])]),
    (
        re.compile(r'Use the textbox to enter "(.*)" and press "Search", then find and click the (\d+)\w\w search result\.'),
        lambda m: [_fill(m[1]), _click("button", "Search"),
                   _dyn(_page_then(int(m[2]) - 1, 3, lambda rs, i: rs[i] if len(rs) > i else None))],
    ),
    (
        re.compile(r'Enter an item that starts with "(.*?)"(?: and ends with "(.*)")?\.'),
        lambda m: [_fill(m[1]), _dyn(_autocomplete(m[1], m[2] or ""), repeat=True), _submit()],
    ),
    (
        re.compile(r"Search for (\w+) movies directed by (\w+) from year (\d+)\."),
        lambda m: [_dyn(_movie_form({"genre": m[1], "director": m[2], "year": m[3]}), repeat=True),
                   _dyn(_click_submit_any)],
    ),
    (
        re.compile(r"Find the email by (\w+) and click the (star|trash) icon to (?:mark it as important|delete it)\."),
        lambda m: _email(m[1], m[2]),
    ),
    (
        re.compile(r'Find the email by (\w+) and reply to them with the text "(.*)"\.'),
        lambda m: _email(m[1], "reply", m[2]),
    ),
    *((re.compile(re.escape(t).replace("NAME", r"(?P<s>[\w-]+)").replace("DEST", r"(?P<r>[\w-]+)")),
       lambda m: _email(m["s"], "forward", m["r"])) for t in _EMAIL_FWD),
]


def utterance_plan(utterance: str) -> list[Step] | None:
    """The plan for a MiniWoB utterance, or None when no rule knows its shape."""
    text = " ".join(utterance.split())
    for pattern, plan in RULES:
        m = pattern.fullmatch(text)
        if m:
            return plan(m)
    return None
