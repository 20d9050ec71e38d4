"""Declaring the user's own sites (`agentrl.sitespec`) and tasks on them: every bad input is a clear error
naming the file, the line and the field, before anything starts (no browser, no app)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agentrl import cli
from agentrl.evaluate import evaluate
from agentrl.taskspec import load_task
from agentrl.yamlpos import TaskFileError

TASK = """id: t
instruction: open the page
start: {start}
milestones:
  - {{id: g, detector: {detector}, params: {params}, category: goal}}
oracle:
  - wait
"""


def suite(tmp_path: Path, sites: str | None, start: str = "{site: app, path: /}",
          detector: str = "url_matches", params: str = "{pattern: /}") -> Path:
    if sites is not None:
        (tmp_path / "suite.yaml").write_text(f"name: mine\nsites:\n{sites}")
    f = tmp_path / "t.yaml"
    f.write_text(TASK.format(start=start, detector=detector, params=params))
    return f


def problems(f: Path) -> str:
    with pytest.raises(TaskFileError) as e:
        load_task(f)
    return "\n".join(e.value.problems)


def test_task_on_a_declared_site_loads_with_the_site(tmp_path: Path) -> None:
    f = suite(tmp_path, "  app:\n    origin: http://127.0.0.1:3000\n    reset: {header: true}\n")
    spec = load_task(f)
    assert spec.site is not None and spec.site.origin == "http://127.0.0.1:3000" and spec.site.parallel
    assert spec.site.where == f"{(tmp_path / 'suite.yaml').resolve()}:3"


def test_undeclared_site_is_an_error_naming_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    f = suite(tmp_path / "a", "  helpdesk:\n    origin: http://127.0.0.1:3000\n", start="{site: helpdsk}")
    assert problems(f) == f"{f}:3: start.site: unknown site 'helpdsk' (did you mean 'helpdesk'?)"
    g = suite(tmp_path / "b", None, start="{site: helpdesk}")
    assert "start.site: unknown site 'helpdesk' (no site is declared" in problems(g)


def test_unknown_sandbox_app_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    f = suite(tmp_path, None, start="{app: nosuchapp, path: /nosuchapp/}")
    msg = problems(f)
    assert msg.startswith(f"{f}:3: start.app: unknown app 'nosuchapp'") and "docs/own-sites.md" in msg


def test_validate_cli_refuses_unknown_app_and_undeclared_site(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    suite(tmp_path / "a", None, start="{app: nosuchapp}")
    suite(tmp_path / "b", "  real:\n    origin: http://127.0.0.1:3000\n", start="{site: fake}")
    r = CliRunner().invoke(cli.app, ["tasks", "validate", str(tmp_path)])
    assert r.exit_code == 1
    assert f"{tmp_path / 'a' / 't.yaml'}:3: start.app: unknown app 'nosuchapp'" in r.output
    assert f"{tmp_path / 'b' / 't.yaml'}:3: start.site: unknown site 'fake'" in r.output


def test_non_loopback_origin_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    f = suite(tmp_path, "  staging:\n    origin: https://staging.example.com\n", start="{site: staging}")
    msg = problems(f)
    assert msg.startswith(f"{(tmp_path / 'suite.yaml').resolve()}:3: sites.staging: origin "
                          "https://staging.example.com is not loopback: set 'remote: true'"), msg
    f = suite(tmp_path, "  staging:\n    origin: https://staging.example.com\n    remote: true\n", start="{site: staging}")
    assert load_task(f).site.remote
    g = suite(tmp_path, None, start="{url: 'http://shop.example.com:7770/cart'}")
    assert problems(g) == (f"{g}:3: start.url: http://shop.example.com:7770 is not loopback: declare it as a site "
                           "with 'remote: true' (suite.yaml `sites:`) to let episodes reach it")


def test_start_url_on_loopback_runs_on_that_origin_with_its_path(tmp_path: Path) -> None:
    f = suite(tmp_path, None, start="{url: 'http://127.0.0.1:3000/tickets?page=2'}")
    spec = load_task(f)
    assert spec.site.origin == "http://127.0.0.1:3000" and spec.start.path == "/tickets?page=2"
    assert not spec.site.parallel  # no reset contract


def test_detector_reading_agentrls_server_state_is_refused_on_a_site(tmp_path: Path) -> None:
    f = suite(tmp_path, "  app:\n    origin: http://127.0.0.1:3000\n", detector="server_state",
              params="{path: tickets.0.status, equals: closed}")
    msg = problems(f)
    assert msg.startswith(f"{f}:5: milestones[0].detector: detector server_state reads agentrl's own sandbox "
                          "server state, which the site 'app' does not have: use http_json"), msg


def test_bad_site_declarations_name_the_suite_file_line_and_field(tmp_path: Path) -> None:
    f = suite(tmp_path, "  app:\n    origin: http://127.0.0.1:3000\n    reset: {htp: /reset}\n"
                        "  tmp:\n    origin: http://127.0.0.1:3001\n    reset: {command: 'cp seed.db {tmp}/a.db'}\n"
                        "  docs:\n    static: nowhere/\n  both:\n    origin: 127.0.0.1:3000\n")
    where = (tmp_path / "suite.yaml").resolve()
    msg = problems(f)
    assert f"{where}:5: sites.app.reset.htp: Extra inputs are not permitted" in msg
    assert f"{where}:8: sites.tmp.reset: {{tmp}} is the started command's own directory" in msg
    assert f"{where}:10: sites.docs.static: no folder {(tmp_path / 'nowhere').resolve()}" in msg
    assert f"{where}:12: sites.both.origin: an origin is scheme://host[:port]" in msg


def test_site_without_a_parallel_reset_contract_refuses_several_workers(tmp_path: Path) -> None:
    for sites in ("  app:\n    origin: http://127.0.0.1:3000\n",
                  "  app:\n    origin: http://127.0.0.1:3000\n    reset: {http: /reset}\n"):
        f = suite(tmp_path, sites)
        spec = load_task(f)
        with pytest.raises(ValueError) as e:
            evaluate([spec], "scripted", [0, 1], tmp_path / "run", workers=2, progress=False)
        msg = str(e.value)
        assert msg.startswith(f"{f}:3: start: task t runs on site 'app' ({(tmp_path / 'suite.yaml').resolve()}:3)")
        assert "--workers 2" in msg and "reset: {header: true}" in msg
        assert not (tmp_path / "run").exists()  # refused before anything ran


def test_run_sites_file_adds_and_overrides_the_suites_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = suite(tmp_path, "  app:\n    origin: http://127.0.0.1:3000\n")
    run = tmp_path / "run-sites.yaml"
    run.write_text(yaml.safe_dump({"sites": {"app": {"origin": "http://127.0.0.1:4000", "reset": {"header": True}}}}))
    monkeypatch.setenv("AGENTRL_SITES", str(run))
    spec = load_task(f)
    assert spec.site.origin == "http://127.0.0.1:4000" and spec.site.parallel
