"""The chain summary of a batch: alert rates by store and lane (per lane-hour and per 1,000
transactions), totals by type, basket agreement, the slowest and the failed recordings.

Built from what is on disk under OUT/recordings (each recording's summary.json and events.jsonl),
so recordings reused from an earlier run count the same as those replayed now.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from retail_reid.durable import replace_atomically
from retail_reid.pipeline.batch.manifest import Recording
from retail_reid.pipeline.batch.outputs import recording_dir
from retail_reid.pipeline.batch.page import render_page
from retail_reid.pipeline.batch.worker import Outcome, Status
from retail_reid.pipeline.records import LOSS_TYPES, BasketEvent, read_events

MEASURES = ("jaccard", "dice", "overlap", "tversky")
SLOWEST = 10  # recordings listed as the slowest


def _read_recording(out: Path, r: Recording, outcome: Outcome) -> dict:
    """One recording's line of the summary, plus its basket lines (for the chain's basket measures)."""
    row = {
        "id": r.id,
        "store": r.store,
        "lane": r.lane,
        "start": r.start.isoformat(),
        "video": str(r.video),
        "status": outcome.status.value,
        "worker": outcome.worker or None,  # host:pid that replayed it in this run
    }
    if outcome.status is Status.FAILED:
        return {**row, "error": outcome.error}
    folder = recording_dir(out, r.id)
    s = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    baskets = [e for e in read_events(folder / "events.jsonl") if isinstance(e, BasketEvent) and e.txn is not None]
    return {
        **row,
        "report": f"{folder.relative_to(out)}/report.html",
        "video_seconds": s["video_seconds"],
        "processing_seconds": s["processing_seconds"],
        "speed_x_realtime": s["speed_x_realtime"],
        "frames": s["frames_processed"],
        "passes": s["passes"],
        "scans": s["scans"],
        "transactions": len(baskets),
        "alerts": {k: v for k, v in s["counts"].items() if k in LOSS_TYPES},
        "baskets": [{m: getattr(b, m) for m in MEASURES} for b in baskets],
    }


def _rates(rows: list[dict]) -> dict:
    """Alerts of a group of recordings, absolute and per lane-hour and per 1,000 transactions."""
    alerts: Counter = Counter()
    for row in rows:
        alerts.update(row["alerts"])
    hours = sum(row["video_seconds"] for row in rows) / 3600.0
    txns = sum(row["transactions"] for row in rows)
    total = sum(alerts.values())
    return {
        "recordings": len(rows),
        "lane_hours": round(hours, 4),
        "transactions": txns,
        "alerts": total,
        "by_type": dict(sorted(alerts.items())),
        "alerts_per_lane_hour": round(total / hours, 3) if hours else None,
        "alerts_per_1000_transactions": round(1000.0 * total / txns, 3) if txns else None,
        "by_type_per_lane_hour": {k: round(v / hours, 3) for k, v in sorted(alerts.items())} if hours else None,
        "by_type_per_1000_transactions": {k: round(1000.0 * v / txns, 3) for k, v in sorted(alerts.items())}
        if txns
        else None,
    }


def _basket_measures(rows: list[dict]) -> dict:
    baskets = [b for row in rows for b in row["baskets"]]
    if not baskets:
        return {"transactions": 0}
    values = {m: np.array([b[m] for b in baskets]) for m in MEASURES}
    return {
        "transactions": len(baskets),
        "mean": {m: round(float(v.mean()), 4) for m, v in values.items()},
        "median": {m: round(float(np.median(v)), 4) for m, v in values.items()},
        "disagreeing": int((values["jaccard"] < 1.0).sum()),  # transactions whose seen and scanned baskets differ
    }


def chain_summary(recordings: list[Recording], outcomes: list[Outcome], out: Path, run: dict) -> dict:
    """The summary; `run` says how this run went (workers, start-up and replay seconds)."""
    rows = [_read_recording(out, r, o) for r, o in zip(recordings, outcomes, strict=True)]
    ok = [row for row in rows if row["status"] != Status.FAILED]
    lanes: dict[tuple[str, str], list[dict]] = {}
    stores: dict[str, list[dict]] = {}
    for row in ok:
        lanes.setdefault((row["store"], row["lane"]), []).append(row)
        stores.setdefault(row["store"], []).append(row)
    slowest = sorted(ok, key=lambda row: row["speed_x_realtime"])[:SLOWEST]
    return {
        "recordings": {
            s.value: sum(row["status"] == s for row in rows) for s in (Status.DONE, Status.REUSED, Status.FAILED)
        },
        "run": run,
        "totals": _rates(ok),
        "by_store": [{"store": k, **_rates(v)} for k, v in sorted(stores.items())],
        "by_lane": [{"store": k[0], "lane": k[1], **_rates(v)} for k, v in sorted(lanes.items())],
        "baskets": _basket_measures(ok),
        "slowest": [
            {k: row[k] for k in ("id", "store", "lane", "video_seconds", "processing_seconds", "speed_x_realtime")}
            for row in slowest
        ],
        "failed": [
            {k: row[k] for k in ("id", "store", "lane", "video", "error")}
            for row in rows
            if row["status"] == Status.FAILED
        ],
        "per_recording": [{k: v for k, v in row.items() if k != "baskets"} for row in rows],
    }


def write_chain_summary(recordings: list[Recording], outcomes: list[Outcome], out: Path, run: dict) -> dict:
    """OUT/summary.json and OUT/index.html, each replaced whole."""
    summary = chain_summary(recordings, outcomes, out, run)
    replace_atomically(out / "summary.json", (json.dumps(summary, indent=1) + "\n").encode(), "batch-summary")
    replace_atomically(out / "index.html", render_page(summary).encode(), "batch-page")
    return summary
