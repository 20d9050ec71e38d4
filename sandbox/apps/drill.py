"""`drill`: tiny seeded pages for RL training drills, one decision each.

* ``/drill/one``: 4-6 elements, exactly one ``<button>``; the others are links and headings. Every label
  comes from the same small vocabulary, so only the element's role tells the button apart. Order varies
  per seed (the button is equally likely at every position).
* ``/drill/named``: 3-6 buttons with distinct labels; the fact ``target`` names the one to click.

The pages are deliberately minimal (no site header or footer; every element a direct child of ``<main>``)
so the accessibility tree, and therefore the prompt, stays short and uniform. Nothing on them does anything: buttons have no handler and links point at ``#``,
so an episode is decided by which element the agent activates (the ``element_activated`` detector).
The server records nothing per click; ``public_state`` reports the layout.

>>> app = DrillApp()
>>> state = app.new_state(7)
>>> app.facts(state)["target"] in [label for _, label in state.named]
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .base import App, Html, Request, Response, html_response, join, not_found, render

VOCABULARY = ("Save", "Open", "Delete", "Next", "Back", "Send", "Cancel", "Submit", "Edit", "Share", "Print", "Close")

Element = tuple[str, str]  # (kind: "button" | "link" | "heading", label)


@dataclass
class DrillState:
    one: list[Element]  # the one-button page, in page order
    named: list[Element]  # the named-button page (all buttons)
    target: str  # label of the button to click on the named page


class DrillApp(App):
    name = "drill"
    title = "Drill"
    description = "Seeded one-decision pages for RL drills: click the one button; click the named button."

    def new_state(self, seed: int) -> DrillState:
        rng = random.Random(f"drill:{seed}")
        n = rng.randint(4, 6)
        button_at = rng.randrange(n)
        one = [
            ("button" if i == button_at else rng.choice(("link", "heading")), rng.choice(VOCABULARY)) for i in range(n)
        ]
        labels = rng.sample(VOCABULARY, rng.randint(3, 6))
        return DrillState(one=one, named=[("button", x) for x in labels], target=rng.choice(labels))

    def facts(self, state: DrillState) -> dict[str, str]:
        button = next(label for kind, label in state.one if kind == "button")
        return {
            "button": button,
            "button_position": str(next(i for i, (k, _) in enumerate(state.one) if k == "button")),
            "count": str(len(state.one)),
            "target": state.target,
            "named_count": str(len(state.named)),
        }

    def public_state(self, state: DrillState) -> dict[str, Any]:
        return {"one": [list(e) for e in state.one], "named": [x for _, x in state.named], "target": state.target}

    def handle(self, req: Request, state: DrillState) -> Response:
        if req.path == "/one":
            return html_response(_page("Drill", state.one))
        if req.path == "/named":
            return html_response(_page("Drill", state.named))
        return not_found(self.title)


def _element(kind: str, label: str) -> Html:
    if kind == "button":
        return render('<button type="button">{label}</button>', label=label)
    if kind == "link":
        return render('<a href="#">{label}</a>', label=label)
    return render("<h2>{label}</h2>", label=label)


def _page(title: str, elements: list[Element]) -> Html:
    return render(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "<title>{title}</title><style>main > * {{display: block; margin: .5rem}}</style></head>\n<body><main>{body}</main></body></html>\n",
        title=title,
        body=join(_element(kind, label) for kind, label in elements),
    )
