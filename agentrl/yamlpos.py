"""YAML loading that remembers where each value came from, so errors can name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class TaskFileError(ValueError):
    """One or more problems in a task file; `str()` lists them as `file:line: field: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


Loc = tuple[str | int, ...]


def load_with_lines(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML; returns (data, {location tuple: 1-based line}). Raises TaskFileError on a syntax error."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(e, "problem", None) or str(e)
        raise TaskFileError([f"{path}:{line}: YAML syntax error: {problem}"]) from None
    if node is None:
        raise TaskFileError([f"{path}:1: the file is empty"])
    lines: dict[Loc, int] = {}
    _walk(node, (), lines)
    data = yaml.safe_load(text)
    return data, lines


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            lines[(*loc, key)] = k.start_mark.line + 1
            _walk(v, (*loc, key), lines)
            lines[(*loc, key)] = k.start_mark.line + 1  # the key's line is the field's line
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, (*loc, i), lines)


def line_of(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of the deepest known prefix of loc."""
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in lines:
            return lines[tuple(loc[:n])]
    return 1


def field_name(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
