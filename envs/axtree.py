"""Parse Playwright's AI-mode ARIA snapshot (``page.aria_snapshot(mode="ai")``) into elements.

The snapshot is the observation text the agent reads; its ``[ref=eN]`` ids are the element ids of the
action language. Parsing it gives role, accessible name and state per id, which detectors, the
scripted agent and action events use, so everyone agrees on what the agent saw.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_LINE = re.compile(
    r'^(?P<indent>\s*)- (?P<role>[a-zA-Z]+)(?: "(?P<name>(?:[^"\\]|\\.)*)")?(?P<attrs>(?: \[[^\]]*\])*)'
    r"(?P<rest>.*)$"
)
_ATTR = re.compile(r"\[([^\]=]+)(?:=([^\]]*))?\]")
#: roles whose value is what the agent typed, not what the page says
EDITABLE_ROLES = frozenset({"textbox", "searchbox", "spinbutton", "combobox"})


@dataclass(frozen=True)
class Element:
    ref: str | None  # e.g. "e12"; None for nodes without a ref (options, text)
    role: str
    name: str
    depth: int
    attrs: dict[str, str] = field(default_factory=dict)  # checked, selected, disabled, level, active, …
    value: str = ""  # text after the colon (textbox value, paragraph text, …)

    def matches(self, role: str | None = None, name: str | None = None, name_re: re.Pattern | None = None) -> bool:
        if role is not None and self.role != role:
            return False
        if name is not None and self.name != name:
            return False
        if name_re is not None and not name_re.search(self.name):
            return False
        return True


@dataclass(frozen=True)
class AXTree:
    text: str
    elements: tuple[Element, ...]

    def by_ref(self, ref: str) -> Element | None:
        return self._index().get(ref)

    def _index(self) -> dict[str, Element]:
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = {e.ref: e for e in self.elements if e.ref}
            object.__setattr__(self, "_idx", idx)
        return idx

    def find(self, role: str | None = None, name: str | None = None, name_re: re.Pattern | None = None) -> list[Element]:
        return [e for e in self.elements if e.matches(role, name, name_re)]

    def refs(self) -> list[str]:
        return [e.ref for e in self.elements if e.ref]

    @property
    def visible_text(self) -> str:
        """Names and values of every node, one per line: what the page shows. The value of a field the
        agent can type into is left out: text the agent typed is not text the page shows."""
        return "\n".join(filter(None, (
            (e.name if e.role in EDITABLE_ROLES else f"{e.name} {e.value}").strip() for e in self.elements
        )))


def _unescape(name: str) -> str:
    try:
        return json.loads(f'"{name}"')
    except json.JSONDecodeError:
        return name


def _unquote_key(line: str) -> str:
    """Playwright writes a node whose text needs YAML quoting (a '#', ': ', ...) as a single-quoted key,
    ``- 'link "Tab #2" [ref=e9]':``; unwrap it to ``- link "Tab #2" [ref=e9]:`` ('' is one quote)."""
    body = line.lstrip()
    if not body.startswith("- '"):
        return line
    m = re.match(r"- '((?:[^']|'')*)'(.*)$", body)
    if not m:
        return line
    return line[: len(line) - len(body)] + "- " + m.group(1).replace("''", "'") + m.group(2)


_REF = re.compile(r"\[ref=(f\d+)?e(\d+)\]")


def stable_refs(snapshot: str) -> tuple[str, dict[str, str]]:
    """The snapshot with ids that depend on the page only, and a map from those ids back to Playwright's.

    Playwright prefixes an element's ref with its frame's number (``f3e12``), and it gives the main frame a
    new number on every new document after the first: the same page would show other ids in an episode
    whose tab had loaded more pages before (a reused context, a fresh one with a preloaded start page).
    Here the main frame's elements are ``eN`` and each iframe's ``fKeN``, K counting frames in the order
    the snapshot shows them; N is Playwright's own per-document counter.
    """
    frames: dict[str, str] = {}
    back: dict[str, str] = {}

    def rename(m: re.Match) -> str:
        raw = m.group(1) or ""
        mine = frames.setdefault(raw, f"f{len(frames)}" if frames else "") + "e" + m.group(2)
        back[mine] = raw + "e" + m.group(2)
        return f"[ref={mine}]"

    return _REF.sub(rename, snapshot), back


def parse_snapshot(text: str) -> AXTree:
    elements: list[Element] = []
    for line in text.splitlines():
        m = _LINE.match(_unquote_key(line))
        if not m:
            # "- /url: /x" props and plain "- text: foo" lines
            stripped = line.strip()
            if stripped.startswith("- text:"):
                depth = (len(line) - len(line.lstrip())) // 2
                elements.append(Element(None, "text", "", depth, {}, stripped[len("- text:"):].strip()))
            continue
        attrs: dict[str, str] = {}
        ref = None
        for a in _ATTR.finditer(m.group("attrs") or ""):
            key, val = a.group(1).strip(), (a.group(2) or "true").strip()
            if key == "ref":
                ref = val
            else:
                attrs[key] = val
        rest = m.group("rest").strip()
        value = rest[1:].strip() if rest.startswith(":") else ""
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = _unescape(value[1:-1])
        elements.append(
            Element(
                ref=ref,
                role=m.group("role"),
                name=_unescape(m.group("name") or ""),
                depth=len(m.group("indent")) // 2,
                attrs=attrs,
                value=value,
            )
        )
    return AXTree(text=text, elements=tuple(elements))
