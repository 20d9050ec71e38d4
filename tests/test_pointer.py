"""The browser env's pointer actions (issue 18): click(x, y), hover(id | x, y) and drag(from, to) with a real
mouse on real Chromium, the element under a point in the action's event (same milestone evidence as a click
by id), points off the viewport answered with an error observation, the wall unchanged for clicks at a
point, element boxes in the observation (``obs_boxes``), and a MiniWoB++ sortable solved end to end."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentrl.envs.actions import Action, ActionError, format_action, parse_action
from agentrl.envs.axtree import parse_snapshot
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.apps.base import App, Request, Response
from agentrl.sandbox.server import SandboxServer
from conftest import write_task

OUTSIDE = "http://outside.test"

INDEX = """<!doctype html><title>Pointer</title><style>body { margin: 0 } #menu { display: none }
#products:hover #menu, #products.open #menu { display: block }</style>
<button style="position:absolute; left:40px; top:40px; width:120px; height:40px"
        onclick="document.getElementById('said').textContent = 'saved'">Save</button>
<p id="said" style="position:absolute; left:200px; top:40px">not saved</p>
<nav id="products" style="position:absolute; left:40px; top:120px; width:160px">
  <span role="button" aria-haspopup="true">Products</span>
  <ul id="menu"><li><a href="#laptops">Laptops</a></li></ul>
</nav>
<a href="OUTSIDE/link" style="position:absolute; left:300px; top:120px">Outside link</a>
<a href="other" target="_blank" style="position:absolute; left:300px; top:170px">Other in a new tab</a>
<div id="card" role="button" aria-label="Card" style="position:absolute; left:40px; top:260px; width:60px;
     height:60px; background:#c33"></div>
<div id="bin" role="region" aria-label="Bin" style="position:absolute; left:300px; top:260px; width:120px;
     height:120px; background:#ccc"><p id="binned">empty</p></div>
<canvas id="pad" aria-label="Pad" style="position:absolute; left:40px; top:420px" width="300" height="200"></canvas>
<iframe src="inner" title="Inner" style="position:absolute; left:500px; top:40px; width:300px; height:120px;
        border:0"></iframe>
<script>
// a drag with mouse events only, as jQuery UI does it: press on the card, move, release over the bin
let dragging = false;
const card = document.getElementById('card'), bin = document.getElementById('bin');
card.addEventListener('mousedown', e => { dragging = true; e.preventDefault(); });
document.addEventListener('mousemove', e => {
  if (dragging) { card.style.left = (e.clientX - 30) + 'px'; card.style.top = (e.clientY - 30) + 'px'; }
});
document.addEventListener('mouseup', e => {
  if (!dragging) return;
  dragging = false;
  const r = bin.getBoundingClientRect();
  if (e.clientX >= r.left && e.clientX < r.right && e.clientY >= r.top && e.clientY < r.bottom)
    document.getElementById('binned').textContent = 'card in the bin';
});
// the pad records the pressed pointer's path
window.stroke = [];
const pad = document.getElementById('pad');
let drawing = false;
pad.addEventListener('mousedown', e => { drawing = true; window.stroke = [[e.offsetX, e.offsetY]]; });
pad.addEventListener('mousemove', e => { if (drawing) window.stroke.push([e.offsetX, e.offsetY]); });
document.addEventListener('mouseup', () => { drawing = false; });
</script>""".replace("OUTSIDE", OUTSIDE)

INNER = f"""<!doctype html><title>Inner</title><body style="margin:0">
<a href="{OUTSIDE}/from-frame" style="display:block; width:200px; height:60px">Outside from the frame</a></body>"""

#: the pad's stroke passed within 6 px of (20, 20), (250, 20) and (250, 150), in that order
DRAWN = """(() => { const s = window.stroke || [], near = (p, x, y) => Math.hypot(p[0] - x, p[1] - y) < 6;
  const a = s.findIndex(p => near(p, 20, 20)), b = s.findIndex(p => near(p, 250, 20)),
        c = s.findIndex(p => near(p, 250, 150));
  return a >= 0 && a < b && b < c && s.length >= 20; })()"""


class PointerApp(App):
    """The pages of these tests, mounted as ``playground`` (a name tasks may start in)."""

    name = "playground"
    title = "Pointer"

    def new_state(self, seed: int) -> dict[str, int]:
        return {}

    def facts(self, state: dict[str, int]) -> dict[str, str]:
        return {}

    def public_state(self, state: dict[str, int]) -> dict[str, Any]:
        return {}

    def handle(self, req: Request, state: dict[str, int]) -> Response:
        if req.path == "/other":
            return Response(body=b"<!doctype html><title>Other</title><p>The other page</p>")
        return Response(body=(INNER if req.path == "/inner" else INDEX).encode())


MILESTONES = [
    {"id": "saved", "detector": "element_activated", "params": {"role": "button", "name": "Save"}, "category": "ui",
     "weight": 0.5},
    {"id": "drawn", "detector": "js_true", "params": {"expr": DRAWN}, "category": "goal", "weight": 1.0},
]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(apps=[PointerApp()]) as srv:
        yield srv


@pytest.fixture
def pointer_env(server: SandboxServer, tmp_path: Path, make_env) -> Any:
    made = itertools.count()

    def make(**config: Any) -> BrowserEnv:
        task = write_task(tmp_path, MILESTONES, task_id=f"pointer{next(made)}", max_steps=20)
        config.setdefault("obs_boxes", True)
        return make_env(task, sandbox=server, **config)

    return make


def element(obs: dict[str, Any], name: str) -> Any:
    return next(e for e in parse_snapshot(obs["axtree"]).elements if e.name == name and e.ref)


def center(obs: dict[str, Any], name: str) -> tuple[int, int]:
    """The center of the element's ``[box=x,y,w,h]`` in the observation."""
    x, y, w, h = (float(v) for v in element(obs, name).attrs["box"].split(","))
    return round(x + w / 2), round(y + h / 2)


