"""report.html opened in real Chromium: it renders, the per-task table is there, and the trajectory viewer
steps through an episode showing the recorded action and screenshot of each step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agentrl.envs.browser import BrowserEnvConfig
from agentrl.envs.host import CHROME_ARGS, CHROMIUM
from agentrl.suites import SUITES_DIR
from playwright.sync_api import sync_playwright

from agentrl import report
from agentrl.evaluate import evaluate, load_results, load_tasks
from agentrl.trajectory import read_trajectory


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    tasks = sorted(load_tasks(SUITES_DIR / "core", ["reports-search", "reports-open"]), key=lambda t: t.id != "reports-search")
    evaluate(tasks, "scripted", [0, 1], out,
             config=BrowserEnvConfig(screenshot=True), progress=False, meta={"suite": "core", "split": "all"})
    return out


def test_report_in_chromium(run: Path) -> None:
    rows = load_results(run)
    first = rows[0]  # the viewer opens on the first episode: reports-search, 3 steps
    _, steps, _ = read_trajectory(run / first.episode_dir / "trajectory.jsonl")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((run / "report.html").as_uri())
            assert page.locator("h1").inner_text() == "scripted on core / all"
            assert page.locator("#overall-success").inner_text() == "100.0%"
            table = page.locator("#task-table tbody tr")
            assert table.count() == 2
            assert sorted(table.nth(i).get_attribute("data-task") for i in range(2)) == ["reports-open", "reports-search"]
            assert "[34.2%, 100.0%]" in table.first.inner_text()  # Wilson 95% interval for 2/2
            assert page.locator("svg.funnel").count() == 2
            assert page.locator("#counter").inner_text() == f"step 0 / {len(steps)}"
            page.click("#next")
            assert page.locator("#action").inner_text() == steps[0].parsed
            img = page.locator("#shot-img")
            assert img.get_attribute("src") == f"{first.episode_dir}/{steps[0].screenshot}"
            page.wait_for_function("document.getElementById('shot-img').complete")
            assert page.evaluate("document.getElementById('shot-img').naturalWidth") == 1024  # the file loaded
            page.keyboard.press("ArrowRight")  # the keyboard steps too
            assert page.locator("#counter").inner_text() == f"step 2 / {len(steps)}"
            assert page.locator("#action").inner_text() == steps[1].parsed
            assert page.locator("#shot-img").get_attribute("src").endswith("/screenshots/0002.png")
            milestones = [m.id for m in steps[1].milestones]
            assert milestones and all(m in page.locator("ul.ms").inner_text() for m in milestones)
            page.click("#obs summary")
            assert steps[1].observation[:40] in page.locator("#obs pre").inner_text()
            page.keyboard.press("ArrowDown")  # next episode, from its start
            assert page.locator("#episode-select").input_value() == "1"
            assert page.locator("#counter").inner_text().startswith("step 0 / ")
            assert errors == []
        finally:
            browser.close()


def test_viewer_data_is_bounded(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MAX_EPISODES", 2)
    monkeypatch.setattr(report, "OBS_CHARS", 50)
    page = report.render_report(run)
    data = json.loads(page.split('id="report-data">', 1)[1].split("</script>", 1)[0])
    eps = data["episodes"]
    assert len(eps) == 2 and {e["task"] for e in eps} == {"reports-open", "reports-search"}  # evenly over tasks
    assert "2 of 4 episodes are in the viewer" in page
    obs = eps[0]["frames"][1]["obs"]
    assert obs.startswith(eps[0]["frames"][1]["obs"][:50]) and "more characters not embedded" in obs
