"""The browser env's pointer actions: a click at a point, hovering, and dragging, with Playwright's real mouse
(``Input.dispatchMouseEvent``: the page sees trusted mousemove, mousedown and mouseup events, so jQuery UI
draggables and sortables, canvas drawing and text selection react as to a person).

* ``click(x, y)`` and ``hover(x, y)`` name a point in CSS pixels of the viewport (what ``[box=x,y,w,h]`` of
  an observation with `obs_boxes` and the screenshot show); a point off the viewport is an error.
* ``hover(id)`` moves the pointer onto the element, as Playwright's hover does (it waits for it to be
  ready and scrolls it into view).
* ``drag(from, to)``: each end an element id (a point of it that is on top, as a click by id uses) or a
  point; with points only, a path of up to `MAX_DRAG_POINTS`. The mouse is pressed at the first point,
  moves a few pixels (jQuery UI starts a drag only once the pointer has moved), follows the path in steps of
  about `STEP_PX` pixels, and is released at the last point, all within the one action.

Every pointer action records the element under its (first) point in its `ActionEvent`, as a click by id
does: the element whose box holds the point and that contains what ``elementFromPoint`` hits there, the
deepest one; its id is the observation's. So ``click(x, y)`` on a button is the same milestone evidence
(``element_activated``) as ``click(e12)``. Whatever the action sets off (a navigation, a popup, a frame
loading another origin) meets the same wall as any click: the env settles and enforces it after every
action, however it was done.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from agentrl.envs.actions import Action
from agentrl.envs.axtree import parse_snapshot, stable_refs
from agentrl.envs.browser.scripts import CLICK_POINT_JS
from agentrl.envs.browser.state import BrowserEpisode
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from agentrl.types import ActionEvent

#: the pressed mouse moves in steps of about this many pixels along a drag's path
STEP_PX = 12

#: the element ``elementFromPoint`` hits at a point (inside open shadow roots), and whether clicking there
#: opens a new tab (a link with a target, as `CLICK_POINT_JS` reports for a click by id)
HIT_JS = """([x, y]) => {
  let hit = document.elementFromPoint(x, y);
  while (hit && hit.shadowRoot) {
    const inner = hit.shadowRoot.elementFromPoint(x, y);
    if (!inner || inner === hit) break;
    hit = inner;
  }
  return hit;
}"""
_TAB_JS = """hit => !!(hit && hit.closest && hit.closest(
  'a[href][target]:not([target=""]):not([target="_self"]):not([target="_top"]):not([target="_parent"])'))"""
#: the boxes of the hit element and its ancestors (across shadow roots), rounded as Playwright's snapshot
#: rounds them (``[box=x,y,w,h]``); none when nothing is hit
_ANCESTOR_BOXES_JS = """hit => { const out = [];
  for (let n = hit; n; n = n.parentNode || n.host) if (n.getBoundingClientRect) {
    const r = n.getBoundingClientRect();
    out.push([r.x, r.y, r.width, r.height].map(Math.round).join(','));
  }
  return out; }"""
#: whether an element is the hit element or one of its ancestors (across shadow roots)
_HOLDS_JS = """(el, hit) => { for (let n = hit; n; n = n.parentNode || n.host) if (n === el) return true; return false; }"""


def is_pointer(action: Action) -> bool:
    """Whether `pointer_event` and `pointer_action` carry this action out (``click(id)`` stays with the env's own click)."""
    return action.name in ("hover", "drag") or (action.name == "click" and action.target is None)


def _ends(action: Action) -> list[tuple[int, int] | str]:
    """The action's element ids and points, in order."""
    kinds, args, ends, i = action.arg_kinds, action.args, [], 0
    while i < len(kinds):
        if kinds[i] == "id":
            ends.append(args[i])
            i += 1
        else:
            ends.append((int(args[i]), int(args[i + 1])))
            i += 2
    return ends


async def pointer_event(ep: BrowserEpisode, action: Action, viewport: tuple[int, int], timeout: int) -> ActionEvent | str:
    """The event of a pointer action, naming the element at its (first) end; or why the action cannot be
    done (a point off the viewport, an id not on the page), before any input."""
    ends = _ends(action)
    for end in ends:
        if isinstance(end, tuple):
            why = off_viewport(end, viewport)
            if why:
                return why
        elif ep.ax is None or ep.ax.by_ref(end) is None:
            ids = ", ".join(ep.ax.refs()[:12]) if ep.ax else ""
            return f"there is no element {end} on the page (ids now: {ids}…)"
    first = ends[0]
    if isinstance(first, str):
        el = ep.ax.by_ref(first) if ep.ax else None
        return ActionEvent(name=action.name, target=first, role=el.role if el else None, label=el.name if el else None)
    target, role, label = await element_at(ep, first, timeout)
    return ActionEvent(name=action.name, target=target, role=role, label=label)


async def pointer_action(ep: BrowserEpisode, action: Action, event: ActionEvent, timeout: int) -> ActionEvent:
    """Carry out a pointer action `pointer_event` found doable; returns its event (a drag's with its
    release point as the value)."""
    page, ends = ep.page, _ends(action)
    first = ends[0]
    match action.name:
        case "click":
            await _click_at(ep, first)  # type: ignore[arg-type]
        case "hover":
            if isinstance(first, str):
                await _locator(ep, first).hover(timeout=timeout)
            else:
                await page.mouse.move(*first)
        case "drag":
            points = [end if isinstance(end, tuple) else await _point_of(ep, end, timeout) for end in ends]
            await _drag(page, points)
            event = event.model_copy(update={"value": f"{points[-1][0]:g},{points[-1][1]:g}"})
    return event


def off_viewport(point: tuple[float, float], viewport: tuple[int, int]) -> str | None:
    """Why a point is not one the pointer can reach, or None (the viewport is [0, w) x [0, h))."""
    (x, y), (w, h) = point, viewport
    if 0 <= x < w and 0 <= y < h:
        return None
    return (f"the point ({x:g}, {y:g}) is outside the viewport ({w}x{h}): points are CSS pixels of the visible "
            f"page, 0 <= x < {w} and 0 <= y < {h} (scroll to bring a part of the page into view)")


async def element_at(
    ep: BrowserEpisode, point: tuple[float, float], timeout: int = 5000
) -> tuple[str | None, str | None, str | None]:
    """The observation's id, role and accessible name of the element at `point` (None, None, None if the
    point hits no element with an id): the deepest element of a fresh ARIA snapshot of the page that contains
    the element hit there (what the click lands on). Candidates are the snapshot's elements whose box is the
    box of one of the hit element's ancestors (a few), each then checked in the page. Elements inside
    iframes are not told apart: a point over an iframe is on the iframe element."""
    if not ep.refs:  # a page observed as too large has no ids to name
        return None, None, None
    page = ep.page
    hit = await page.evaluate_handle(HIT_JS, list(point))
    try:
        boxes = set(await hit.evaluate(_ANCESTOR_BOXES_JS))
        if not boxes:
            return None, None, None
        raw = await page.aria_snapshot(mode="ai", boxes=True, timeout=timeout)
        snapshot, back = stable_refs(raw)
        candidates = sorted((e for e in parse_snapshot(snapshot).elements
                             if e.ref and not e.ref.startswith("f") and e.attrs.get("box") in boxes), key=lambda e: -e.depth)
        found = await asyncio.gather(*[_locator_raw(page, back[e.ref]).evaluate(_HOLDS_JS, hit) for e in candidates],
                                     return_exceptions=True)
        for e, ok in zip(candidates, found, strict=True):
            if ok is True:
                return e.ref, e.role, e.name
        return None, None, None
    finally:
        await hit.dispose()


def _locator(ep: BrowserEpisode, ref: str) -> Any:
    return _locator_raw(ep.page, ep.refs[ref])


def _locator_raw(page: Any, raw_ref: str) -> Any:
    return page.locator(f"aria-ref={raw_ref}")


async def _point_of(ep: BrowserEpisode, ref: str, timeout: int) -> tuple[float, float]:
    """A point of the element to press or release the mouse on: the one a click by id would use (its
    center if that is on top; the element is scrolled into view), or, when the element is not ready (e.g.
    moving) or is inside an iframe (the check's point would be in the frame's coordinates), the center of its
    box once Playwright's hover finds it ready (which raises, saying why, if it never is)."""
    loc = _locator(ep, ref)
    point = None if ref.startswith("f") else await loc.evaluate(CLICK_POINT_JS, timeout=timeout)
    if point:
        return point["cx"], point["cy"]
    await loc.hover(timeout=timeout)
    box = await loc.bounding_box(timeout=timeout)
    if box is None:
        raise PlaywrightTimeoutError(f"element {ref} has no box on the page")
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


async def _click_at(ep: BrowserEpisode, point: tuple[int, int]) -> None:
    page = ep.page
    hit = await page.evaluate_handle(HIT_JS, list(point))
    try:
        tab = await hit.evaluate(_TAB_JS)
    finally:
        await hit.dispose()
    if tab:  # a new tab opens: the env adopts it (`_adopt_page`) once it exists
        try:
            async with page.context.expect_page(timeout=2000):
                await page.mouse.click(*point)
        except PlaywrightTimeoutError:
            pass  # the page kept it from opening
    else:
        await page.mouse.click(*point)


async def _drag(page: Any, points: list[tuple[float, float]]) -> None:
    """Press at the first point, follow the path in steps of about `STEP_PX`, release at the last."""
    (x0, y0), mouse = points[0], page.mouse
    await mouse.move(x0, y0)
    await mouse.down()
    try:
        # jQuery UI starts a drag once the pointer has moved (its `distance`): 3 px toward the next point
        (x1, y1) = points[1]
        d = math.dist((x0, y0), (x1, y1))
        nudge = (x0 + 3 * (x1 - x0) / d, y0 + 3 * (y1 - y0) / d) if d > 3 else (x1, y1)
        await mouse.move(*nudge)
        last = nudge
        for x, y in points[1:]:
            steps = max(1, min(50, math.ceil(math.dist(last, (x, y)) / STEP_PX)))
            await mouse.move(x, y, steps=steps)
            last = (x, y)
    finally:
        await mouse.up()
