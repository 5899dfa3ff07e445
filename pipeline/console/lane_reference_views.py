"""Lane references in the console: per product, the crops the lanes kept of confidently verified
scans, offered as gallery references; an operator accepts or rejects them in bulk (accepted ones
become references marked as lane references, through `GalleryStore`; neither is offered again). A
dismissed alert whose reason is "wrong product recognised" offers its crops to the product that was
really there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for

from retail_reid.pipeline.console.alert_views import _alert
from retail_reid.pipeline.console.reference_decisions import Decision
from retail_reid.pipeline.console.safe_files import inside
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.console.state import operator, state
from retail_reid.pipeline.console.verdicts import Decision as VerdictDecision
from retail_reid.pipeline.console.verdicts import Reason
from retail_reid.pipeline.lane_references import SHA256, Suggestion, suggestions

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
        result = st.gallery.add_lane_references(sku, [s.path for s in chosen], operator())
        flash(f"version {result.version}: {result.summary}")
    else:
        flash(f"{len(picked)} crop{'' if len(picked) == 1 else 's'} of {sku} rejected: not suggested again")
    st.decisions.record(sku, list(dict.fromkeys(picked)), decision, operator())
    return redirect(url_for("references.product", sku=sku), 303)


@blueprint.route("/alerts/<source>/<key>/references", methods=["POST"])
def from_alert(source: str, key: str) -> BaseResponse:
    """The crops of an alert dismissed as "wrong product recognised", as references of the product
    the operator says was really there."""
    folder, alert = _alert(source, key)
    st = state()
    history = st.verdicts.history(source, key)
    latest = history[0] if history else None
    if latest is None or latest.decision is not VerdictDecision.DISMISSED or latest.reason is not Reason.WRONG_PRODUCT:
        raise ConsoleError("only an alert dismissed as “wrong product recognised” offers its crops as references")
    sku = request.form.get("sku", "").strip()
    if not sku:
        raise ConsoleError("sku: choose the product that was really there")
    paths = [p for p in (inside(folder.root, rel) for rel in alert.crops) if p is not None]
    if not paths:
        raise ConsoleError("this alert kept no crops to add")
    result = st.gallery.add_lane_references(sku, paths, operator())
    flash(f"version {result.version}: {result.summary}")
    return redirect(url_for("alerts.show", source=source, key=key), 303)
