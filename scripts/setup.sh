#!/usr/bin/env bash
# Create .venv and install retail-reid into it, at the versions the tests passed with (constraints.txt).
#   scripts/setup.sh            runtime only (what an edge box needs: no torch; Python 3.10 or later)
#   scripts/setup.sh train,dev  plus training and test tools (Python 3.11)
# Prints nothing when it succeeds; pip's output goes to .venv/setup.log, whose tail is shown if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
log=.venv/setup.log
: >"$log"

step() {
  if ! "$@" >>"$log" 2>&1; then
    {
      echo "scripts/setup.sh: failed: $*"
      tail -n 25 "$log"
      echo "(the whole log: $log)"
    } >&2
    exit 1
  fi
}

install=(.venv/bin/python -m pip install --constraint constraints.txt)
step "${install[@]}" --upgrade pip
if [[ ",$extras," == *",train,"* ]]; then
  # the CPU/CUDA builds this project is tested with (taken from local wheels where present)
  step "${install[@]}" torch==2.14.1 torchvision==0.29.1
fi
step "${install[@]}" -e ".${extras:+[$extras]}"
