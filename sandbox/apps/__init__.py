"""The sandbox's web apps. Each app is mounted by :class:`agentrl.sandbox.server.SandboxServer` at ``/<name>/``."""

from __future__ import annotations

from .accounts import AccountsApp
from .base import App, Html, Request, Response
from .docs import DocsApp
from .drill import DrillApp
from .files import FilesApp
from .forms import FormsApp
from .kb import KbApp
from .mail import MailApp
from .miniwob import MiniWoBApp
from .playground import PlaygroundApp
from .reports import ReportsApp
from .settings import SettingsApp


def default_apps() -> list[App]:
    """Fresh instances of every built-in app, in the order they are listed on the index page."""
    return [AccountsApp(), ReportsApp(), PlaygroundApp(), DrillApp(), MiniWoBApp(),
            MailApp(), DocsApp(), SettingsApp(), KbApp(),
            FormsApp(), FilesApp()]


__all__ = ["AccountsApp", "App", "Html", "PlaygroundApp", "ReportsApp", "Request", "Response", "default_apps"]
