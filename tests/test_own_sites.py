"""Tasks on the user's own web apps, with the real example app (examples/helpdesk/app.py) as a separate
process started by agentrl: per-episode reset, parallel episodes on one backend with the header contract,
the wall around a site's pages, a site that never becomes ready or whose command dies, a failing reset
hook; and the CLI runs (evaluate on both examples, train) that leave no process behind."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.sites import SiteBackend, SiteError, ensure_running, get_json, stop_sites
from conftest import REPO, act

from agentrl.evaluate import evaluate
from agentrl.sitespec import SiteSpec
from agentrl.taskspec import load_task
from agentrl.types import BlockedRequestEvent

APP_DIR = REPO / "examples" / "helpdesk"
NEW_TICKET = """id: new-ticket
instruction: "Open a ticket titled {title}."
start: {{site: helpdesk, path: /tickets/new}}
max_steps: 6
milestones:
  - id: created
    detector: http_json
    params: {{url: "/api/tickets?title={title}", at: "0.status", equals: open}}
    category: goal
oracle:
  - fill: {{role: textbox, name: Title, text: "{title}"}}
  - click: {{role: button, name: Create ticket}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def helpdesk_suite(tmp_path: Path, reset: dict[str, Any] | None, *, shared: bool = False, db: str = "{tmp}/h.db",
                   start: str = "/tickets/new", title: str = "Row from episode 1") -> Path:
    """A suite folder declaring the example app on a free port, with one task that creates a ticket."""
    port = free_port()
    site: dict[str, Any] = {
        "origin": f"http://127.0.0.1:{port}", "cwd": str(APP_DIR), "ready": {"url": "/health"},
        "command": f"{{python}} app.py --port {port} --db {db}" + (" --shared" if shared else ""),
    }
    if reset is not None:
        site["reset"] = reset
    d = tmp_path / "suite"
    d.mkdir(exist_ok=True)
    (d / "suite.yaml").write_text(yaml.safe_dump({"sites": {"helpdesk": site}}))
    (d / "new-ticket.yaml").write_text(NEW_TICKET.format(title=title).replace("/tickets/new", start, 1))
    return d / "new-ticket.yaml"


def processes_with(*words: str) -> list[int]:
    """Live processes whose command line holds every word (as whole arguments)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and all(w.encode() in args for w in words):
            found.append(int(d.name))
    return found


@pytest.fixture
def envs(tmp_path: Path):
    made: list[BrowserEnv] = []

    def make(task: Path) -> BrowserEnv:
        env = BrowserEnv(task, BrowserEnvConfig(root_dir=tmp_path / "episodes"))
        made.append(env)
        return env

    yield make
    for e in made:
        e.close()
    stop_sites()


def create_ticket(env: BrowserEnv, obs: dict[str, Any], title: str) -> dict[str, Any]:
    obs, *_ = act(env, obs, {"fill": {"role": "textbox", "name": "Title", "text": title}})
    obs, _, _, _, info = act(env, obs, {"click": {"role": "button", "name": "Create ticket"}})
    assert info["action_error"] is None and f"#7 {title}" in obs["title"], obs["text"][:400]
    return obs


def test_http_reset_answers_facts_drawn_from_the_seed_for_the_templates(tmp_path: Path) -> None:
    task = load_task(helpdesk_suite(tmp_path, {"http": "/reset", "header": True}))
    site = SiteBackend(task.site)
    try:
        tags = {s: site.open_episode(f"ep-{s}", s)["helpdesk"]["asset_tag"] for s in (1, 2, 1)}
        assert tags[1] != tags[2] and site.open_episode("again", 1)["helpdesk"]["asset_tag"] == tags[1]
        body = get_json(site.origin + "/api/tickets/3", "ep-2")["body"]
        assert tags[2] in body and tags[1] not in body
    finally:
        stop_sites()


@pytest.mark.parametrize("contract", ["http", "command"])
def test_per_episode_reset_episode2_does_not_see_episode1_rows(tmp_path: Path, envs, contract: str) -> None:
    """One shared state for every request (--shared): only the reset contract keeps episodes apart."""
    db = tmp_path / "h.db"
    reset = {"http": "/reset"} if contract == "http" else {"command": f"{{python}} app.py --db {db} --reset-db"}
    env = envs(helpdesk_suite(tmp_path, reset, shared=True, db=str(db)))
    obs, _ = env.reset(seed=1)
    create_ticket(env, obs, "Row from episode 1")
    titles = [t["title"] for t in get_json(env.sandbox.origin + "/api/tickets", "anyone")]
    assert "Row from episode 1" in titles  # the backend is shared: the row is there for everyone
    obs, _ = env.reset(seed=2)
    obs, *_ = act(env, obs, 'goto("/")')
    assert "Row from episode 1" not in obs["axtree"] and "Printer on floor 3 jams" in obs["axtree"]
    assert len(get_json(env.sandbox.origin + "/api/tickets", "anyone")) == 6


def test_parallel_episodes_share_one_backend_with_the_header_contract(tmp_path: Path, envs) -> None:
    task = helpdesk_suite(tmp_path, {"http": "/reset", "header": True})
    a, b = envs(task), envs(task)
    assert a.sandbox.origin == b.sandbox.origin and len(processes_with("app.py", "--port",
                                                                       a.sandbox.origin.rsplit(":", 1)[1])) == 1

    def episode(env: BrowserEnv, title: str) -> tuple[str, str]:
        obs, _ = env.reset(seed=0)
        create_ticket(env, obs, title)
        obs, *_ = act(env, obs, 'goto("/")')
        return env.episode_id, obs["axtree"]

    with ThreadPoolExecutor(2) as pool:  # both episodes at once, on the one app process
        (id_a, page_a), (id_b, page_b) = pool.map(episode, (a, b), ("Alpha row", "Beta row"))
    assert "Alpha row" in page_a and "Beta row" not in page_a
    assert "Beta row" in page_b and "Alpha row" not in page_b
    assert [t["title"] for t in get_json(a.sandbox.origin + "/api/tickets", id_a)][-1] == "Alpha row"
    assert [t["title"] for t in get_json(a.sandbox.origin + "/api/tickets", id_b)][-1] == "Beta row"


class _Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_wall_refuses_a_site_page_fetching_another_loopback_port_or_an_outside_host(tmp_path: Path, envs) -> None:
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)  # a live server on another loopback port
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        elsewhere = f"http://127.0.0.1:{other.server_address[1]}/badge.svg"
        env = envs(helpdesk_suite(tmp_path, {"header": True}, start=f"/about?badge={elsewhere}"))
        _, info = env.reset(seed=0)
        blocked = [e.url for e in info["events"] if isinstance(e, BlockedRequestEvent)]
        assert elsewhere in blocked and _Counter.hits == []
        obs, _, _, _, info = env.step('goto("/about")')  # the app's default badge: an outside host
        assert "http://status.example.com/badge.svg" in [e.url for e in info["events"] if isinstance(e, BlockedRequestEvent)]
        obs, _, _, _, info = env.step(f'goto("{elsewhere}")')
        assert "blocked" in info["action_error"] and _Counter.hits == []
    finally:
        other.shutdown()
        other.server_close()


def test_site_that_never_becomes_ready_is_a_clear_error_and_leaves_no_orphan(tmp_path: Path) -> None:
    secs = str(random.randint(900_000, 999_999))  # a mark to find its processes by
    port = free_port()
    site = SiteSpec(name="slow", origin=f"http://127.0.0.1:{port}", ready_timeout_s=1.5,
                    command=f"sleep {secs} & sleep {secs}")  # a child and a grandchild that never answer
    with pytest.raises(SiteError, match=rf"site 'slow': not ready at http://127.0.0.1:{port} within 1.5 s"):
        ensure_running(site)
    assert processes_with("sleep", secs) == []


def test_site_whose_command_dies_is_a_clear_error_with_its_output(tmp_path: Path) -> None:
    site = SiteSpec(name="dies", origin=f"http://127.0.0.1:{free_port()}",
                    command=["{python}", "-c", "import sys; print('port already in use'); sys.exit(3)"])
    with pytest.raises(SiteError, match=r"site 'dies': its command exited with code 3 .*port already in use"):
        ensure_running(site)


def test_failing_reset_hook_ends_the_episode_truncated_with_the_reason(tmp_path: Path) -> None:
    task = load_task(helpdesk_suite(tmp_path, {"command": "echo disk full >&2; exit 7", "header": True}))
    summary = evaluate([task], "scripted", [0], tmp_path / "run", progress=False, report=False)
    (r,) = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert r["truncated"] and not r["success"] and summary["errors"] == 1
    assert r["truncation_reason"] == "site 'helpdesk': reset command 'echo disk full >&2; exit 7' exited with code 7: disk full"
    assert processes_with("app.py", "--port", task.site.origin.rsplit(":", 1)[1]) == []  # stopped after the run


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentrl.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("example", ["helpdesk", "handbook"])
def test_cli_evaluate_example_scripted_solves_every_task_random_does_not_no_process_left(
        tmp_path: Path, example: str) -> None:
    suite = f"examples/{example}/tasks"
    assert processes_with("app.py", "--port", "8765") == []  # agentrl starts the helpdesk itself
    r = _cli("evaluate", "--suite", suite, "--agent", "scripted", "--seeds", "2", "--workers", "2",
             "--no-screenshots", "--no-report", "--out", str(tmp_path / "scripted"))
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((tmp_path / "scripted" / "summary.json").read_text())
    assert s["success_rate"] == 1.0 and s["errors"] == 0 and s["episodes"] == 2 * len(s["per_task"])
    assert len(s["per_task"]) == (8 if example == "helpdesk" else 3)
    seeds = "1" if example == "helpdesk" else "2"  # random plays every episode to max_steps: 8 or 6 episodes
    r = _cli("evaluate", "--suite", suite, "--agent", "random", "--seeds", seeds, "--workers", "2",
             "--no-screenshots", "--no-report", "--out", str(tmp_path / "random"))
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((tmp_path / "random" / "summary.json").read_text())
    assert s["success_rate"] < 0.2 and s["errors"] == 0
    assert processes_with("app.py", "--port", "8765") == []  # stopped with the run, nothing left behind


def test_cli_train_runs_a_few_steps_on_an_example_task(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "ci-smoke.yaml").read_text())
    cfg.update(tasks=["examples/helpdesk/tasks/reopen.yaml"], out_dir=str(tmp_path / "train"), total_steps=2,
               group_size=2, groups_per_step=1, num_envs=2, eval_episodes=2, checkpoint_every=100)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    r = _cli("train", str(tmp_path / "train.yaml"), timeout=280)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in rows if m["kind"] == "train"]
    assert [m["step"] for m in train] == [1, 2] and all(m["optimizer_steps"] >= 1 for m in train)
    trajs = [json.loads(line) for line in (tmp_path / "train" / "trajectories.jsonl").read_text().splitlines()]
    assert trajs and all(t["task_id"] == "helpdesk-reopen" and not t["infra_failure"] for t in trajs)
    assert processes_with("app.py", "--port", "8765") == []
