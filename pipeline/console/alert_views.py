"""Alert pages: the list with its filters, one alert with its evidence and verdict form, the
precision table, and the verdict exports."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, redirect, render_template, request, send_file, url_for

from retail_reid.pipeline.console.alerts import KEY, Alert, AlertFamily, AlertFolder, AlertType, SourceKind, family_of
from retail_reid.pipeline.console.clip_frames import clip_frame, clip_info, playable, within_bounds
from retail_reid.pipeline.console.safe_files import CLIP_SUFFIXES, IMAGE_SUFFIXES, inside
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.console.state import operator, state
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

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse  # what redirect() returns

blueprint = Blueprint("alerts", __name__)
PAGE = 100  # alerts a list page shows
PHOTOS = 4  # gallery photos shown per product on an alert page
UNREVIEWED = "unreviewed"
DECISIONS = frozenset(d.value for d in Decision)
TYPES = frozenset(t.value for t in AlertType)
FAMILIES = frozenset(f.value for f in AlertFamily)
EVIDENCE_SUFFIXES = IMAGE_SUFFIXES | CLIP_SUFFIXES
FAMILY_LABELS = {AlertFamily.LOSS: "loss alerts", AlertFamily.SERVICE: "customer service (double scans)"}


@dataclass(frozen=True)
class Filters:
    source: str
    lane: str
    family: str  # loss alerts, customer service (double scans), or both
    type: str
    verdict: str
    day_from: float | None
    day_to: float | None  # exclusive: the end of the day given

    @classmethod
    def from_args(cls) -> Filters:
        a = request.args
        verdict = a.get("verdict", "")
        if verdict not in ("", UNREVIEWED, *DECISIONS):
            raise ConsoleError(f"verdict: expected {UNREVIEWED}, confirmed or dismissed, got {verdict!r}")
        kind = a.get("type", "")
        if kind and kind not in TYPES:
            raise ConsoleError(f"type: expected one of {', '.join(AlertType)}, got {kind!r}")
        family = a.get("family", "")
        if family and family not in FAMILIES:
            raise ConsoleError(f"family: expected one of {', '.join(AlertFamily)}, got {family!r}")
        return cls(
            a.get("source", ""),
            a.get("lane", ""),
            family,
            kind,
            verdict,
            _day(a.get("from", ""), "from", 0),
            _day(a.get("to", ""), "to", 86400),
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
        if self.day_from is not None and alert.when < self.day_from:
            return False
        return self.day_to is None or alert.when < self.day_to


def _day(text: str, field: str, offset: float) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() + offset
    except ValueError:
        raise ConsoleError(f"{field}: expected a date YYYY-MM-DD, got {text[:40]!r}") from None


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
    filters = Filters.from_args()
    st = state()
    latest = st.verdicts.latest()
    every = [a for f in st.folders.values() for a in f.alerts()]
    rows = [(a, latest.get((a.source, a.key))) for a in every]
    rows = [r for r in rows if filters.keep(*r)]
    rows.sort(key=lambda r: (r[0].when, r[0].t_start), reverse=True)
    page = max(1, request.args.get("page", 1, type=int) or 1)
    return render_template(
        "alerts.html",
        rows=rows[(page - 1) * PAGE : page * PAGE],
        total=len(rows),
        page=page,
        pages=max(1, -(-len(rows) // PAGE)),
        filters=filters,
        folders=st.folders,
        lanes=sorted({a.lane for a in every}),
        types=list(AlertType),
        families=FAMILY_LABELS,
        bad_lines={name: f.bad_lines for name, f in st.folders.items() if f.bad_lines},
    )


@blueprint.route("/alerts/<source>/<key>")
def show(source: str, key: str) -> str:
    folder, alert = _alert(source, key)
    st = state()
    pos, pos_missing = folder.pos_around(alert)
    rec = alert.record
    history = st.verdicts.history(source, key)
    wrong_product = bool(history) and history[0].reason is Reason.WRONG_PRODUCT and bool(alert.crops)
    kinds = [(i, evidence_kind(rel), _evidence_file(folder, rel)) for i, rel in enumerate(alert.evidence)]
    clip_files = [(i, path) for i, kind, path in kinds if kind is EvidenceKind.CLIP and path is not None]
    videos = [i for i, path in clip_files if playable(path)]
    clips = [(i, clip_info(path)) for i, path in clip_files if i not in videos]  # older lanes' AVI: stills
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


@blueprint.route("/alerts/<source>/<key>/verdict", methods=["POST"])
def verdict(source: str, key: str) -> BaseResponse:
    _, alert = _alert(source, key)
    form = request.form
    decision, reason, note = check_verdict(
        form.get("decision", ""), form.get("reason", ""), form.get("note", ""), alert.type.family
    )
    state().verdicts.record(
        Verdict(
            source=alert.source,
            alert_key=alert.key,
            lane=alert.lane,
            alert_type=alert.type.value,
            alert_time=alert.when,
            decision=decision,
            reason=reason,
            note=note,
            reviewer=operator(),
            decided_at=time.time(),
        )
    )
    return redirect(url_for("alerts.show", source=source, key=key), 303)


@blueprint.route("/precision")
def precision() -> str:
    rows = state().verdicts.precision()
    tables = [(label, [r for r in rows if family_of(r.alert_type) is f]) for f, label in FAMILY_LABELS.items()]
    return render_template("precision.html", tables=tables, any_rows=bool(rows))


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