def actions(info: dict[str, Any]) -> list[Any]:
    return [e for e in info["events"] if e.kind == "action"]


# ------------------------------------------------------------------ the language
@pytest.mark.parametrize(
    "text, expected, kinds",
    [
        ("click(120, 48)", "click(120, 48)", ("int", "int")),
        ("Action: click( 3 ,4 )", "click(3, 4)", ("int", "int")),
        ("click(e12)", "click(e12)", ("id",)),
        ("hover(e4)", "hover(e4)", ("id",)),
        ("hover(300, 200)", "hover(300, 200)", ("int", "int")),
        ("drag(e3, e7)", "drag(e3, e7)", ("id", "id")),
        ("drag(e3, 200, 40)", "drag(e3, 200, 40)", ("id", "int", "int")),
        ("drag(10, 20, [ref=e7])", "drag(10, 20, e7)", ("int", "int", "id")),
        ("drag(10, 20, 200, 40)", "drag(10, 20, 200, 40)", ("int",) * 4),
        ("drag(10, 10, 50, 10, 50, 50)", "drag(10, 10, 50, 10, 50, 50)", ("int",) * 6),
    ],
)
def test_pointer_verbs_parse_and_round_trip(text: str, expected: str, kinds: tuple[str, ...]) -> None:
    a = parse_action(text)
    assert isinstance(a, Action) and str(a) == expected and a.kinds == kinds, a
    assert parse_action(format_action(a)) == a
    assert format_action(a.name, *a.args) == expected  # kinds told from the values (ids vs integers)
    assert a.target == (a.args[0] if kinds[0] == "id" else None)


@pytest.mark.parametrize(
    "text, message",
    [
        ("click(1, 2, 3)", "click() takes an element id (click(e12)) or a point x, y in CSS pixels of the viewport"),
        ("click(12.5, 40)", "click(): '12.5' is not an integer"),
        ("click(x, 40)", "is not an integer"),
        ("hover()", "hover() takes an element id (hover(e12)) or a point x, y"),
        ("hover(Products)", "hover(): 'Products' is not an element id"),
        ("drag(e3)", "drag(from, to) takes each end as an element id or an x, y point"),
        ("drag(1, 2, 3, 4, 5)", "or a path of 2 to 16 points (x1, y1, x2, y2, ...); got 5 argument(s)"),
        ("drag(" + ", ".join(["1"] * 34) + ")", "got 34 argument(s)"),
        ("drag(1, 2, 3)", "drag(): '3' is not an element id"),
        ('drag(e3, "bin")', "drag(): '\"bin\"' is not an element id"),
    ],
)
def test_pointer_bad_arguments_are_errors_with_reasons(text: str, message: str) -> None:
    got = parse_action(text)
    assert isinstance(got, ActionError) and message in str(got), got


def test_pointer_verbs_are_in_the_help_of_an_unparseable_action() -> None:
    got = parse_action("move the card to the bin")
    assert isinstance(got, ActionError)
    assert all(v in str(got) for v in ("click(x, y)", "hover(id) or hover(x, y)", "drag(from, to)"))


