"""`drill`: tiny seeded pages for RL training drills, one decision each.

* ``/drill/one``: 4-6 elements, exactly one ``<button>``; the others are links and headings. Every label
  comes from the same small vocabulary, so only the element's role tells the button apart. Order varies
  per seed (the button is equally likely at every position).
* ``/drill/named``: 3-6 buttons with distinct labels; the fact ``target`` names the one to click.
* ``/drill/type``: a form with one labelled text box (label: fact ``field``), a Submit button and 1-3
  links or headings; the fact ``word`` is the value to type. Submitting POSTs ``value`` to ``/drill/type``
  and shows the form again under "Received: <value>", so a wrong submission can be corrected.

The pages are deliberately minimal (no site header or footer; every element a direct child of ``<main>``)
so the accessibility tree, and therefore the prompt, stays short and uniform. Nothing on them does anything: buttons have no handler and links point at ``#``,
so an episode is decided by which element the agent activates (the ``element_activated`` detector). The
server records nothing per click, only the type page's submissions; ``public_state`` reports the layout.

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

FIELDS = ("Name", "City", "Colour", "Animal", "Fruit", "Code", "Word", "Tag")
WORDS = (
    "apple", "river", "tiger", "amber", "maple", "orbit", "lemon", "cedar", "piano", "comet", "olive", "falcon",
    "harbor", "velvet", "canyon", "pepper", "willow", "marble", "rocket", "meadow", "copper", "violet", "glacier",
    "saffron", "lantern", "walnut", "cobalt", "sierra", "tundra", "quartz", "jasmine", "thistle", "opal", "ember",
    "nectar", "birch", "coral", "delta", "fable", "garnet",
)
Element = tuple[str, str]  # (kind: "button" | "link" | "heading", label)


@dataclass
class DrillState:
    one: list[Element]  # the one-button page, in page order
    named: list[Element]  # the named-button page (all buttons)
    target: str  # label of the button to click on the named page
    typed: list[Element]  # the type page's links and headings, around its form
    field: str  # the type page's text box label
    word: str  # the value to type there
    submitted: list[str]  # every value POSTed to /drill/type, in order


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
        typed = [(rng.choice(("link", "heading")), rng.choice(VOCABULARY)) for _ in range(rng.randint(1, 3))]
        return DrillState(
            one=one, named=[("button", x) for x in labels], target=rng.choice(labels),
            typed=typed, field=rng.choice(FIELDS), word=rng.choice(WORDS), submitted=[],
        )

    def facts(self, state: DrillState) -> dict[str, str]:
        button = next(label for kind, label in state.one if kind == "button")
        return {
            "button": button,
            "button_position": str(next(i for i, (k, _) in enumerate(state.one) if k == "button")),
            "count": str(len(state.one)),
            "target": state.target,
            "named_count": str(len(state.named)),
            "field": state.field,
            "word": state.word,
        }

    def public_state(self, state: DrillState) -> dict[str, Any]:
        return {
            "one": [list(e) for e in state.one], "named": [x for _, x in state.named], "target": state.target,
            "typed": [list(e) for e in state.typed], "field": state.field, "submitted": list(state.submitted),
        }

    def handle(self, req: Request, state: DrillState) -> Response:
        if req.path == "/one":
            return html_response(_page("Drill", state.one))
        if req.path == "/named":
            return html_response(_page("Drill", state.named))
        if req.path == "/type":
            if req.method == "POST":
                state.submitted.append(req.form.get("value", ""))
            return html_response(_type_page(state, req.url("/type")))
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


def _type_page(state: DrillState, action: str) -> Html:
    received = render("<p>Received: {v}</p>", v=state.submitted[-1]) if state.submitted else Html("")
    form = render(
        '<form method="post" action="{action}"><label>{field} <input type="text" name="value"></label>'
        '<button type="submit">Submit</button></form>',
        action=action,
        field=state.field,
    )
    return render(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "<title>Drill</title><style>main > * {{display: block; margin: .5rem}}</style></head>\n"
        "<body><main>{head}{received}{form}{tail}</main></body></html>\n",
        head=join(_element(k, x) for k, x in state.typed[:1]),
        received=received,
        form=form,
        tail=join(_element(k, x) for k, x in state.typed[1:]),
    )
