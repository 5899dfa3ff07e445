#!/usr/bin/env bash
# The Debian programs the tests start for real, installed when missing (quietly; apt's log on failure):
#   chromium, chromedriver  the console's browser tests (Selenium; no browser downloads)
#   promtool                checks and unit-tests deploy/prometheus-rules.yml (Debian ships it with Prometheus)
#   mosquitto               the MQTT tests' broker (tests/test_edge_mqtt.py starts it on loopback; never as a service)
set -euo pipefail
missing=()
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || missing+=(chromium chromium-driver)
command -v promtool >/dev/null || missing+=(prometheus)
{ command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "scripts/system-packages.sh: install these Debian packages first: ${missing[*]}" >&2
  exit 1
fi
log=$(mktemp)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  tail -n 25 "$log" >&2
  echo "scripts/system-packages.sh: apt-get could not install: ${missing[*]}" >&2
  exit 1
fi
rm -f "$log"
