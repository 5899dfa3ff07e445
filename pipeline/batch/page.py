"""OUT/index.html: the chain summary as one page (no scripts), linking each recording's report,
with charts of the alert rates by lane and of the slowest recordings beside their tables."""

from __future__ import annotations

import html

from retail_reid.pipeline.charts import bar_chart
from retail_reid.pipeline.report import STYLE

CHART_STYLE = "svg.chart{display:block;max-width:100%;height:auto;margin:8px 0}"
NOTHING_REPLAYED = "<p>No recording replayed yet: nothing to chart.</p>"


def _cell(v: object) -> str:
    return "<td>–</td>" if v is None else f"<td>{html.escape(str(v))}</td>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>" + "".join(f"<tr>{''.join(r)}</tr>" for r in rows) + "</table>"


def _rate_rows(groups: list[dict], keys: list[str], types: list[str]) -> list[list[str]]:
    return [
        [_cell(g[k]) for k in keys]
        + [_cell(g["lane_hours"]), _cell(g["transactions"]), _cell(g["alerts"])]
        + [_cell(g["by_type"].get(t, 0)) for t in types]
        + [_cell(g["alerts_per_lane_hour"]), _cell(g["alerts_per_1000_transactions"])]
        for g in groups
    ]


def lane_rates(summary: dict) -> tuple[list[str], list[float]]:
    """The chart of alerts per lane-hour: "store / lane" labels and their rates (lanes with video)."""
    lanes = [g for g in summary["by_lane"] if g["alerts_per_lane_hour"] is not None]
    return [f"{g['store']} / {g['lane']}" for g in lanes], [g["alerts_per_lane_hour"] for g in lanes]


def slowest_speeds(summary: dict) -> tuple[list[str], list[float]]:
    """The chart of the slowest recordings: their ids and multiples of real time, slowest first."""
    return [s["id"] for s in summary["slowest"]], [s["speed_x_realtime"] for s in summary["slowest"]]


def _chart(name: str, title: str, bars: tuple[list[str], list[float]], x_label: str) -> str:
    return bar_chart(name, title, *bars, x_label) if bars[0] else NOTHING_REPLAYED


def render_page(summary: dict) -> str:
    """The page's HTML; links are relative, so OUT can be moved or served as it is."""
    types = sorted(summary["totals"]["by_type"])
    run = summary["run"]
    rate_headers = ["lane-hours", "transactions", "alerts", *types, "per lane-hour", "per 1,000 txn"]
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>retail-reid chain replay</title>",
        f"<style>{STYLE}{CHART_STYLE}</style></head><body><h1>Chain replay summary</h1>",
        "<p>" + ", ".join(f"{v} {html.escape(k)}" for k, v in summary["recordings"].items()) + " recordings; this run: "
        f"{run['workers']} workers, started in {run['start_seconds']} s, replayed in {run['replay_seconds']} s</p>",
        "<h2>Totals</h2>",
        _table(rate_headers, _rate_rows([summary["totals"]], [], types)),
        "<h2>By store</h2>",
        _table(["store", *rate_headers], _rate_rows(summary["by_store"], ["store"], types)),
        "<h2>By lane</h2>",
        _chart("lane-rates", "Alerts per lane-hour by store and lane", lane_rates(summary), "alerts per lane-hour"),
        _table(["store", "lane", *rate_headers], _rate_rows(summary["by_lane"], ["store", "lane"], types)),
    ]
    b = summary["baskets"]
    if b["transactions"]:
        measures = list(b["mean"])
        body += [
            f"<h2>Baskets ({b['transactions']} transactions, {b['disagreeing']} where seen and scanned differ)</h2>",
            _table(["", *measures], [[_cell(s)] + [_cell(b[s][m]) for m in measures] for s in ("mean", "median")]),
        ]
    if summary["failed"]:
        body += [
            f"<h2>Failed ({len(summary['failed'])})</h2>",
            _table(
                ["recording", "store", "lane", "video", "error"],
                [[_cell(f[k]) for k in ("id", "store", "lane", "video", "error")] for f in summary["failed"]],
            ),
        ]
    body += [
        "<h2>Slowest</h2>",
        _chart("slowest", "Slowest recordings (multiple of real time)", slowest_speeds(summary), "× real time"),
        _table(
            ["recording", "video s", "processing s", "× real time"],
            [
                [_cell(s[k]) for k in ("id", "video_seconds", "processing_seconds", "speed_x_realtime")]
                for s in summary["slowest"]
            ],
        ),
        "<h2>Recordings</h2>",
    ]
    rows = []
    for r in summary["per_recording"]:
        link = (
            f'<td><a href="{html.escape(r["report"])}">{html.escape(r["id"])}</a></td>'
            if "report" in r
            else _cell(r["id"])
        )
        alerts = sum(r["alerts"].values()) if "alerts" in r else None
        rows.append(
            [link]
            + [_cell(r[k]) for k in ("store", "lane", "start", "status")]
            + [_cell(r.get("video_seconds")), _cell(r.get("transactions")), _cell(alerts), _cell(r.get("error"))]
        )
    body.append(
        _table(["recording", "store", "lane", "start", "status", "video s", "transactions", "alerts", "error"], rows)
    )
    body.append("</body></html>\n")
    return "".join(body)
