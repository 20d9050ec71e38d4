"""The browser env's run-time options and what one episode's browser context holds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentrl.envs.axtree import AXTree
from agentrl.envs.episode import EpisodeState
from agentrl.rewards.detectors import FieldState
from playwright.async_api import BrowserContext, Page

#: clean contexts a host keeps for coming envs, per origin and viewport (`ContextPool._hand_back`)
SPARES = 4


@dataclass
class BrowserEnvConfig:
    """Run-time options of the browser env (the task file says what to do; this says how to run it)."""

    screenshot: bool = False  # add an RGB screenshot to every observation
    #: add each element's box to its line of the observation, ``[box=x,y,w,h]`` in CSS pixels of the
    #: viewport: the points of ``click(x, y)``, ``hover(x, y)`` and ``drag`` without a screenshot (elements
    #: inside iframes get none: their boxes would be the frame's own coordinates)
    obs_boxes: bool = False
    viewport: tuple[int, int] = (1024, 768)
    max_steps: int | None = None  # overrides the task's max_steps
    action_timeout_ms: int = 5000  # how long an action may wait for its element to be actionable
    settle_timeout_ms: int = 5000  # cap on waiting for load + in-flight requests after an action
    browser_timeout_ms: int = 20000  # a browser call slower than this means Chromium is stuck: relaunch it
    root_dir: Path | None = None  # episode directories go here (default: a temp dir per env)
    record: bool = True  # write trajectory.jsonl (+ screenshots) into each episode directory
    keep_episode_dirs: bool = True  # False: delete an episode's directory when the next reset starts
    #: the budget of every text field of an observation (``text``, ``axtree``, ``url``, ``title``,
    #: ``last_action_error``): a longer one is cut there, and the cut is marked
    max_obs_chars: int = 200_000
    #: a page with more DOM elements than this is not snapshotted (Playwright's snapshot of 50,000 elements
    #: takes seconds); its observation says the page is too large and gives its title and text (cut to
    #: `max_obs_chars`), as does a page whose snapshot does not come within settle_timeout_ms
    max_obs_elements: int = 20_000
    #: the budget of one step's line in trajectory.jsonl: over it, the events, then the text fields are cut
    #: (the record's ``cut`` names what was cut and how long it was)
    max_record_chars: int = 300_000
    #: per-episode download budget: bytes in all and number of downloads; a download that would pass either
    #: is cancelled and recorded as a blocked request with the reason
    max_download_bytes: int = 10 * 2**20
    max_downloads: int = 20
    #: how episodes are kept apart in the browser. "context": a fresh BrowserContext per episode (made ahead
    #: while the previous episode runs), so nothing client-side can survive; the default, because it relies
    #: on no list of what to wipe. "storage": `ahead` + 1 contexts take turns; between two episodes of one,
    #: its page leaves (for a blank page, or a preloaded start page) and all client state is wiped in the
    #: background (cookies, local/session storage, IndexedDB, Cache Storage, service workers, permissions,
    #: window.name, history, other tabs; the HTTP cache holds only immutable files); proved by
    #: tests/test_miniwob.py; several times faster (BENCHMARKS.md). At close the env hands its contexts,
    #: wiped, to its host, and the next env with the same origin and viewport starts in them.
    isolation: Literal["context", "storage"] = "context"
    #: how many contexts are made ready for the coming episodes while one runs (new or wiped, and with the
    #: task's start page loaded if it has ``start.preload``); more overlaps more of that work with acting
    ahead: int = 1
    #: how rewards are computed (`agentrl.rewards.router.RouterConfig`); None: the rules (milestone weights),
    #: still routed, so every step's reward has an audit
    router: Any = None


@dataclass(kw_only=True)
class BrowserEpisode(EpisodeState):
    """One episode's browser context and everything observed in it (besides what every episode holds)."""

    context: BrowserContext
    page: Page
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    #: clear while a page's navigation is requested but has neither committed nor turned into a download
    landed: asyncio.Event = field(default_factory=asyncio.Event)
    downloads: list[asyncio.Task] = field(default_factory=list)
    ax: AXTree | None = None
    refs: dict[str, str] = field(default_factory=dict)  # the observation's element ids -> Playwright's refs
    title: str = ""
    fields: list[FieldState] | None = None
    js: dict[str, Any] = field(default_factory=dict)
    cdp: Any = None  # CDP session of the page (isolation="storage": wipes client state between episodes)
    cdp_page: Page | None = None  # the page `cdp` is attached to (a popup the agent moved to replaces it)
    preloaded: bool = False  # the task's start page is loaded and waits for its seed (start.preload)
    #: documents the wall refused since the step began (`agentrl.envs.wall`): the step's error says so
    refused: list[str] = field(default_factory=list)
    #: why the detectors got no page state this step (a frame showed an undeclared document), or None
    withheld: str | None = None
    #: set when an iframe commits a document (`_enforce_wall` waits for iframes added but not yet loaded)
    frame_landed: asyncio.Event = field(default_factory=asyncio.Event)
    #: what the episode's saved downloads took of its budget (`BrowserEnvConfig.max_download_bytes`)
    download_bytes: int = 0
    download_count: int = 0
    #: the renderer of the episode's page crashed (its calls fail from then on)
    crashed: bool = False
    #: the pages the agent's tab was before it moved to a popup (`EventRecorder._adopt_page`), last last
    openers: list[Page] = field(default_factory=list)
    #: a new tab's first request was refused since the last check, and the event its adoption sets
    popup_refused: bool = False
    adopted: asyncio.Event = field(default_factory=asyncio.Event)
    #: the last document of the declared origin the agent's tab showed: where the wall sends the tab back
    last_declared: str = ""
    #: the env's handlers on the context and its pages, as (emitter, event, handler): kept across wipes,
    #: removed when the context goes to another env (`EventRecorder._unwire`)
    wired: list[tuple[Any, str, Any]] = field(default_factory=list)
