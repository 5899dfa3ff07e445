#!/usr/bin/env bash
# Set up (runtime + training + test tools) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh train,dev
exec .venv/bin/python -m pytest -q "$@"
