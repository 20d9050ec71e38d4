#!/usr/bin/env bash
# Set up (idempotent), then the main job on the embedded defaults: evaluate the scripted reference agent
# and the random agent on the bundled suite (local sandbox sites) and print the summaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SEEDS=${SEEDS:-3}
.venv/bin/agentrl tasks validate tasks/core
.venv/bin/agentrl evaluate --suite core --agent scripted --seeds "$SEEDS" --out runs/demo/scripted
.venv/bin/agentrl evaluate --suite core --agent random --seeds "$SEEDS" --out runs/demo/random