# ------------------------------------------------------------------ in the browser
def test_pointer_click_at_a_point_is_the_same_evidence_as_a_click_by_id(pointer_env) -> None:
    env = pointer_env()
    obs, _ = env.reset(seed=0)
    save = element(obs, "Save")
    x, y = center(obs, "Save")
    obs, reward, _, _, info = env.step(f"click({x}, {y})")
    assert not obs["last_action_error"] and "saved" in obs["axtree"]
    [clicked] = actions(info)
    assert (clicked.name, clicked.target, clicked.role, clicked.label) == ("click", save.ref, "button", "Save")
    assert [m.id for m in info["milestones"]] == ["saved"] and reward == pytest.approx(0.5)
    # the same page clicked by id: the same event
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(f"click({element(obs, 'Save').ref})")
    by_id = actions(info)[0]
    assert (by_id.name, by_id.target, by_id.role, by_id.label) == (clicked.name, clicked.target, clicked.role, clicked.label)
    assert [m.id for m in info["milestones"]] == ["saved"]
    # a point of no element with an id: a click, recorded with no target, and no milestone
    obs, _, _, _, info = env.step("click(900, 700)")
    assert not obs["last_action_error"] and not info["milestones"]
    assert actions(info)[0].role in (None, "generic")


def test_pointer_hover_reveals_a_menu(pointer_env) -> None:
    env = pointer_env()
    obs, _ = env.reset(seed=0)
    assert "Laptops" not in obs["axtree"]
    obs, _, _, _, info = env.step(f"hover({element(obs, 'Products').ref})")
    assert not obs["last_action_error"] and "Laptops" in obs["axtree"]
    assert actions(info)[0].name == "hover" and actions(info)[0].label == "Products"
    obs, *_ = env.step("hover(900, 700)")  # away: the menu closes
    assert "Laptops" not in obs["axtree"]
    x, y = center(obs, "Products")
    obs, _, _, _, info = env.step(f"hover({x}, {y})")
    assert "Laptops" in obs["axtree"] and actions(info)[0].label == "Products"


def test_pointer_drag_by_ids_and_a_drawn_path(pointer_env) -> None:
    env = pointer_env()
    obs, _ = env.reset(seed=0)
    obs, _, _, _, info = env.step(f"drag({element(obs, 'Card').ref}, {element(obs, 'Bin').ref})")
    assert not obs["last_action_error"] and "card in the bin" in obs["axtree"], obs["axtree"]
    [dragged] = actions(info)
    assert (dragged.name, dragged.label) == ("drag", "Card")
    # a path over the pad: its stroke passes every corner, in order (the goal milestone's check)
    px, py = (int(float(v)) for v in element(obs, "Pad").attrs["box"].split(",")[:2])
    path = [(px + 20, py + 20), (px + 250, py + 20), (px + 250, py + 150)]
    obs, _, terminated, _, info = env.step(format_action("drag", *[v for p in path for v in p]))
    assert not obs["last_action_error"] and terminated and info["success"], info["milestones"]


@pytest.mark.parametrize("action, point", [
    ("click(1024, 10)", "(1024, 10)"), ("hover(-1, 3)", "(-1, 3)"), ("drag(10, 10, 20, 800)", "(20, 800)"),
    ("drag(e999, 10, 10)", None),
])
def test_pointer_point_off_the_viewport_is_an_error_observation(pointer_env, action: str, point: str | None) -> None:
    env = pointer_env()
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)
    error = obs["last_action_error"]
    assert error.startswith(action + ": ") and not (terminated or truncated) and reward == 0, error
    if point:
        assert f"the point {point} is outside the viewport (1024x768)" in error and "0 <= x < 1024" in error
    else:
        assert "there is no element e999" in error
    assert not actions(info)  # nothing was done
    assert "ERROR" in obs["text"]


def test_pointer_click_at_a_point_meets_the_wall(pointer_env, server: SandboxServer) -> None:
    """A click at a point that navigates the tab, or a frame, to an outside origin is refused as any click."""
    env = pointer_env()
    obs, _ = env.reset(seed=0)
    start = obs["url"]
    x, y = center(obs, "Outside link")
    obs, _, _, truncated, info = env.step(f"click({x}, {y})")
    assert not truncated and obs["url"] == start and obs["title"] == "Pointer"
    assert any(e.kind == "blocked_request" and e.url == OUTSIDE + "/link" for e in info["events"]), info["events"]
    assert "blocked" in obs["last_action_error"] and actions(info)[0].label == "Outside link"
    # inside the iframe (its elements carry no boxes: they would be the frame's own coordinates)
    frame_line = next(line for line in obs["axtree"].splitlines() if "Outside from the frame" in line)
    assert "[ref=f1e" in frame_line and "[box=" not in frame_line
    obs, _, _, truncated, info = env.step("click(560, 60)")  # the frame is at (500, 40)
    assert not truncated and obs["url"] == start
    assert any(e.kind == "blocked_request" and e.url == OUTSIDE + "/from-frame" for e in info["events"]), info["events"]
    assert actions(info)[0].role == "iframe"  # the element of the observation under the point


