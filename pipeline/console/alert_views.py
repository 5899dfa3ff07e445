"""Alert pages: the list with its filters and search, one alert with its evidence and verdict form,
verdicts on one alert or on several at once, the precision page (tables and charts), and the
verdict exports.

The list's filters travel in every alert page's address, so that after a verdict the analyst is
taken to the next unreviewed alert of the same list, and its keys (static/review.js) step through it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for

from retail_reid.images import IMAGE_SUFFIXES
from retail_reid.pipeline.console.alerts import ALERT_FAMILIES, KEY, Alert, AlertFolder, SourceKind, family_of
from retail_reid.pipeline.console.clip_frames import clip_frame, clip_info, playable, within_bounds
from retail_reid.pipeline.console.formatting import label
from retail_reid.pipeline.console.safe_files import CLIP_SUFFIXES, inside
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.console.state import operator, state
from retail_reid.pipeline.console.thumbnails import thumbnail as make_thumbnail
from retail_reid.pipeline.console.trends import (
    RATE_DAYS,
    alerts_per_lane_hour,
    lane_activity,
    precision_chart,
    rate_chart,
    weekly_precision,
)
from retail_reid.pipeline.console.verdicts import (
    REASON_LABELS,
    REASONS,
    Decision,
    Reason,
    Verdict,
    check_verdict,
    to_csv,
    to_jsonl,
)
from retail_reid.pipeline.evidence import OLD_CLIP_SUFFIX, EvidenceKind, evidence_kind
from retail_reid.pipeline.records import ALERT_TYPES

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse  # what redirect() returns

blueprint = Blueprint("alerts", __name__)
PAGE = 100  # alerts a list page shows
MAX_BULK = PAGE  # alerts one bulk verdict may judge: a page's worth
PHOTOS = 4  # gallery photos shown per product on an alert page
MAX_SEARCH = 128  # characters of a SKU or transaction searched for
THUMBNAIL_MAX_AGE_S = 3600  # the browser keeps an alert's thumbnail (its evidence does not change)
UNREVIEWED = "unreviewed"
DECISIONS = frozenset(d.value for d in Decision)
EVIDENCE_SUFFIXES = IMAGE_SUFFIXES | CLIP_SUFFIXES
FAMILY_LABELS = {f: f.label for f in ALERT_FAMILIES}
FILTER_ARGS = ("folder", "lane", "family", "type", "verdict", "sku", "txn", "from", "to")
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends


@dataclass(frozen=True)
class Filters:
    source: str
    lane: str
    family: str  # loss alerts, customer service (double scans), or both
    type: str
    verdict: str
    sku: str  # part of the SKU seen or scanned, any case
    txn: str  # the transaction id, any case
    after: float | None  # Unix seconds, from the operator's day or minute given
    before: float | None  # exclusive: the end of the day or minute given

    @classmethod
    def from_args(cls, args: Mapping[str, str], zone: tzinfo) -> Filters:
        """The list's filters from a request's arguments, or a ConsoleError naming the field."""
        verdict = args.get("verdict", "")
        if verdict not in ("", UNREVIEWED, *DECISIONS):
            raise ConsoleError(f"verdict: expected {UNREVIEWED}, confirmed or dismissed, got {verdict!r}")
        kind = args.get("type", "")
        if kind and kind not in ALERT_TYPES:
            raise ConsoleError(f"type: expected one of {', '.join(ALERT_TYPES)}, got {kind!r}")
        family = args.get("family", "")
        if family and family not in ALERT_FAMILIES:
            raise ConsoleError(f"family: expected one of {', '.join(ALERT_FAMILIES)}, got {family!r}")
        return cls(
            source=args.get("folder", ""),
            lane=args.get("lane", ""),
            family=family,
            type=kind,
            verdict=verdict,
            sku=_search(args, "sku"),
            txn=_search(args, "txn"),
            after=_moment(args.get("from", ""), "from", zone, end=False),
            before=_moment(args.get("to", ""), "to", zone, end=True),
        )

    def keep(self, alert: Alert, verdict: Verdict | None) -> bool:
        if (self.source and alert.source != self.source) or (self.lane and alert.lane != self.lane):
            return False
        if (self.type and alert.type != self.type) or (self.family and alert.type.family != self.family):
            return False
        if self.verdict == UNREVIEWED and verdict is not None:
            return False
        if self.verdict in DECISIONS and (verdict is None or verdict.decision != self.verdict):
            return False
        rec = alert.record
        if self.sku and not any(_contains(rec.get(f), self.sku) for f in ("seen_sku", "scanned_sku")):
            return False
        if self.txn and str(rec.get("txn")).casefold() != self.txn:
            return False
        if self.after is not None and alert.when < self.after:
            return False
        return self.before is None or alert.when < self.before


def _search(args: Mapping[str, str], field: str) -> str:
    text = args.get(field, "").strip()
    if len(text) > MAX_SEARCH:
        raise ConsoleError(f"{field}: at most {MAX_SEARCH} characters, got {len(text)}")
    return text.casefold()


def _contains(value: object, part: str) -> bool:
    return value is not None and part in str(value).casefold()


def _moment(text: str, field: str, zone: tzinfo, end: bool) -> float | None:
    """A day (YYYY-MM-DD) or a minute (YYYY-MM-DDTHH:MM) in the operator's zone, as Unix seconds:
    its start, or with `end` the start of the next day or minute."""
    if not text:
        return None
    for fmt, step in (("%Y-%m-%d", timedelta(days=1)), (MINUTE_FORMAT, timedelta(minutes=1))):
        try:
            t = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return (t + step if end else t).replace(tzinfo=zone).timestamp()
    raise ConsoleError(f"{field}: expected a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM, got {text[:40]!r}")


def _filters() -> Filters:
    return Filters.from_args(request.args, state().settings.zone)


def list_args() -> dict[str, Any]:
    """The list's filters of this request, as the arguments of the pages' addresses."""
    return {k: request.args[k] for k in FILTER_ARGS if request.args.get(k)}


def _order(alert: Alert) -> tuple[float, float, str, str]:
    """The list's order, newest first when reversed; ties broken so that next and previous are defined."""
    return (alert.when, alert.t_start, alert.source, alert.key)


