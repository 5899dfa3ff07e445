"""report.html: one self-contained page for the investigator (every image inlined as base64, no
scripts, no outside files): what ran, a timeline of item passes, scans and voids, and for each
loss alert the item's crops beside reference photos of the SKU seen and the SKU scanned, with how
the scan was entered and any void; double scans (the customer overcharged) apart, under
customer service."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from retail_reid.images import ImageError, read_image
from retail_reid.pipeline.evidence import EvidenceKind, evidence_kind
from retail_reid.pipeline.pos import PosEvent
from retail_reid.pipeline.recognition import GalleryLike
from retail_reid.pipeline.records import LOSS_TYPES, BasketEvent, Event, EventType, PassRecord, Verdict

THUMB_SIDE = 220  # long side of inlined pictures: enough to judge, small enough to mail
TIMELINE_WIDTH = 1100  # at least; longer recordings get PIXELS_PER_SECOND, up to MAX_TIMELINE_WIDTH
PIXELS_PER_SECOND = 12
MAX_TIMELINE_WIDTH = 60_000
# A pass's bar has its verdict's colour; a scan's tick the colour of the alert it raised alone.
TIMELINE_COLOURS = {
    **{str(v): v.colour for v in Verdict},
    **{str(t): t.colour for t in (EventType.SCAN_WITHOUT_ITEM, EventType.DOUBLE_SCAN)},
}
VOID_COLOUR = "#c2185b"
VOIDED_TITLE = "Item passed; its only scan was voided"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2733;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left}
.card{border:1px solid #d5dae0;border-left:6px solid var(--c);border-radius:6px;padding:10px 14px;margin:12px 0}
.pics{display:flex;gap:14px;flex-wrap:wrap;align-items:flex-end}.pics figure{margin:0}
.pics img{max-height:220px;border:1px solid #d5dae0}figcaption{font-size:12px;color:#5b6773}
.warn{color:#9a5b00}.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
"""


