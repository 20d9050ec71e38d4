#!/usr/bin/env bash
# Set up (idempotent), then the main job on the embedded defaults:
#   1. validate the bundled task suites;
#   2. train the tiny local policy (built from a config, no downloads) with Dr. GRPO in the real browser env
#      on "click the one button" (held-out success before and after, curves and metrics in the run dir);
#   3. evaluate the scripted reference agent on the test split of the bundled `web` suite (54 tasks on the
#      local sandbox sites, one held-out seed each): results.jsonl, summary.json and report.html.
# CONFIG=configs/ci-smoke.yaml bash scripts/demo.sh runs a one-minute version.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CONFIG=${CONFIG:-configs/tiny-click-button.yaml}
.venv/bin/agentrl tasks validate tasks/core tasks/train tasks/web tasks/miniwob tasks/desktop
.venv/bin/agentrl train "$CONFIG" --out runs/demo/train
.venv/bin/agentrl evaluate --suite web --split test --agent scripted --seeds 1 --workers 2 --out runs/demo/scripted
