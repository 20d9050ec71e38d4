"""Accessible form controls shared by the ``forms`` and ``files`` apps.

Each control has a visible ``<label>`` (or a ``<legend>`` for a group), so its accessible name is the label;
a server-side error is a ``role="alert"`` paragraph linked by ``aria-describedby``, and the control gets
``aria-invalid="true"``.

>>> str(text_field("email", "Email address", "", {"email": "Enter your email."})).count('role="alert"')
1
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import EMPTY, Html, attr, join, render

Errors = dict[str, str]


def _error(name: str, errors: Errors) -> tuple[Html, Html]:
    """(the error paragraph, the attributes that mark the control invalid and link the message)."""
    if name not in errors:
        return EMPTY, EMPTY
    msg = render('<p class="error" id="{n}-error" role="alert">{m}</p>', n=name, m=errors[name])
    return msg, Html(render(' aria-invalid="true" aria-describedby="{n}-error"', n=name))


def text_field(
    name: str, label: str, value: str, errors: Errors, *, type: str = "text", hint: str = "", multiline: bool = False
) -> Html:
    """A labelled text input (or ``<textarea>`` when ``multiline``) with an optional hint and error."""
    msg, invalid = _error(name, errors)
    hint_html = render('<p class="hint">{h}</p>', h=hint) if hint else EMPTY
    if multiline:
        control = render(
            '<textarea id="{n}" name="{n}" rows="4"{inv}>{v}</textarea>', n=name, v=value, inv=invalid
        )
    else:
        control = render(
            '<input type="{t}" id="{n}" name="{n}" value="{v}"{inv}>', t=type, n=name, v=value, inv=invalid
        )
    return render(
        '<div class="field"><label for="{n}">{label}</label>{hint}{msg}{control}</div>\n',
        n=name, label=label, hint=hint_html, msg=msg, control=control,
    )


def select_field(name: str, label: str, options: Sequence[str], value: str, errors: Errors, *, prompt: str) -> Html:
    """A labelled ``<select>`` whose first option is the empty ``prompt`` ("Select a department")."""
    msg, invalid = _error(name, errors)
    opts = join(
        render('<option value="{v}"{s}>{v}</option>', v=o, s=attr("selected", o == value)) for o in options
    )
    return render(
        '<div class="field"><label for="{n}">{label}</label>{msg}<select id="{n}" name="{n}"{inv}>'
        '<option value="">{prompt}</option>{opts}</select></div>\n',
        n=name, label=label, msg=msg, inv=invalid, prompt=prompt, opts=opts,
    )


def radio_group(name: str, legend: str, options: Sequence[str], value: str, errors: Errors) -> Html:
    """A ``<fieldset>`` of radios named by its ``<legend>`` (a radio group in the accessibility tree)."""
    msg, invalid = _error(name, errors)
    radios = join(
        render(
            '<div class="choice"><input type="radio" id="{n}-{i}" name="{n}" value="{v}"{c}>'
            '<label for="{n}-{i}">{v}</label></div>',
            n=name, i=str(i), v=o, c=attr("checked", o == value),
        )
        for i, o in enumerate(options)
    )
    return render(
        '<fieldset role="radiogroup"{inv}><legend>{legend}</legend>{msg}{radios}</fieldset>\n',
        inv=invalid, legend=legend, msg=msg, radios=radios,
    )


def checkbox(name: str, label: str, checked: bool) -> Html:
    return render(
        '<div class="choice"><input type="checkbox" id="{n}" name="{n}" value="yes"{c}><label for="{n}">{l}</label></div>\n',
        n=name, l=label, c=attr("checked", checked),
    )


def error_summary(errors: Errors) -> Html:
    """The "There is a problem" box above a form with errors (nothing when there are none)."""
    if not errors:
        return EMPTY
    n = len(errors)
    return render(
        '<div class="alert" role="alert"><h2>There is a problem</h2><p>{n} {w} below {v} attention.</p></div>\n',
        n=str(n), w="field" if n == 1 else "fields", v="needs" if n == 1 else "need",
    )


def banner(text: str) -> Html:
    """A success banner (``role="status"``)."""
    return render('<div class="status" role="status"><p>{t}</p></div>\n', t=text)
