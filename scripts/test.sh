#!/usr/bin/env bash
# Set up (runtime + training + console + test tools) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh train,dev,console
# The console's browser tests drive Debian's Chromium through Debian's chromedriver (no browser downloads).
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
