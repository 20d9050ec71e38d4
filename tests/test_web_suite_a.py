"""The web suite's navigation, forms and files tasks: the oracle solves each one and fires every milestone in
a stable order, every near-miss misses the goal, a no-op fires nothing, the random agent stays low per
category, and shortcuts (posting a final form without its steps, typing a success URL, an empty or wrong
upload, the wrong export) earn nothing on the server.

CI runs 2 seeds per task; the 5-seed run is `agentrl tasks coverage tasks/web --seeds 5` (docs/coverage.md).
"""

from __future__ import annotations

import os
import struct
import urllib.error
import urllib.request
import zlib
from collections import defaultdict

import pytest
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.apps.filegen import pdf_bytes, png_chart
from agentrl.sandbox.server import EPISODE_HEADER, SandboxServer
from agentrl.suites import SUITES_DIR
from typer.testing import CliRunner

from agentrl import cli
from agentrl.agents import RandomAgent
from agentrl.coverage import Coverage, TaskCoverage, measure, to_markdown
from agentrl.evaluate import run_episode
from agentrl.suite import load_suite_spec
from agentrl.testing import check_near_miss, check_noop, check_oracle

WEB = SUITES_DIR / "web"
CATEGORIES = ("navigation", "forms", "files")
SUITE = load_suite_spec(WEB)
TASKS = [t for t in SUITE.tasks if SUITE.category(t) in CATEGORIES]
# Seeds per task for the oracle: the first AGENTRL_SUITE_SEEDS (default 1, to keep CI short) of [100000, 3];
# `agentrl tasks coverage tasks/web --seeds 5` (docs/coverage.md) is the 5-seed run.
SEEDS = [100000, 3][: int(os.environ.get("AGENTRL_SUITE_SEEDS", "1"))]


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("web-a")
    made = {t.id: BrowserEnv(t, BrowserEnvConfig(root_dir=root)) for t in TASKS}
    yield made
    for e in made.values():
        e.close()


def test_each_category_has_enough_tasks_tiers_and_heldouts() -> None:
    for cat in CATEGORIES:
        tasks = [t for t in TASKS if SUITE.category(t) == cat]
        assert len(tasks) >= 8, cat
        assert {t.tier for t in tasks} == {1, 2, 3}, cat
        assert 1 <= sum("heldout" in t.tags for t in tasks) <= 2, cat
        assert all(t.near_misses for t in tasks), cat
        prefix = {"navigation": "nav-", "forms": "form-", "files": "file-"}[cat]
        assert all(t.id.startswith(prefix) for t in tasks), cat
    train, _ = SUITE.split("train")
    assert not [t.id for t in train if "heldout" in t.tags]


def test_seeds_give_different_variants() -> None:
    with SandboxServer() as server:
        for task in TASKS:
            rendered = [task.render(seed, server.open_episode(f"v{seed}", seed)) for seed in (0, 1, 2)]
            variants = {repr((v.instruction, v.milestones, v.oracle)) for v in rendered}
            assert len(variants) > 1, f"{task.id}: every seed renders the same task"


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_oracle_solves_and_fires_every_milestone_in_order(envs, task) -> None:
    # the first seed again (the same trajectory) on every fourth task: determinism is a property of the env,
    # checked on every core task and drill; this samples the web apps without doubling CI time
    again = [SEEDS[0]] if TASKS.index(task) % 4 == 0 else []
    check_oracle(envs[task.id], [*SEEDS, *again])


NEAR_MISSES = [(t, n) for t in TASKS for n in t.near_misses]


@pytest.mark.parametrize("task, near", NEAR_MISSES, ids=[f"{t.id}:{n.name}" for t, n in NEAR_MISSES])
def test_near_miss_does_not_earn_the_goal(envs, task, near) -> None:
    check_near_miss(envs[task.id], near, SEEDS[0], strict=True)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_noop_fires_nothing(envs, task) -> None:
    check_noop(envs[task.id], 0, ('scroll("down")', 'done("")'))