def _data_uri(image: np.ndarray) -> str:
    h, w = image.shape[:2]
    s = min(1.0, THUMB_SIDE / max(h, w))
    if s < 1.0:
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def _figure(path: Path | None, caption: str) -> str:
    cap = html.escape(caption)
    if path is None:
        return (
            '<figure><div style="width:120px;height:90px;background:#eef0f3"></div>'
            f"<figcaption>{cap}<br>(no photo)</figcaption></figure>"
        )
    try:
        uri = _data_uri(read_image(path))
    except ImageError as e:
        return f"<figure><figcaption>{cap}<br>(unreadable: {html.escape(str(e))})</figcaption></figure>"
    return f'<figure><img src="{uri}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _timeline(records: list[PassRecord], pos: list[PosEvent], events: list[Event]) -> str:
    """SVG: passes as bars coloured by verdict, scans as ticks (blue when no item was seen)."""
    times = [r.t_start for r in records] + [r.t_end for r in records] + [p.ts for p in pos]
    if not times:
        return "<p>Nothing happened in this recording.</p>"
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1e-3)
    # A long recording scrolls sideways rather than squeezing a pass into a hairline.
    width, left = int(min(MAX_TIMELINE_WIDTH, max(TIMELINE_WIDTH, span * PIXELS_PER_SECOND))), 60

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - 10)

    parts = [f'<svg width="{width}" height="150" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    txn_open: dict[str, float] = {}
    for p in pos:
        if p.type not in ("txn_start", "txn_end"):
            continue
        assert p.txn is not None  # parse_pos_event refuses a txn_start or txn_end without one
        if p.type == "txn_start":
            txn_open[p.txn] = p.ts
        elif p.type == "txn_end" and p.txn in txn_open:
            a = txn_open.pop(p.txn)
            parts.append(
                f'<rect x="{x(a):.1f}" y="8" width="{max(1.0, x(p.ts) - x(a)):.1f}" height="130" fill="#f3f5f8"/>'
                f'<text x="{x(a) + 3:.1f}" y="20" fill="#5b6773">{html.escape(p.txn)}</text>'
            )
    parts.append('<text x="4" y="62">passes</text><text x="4" y="112">scans</text>')
    for r in records:
        colour = r.verdict.colour
        seen = f"seen {r.seen_sku}" if r.seen_sku else "no known SKU seen"
        scanned = f"scanned {r.scanned_sku}" if r.scanned_sku else "not scanned"
        tip = html.escape(f"track {r.track_id}: {r.verdict}, {seen}, {scanned}, {r.t_start:.2f}–{r.t_end:.2f}s")
        parts.append(
            f'<rect x="{x(r.t_start):.1f}" y="45" width="{max(2.0, x(r.t_end) - x(r.t_start)):.1f}" height="26" '
            f'fill="{colour}"><title>{tip}</title></rect>'
        )
    lonely = {round(e.t_start, 3) for e in events if e.type is EventType.SCAN_WITHOUT_ITEM}
    doubles = {round(e.t_start, 3) for e in events if e.type is EventType.DOUBLE_SCAN}
    for p in pos:
        if p.type not in ("scan", "void"):
            continue
        colour = (
            VOID_COLOUR
            if p.type == "void"
            else EventType.SCAN_WITHOUT_ITEM.colour
            if round(p.ts, 3) in lonely
            else EventType.DOUBLE_SCAN.colour
            if round(p.ts, 3) in doubles
            else "#33414f"
        )
        how = "" if p.entry == "scanned" else f", {p.entry}" + ("" if p.weight_kg is None else f" {p.weight_kg:g} kg")
        what = f"{p.sku or f'of barcode {p.barcode}'}{f' ×{p.qty}' if p.qty > 1 else ''}{how}"
        tip = html.escape(f"{p.type} {what} at {p.ts:.2f}s")
        parts.append(
            f'<line x1="{x(p.ts):.1f}" y1="95" x2="{x(p.ts):.1f}" y2="125" stroke="{colour}" stroke-width="2">'
            f"<title>{tip}</title></line>"
        )
    ticks = max(10, round((width - left) / 110))
    for k in range(ticks + 1):
        t = t0 + span * k / ticks
        # labels centred on their time; the first and last kept inside the picture
        anchor = "start" if k == 0 else "end" if k == ticks else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="146" fill="#5b6773" text-anchor="{anchor}">{t:.1f}s</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{c}"></i>{html.escape(v)}</span>'
        for v, c in {**TIMELINE_COLOURS, "void": VOID_COLOUR}.items()
    )
    return '<div style="overflow-x:auto">' + "".join(parts) + f'</div><div class="legend">{legend}</div>'


def _event_card(e: Event, run_dir: Path, gallery: GalleryLike) -> str:
    colour = e.type.colour
    title = VOIDED_TITLE if e.voided_sku is not None else e.type.headline
    track = "" if e.track_id is None else f", track {e.track_id}"
    txn = "" if e.txn is None else f", transaction {html.escape(e.txn)}"
    head = f"<b>{html.escape(title)}</b> — {_fmt(e.t_start, 2)}s to {_fmt(e.t_end, 2)}s{track}{txn}"
    rows = [
        ("seen SKU", e.seen_sku, e.seen_score, e.seen_confidence),
        ("scanned SKU", e.scanned_sku, e.scanned_score, e.scanned_confidence),
    ]
    table = (
        "<table><tr><th></th><th>SKU</th><th>similarity</th><th>confidence</th></tr>"
        + "".join(
            f"<tr><td>{label}</td><td>{html.escape(gallery.display_name(sku)) if sku else '–'}</td>"
            f"<td>{_fmt(score)}</td><td>{_fmt(conf)}</td></tr>"
            for label, sku, score, conf in rows
        )
        + "</table>"
    )
    if e.scan_ts is not None:
        entered = "" if e.entry in (None, "scanned") else f", {e.entry}"
        weight = "" if e.weight_kg is None else f", {e.weight_kg:g} kg on the scale"
        table += f"<div>scan at {e.scan_ts:.2f}s{html.escape(entered + weight)}</div>"
    if e.voided_sku is not None:
        table += (
            f"<div>its scan of {html.escape(e.voided_sku)} was voided at {_fmt(e.void_ts, 2)}s"
            " and the item was not scanned again</div>"
        )
    crops = [p for p in e.evidence if evidence_kind(p) is EvidenceKind.CROP]
    pics = [_figure(run_dir / p, f"crop {i + 1}") for i, p in enumerate(crops[:3])]
    pics += [_figure(run_dir / p, "the lane, mid-pass") for p in e.evidence if evidence_kind(p) is EvidenceKind.LANE]
    if e.seen_sku:
        pics.append(_figure(gallery.reference_image(e.seen_sku), f"seen: {gallery.display_name(e.seen_sku)}"))
    if e.scanned_sku:
        pics.append(_figure(gallery.reference_image(e.scanned_sku), f"scanned: {gallery.display_name(e.scanned_sku)}"))
    return (
        f'<div class="card" style="--c:{colour}"><div>{head}</div>{table}<div class="pics">{"".join(pics)}</div></div>'
    )


