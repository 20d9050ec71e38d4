"""The package's rooms and layers (docs/architecture.md): no import circle between its modules, and each
room imports only its own room and the rooms below it; the ground imports nothing above it.

Every ``import`` counts, wherever it is written: at the top, inside a function (a deferred import is still
a dependency) or under ``TYPE_CHECKING``. Imports by name at run time (the agents' lazy entries,
``gym.register`` entry points) are not edges: that is how a lower room names something above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# source folder -> the package it is installed as (pyproject's package-dir)
SOURCES = {"agentrl": "agentrl", "envs": "agentrl.envs", "rewards": "agentrl.rewards", "sandbox": "agentrl.sandbox",
           "tasks": "agentrl.suites"}

# Rooms from the ground up; a module may import its own room and the rooms before it. A module belongs to
# the first room with a prefix of its name (`a.b` covers `a.b` and `a.b.*`).
ROOMS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", (
        "agentrl.types", "agentrl.registry", "agentrl.yamlpos",  # records, name tables, YAML with lines
        "agentrl.taskspec", "agentrl.suite", "agentrl.registration", "agentrl.suites",  # task specs, suites
        "agentrl.sitespec",  # the sites (the user's own web apps) a task names
        "agentrl.trajectory",  # episode files
        "agentrl.dataset",  # episode files as Parquet datasets and back
        "agentrl.envs.actions", "agentrl.envs.axtree",  # the action language, observation trees
        "agentrl.rewards.detectors", "agentrl.rewards.desktop_detectors",  # the detectors a task names
        "agentrl.sandbox.apps", "agentrl.sandbox.desktop",  # the apps a task names
        "agentrl.agents.scripted",  # a task's oracle and near-misses, played against a tree (demonstrations too)
    )),
    ("sandbox", ("agentrl.sandbox",)),
    ("rewards", ("agentrl.rewards",)),
    ("envs", ("agentrl.envs",)),
    ("policy", ("agentrl.policy",)),
    ("learner", ("agentrl.learner",)),
    ("agents", ("agentrl.agents",)),
    ("evaluation", (
        "agentrl.evaluate", "agentrl.stats", "agentrl.report", "agentrl.replay", "agentrl.coverage",
        "agentrl.fidelity", "agentrl.probe", "agentrl.probe_shortcuts", "agentrl.taskcheck", "agentrl.collect",
        "agentrl.labelling", "agentrl.judge_server",
        "agentrl.testing",  # the task and env checkers (issue 16's env half)
        "agentrl.openenv_server",  # the tasks as an OpenEnv server and its client
        "agentrl.trl_env",  # the tasks as TRL's environment_factory, its reward functions
    )),
    ("cli", ("agentrl.cli",)),
]
ROOT_PACKAGE = "agentrl"  # `agentrl/__init__.py`: imports only the ground (task registration)


def modules(sources: dict[str, str], root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, package in sources.items():
        for f in sorted((root / folder).rglob("*.py")):
            parts = list(f.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = f
    return out


def import_graph(mods: dict[str, Path], top: str = "agentrl") -> dict[str, set[str]]:
    """module -> the package modules it imports (the most specific module each import names)."""

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        out: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {known(a.name) for a in node.names if a.name.split(".")[0] == top}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, up level - 1
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                if source.split(".")[0] != top:
                    continue
                for a in node.names:  # `from agentrl import report` imports the module agentrl.report
                    out.add(f"{source}.{a.name}" if f"{source}.{a.name}" in mods else known(source))
        graph[mod] = {m for m in out if m is not None and m != mod}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import circle per strongly connected component of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(_loop(sorted(component), graph))
    return found


def _loop(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest circle through the component's first module, to name in the failure: a -> b -> a."""
    first, members = component[0], set(component)
    paths = {first: [first]}
    queue = [first]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == first:
                return [*paths[v], first]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def room_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(ROOMS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


MODULES = modules(SOURCES, REPO)
GRAPH = import_graph(MODULES)


def test_no_import_circle_between_modules() -> None:
    found = circles(GRAPH)
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_import_circle_check_fails_on_a_circle(tmp_path: Path) -> None:
    """The check can fail: a circle closed by an import inside a function, and one by a relative import."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    import pkg.c\n")
    (pkg / "c.py").write_text("from pkg.a import x\n")
    (pkg / "sub" / "__init__.py").write_text("from .d import y\n")
    (pkg / "sub" / "d.py").write_text("from . import z\nfrom ..a import q\n")
    (pkg / "ok.py").write_text("import pkg.a\nimport os\n")
    graph = import_graph(modules({"pkg": "pkg"}, tmp_path), top="pkg")
    assert graph["pkg.sub.d"] == {"pkg.sub", "pkg.a"} and graph["pkg.ok"] == {"pkg.a"}
    assert sorted(circles(graph)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"], ["pkg.sub", "pkg.sub.d", "pkg.sub"]]


def test_every_module_is_in_a_room() -> None:
    homeless = sorted(m for m in MODULES if m != ROOT_PACKAGE and room_of(m) is None)
    assert not homeless, f"modules in no room of tests/test_layers.py ROOMS (and docs/architecture.md): {homeless}"


def test_rooms_import_only_their_own_room_and_the_rooms_below() -> None:
    upward = []
    for mod, imports in sorted(GRAPH.items()):
        here = 0 if mod == ROOT_PACKAGE else room_of(mod)
        for target in sorted(imports):
            there = room_of(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{mod} ({ROOMS[here][0]}) imports {target} ({ROOMS[there][0]})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_ground_layer_imports_nothing_above_it() -> None:
    ground = sorted(m for m in MODULES if m == ROOT_PACKAGE or room_of(m) == 0)
    assert {"agentrl.types", "agentrl.taskspec", "agentrl.registry", "agentrl.envs.actions"} <= set(ground)
    above = {m: sorted(t for t in GRAPH[m] if room_of(t) != 0) for m in ground}
    assert not {m: t for m, t in above.items() if t}, above
