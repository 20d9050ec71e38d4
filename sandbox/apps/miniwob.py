"""`miniwob`: the MiniWoB++ task pages of Farama's ``miniwob`` package, served from the sandbox origin.

The pages come unchanged from ``site-packages/miniwob/html/`` (``pip install miniwob``), mounted at
``/miniwob/`` with the package's own layout, so their relative ``../core/core.js`` links resolve inside
the app: ``/miniwob/miniwob/click-test.html`` loads ``/miniwob/core/core.js``. Everything an episode loads
therefore stays on the sandbox origin, and the env's wall (only the sandbox origin is reachable) holds.

A task page (``/miniwob/miniwob/<task>.html``) gets one script appended before ``</body>``. It defines
``window.__agentrlStart(seed)``, which starts a **seeded** MiniWoB episode the way Farama's env does
(``Math.seedrandom(seed)``, then ``core.startEpisodeReal()``). On a page loaded for an episode it runs on
``load`` with the seed of the agentrl episode the request belongs to. On a page *preloaded* before its
episode exists (``Request.preload``: the env's ``start.preload``, how the MiniWoB suite's resets are
fast), it waits for the env to call it with the new episode's seed; both ways give the same problem.

* ``#query`` (the utterance) becomes a level-1 heading, so the instruction is a named element of the
  accessibility tree: the agent and an LLM read it from the observation.
* The pages' own 10 s timer (``core.EPISODE_MAX_TIME``) is set to the largest ``setTimeout`` delay:
  agentrl bounds an episode by steps (``max_steps``), never by wall-clock time, so a slow policy or a
  loaded machine does not change the outcome.
* The reward HUD ("Last reward", "Time left", ...) is hidden: it is MiniWoB's debug display, not part
  of the task (Farama's DOM observation leaves it out too).
* One MiniWoB episode per agentrl episode: when the page's episode ends (``WOB_DONE_GLOBAL``), its
  "START" cover is shown as "Episode over" and no longer starts a new problem, so the page's reward
  (``WOB_RAW_REWARD_GLOBAL``) is final; everything but the instruction and the cover is hidden, so an
  action on the task's old elements fails at once instead of waiting on the cover.

Tasks read the outcome with the ``js_true`` detector (``WOB_DONE_GLOBAL && WOB_RAW_REWARD_GLOBAL > 0``).
The server sees only page loads: ``public_state`` lists the task pages loaded for the episode (a
preloaded start page is not among them: it was loaded before the episode existed).

>>> app = MiniWoBApp()
>>> app.facts(app.new_state(7))
{'seed': '7'}
>>> "__agentrlStart(7)" in app.handle(Request("GET", "/miniwob/click-test.html", "/miniwob"), app.new_state(7)).body.decode()
True
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import App, Request, Response, html_response, join, method_not_allowed, not_found, page, render

#: the largest delay setTimeout accepts (2**31 - 1 ms, ~24.8 days); a larger one fires at once
NO_TIME_LIMIT_MS = 2**31 - 1

_START = """<script>
/* agentrl: start a seeded MiniWoB episode (see agentrl/sandbox/apps/miniwob.py) */
window.__agentrlStart = function (seed) {{
  window.__agentrlStart = function () {{ throw new Error('this page has started its episode'); }};
  if (core.cover_div == null) core.startEpisode();
  core.cover_div.innerHTML = 'Episode over';
  core.hideDisplay();
  core.EPISODE_MAX_TIME = {max_ms};
  Math.seedrandom(seed);
  core.startEpisodeReal();
  var q = document.getElementById('query');
  if (q) {{ q.setAttribute('role', 'heading'); q.setAttribute('aria-level', '1'); }}
  core.startEpisodeReal = function () {{}};  /* one MiniWoB episode per agentrl episode */
  core.startEpisode = function () {{  /* called by core.endEpisode: the page's episode is over */
    core.cover_div.style.display = 'block';
    for (var el = q; el && el !== document.body; el = el.parentElement) {{
      for (var s = el.parentElement.firstElementChild; s; s = s.nextElementSibling) {{
        if (s !== el && s !== core.cover_div) s.style.setProperty('display', 'none', 'important');
      }}
    }}
  }};
}};
{autostart}</script>
"""
_AUTOSTART = "window.addEventListener('load', function () {{ window.__agentrlStart({seed}); }});\n"


def html_dir() -> Path:
    """``site-packages/miniwob/html`` of the installed ``miniwob`` package (``pip install agentrl[miniwob]``)."""
    try:
        import miniwob
    except ImportError as e:  # the app is optional: say how to get it
        raise RuntimeError("the miniwob app needs Farama's miniwob package: pip install 'miniwob>=1.1'") from e
    return Path(miniwob.__file__).parent / "html"


@dataclass
class MiniWoBState:
    seed: int
    pages: list[str] = field(default_factory=list)  # task pages opened, e.g. "click-test"


class MiniWoBApp(App):
    name = "miniwob"
    title = "MiniWoB++"
    description = "Farama's MiniWoB++ task pages, each episode seeded with the agentrl episode's seed."

    def __init__(self, root: Path | None = None) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = html_dir()
        return self._root

    def tasks(self) -> list[str]:
        """Names of the MiniWoB++ tasks shipped with the package (``click-test``, ...)."""
        return sorted(p.stem for p in (self.root / "miniwob").glob("*.html"))

    def registered_tasks(self) -> list[str]:
        """The tasks the package registers as ``miniwob/<task>-v1`` on its ``html/miniwob`` pages (the 125 of
        MiniWoB++ that Farama's env and BrowserGym run; a few pages of the folder are not registered, and
        the registered ``flight.*`` tasks load whole airline sites from ``html/flight``)."""
        import gymnasium
        import miniwob  # noqa: F401  (registers its envs with gymnasium)

        ids = (k.removeprefix("miniwob/").removesuffix("-v1") for k in gymnasium.registry if k.startswith("miniwob/"))
        return sorted(t for t in ids if (self.root / "miniwob" / f"{t}.html").is_file())

    def new_state(self, seed: int) -> MiniWoBState:
        return MiniWoBState(seed=seed)

    def facts(self, state: MiniWoBState) -> dict[str, str]:
        return {"seed": str(state.seed)}

    def public_state(self, state: MiniWoBState) -> dict[str, Any]:
        return {"seed": state.seed, "pages": list(state.pages)}

    def handle(self, req: Request, state: MiniWoBState) -> Response:
        if not req.is_read:
            return method_not_allowed("GET, HEAD", self.title)
        if req.path == "/":
            links = join(
                render('<li><a href="{href}">{name}</a></li>', href=req.url(f"/miniwob/{t}.html"), name=t)
                for t in self.tasks()
            )
            return html_response(page("Tasks", render("<h1>MiniWoB++ tasks</h1><ul>{l}</ul>", l=links), app_title=self.title))
        root = self.root.resolve()
        path = (root / req.path.lstrip("/")).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return not_found(self.title)
        body = path.read_bytes()
        if path.parent == root / "miniwob" and path.suffix == ".html":
            autostart = ""
            if not req.preload:  # preloaded: the env starts it with the seed of the episode it goes to
                state.pages.append(path.stem)
                autostart = _AUTOSTART.format(seed=int(state.seed))
            script = _START.format(max_ms=NO_TIME_LIMIT_MS, autostart=autostart).encode()
            at = body.rfind(b"</body>")
            body = body[:at] + script + body[at:] if at >= 0 else body + script
            return Response(body=body, content_type="text/html; charset=utf-8")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
            ctype += "; charset=utf-8"
        return Response(body=body, content_type=ctype, immutable=True)  # the package's files: cacheable