def _listed(filters: Filters) -> tuple[list[tuple[Alert, Verdict | None]], list[Alert]]:
    """The alerts the filters keep with their verdicts, newest first, and every alert."""
    st = state()
    latest = st.verdicts.latest()
    every = [a for f in st.folders.values() for a in f.alerts()]
    rows = [(a, latest.get((a.source, a.key))) for a in every]
    rows = [r for r in rows if filters.keep(*r)]
    rows.sort(key=lambda r: _order(r[0]), reverse=True)
    return rows, every


def _folder(source: str) -> AlertFolder:
    folder = state().folders.get(source)
    if folder is None:
        abort(404, f"no alert folder named {source!r}")
    return folder


def _alert(source: str, key: str) -> tuple[AlertFolder, Alert]:
    folder = _folder(source)
    alert = folder.alert(key) if KEY.fullmatch(key) else None
    if alert is None:
        abort(404, f"no alert {key!r} in {source}")
    return folder, alert


@blueprint.route("/")
def home() -> BaseResponse:
    return redirect(url_for("alerts.index"))


@blueprint.route("/alerts")
def index() -> str:
    return _list_page(_filters())


def _list_page(filters: Filters, error: str = "", form: Mapping[str, str] | None = None) -> str:
    """The alert list; after a refused bulk verdict, with its error and the form as it was sent."""
    rows, every = _listed(filters)
    page = max(1, request.args.get("page", 1, type=int) or 1)
    shown = rows[(page - 1) * PAGE : page * PAGE]
    picked = set(request.form.getlist("alert")) if form is not None else set()
    return render_template(
        "alerts.html",
        rows=shown,
        start=next((a for a, v in rows if v is None), rows[0][0] if rows else None),  # where review begins
        total=len(rows),
        page=page,
        pages=max(1, -(-len(rows) // PAGE)),
        filters=filters,
        args=list_args(),
        zone=state().settings.time_zone,
        folders=state().folders,
        lanes=sorted({a.lane for a in every}),
        types=list(ALERT_TYPES),
        families=FAMILY_LABELS,
        bad_lines={name: f.bad_lines for name, f in state().folders.items() if f.bad_lines},
        thumbnails={(a.source, a.key) for a, _ in shown if _thumbnail_index(a) is not None},
        reasons=REASON_LABELS,
        error=error,
        form=form or {},
        picked=picked,
    )


@blueprint.route("/alerts/<source>/<key>")
def show(source: str, key: str) -> str:
    folder, alert = _alert(source, key)
    return _alert_page(folder, alert)


def _alert_page(folder: AlertFolder, alert: Alert, error: str = "", form: Mapping[str, str] | None = None) -> str:
    """An alert's page; after a refused verdict, with its error and the form as it was sent."""
    st = state()
    pos, pos_missing = folder.pos_around(alert)
    rec = alert.record
    history = st.verdicts.history(alert.source, alert.key)
    wrong_product = bool(history) and history[0].reason is Reason.WRONG_PRODUCT and bool(alert.crops)
    kinds = [(i, evidence_kind(rel), _evidence_file(folder, rel)) for i, rel in enumerate(alert.evidence)]
    clip_files = [(i, path) for i, kind, path in kinds if kind is EvidenceKind.CLIP and path is not None]
    videos = [i for i, path in clip_files if playable(path)]
    clips = [(i, clip_info(path)) for i, path in clip_files if i not in videos]  # older lanes' AVI: stills
    rows, _ = _listed(_filters())
    newer = [a for a, _ in rows if _order(a) > _order(alert)]
    older = [a for a, _ in rows if _order(a) < _order(alert)]
    return render_template(
        "alert.html",
        alert=alert,
        folder=folder,
        replay=folder.kind is SourceKind.REPLAY,
        history=history,
        products=[p.product.sku for p in st.gallery.products()] if wrong_product else [],
        evidence=[i for i, kind, path in kinds if kind is EvidenceKind.CROP and path is not None],
        lane_frames=[i for i, kind, path in kinds if kind is EvidenceKind.LANE and path is not None],
        videos=videos,
        clips=[(i, info) for i, info in clips if info is not None],
        bad_clips=sum(info is None for _, info in clips),
        missing_evidence=sum(path is None for _, _, path in kinds),
        family=alert.type.family,
        seen_photos=st.gallery.photos(rec.get("seen_sku"), PHOTOS),
        scanned_photos=st.gallery.photos(rec.get("scanned_sku"), PHOTOS),
        pos=pos,
        pos_missing=pos_missing,
        reasons=REASON_LABELS,
        offered={r: REASON_LABELS[r] for r in REASONS[alert.type.family]},
        args=list_args(),
        previous=newer[-1] if newer else None,
        next=older[0] if older else None,
        error=error,
        form=form or {},
    )


def _evidence_file(folder: AlertFolder, rel: str) -> Path | None:
    """An evidence file (a crop, the lane frame or the clip) if it lies in the alert's folder."""
    return inside(folder.root, rel, EVIDENCE_SUFFIXES)


def _evidence_path(source: str, key: str, index: int) -> Path:
    folder, alert = _alert(source, key)
    paths = alert.evidence
    path = _evidence_file(folder, paths[index]) if 0 <= index < len(paths) else None
    if path is None:
        abort(404, "no such evidence file in the alert's folder")
    return path


@blueprint.route("/alerts/<source>/<key>/evidence/<int:index>")
def evidence(source: str, key: str, index: int) -> Response:
    """An evidence file by its place in the alert's list (the client never names a path): a
    picture to show, the MP4 clip to play (in the byte ranges the browser asks for), or an older
    lane's AVI clip to download."""
    path = _evidence_path(source, key, index)
    clip = path.suffix.lower() in CLIP_SUFFIXES
    if clip and not within_bounds(path):
        abort(404, "the clip is larger than any clip a lane writes")
    return send_file(path, max_age=0, conditional=True, as_attachment=clip and not playable(path))


@blueprint.route("/alerts/<source>/<key>/evidence/<int:index>/frames/<int:frame>")
def clip_still(source: str, key: str, index: int, frame: int) -> Response:
    """One frame of an older lane's AVI clip as a JPEG (browsers play no AVI)."""
    path = _evidence_path(source, key, index)
    jpeg = clip_frame(path, frame) if path.suffix.lower() == OLD_CLIP_SUFFIX else None
    if jpeg is None:
        abort(404, "no such frame of a clip in the alert's folder")
    return Response(jpeg, mimetype="image/jpeg")


def _verdict(alert: Alert, decision: Decision, reason: Reason | None, note: str, now: float) -> Verdict:
    return Verdict(
        source=alert.source,
        alert_key=alert.key,
        lane=alert.lane,
        alert_type=alert.type.value,
        alert_time=alert.when,
        decision=decision,
        reason=reason,
        note=note,
        reviewer=operator(),
        decided_at=now,
    )


def _said(decision: Decision, reason: Reason | None) -> str:
    return decision.value + (f" ({REASON_LABELS[reason]})" if reason else "")


@blueprint.route("/alerts/<source>/<key>/verdict", methods=["POST"])
def verdict(source: str, key: str) -> BaseResponse | tuple[str, int]:
    """One alert's verdict; then the next unreviewed alert of the list it was opened from. The
    decision is the button clicked (the form has no default button: Enter in the note records
    nothing); a refused verdict shows the page again with the reason and the note as they were."""
    folder, alert = _alert(source, key)
    form = request.form
    filters = _filters()
    try:
        decision, reason, note = check_verdict(
            form.get("decision", ""), form.get("reason", ""), form.get("note", ""), alert.type.family
        )
    except ConsoleError as e:
        return _alert_page(folder, alert, error=str(e), form=form), 400
    state().verdicts.record(_verdict(alert, decision, reason, note, time.time()))
    flash(f"{_said(decision, reason)}: {label(alert.type)} {alert.source}/{alert.key}")
    rows, _ = _listed(filters)
    todo = [a for a, v in rows if v is None]  # the alert just judged is not among them
    after = [a for a in todo if _order(a) < _order(alert)]
    following = next(iter(after or todo), None)  # the next one below it in the list, else from the top
    if following is None:
        flash("No unreviewed alert left in this list.")
        return redirect(url_for("alerts.index", **list_args()), 303)
    return redirect(url_for("alerts.show", source=following.source, key=following.key, **list_args()), 303)


@blueprint.route("/alerts/verdicts", methods=["POST"])
def bulk_verdict() -> BaseResponse | tuple[str, int]:
    """One verdict on several alerts ticked in the list: one row per alert in the verdicts, as if
    each had been given alone, all stored or none."""
    form = request.form
    filters = _filters()
    try:
        alerts = _picked(form.getlist("alert"))
        verdicts = []
        now = time.time()
        for alert in alerts:
            try:
                decision, reason, note = check_verdict(
                    form.get("decision", ""), form.get("reason", ""), form.get("note", ""), alert.type.family
                )
            except ConsoleError as e:
                raise ConsoleError(f"{alert.source}/{alert.key} ({label(alert.type)}): {e}") from None
            verdicts.append(_verdict(alert, decision, reason, note, now))
    except ConsoleError as e:
        return _list_page(filters, error=str(e), form=form), 400
    state().verdicts.record(*verdicts)
    flash(f"{_said(verdicts[0].decision, verdicts[0].reason)}: {len(verdicts)} alerts")
    return redirect(url_for("alerts.index", **list_args()), 303)


def _picked(values: list[str]) -> list[Alert]:
    """The alerts ticked (`source/key` each), or a ConsoleError naming the first unknown one."""
    unique = list(dict.fromkeys(values))
    if not unique:
        raise ConsoleError("alert: tick at least one alert")
    if len(unique) > MAX_BULK:
        raise ConsoleError(f"alert: at most {MAX_BULK} alerts at once, got {len(unique)}")
    alerts = []
    for value in unique:
        source, _, key = value.partition("/")
        folder = state().folders.get(source)
        alert = folder.alert(key) if folder is not None and KEY.fullmatch(key) else None
        if alert is None:
            raise ConsoleError(f"alert: no alert {value[:200]!r}")
        alerts.append(alert)
    return alerts


def _thumbnail_index(alert: Alert) -> int | None:
    """The evidence the list shows small: the first crop, else the lane mid-pass (a picture only)."""
    kinds = [(i, evidence_kind(rel)) for i, rel in enumerate(alert.evidence)]
    for wanted in (EvidenceKind.CROP, EvidenceKind.LANE):
        found = [i for i, kind in kinds if kind is wanted]
        if found:
            return found[0]
    return None


@blueprint.route("/alerts/<source>/<key>/thumbnail")
def thumbnail(source: str, key: str) -> Response:
    folder, alert = _alert(source, key)
    index = _thumbnail_index(alert)
    path = inside(folder.root, alert.evidence[index]) if index is not None else None
    jpeg = make_thumbnail(path) if path is not None else None
    if jpeg is None:
        abort(404, "no picture of this alert to show")
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": f"private, max-age={THUMBNAIL_MAX_AGE_S}"})


@blueprint.route("/precision")
def precision() -> str:
    rows = state().verdicts.precision()
    tables = [(f, label, [r for r in rows if family_of(r.alert_type) is f]) for f, label in FAMILY_LABELS.items()]
    charts = {
        f: precision_chart(f"precision-{f}", f"Precision of {label} per lane and week", weekly_precision(rs))
        for f, label, rs in tables
        if rs
    }
    days = alerts_per_lane_hour(*lane_activity(state().folders.values()))
    return render_template(
        "precision.html",
        tables=tables,
        charts=charts,
        any_rows=bool(rows),
        days=days,
        days_shown=RATE_DAYS,
        rate_chart=rate_chart(days) if days else None,
    )


@blueprint.route("/verdicts.<fmt>")
def export(fmt: str) -> Response:
    verdicts = state().verdicts.all()
    if fmt == "csv":
        body, mime = to_csv(verdicts), "text/csv"
    elif fmt == "jsonl":
        body, mime = to_jsonl(verdicts), "application/x-ndjson"
    else:
        abort(404, "exports are verdicts.csv and verdicts.jsonl")
    return Response(body, mimetype=mime, headers={"Content-Disposition": f"attachment; filename=verdicts.{fmt}"})
