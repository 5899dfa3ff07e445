#!/usr/bin/env bash
# Set up (runtime + training + test tools + Ray for replay-batch) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh train,dev,ray
exec .venv/bin/python -m pytest -q "$@"
