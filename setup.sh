#!/usr/bin/env bash
# Sets up distill on a fresh machine: bubblewrap (the code sandbox) and chromium (headless, for
# the leaderboard page's test) from the system's packages, and a virtual environment in .venv
# with the pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: installing bubblewrap (sandbox for untrusted code)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (a test renders the HTML leaderboard in headless Chromium)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: pip takes the CPU build on CPU machines and the CUDA build on GPU ones.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
fi
# ray: the slow tier shards generation across two local Ray workers.
.venv/bin/pip install -q -e ".[test,ray]"
echo "setup: ready (.venv/bin/distill)"
