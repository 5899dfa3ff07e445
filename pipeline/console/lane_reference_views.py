"""Lane references in the console: per product, the crops the lanes kept of confidently verified
scans (and the till policy's candidates, marked as such), offered as gallery references; an operator
accepts or rejects them in bulk (accepted ones become references marked as lane references, with
their lane and time, through `GalleryStore`; neither is offered again). A
dismissed alert whose reason is "wrong product recognised" offers its crops to the product that was
really there, each with the SKU it matches best: a crop that matches another SKU better than that
product is refused unless the operator overrides it, and the override goes into the gallery's audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for

from retail_reid.gallery.lane_suggestions import SHA256, Suggestion, lane_source, suggestions
from retail_reid.images import IMAGE_SUFFIXES
from retail_reid.pipeline.console.alert_views import _alert
from retail_reid.pipeline.console.alerts import Alert, AlertFolder
from retail_reid.pipeline.console.crop_matches import AlertCrop, match_crops
from retail_reid.pipeline.console.reference_decisions import Decision
from retail_reid.pipeline.console.safe_files import inside
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.console.state import operator, state
from retail_reid.pipeline.console.verdicts import Decision as VerdictDecision
from retail_reid.pipeline.console.verdicts import Reason
from retail_reid.pipeline.evidence import EvidenceKind, evidence_kind

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse  # what redirect() returns

blueprint = Blueprint("references", __name__)
MAX_PICKED = 200  # crops in one bulk decision
SHOWN = 120  # suggestions a product page shows


def pending() -> dict[str, list[Suggestion]]:
    """Suggestions not yet decided and not already references, by SKU, for products the gallery holds."""
    st = state()
    decided = st.decisions.decided()
    known = st.gallery.reference_hashes()
    products = {p.product.sku for p in st.gallery.products()}
    found: dict[str, list[Suggestion]] = {}
    for sku, items in suggestions(list(st.settings.references)).items():
        if sku not in products:
            continue
        seen: set[str] = set()
        for s in items:
            h = s.crop.sha256
            if h in decided or h in known or h in seen:
                continue
            seen.add(h)
            found.setdefault(sku, []).append(s)
    return found


@blueprint.route("/lane-references")
def index() -> str:
    rows = sorted(pending().items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return render_template("lane_references.html", rows=rows, folders=state().settings.references)


@blueprint.route("/lane-references/products/<sku:sku>")
def product(sku: str) -> str:
    items = pending().get(sku, [])
    return render_template("lane_reference.html", sku=sku, items=items[:SHOWN], total=len(items))


@blueprint.route("/lane-references/crops/<sha>")
def crop(sha: str) -> Response:
    """A suggested crop by its content address: the client never names a path."""
    if not SHA256.fullmatch(sha):
        abort(404, "no such lane reference")
    for folder in state().settings.references:
        path = inside(folder, f"images/{sha[:2]}/{sha}.jpg")
        if path is not None:
            return send_file(path, max_age=3600)
    abort(404, "no such lane reference")


@blueprint.route("/lane-references/products/<sku:sku>", methods=["POST"])
def decide(sku: str) -> BaseResponse:
    picked = request.form.getlist("crop")
    if not picked:
        raise ConsoleError("crop: choose at least one crop")
    if len(picked) > MAX_PICKED:
        raise ConsoleError(f"crop: at most {MAX_PICKED} crops at a time, got {len(picked)}")
    bad = next((h for h in picked if not SHA256.fullmatch(h)), None)
    if bad is not None:
        raise ConsoleError(f"crop: not a crop's sha256: {bad[:80]!r}")
    try:
        decision = Decision(request.form.get("decision", ""))
    except ValueError:
        raise ConsoleError(
            f"decision: expected accepted or rejected, got {request.form.get('decision', '')[:40]!r}"
        ) from None
    offered = {s.crop.sha256: s for s in pending().get(sku, [])}
    missing = [h for h in picked if h not in offered]
    if missing:
        raise ConsoleError(f"crop: {len(missing)} of the chosen crops are not suggested for {sku!r} (decided already?)")
    st = state()
    if decision is Decision.ACCEPTED:
        chosen = [offered[h] for h in dict.fromkeys(picked)]
        result = st.gallery.add_lane_references(
            sku, [s.path for s in chosen], operator(), sources={s.path: lane_source(s) for s in chosen}
        )
        flash(f"version {result.version}: {result.summary}")
    else:
        flash(f"{len(picked)} crop{'' if len(picked) == 1 else 's'} of {sku} rejected: not suggested again")
    st.decisions.record(sku, list(dict.fromkeys(picked)), decision, operator())
    return redirect(url_for("references.product", sku=sku), 303)


def _wrong_product(source: str, key: str) -> tuple[AlertFolder, Alert, list[AlertCrop]]:
    """An alert whose latest verdict is a "wrong product recognised" dismissal, and its crops."""
    folder, alert = _alert(source, key)
    history = state().verdicts.history(source, key)
    latest = history[0] if history else None
    if latest is None or latest.decision is not VerdictDecision.DISMISSED or latest.reason is not Reason.WRONG_PRODUCT:
        raise ConsoleError("only an alert dismissed as “wrong product recognised” offers its crops as references")
    crops = [(i, inside(folder.root, rel, IMAGE_SUFFIXES)) for i, rel in enumerate(alert.evidence)]
    kept = [(i, p) for i, p in crops if p is not None and evidence_kind(alert.evidence[i]) is EvidenceKind.CROP]
    if not kept:
        raise ConsoleError("this alert kept no crops to add")
    return folder, alert, [AlertCrop(number=n, index=i, path=p) for n, (i, p) in enumerate(kept, start=1)]


@blueprint.route("/alerts/<source>/<key>/references")
def alert_crops(source: str, key: str) -> str:
    """The alert's crops, each with the SKU it matches best and its similarity to the product chosen."""
    _, alert, crops = _wrong_product(source, key)
    st = state()
    sku = request.args.get("sku", alert.record.get("scanned_sku") or "").strip()
    products = [p.product.sku for p in st.gallery.products()]
    return render_template(
        "alert_references.html",
        alert=alert,
        sku=sku,
        known=sku in products,
        products=products,
        matches=match_crops(st.gallery.matcher(), crops, sku),
    )