def test_random_agent_stays_low_per_category(envs) -> None:
    # tiers 1 and 2 only: these are the tasks a lucky random walk could finish; tier 3 (8+ steps) would only
    # add minutes of near-certain failures (the 5-seed coverage run measures the random agent on all tiers)
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for t in (t for t in TASKS if t.tier < 3):
        r = run_episode(envs[t.id], RandomAgent(seed=11), 100001)
        by_cat[SUITE.category(t)].append(r.success)
    rates = {c: sum(v) / len(v) for c, v in by_cat.items()}
    assert all(rate <= 0.15 for rate in rates.values()), f"random agent success per category: {rates}"


# -- shortcuts, sent straight to the server with the episode's header ---------------------------------------
def _send(env: BrowserEnv, path: str, data: bytes | None = None, ctype: str = "") -> int:
    """Send a request as the agent's browser would (same episode header), without any preceding steps."""
    headers = {EPISODE_HEADER: env.episode_id or ""}
    if ctype:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(env.sandbox.url(path), data=data, headers=headers, method="POST" if data else "GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 303 is an answer here, not something to follow
        return None


def _goal_after(env: BrowserEnv) -> list[str]:
    """Take one no-op step so the detectors look at the server state; the goals completed so far."""
    *_, info = env.step("wait()")
    goals = {m.id for m in env.variant.milestones if m.category == "goal"}
    return sorted(goals & set(info["completed"]))


def test_posting_the_final_expense_form_directly_is_rejected(envs) -> None:
    env = envs["form-expense"]
    env.reset(seed=SEEDS[0])
    f = env.variant.variables
    assert _send(env, "/forms/expense/submit", b"token=") == 409
    # step 1 done by hand, then a submit with a guessed token: still nothing to submit
    body = f"employee_id={f['employee_id']}&department={f['department']}".encode()
    assert _send(env, "/forms/expense", body, "application/x-www-form-urlencoded") == 303
    assert _send(env, "/forms/expense/submit", b"token=0000", "application/x-www-form-urlencoded") == 409
    state = env.sandbox.episode_state(env.episode_id)["forms"]
    assert state["claims"] == [] and state["rejected"] == ["expense", "expense"]
    assert _goal_after(env) == []


def test_posting_travel_confirm_without_the_form_is_rejected(envs) -> None:
    env = envs["form-travel"]
    env.reset(seed=SEEDS[0])
    assert _send(env, "/forms/travel/confirm", b"x=1", "application/x-www-form-urlencoded") == 409
    assert env.sandbox.episode_state(env.episode_id)["forms"]["travel_requests"] == []
    assert _goal_after(env) == []


def test_empty_and_wrong_fields_are_not_recorded(envs) -> None:
    env = envs["form-newsletter"]
    env.reset(seed=SEEDS[0])
    form = "application/x-www-form-urlencoded"
    assert _send(env, "/forms/newsletter", b"email=", form) == 422
    assert _send(env, "/forms/newsletter", b"email=not-an-address", form) == 422
    state = env.sandbox.episode_state(env.episode_id)["forms"]
    assert state["subscribers"] == [] and state["validation_failures"] == 2
    assert _goal_after(env) == []


def test_uploads_of_the_wrong_file_are_rejected(envs) -> None:
    env = envs["file-import-contacts"]
    env.reset(seed=SEEDS[0])
    old = env.variant.files["contacts-old.csv"].encode()
    for name, content in (("contacts-old.csv", old), ("contacts.txt", b"name,email\nA,a@b.co\n")):
        body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name.encode() +
                b"\"\r\nContent-Type: text/csv\r\n\r\n" + content + b"\r\n--XyZ--\r\n")
        assert _send(env, "/files/import", body, "multipart/form-data; boundary=XyZ") == 422
    assert _send(env, "/files/import", b"file=contacts.csv", "application/x-www-form-urlencoded") == 422
    state = env.sandbox.episode_state(env.episode_id)["files"]
    assert state["imports"] == [] and len(state["rejected_uploads"]) == 3
    assert _goal_after(env) == []


