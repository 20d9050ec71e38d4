"""The `agentrl` command line: one module per group of commands, each with ``register(app)``.

To add commands: write ``agentrl/cli/<name>.py`` with a ``register(app)`` that adds them (its helpers come
from `agentrl.cli.common`, never from this package), then add the module to ``COMMANDS`` below.
"""

from __future__ import annotations

import typer

from agentrl.cli import datasets, evaluation, offline, rewards, run, serve, tasks

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train and evaluate computer-use agents.")
COMMANDS = (tasks, run, offline, evaluation, rewards, datasets, serve)  # in the order `agentrl --help` lists them
for _module in COMMANDS:
    _module.register(app)
