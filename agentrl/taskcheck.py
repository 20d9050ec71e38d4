"""`agentrl tasks validate`: every task file checked against its schema and against a live sandbox.

Beyond what `load_task` refuses on its own (schema, detectors and their parameters, `after` cycles,
unknown apps and sites, malformed templates), each task is rendered for seed 0 with the sandbox's facts (unknown
template variables, anywhere) and its start page is requested: a start path the app does not serve is
refused here, not at run time. Every file is reported, whatever an earlier one did: a file that cannot
be read or parsed is one more problem, not the end of the run.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agentrl.sandbox.server import EPISODE_HEADER, SandboxServer
from agentrl.taskspec import TaskSpec, discover, load_task
from agentrl.yamlpos import TaskFileError


@dataclass
class ValidationReport:
    files: list[Path]
    valid: int = 0
    problems: list[str] = field(default_factory=list)


def validate_files(paths: list[str | Path]) -> ValidationReport:
    """Check every task file under `paths`; problems as ``file:line: field: message``."""
    report = ValidationReport(discover(paths))
    with SandboxServer() as server:
        for f in report.files:
            problems = _check_one(f, server)
            report.problems += problems
            report.valid += not problems
    return report


def _check_one(path: Path, server: SandboxServer) -> list[str]:
    try:
        spec = load_task(path)
        episode = f"validate-{spec.id}"
        if spec.site is not None and spec.site.reset is not None and spec.site.reset.http is not None:
            return []  # its templates may name facts of the live app's reset: checked when an episode starts
        spec.render(0, server.open_episode(episode, 0))
        problems = check_start_page(spec, server, episode)
        server.close_episode(episode)
        return problems
    except TaskFileError as e:
        return list(e.problems)
    except Exception as e:  # noqa: BLE001 (an unreadable file is reported, and the next file is checked)
        return [f"{path}:1: (file): cannot be loaded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"]


def check_start_page(spec: TaskSpec, server: SandboxServer, episode: str) -> list[str]:
    """A browser task's `start.path` lies under its app and the sandbox serves it (2xx, after redirects).
    A task on a site of its own is not requested here: validating never starts the user's apps."""
    if spec.env != "browser" or spec.start.app is None:
        return []
    path = spec.start.path
    if path.split("/")[1] != spec.start.app:
        return [f"{spec.where(('start', 'path'))}: {path!r} is not a page of the app '{spec.start.app}' (its pages are under /{spec.start.app}/)"]
    req = urllib.request.Request(server.url(path), headers={EPISODE_HEADER: episode})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    if 200 <= status < 300:
        return []
    return [f"{spec.where(('start', 'path'))}: the app '{spec.start.app}' answers {status} for {path!r}: the episode would start on an error page"]