def test_typing_the_download_url_is_not_a_download(envs) -> None:
    env = envs["file-invoice-pdf"]
    env.reset(seed=SEEDS[0])
    f = env.variant.variables
    # the preview page (a look-alike URL) is no download; an export without a format is a validation error
    _, _, _, _, info = env.step(f'goto("/files/invoices/{f["invoice_id"]}")')
    assert _send(env, "/files/export?dataset=Orders", None) == 422
    assert "pdf_saved" not in info["completed"] and _goal_after(env) == []
    assert not (env.episode_dir / "downloads").exists()


# -- the coverage table ----------------------------------------------------------------------------------
def test_coverage_measures_orders_and_renders_the_table(tmp_path) -> None:
    cov = measure(SUITE, [100000, 100001], random_seeds=1, only=["nav-ledger-open"], root_dir=tmp_path)
    (t,) = cov.tasks
    assert (t.task_id, t.category, t.tier, t.successes, t.random_episodes) == ("nav-ledger-open", "navigation", 1, 2, 1)
    assert t.orders[0] == ("ledger_open", "right_page", "page_shown") and t.stable and not t.missed
    md = to_markdown(cov, "agentrl tasks coverage tasks/web")
    assert "| nav-ledger-open | navigation | 1 | 2/2 (100%) | ledger_open → right_page → page_shown | yes | – |" in md
    assert "| navigation | 1 | 1/0/0 | 2/2 (100%) |" in md and "## Problems" not in md
    with pytest.raises(KeyError, match="no-such-task"):
        measure(SUITE, [0], only=["no-such-task"])


def test_coverage_reports_unstable_orders_and_misses() -> None:
    bad = TaskCoverage(task_id="x", category="forms", tier=2, tags=("heldout",), declared=("a", "b", "c"),
                       seeds=(1, 2), successes=1, orders=(("a", "b"), ("b", "a", "c")), errors=("seed 2: boom",))
    assert not bad.stable and bad.missed == ("c",)
    md = to_markdown(Coverage(suite="web", split="test", seeds=[1, 2], random_seeds=0, tasks=[bad]))
    assert "| x (held out) | forms | 2 | 1/2 (50%) | a → b | no (2 orders) | c |" in md
    assert "## Problems" in md and "seed 2: boom" in md


def test_exported_pdf_and_png_are_well_formed() -> None:
    pdf = pdf_bytes("Invoice INV-1001", ["Customer: Acme (North)"])
    start = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    xref = pdf[start:].split(b"\n")
    assert xref[0] == b"xref" and b"(Customer: Acme \\(North\\)) Tj" in pdf
    for i in range(1, int(xref[1].split()[1])):  # every object offset points at its "N 0 obj"
        assert pdf[int(xref[2 + i].split()[0]):].startswith(b"%d 0 obj" % i)
    png = png_chart("Orders by status", {"Paid": 2, "Shipped": 4})
    width, height = struct.unpack(">II", png[16:24])
    idat = png.index(b"IDAT")
    raw = zlib.decompress(png[idat + 4 : idat + 4 + struct.unpack(">I", png[idat - 4 : idat])[0]])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) == height * (1 + 3 * width)
    assert b"Title\x00Orders by status" in png and b"Data\x00Paid=2;Shipped=4" in png


def test_coverage_command_writes_the_table(tmp_path) -> None:
    out = tmp_path / "coverage.md"
    args = ["tasks", "coverage", str(WEB), "--seeds", "1", "--random-seeds", "0", "--task", "form-newsletter",
            "--out", str(out)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "| form-newsletter | forms | 1 | 1/1 (100%) | email_typed → subscribed → thanks_shown | yes | – |" in (
        out.read_text())
    bad = CliRunner().invoke(cli.app, [*args[:-1], str(out), "--task", "no-such-task"])
    assert bad.exit_code == 2 and "no-such-task" in bad.output
