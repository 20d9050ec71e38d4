"""The `miniwob-heuristic` agent's rules: one per MiniWoB++ instruction shape (the utterance in the page's
heading), each a plan of steps on the element ids of the ARIA observation (`agentrl.agents.miniwob_pages`
reads the page; ``agentrl.agents.miniwob`` runs the plan). First match wins; no match: no plan, and the
agent says ``done("")``.

>>> [(s.op, s.role, s.name, s.text) for s in utterance_plan('Enter "aIGD" into the text field and press Submit.')]
[('fill', 'textbox', None, 'aIGD'), ('click', 'button', 'Submit', '')]
>>> [(s.op, s.text) for s in utterance_plan("Enter 3:08 PM as the time and press submit.")][0]
('fill', '15:08')
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .miniwob_pages import (
    Step,
    algebra,
    arithmetic,
    autocomplete,
    captcha,
    cell_after,
    checks,
    click,
    click_submit_any,
    click_where,
    contact,
    copy_paste,
    count_text,
    datepicker,
    dyn,
    email,
    fill,
    fill_with,
    generate,
    greatest_card,
    guess,
    identify,
    last_word,
    login,
    movie_form,
    nth_word,
    odd_even,
    page_then,
    read_table_2,
    stock,
    submit,
    ticket,
    tree,
)

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
    (re.compile(r"Click the button\."), lambda m: [click("button")]),
    (re.compile(r"Click button (\S+), then click button (\S+)\."), lambda m: [click("button", m[1]), click("button", m[2])]),
    (re.compile(r"Click button (\S+?)\.?"), lambda m: [click("button", m[1])]),
    (re.compile(r'Click on the "(.*)" button\.'), lambda m: [click("button", m[1])]),
    (re.compile(r'Close the dialog box by clicking the "x"\.'), lambda m: [click("button", "Close")]),
    (
        re.compile(r'Click the button in the dialog box labeled "(.*)"\.'),
        lambda m: [click("button", "Close" if m[1] == "x" else m[1])],  # the "x" is named "Close"
    ),
    (re.compile(r"Click on Tab #(\d+)\."), lambda m: [click("link", f"Tab #{m[1]}")]),
    (re.compile(r'Click on a "(.*)" widget\.'), lambda m: [click(_WIDGETS.get(m[1], m[1]))]),
    (re.compile(r"Expand the section below and click submit\."), lambda m: [click("tab"), submit()]),
    (re.compile(r"Focus into the textbox\."), lambda m: [click("textbox")]),
    (re.compile(r"Focus into the (\w+) input textbox\."), lambda m: [click("textbox", None, _ord(m[1]))]),
    (re.compile(r'Enter "(.*)" into the text field and press Submit\.'), lambda m: [fill(m[1]), submit()]),
    (
        re.compile(r'Type "(.*)" in all (lower|upper) case letters in the text input and press Submit\.'),
        lambda m: [fill(m[1].lower() if m[2] == "lower" else m[1].upper()), submit()],
    ),
    (
        re.compile(r'Enter the password "(.*)" into both text fields and press submit\.'),
        lambda m: [fill(m[1], 0), fill(m[1], 1), submit()],
    ),
    (
        re.compile(r'Enter the username "(.*)" and the password "(.*)" into the text fields and press login\.'),
        lambda m: [dyn(login(m[1], m[2]), repeat=True)],
    ),
    (
        re.compile(r"Select (.*) from the list and click Submit\."),
        lambda m: [Step("select", "combobox", None, 0, m[1]), submit()],
    ),
    (
        re.compile(r"Select ([^,]*) from the scroll list and click Submit\."),
        lambda m: [Step("select", "listbox", None, 0, m[1]), submit()],
    ),
    (re.compile(r"Select (?!words similar to )(.*) and click Submit\."), lambda m: [*checks(m[1]), submit()]),
    (
        re.compile(r"Enter the value of (.*) into the text field and press Submit\."),
        lambda m: [dyn(fill_with(cell_after(m[1]))), submit()],
    ),
    (
        re.compile(r"Enter the value that corresponds with each label into the form and submit when done\."),
        lambda m: [dyn(read_table_2, repeat=True), submit()],
    ),
    (
        re.compile(r"Solve the math problem and type your answer into the textbox\. Press submit when done\."),
        lambda m: [dyn(fill_with(arithmetic)), submit()],
    ),
    (
        re.compile(r"Solve for x and type your answer into the textbox\. Press Submit when done\."),
        lambda m: [dyn(fill_with(algebra)), submit()],
    ),
    (
        re.compile(r'Navigate through the file tree\. Find and click on the folder or file named "(.*)"\.'),
        lambda m: [dyn(tree(m[1]), repeat=True)],
    ),
    (
        re.compile(r"Enter (\d\d)/(\d\d)/(\d{4}) as the date and hit submit\."),
        lambda m: [fill(f"{m[3]}-{m[1]}-{m[2]}"), submit()],
    ),
    (
        re.compile(r"Select (\d\d)/(\d\d)/(\d{4}) as the date and hit submit\."),
        lambda m: [dyn(datepicker(int(m[1]), int(m[2]), int(m[3])), repeat=True), submit()],
    ),
    (
        re.compile(r"Enter (\d+):(\d\d) (AM|PM) as the time and press submit\."),
        lambda m: [fill(_time24(m[1], m[2], m[3])), submit()],
    ),
    (
        re.compile(r'Check the (\w+) radio button and enter the number "(.*)" into the (\w+) textbox\.'),
        lambda m: [click("radio", None, _ord(m[1])), fill(m[2], _ord(m[3])), submit()],
    ),
    (
        re.compile(r'Choose (.*) from the dropdown, then click the button labeled "(.*)"\.'),
        lambda m: [Step("select", "combobox", None, 0, m[1]), click("button", m[2])],
    ),
    (
        re.compile(r'Find the (\d+)(?:st|nd|rd|th) word in the paragraph, type that into the textbox and press "Submit"\.'),
        lambda m: [dyn(fill_with(nth_word(int(m[1]) - 1))), submit()],
    ),
    (
        re.compile(r"Find the last word in the text area, enter it into the text field and hit Submit\."),
        lambda m: [dyn(fill_with(last_word, 1)), submit()],
    ),
    (
        re.compile(r"Type the text below into the text field and press Submit\."),
        lambda m: [dyn(fill_with(captcha)), submit()],
    ),
    (
        re.compile(r"Copy the text in the textarea below, paste it into the textbox and press Submit\."),
        lambda m: copy_paste(0),
    ),
    (
        re.compile(r"Copy the text from the (\w+) text area below and paste it into the text input, then press Submit\."),
        lambda m: copy_paste(_ord(m[1])),
    ),
    (re.compile(r"Select (-?\d+) with the spinner and hit Submit\."), lambda m: [Step("fill", "spinbutton", None, 0, m[1]), submit()]),
    (
        re.compile(r"Find and pick the card with the greatest number, then press submit\."),
        lambda m: [dyn(click_where(greatest_card)), submit()],
    ),
    (
        re.compile(r"Mark the numbers below as odd or even and press submit when done\."),
        lambda m: [dyn(odd_even, repeat=True), submit()],
    ),
    (
        re.compile(r"Buy the ticket with the (cheapest|most expensive|shortest|longest) (?:cost|duration)\."),
        lambda m: [dyn(ticket(m[1]))],
    ),
    (
        re.compile(r"Generate a number (less|greater) than (-?\d+), then press submit\."),
        lambda m: [dyn(generate(m[1], int(m[2])), repeat=True), submit()],
    ),
    (
        re.compile(r"Guess the number between 0-9 and press Submit\. Use the feedback below to find the right number\."),
        lambda m: [dyn(guess, repeat=True)],
    ),
    (
        re.compile(r"Buy \w+ stock when the price is less than \$(\d+(?:\.\d+)?)\."),
        lambda m: [dyn(stock(float(m[1])), repeat=True)],
    ),
    (re.compile(r"Select (\w+)"), lambda m: [click("menuitem", m[1])]),
    (
        re.compile(r'Use the textbox to enter "(.*)" and press "Search", then find and click the (\d+)\w\w search result\.'),
        lambda m: [fill(m[1]), click("button", "Search"),
                   dyn(page_then(int(m[2]) - 1, 3, lambda rs, i: rs[i] if len(rs) > i else None), repeat=True)],
    ),
    (
        re.compile(r'Enter an item that starts with "(.*?)"(?: and ends with "(.*)")?\.'),
        lambda m: [fill(m[1]), dyn(autocomplete(m[1], m[2] or ""), repeat=True), submit()],
    ),
    (
        re.compile(r"Search for (\w+) movies directed by (\w+) from year (\d+)\."),
        lambda m: [dyn(movie_form({"genre": m[1], "director": m[2], "year": m[3]}), repeat=True),
                   dyn(click_submit_any)],
    ),
    (
        re.compile(r"Find (\w+) in the contact book and click on their (phone|email|address)(?: number)?\."),
        lambda m: [dyn(contact(m[1], m[2]), repeat=True)],
    ),
    (re.compile(r"How many (digit|letter)s are there\?"), lambda m: [dyn(count_text(m[1]))]),
    (re.compile(r"Click the button that best describes the figure below\."), lambda m: [dyn(identify)]),
    (
        re.compile(r"Find the email by (\w+) and click the (star|trash) icon to (?:mark it as important|delete it)\."),
        lambda m: email(m[1], m[2]),
    ),
    (
        re.compile(r'Find the email by (\w+) and reply to them with the text "(.*)"\.'),
        lambda m: email(m[1], "reply", m[2]),
    ),
    *((re.compile(re.escape(t).replace("NAME", r"(?P<s>[\w-]+)").replace("DEST", r"(?P<r>[\w-]+)")),
       lambda m: email(m["s"], "forward", m["r"])) for t in _EMAIL_FWD),
]


def utterance_plan(utterance: str) -> list[Step] | None:
    """The plan for a MiniWoB utterance, or None when no rule knows its shape."""
    text = " ".join(utterance.split())
    for pattern, plan in RULES:
        m = pattern.fullmatch(text)
        if m:
            return plan(m)
    return None
