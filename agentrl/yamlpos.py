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


#: limits that make a hostile file (shared suites are other people's files) a clear error, not a hang: the
#: size of the file, how deep mappings and lists nest, and how many values the file holds once its aliases
#: are expanded (the "billion laughs" shape: ten lines that expand to 10^9 values)
MAX_BYTES = 256_000
MAX_DEPTH = 64
MAX_NODES = 20_000

# libyaml's parser when installed (fast on big files); the composer and constructor are the safe ones either way
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_with_lines(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML file safely; returns (data, {location tuple: 1-based line}).

    Raises TaskFileError (``file:line: problem``) on a file over `MAX_BYTES`, nesting deeper than
    `MAX_DEPTH`, aliases expanding past `MAX_NODES` values, a duplicate mapping key (at any level), a tag
    other than YAML's plain ones (``!!python/object/apply:...``), or any syntax error; an empty file too."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise TaskFileError([f"{path}:1: the file is {size:,} bytes, over the limit of {MAX_BYTES:,} for a YAML file"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TaskFileError([f"{path}:1: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    try:
        _check_depth(path, text)
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise TaskFileError([_yaml_problem(path, e, "YAML syntax error")]) from None
    if node is None:
        raise TaskFileError([f"{path}:1: the file is empty"])
    lines: dict[Loc, int] = {}
    problems: list[str] = []
    _walk(node, (), lines, problems, path, [MAX_NODES])
    if problems:
        raise TaskFileError(problems)
    try:
        data = yaml.SafeLoader("").construct_document(node)
    except yaml.YAMLError as e:
        raise TaskFileError([_yaml_problem(path, e, "YAML")]) from None
    return data, lines


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that holds one mapping (a config), loaded like a task file (`load_with_lines`); an empty
    file is an empty mapping. `what` names it in the error (``train config``)."""
    try:
        data, _ = load_with_lines(path)
    except TaskFileError as e:
        if e.problems == [f"{path}:1: the file is empty"]:
            return {}
        raise
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TaskFileError([f"{path}:1: a {what} is a mapping of keys to values, got {type(data).__name__}"])
    return data


def _yaml_problem(path: Path, e: yaml.YAMLError, kind: str) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = mark.line + 1 if mark else 1
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    return f"{path}:{line}: {kind}: {f'{context}: ' if context else ''}{problem}"


def _check_depth(path: Path, text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH (the composer recurses per level) and more than MAX_NODES values
    before any alias is expanded, from the event stream (read lazily: a refusal reads no further)."""
    depth = nodes = 0
    for ev in yaml.parse(text, Loader=_LOADER):
        if isinstance(ev, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise TaskFileError([f"{path}:{ev.start_mark.line + 1}: the file holds more than {MAX_NODES:,} values"])
        if isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise TaskFileError([f"{path}:{ev.start_mark.line + 1}: nesting deeper than {MAX_DEPTH} levels"])
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[str], path: Path, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:  # named by the top-level field that expands past the limit
            problems.append(f"{path}:{line_of(lines, loc[:1])}: {field_name(loc[:1])}: the file holds more than "
                            f"{MAX_NODES:,} values once its aliases are expanded")
        return
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else f"<key at line {k.start_mark.line + 1}>"
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if (k.tag, key) in seen:
                    problems.append(f"{path}:{k.start_mark.line + 1}: {field_name((*loc, key))}: duplicate key "
                                    f"{key!r} (first at line {seen[(k.tag, key)]})")
                    continue
                seen[(k.tag, key)] = k.start_mark.line + 1
            lines[(*loc, key)] = k.start_mark.line + 1
            _walk(v, (*loc, key), lines, problems, path, budget)
            lines[(*loc, key)] = k.start_mark.line + 1  # the key's line is the field's line
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, (*loc, i), lines, problems, path, budget)


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