@blueprint.route("/alerts/<source>/<key>/references", methods=["POST"])
def from_alert(source: str, key: str) -> BaseResponse:
    """The ticked crops of an alert dismissed as "wrong product recognised", as references of the
    product the operator says was really there; crops that match another SKU better only with the override."""
    _, _, crops = _wrong_product(source, key)
    sku = request.form.get("sku", "").strip()
    if not sku:
        raise ConsoleError("sku: choose the product that was really there")
    st = state()
    if sku not in {p.product.sku for p in st.gallery.products()}:
        raise ConsoleError(f"sku: unknown product {sku!r}; lane references go to products the gallery holds")
    by_index = {c.index: c for c in crops}
    picked = request.form.getlist("crop")
    if not picked:
        raise ConsoleError("crop: tick at least one crop")
    bad = next((c for c in picked if not c.isdigit() or int(c) not in by_index), None)
    if bad is not None:
        raise ConsoleError(f"crop: not one of this alert's crops: {bad[:20]!r}")
    matches = match_crops(st.gallery.matcher(), [by_index[i] for i in sorted({int(c) for c in picked})], sku)
    unreadable = next((m for m in matches if m.problem), None)
    if unreadable is not None:
        raise ConsoleError(f"crop {unreadable.crop.number}: cannot be read ({unreadable.problem}); nothing changed")
    elsewhere = [m for m in matches if m.elsewhere]
    if elsewhere and request.form.get("override") != "yes":
        raise ConsoleError(
            f"{elsewhere[0].describe(sku)}"
            + (f" (and {len(elsewhere) - 1} more of the ticked crops)" if len(elsewhere) > 1 else "")
            + "; untick it, or tick “add anyway”; nothing changed"
        )
    note = (
        f"added from alert {source}/{key} against the gallery's matching: "
        + "; ".join(m.describe(sku) for m in elsewhere)
        if elsewhere
        else None
    )
    result = st.gallery.add_lane_references(sku, [m.crop.path for m in matches], operator(), note=note)
    flash(f"version {result.version}: {result.summary}" + (f" ({note})" if note else ""))
    return redirect(url_for("alerts.show", source=source, key=key), 303)
