#!/usr/bin/env bash
# Set up (runtime + training + test tools) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh train,dev
# promtool checks and unit-tests deploy/prometheus-rules.yml (tests/test_monitoring.py); Debian packages it with Prometheus.
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Mosquitto: the MQTT tests (tests/test_edge_mqtt.py) start their own broker on a free loopback port (never the service).
if ! command -v mosquitto >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
