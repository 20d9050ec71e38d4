"""Bundled task suites (YAML), importable as `agentrl.suites` so they ship with the package."""

from pathlib import Path

SUITES_DIR = Path(__file__).parent