def _baskets(baskets: list[BasketEvent]) -> str:
    if not baskets:
        return ""

    def counts(c: dict[str, int]) -> str:
        return html.escape(", ".join(f"{k} ×{n}" for k, n in sorted(c.items())) or "–")

    rows = "".join(
        f"<tr><td>{html.escape(b.txn or '(none)')}</td><td>{counts(b.seen)}</td><td>{counts(b.scanned)}</td>"
        f"<td>{b.jaccard:.2f}</td><td>{b.dice:.2f}</td><td>{b.overlap:.2f}</td><td>{b.tversky:.2f}</td></tr>"
        for b in baskets
    )
    return (
        "<h2>Baskets</h2><table><tr><th>transaction</th><th>seen</th><th>scanned</th><th>Jaccard</th><th>Dice</th>"
        f"<th>overlap</th><th>Tversky</th></tr>{rows}</table>"
    )


def write_report(
    path: Path,
    run_dir: Path,
    events: list[Event | BasketEvent],
    records: list[PassRecord],
    pos: list[PosEvent],
    gallery: GalleryLike,
    summary: dict,
) -> None:
    """Write the page; evidence paths in events are relative to `run_dir`."""
    alerts = [e for e in events if isinstance(e, Event) and e.type.loss]
    service = [e for e in events if isinstance(e, Event) and not e.type.loss]
    baskets = [e for e in events if isinstance(e, BasketEvent)]
    c = summary["counts"]
    facts = [
        ("video", summary["video"]),
        ("POS log", summary["pos"]),
        ("frames", f"{summary['frames_processed']} processed, {summary['frames_dropped']} dropped"),
        ("duration", f"{summary['video_seconds']:.1f}s, processed at {summary['speed_x_realtime']}× real time"),
        ("item passes", summary["passes"]),
        ("scans", summary["scans"]),
        ("loss alerts", ", ".join(f"{k}: {v}" for k, v in c.items() if k in LOSS_TYPES)),
        ("customer service", f"double scans: {c.get(EventType.DOUBLE_SCAN, 0)}"),
        ("model", f"{Path(summary['model']['path']).name} ({summary['model']['fingerprint'][:12]})"),
    ]
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>retail-reid replay report</title>",
        f"<style>{STYLE}</style></head><body><h1>Checkout replay report</h1><table>",
        "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts),
        "</table>",
    ]
    if summary["warnings"]:
        body.append(
            "<h2>Warnings</h2><ul>"
            + "".join(f'<li class="warn">{html.escape(w)}</li>' for w in summary["warnings"])
            + "</ul>"
        )
    body.append("<h2>Timeline</h2>" + _timeline(records, pos, alerts + service))
    body.append(f"<h2>Alerts ({len(alerts)})</h2>")
    body.extend(_event_card(e, run_dir, gallery) for e in sorted(alerts, key=lambda e: e.t_start))
    if not alerts:
        body.append("<p>No alerts: every item pass lined up with a scan of the SKU it looks like.</p>")
    if service:
        body.append(f"<h2>Customer service ({len(service)})</h2>")
        body.extend(_event_card(e, run_dir, gallery) for e in sorted(service, key=lambda e: e.t_start))
    body.append(_baskets(baskets))
    body.append("</body></html>\n")
    path.write_text("".join(body), encoding="utf-8")
