"""The wall around an episode's documents: a tab shows only documents of the task's declared origins.

The context's proxy (`BrowserHost.wall_proxy`) keeps requests from leaving for other hosts; this module
keeps out the documents that need no request at all, which an agent could author itself: ``data:``,
``blob:``, ``about:`` (other than an iframe's empty or ``srcdoc`` document, written by its declared-origin
parent), ``view-source:``, ``filesystem:``, and the browser's own error pages. Three places, none a
round trip on a step where nothing is refused:

- `declared` checks a ``goto`` before the browser sees it;
- `refusal` reads Chromium's console notice when it refuses a page's navigation itself (a top-level
  ``data:``/``filesystem:`` link, form or script, ``view-source:``);
- `enforce`, after every action has settled, sends any frame showing an undeclared document (a ``blob:`` or
  ``about:blank`` page, a popup written by script, a ``data:`` iframe, an unsafe redirect's error page) to
  the sandbox's blank page, reading the frame tree Playwright already holds.

`trusted` is the defence in depth: the env hands detectors page state only when every frame of the page
is declared (`AsyncBrowserEnv._observe`), so a forged document that slipped through still earns nothing.
"""

from __future__ import annotations

import re

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Frame, Page

#: Chromium's console notices when it refuses a navigation by itself ("Not allowed to navigate top frame
#: to data URL: data:...", "Not allowed to load local resource: view-source:...")
_REFUSED = re.compile(r"^Not allowed to (?:navigate top frame to \w+ URL|load local resource): (\S+)")
#: documents an iframe gets from its parent (the parent's origin, the parent's words)
_INHERITED = ("", "about:blank", "about:srcdoc")


Origins = str | tuple[str, ...]


def declared(origin: Origins, url: str) -> bool:
    """Whether `url` is a document of `origin` (scheme, host and port: ``http://127.0.0.1:8123``), or of one
    of the declared origins when `origin` is a tuple (a site's, and the blank page's)."""
    if isinstance(origin, tuple):
        return any(declared(o, url) for o in origin)
    return url == origin or url.startswith(origin + "/")


def frame_declared(origin: Origins, frame: Frame) -> bool:
    """A frame's document is declared: of `origin`, or an iframe's inherited empty/srcdoc document whose
    parent is declared."""
    url = frame.url
    if declared(origin, url):
        return True
    parent = frame.parent_frame
    return parent is not None and url.split("#", 1)[0] in _INHERITED and frame_declared(origin, parent)


def trusted(origin: Origins, page: Page) -> bool:
    """Every document the page shows is of a declared origin (what detectors may read)."""
    return all(frame_declared(origin, f) for f in page.frames)


def refusal(text: str) -> str | None:
    """The URL of a navigation Chromium refused by itself, from its console message, or None."""
    m = _REFUSED.match(text)
    return m.group(1) if m else None


async def enforce(origin: Origins, page: Page, blank: str) -> list[str]:
    """Send every frame that shows an undeclared document to `blank` (the top frame: the whole tab);
    returns the URLs it removed (none: no browser call was made)."""
    bad = [f for f in page.frames if not frame_declared(origin, f)]
    if not bad:
        return []
    urls = [f.url or "about:blank" for f in bad]
    main = page.main_frame
    targets = [main] if main in bad else [f for f in bad if f.parent_frame not in bad]
    for f in targets:
        try:
            await f.goto(blank, wait_until="load")
        except PlaywrightError:
            if f is main:  # a top frame that cannot leave the forged document is the page failing
                raise
            # a child frame that went away meanwhile
    return urls


def describe(urls: list[str], origin: Origins) -> str:
    """The error the agent reads for refused documents."""
    shown = ", ".join(u if len(u) <= 80 else u[:77] + "..." for u in urls)
    origin = origin if isinstance(origin, str) else origin[0]
    return f"blocked: {shown} is not a page of the task's origin ({origin}); only its own pages can be shown"

