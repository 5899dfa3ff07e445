#!/usr/bin/env bash
# The demo: set up the runtime (no torch), build a gallery of the bundled sample products from
# their train photos, simulate a checkout lane from their val photos (never seen by the model or
# the gallery), replay it against its POS log, print the alerts as a table, their score and where
# the report for an investigator is.
#   scripts/demo.sh        writes into demo-out, or demo-out-2, -3, ... when that exists (reruns work)
#   scripts/demo.sh OUT    writes into OUT, which must not exist yet
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
  out="$1"
  if [ -e "$out" ]; then
    echo "scripts/demo.sh: $out exists: remove it or give another folder" >&2
    exit 2
  fi
else
  out=demo-out
  n=1
  while [ -e "$out" ]; do
    n=$((n + 1))
    out="demo-out-$n"
  done
fi
scripts/setup.sh
reid=.venv/bin/reid
echo "== gallery: the 12 sample products, 8 train photos each"
$reid gallery init "$out/gallery" --operator demo
$reid gallery import-folder "$out/gallery" sample/grocery/train --operator demo
echo "== lane: simulated from the val photos"
simulated=$($reid simulate "$out/lane" --images sample/grocery/val --seed 7 --passes 16 --transactions 3 --quiet)
echo "$simulated"
zone=$(sed -n 's/^zone: --zone //p' <<<"$simulated")
echo "== replay"
$reid replay "$out/lane/video.mp4" --pos "$out/lane/pos.jsonl" --gallery "$out/gallery" --zone "$zone" --out "$out/replay"
echo "== alerts"
$reid events "$out/replay/events.jsonl"
echo "== score against the simulation's truth"
$reid score "$out/lane/truth.json" "$out/replay/events.jsonl"
echo "report for an investigator: $out/replay/report.html"
