#!/usr/bin/env bash
# The demo: set up the runtime (no torch), build a gallery of the bundled sample products from
# their train photos, simulate a checkout lane from their val photos (never seen by the model or
# the gallery), replay it against its POS log, print the alerts and their score.
#   scripts/demo.sh [OUT]   (default OUT: demo-out)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-demo-out}"
scripts/setup.sh
reid=.venv/bin/reid
if [ -e "$out" ]; then
  echo "$out exists: remove it or give another folder" >&2
  exit 2
fi
echo "== gallery: the 12 sample products, 8 train photos each"
$reid gallery init "$out/gallery" --operator demo
$reid gallery import-folder "$out/gallery" sample/grocery/train --operator demo
echo "== lane: simulated from the val photos"
$reid simulate "$out/lane" --images sample/grocery/val --seed 7 --passes 16 --transactions 3 --quiet
zone=$(.venv/bin/python -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['zone'])))" "$out/lane/truth.json")
echo "== replay"
$reid replay "$out/lane/video.mp4" --pos "$out/lane/pos.jsonl" --gallery "$out/gallery" --zone "$zone" --out "$out/replay"
echo "== alerts"
grep -v '"type": "basket"' "$out/replay/events.jsonl" || true
echo "== score against the simulation's truth"
$reid score "$out/lane/truth.json" "$out/replay/events.jsonl"
echo "report for an investigator: $out/replay/report.html"