def test_pointer_click_at_a_point_on_a_new_tab_link_moves_the_agent_there(pointer_env, server: SandboxServer) -> None:
    env = pointer_env()
    obs, _ = env.reset(seed=0)
    x, y = center(obs, "Other in a new tab")
    obs, _, _, truncated, info = env.step(f"click({x}, {y})")
    assert not truncated and not obs["last_action_error"]
    assert obs["url"] == server.origin + "/playground/other" and obs["title"] == "Other"  # the new tab, adopted
    assert actions(info)[0].role == "link" and actions(info)[0].label == "Other in a new tab"


def test_pointer_boxes_are_opt_in(pointer_env) -> None:
    obs, _ = pointer_env(obs_boxes=False).reset(seed=0)
    assert "[box=" not in obs["axtree"] and "Save" in obs["axtree"]
    obs, _ = pointer_env().reset(seed=0)
    assert re.search(r'button "Save" \[ref=e\d+\] (?:\[cursor=pointer\] )?\[box=40,40,120,40\]', obs["axtree"]), obs["axtree"]


# ------------------------------------------------------------------ MiniWoB++
_DRAG_QUERY = re.compile(r"Drag (.+?) (?:to the (top|bottom|(\d)\w\w position)|(up|down) by one position)\.")


def solve_drag_items(obs: dict[str, Any]) -> str:
    """The drag that does what drag-items' heading asks, computed from the element boxes: press on the item,
    release past the middle of the item now at the wanted place (a sortable moves an item once the pointer
    passes the middle of its neighbour)."""
    tree = parse_snapshot(obs["axtree"])
    query = next(e.name for e in tree.elements if e.role == "heading")
    m = _DRAG_QUERY.fullmatch(query)
    assert m, query
    name, edge, nth, updown = m.groups()
    items = [e for e in tree.elements if e.role == "listitem"]
    names = [next(c.value for c in tree.elements[tree.elements.index(i) + 1:] if c.value) for i in items]
    src = names.index(name)
    dst = {"top": 0, "bottom": len(items) - 1}.get(edge) if edge else None
    if dst is None:
        dst = int(nth) - 1 if nth else src + (1 if updown == "down" else -1)
    box = [[float(v) for v in i.attrs["box"].split(",")] for i in items]
    x, y = box[src][0] + box[src][2] / 2, box[src][1] + box[src][3] / 2
    to = box[dst][1] + box[dst][3] * (0.8 if dst > src else 0.2)
    return format_action("drag", round(x), round(y), round(x), round(to))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pointer_miniwob_drag_items_solved_through_env_step(tmp_path: Path, seed: int) -> None:
    """MiniWoB++'s drag-items (a jQuery UI sortable), from the sandbox's miniwob app: one drag, computed from
    the observation's boxes, and MiniWoB's own reward says it was right."""
    pytest.importorskip("miniwob")
    from agentrl.agents.miniwob import page_reward
    task = write_task(tmp_path, [{"id": "miniwob_reward", "detector": "js_true", "params": {
        "expr": "WOB_DONE_GLOBAL && WOB_RAW_REWARD_GLOBAL > 0"}, "category": "goal", "weight": 1.0}],
        app="miniwob", path="/miniwob/miniwob/drag-items.html", task_id="pointer-drag-items", max_steps=3)
    env = BrowserEnv(task, BrowserEnvConfig(root_dir=tmp_path / "episodes", obs_boxes=True, record=False))
    try:
        obs, _ = env.reset(seed=seed)
        obs, reward, terminated, _, info = env.step(solve_drag_items(obs))
        assert not obs["last_action_error"] and terminated and info["success"] and reward == 1.0, obs["axtree"]
        assert page_reward(env) == (True, 1.0)  # read from the page, apart from the milestone
    finally:
        env.close()


def test_pointer_boxes_from_the_cli_run_and_evaluate(tmp_path: Path) -> None:
    """`--obs-boxes` reaches the env from `agentrl run` and `agentrl evaluate`: the recorded observations carry
    each element's box; without the flag they do not."""
    from typer.testing import CliRunner

    from agentrl.cli import app
    from agentrl.trajectory import read_trajectory

    def observations(run_dir: Path) -> str:
        return "".join(s.observation for t in run_dir.rglob("trajectory.jsonl") for s in read_trajectory(t)[1])

    for args, boxed in ((["--obs-boxes"], True), ([], False)):
        out = tmp_path / f"run-{boxed}"
        r = CliRunner().invoke(app, ["run", "miniwob.click-test", "--agent", "miniwob-heuristic", "--out", str(out),
                                     *args], catch_exceptions=False)
        assert r.exit_code == 0 and "success=True" in r.output, r.output
        assert ("[box=" in observations(out)) is boxed
    out = tmp_path / "eval"
    r = CliRunner().invoke(app, ["evaluate", "--suite", "miniwob", "--task", "miniwob.click-test", "--seeds", "1",
                                 "--agent", "miniwob-heuristic", "--obs-boxes", "--no-report", "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "[box=" in observations(out)
