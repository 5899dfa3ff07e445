#!/usr/bin/env bash
# Set up (runtime + training + console + Ray + test tools, and the Debian programs the tests start),
# check the code with ruff, mypy and import-linter (the layers), and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh train,dev,ray,console
scripts/system-packages.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
scripts/typecheck.sh
scripts/lint-imports.sh --no-logo
# each test file on one of two workers (its module fixtures built once); "$@" may add or narrow
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
