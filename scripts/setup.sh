#!/usr/bin/env bash
# Create .venv and install retail-reid into it.
#   scripts/setup.sh            runtime only (what an edge box needs: no torch)
#   scripts/setup.sh train,dev  plus training and test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [[ ",$extras," == *",train,"* ]]; then
  # the CPU/CUDA builds this project is tested with (taken from local wheels where present)
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
