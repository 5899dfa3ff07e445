#!/usr/bin/env bash
# Set up (runtime + training + test tools), check the code with ruff, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh train,dev
# promtool checks and unit-tests deploy/prometheus-rules.yml (tests/test_monitoring.py); Debian packages it with Prometheus.
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q "$@"
