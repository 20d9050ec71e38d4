"""``python -m agentrl.cli``: the `agentrl` console script."""

from agentrl.cli import app

app()
