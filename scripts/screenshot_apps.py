"""Screenshot every sandbox app's main page in real Chromium, into ``docs/img/apps/<app>.png``.

Starts a :class:`SandboxServer` on a free port, opens one episode (seed 0 by default), and visits each app
of ``default_apps()`` with that episode's header, the way the browser env does. Chromium is launched like
``envs/host.py`` launches it (same executable, same arguments). Prints one line per app with the HTTP
status; a page that answers 400 or more is reported and the script exits 1.

    .venv/bin/python scripts/screenshot_apps.py                   # all apps
    .venv/bin/python scripts/screenshot_apps.py mail settings     # some of them
    .venv/bin/python scripts/screenshot_apps.py --seed 3 --out /tmp/shots
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agentrl.envs.host import CHROME_ARGS, CHROMIUM
from agentrl.sandbox import EPISODE_HEADER, SandboxServer, default_apps
from playwright.async_api import async_playwright

REPO = Path(__file__).resolve().parents[1]
# apps whose page at /<name>/ is not the one to show (drill has no index; its pages are the drills)
MAIN_PAGES = {"drill": "/drill/named"}
VIEWPORT = {"width": 1280, "height": 900}


async def shoot(names: list[str], out: Path, seed: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    with SandboxServer() as server:
        server.open_episode("screenshots", seed)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
            context = await browser.new_context(
                viewport=VIEWPORT, extra_http_headers={EPISODE_HEADER: "screenshots"}
            )
            page = await context.new_page()
            for name in names:
                path = MAIN_PAGES.get(name, f"/{name}/")
                resp = await page.goto(server.url(path), wait_until="load")
                status = resp.status if resp is not None else 0
                target = out / f"{name}.png"
                await page.screenshot(path=str(target), full_page=True)
                bad = status >= 400
                failures += bad
                print(f"{name:12s} {path:24s} -> {page.url.removeprefix(server.origin)}  HTTP {status}  "
                      f"{target.relative_to(REPO) if target.is_relative_to(REPO) else target}"
                      f"{'  <-- ERROR' if bad else ''}")
            await browser.close()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    apps = [a.name for a in default_apps()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("apps", nargs="*", help=f"app names (default: all of {', '.join(apps)})")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "apps", help="output folder")
    args = parser.parse_args(argv)
    unknown = [n for n in args.apps if n not in apps]
    if unknown:
        parser.error(f"unknown app(s) {', '.join(unknown)}; the apps are {', '.join(apps)}")
    return asyncio.run(shoot(args.apps or apps, args.out, args.seed))


if __name__ == "__main__":
    sys.exit(main())
