"""`reid gallery ...`: the operators' commands. Each change prints the version it made; bad input is a
one-line error (GalleryError) and leaves the gallery as it was."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from retail_reid.gallery import lane_suggestions as ls
from retail_reid.gallery.bundle import export_bundle, import_bundle
from retail_reid.gallery.check import MIN_REFS, check_path, format_check
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.renderings import DEFAULT_VIEWS, LaneProfile
from retail_reid.gallery.repair import repair
from retail_reid.gallery.store import DEFAULT_KEEP, ChangeResult, GalleryStore
from retail_reid.models.views import LANE_LEVELS, LaneCamera, LaneLevel


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _report(result: ChangeResult) -> int:
    for line in result.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    print(f"version {result.version}: {result.summary}")
    return 0


def cmd_init(a: argparse.Namespace) -> int:
    return _report(GalleryStore.init(a.dir, model=a.model, keep=a.keep, operator=a.operator))


def cmd_add(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir) as store:
        return _report(
            store.add(
                a.sku,
                a.images,
                name=a.name,
                barcodes=a.barcode,
                category=a.category,
                price=a.price,
                operator=a.operator,
                skip_bad=a.skip_bad,
                progress=True,
                model=a.model,
            )
        )


def cmd_import_folder(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir) as store:
        return _report(
            store.import_folder(a.folder, operator=a.operator, skip_bad=a.skip_bad, progress=True, model=a.model)
        )


def cmd_remove(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir) as store:
        if a.ref is not None:
            return _report(store.remove_ref(a.ref, operator=a.operator))
        return _report(store.remove_sku(a.sku, operator=a.operator))


def cmd_list(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir, readonly=True) as store:
        rows = store.products()
        if a.json:
            print(
                json.dumps(
                    [{**r.product.to_dict(), "refs": r.n_refs, "renderings": r.n_renderings} for r in rows],
                    ensure_ascii=False,
                    indent=1,
                )
            )
            return 0
        print(f"{'SKU':<30} {'refs':>4}  {'name':<30} barcodes")
        for r in rows:
            p = r.product
            print(f"{p.sku:<30} {r.n_refs:>4}  {p.name:<30} {' '.join(p.barcodes)}")
        print(
            f"{len(rows)} products, {sum(r.n_refs for r in rows)} references, "
            f"{sum(r.n_renderings for r in rows)} lane-camera renderings"
        )
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir, readonly=True) as store:
        row, refs = store.product(a.sku)
    p = row.product
    if a.json:
        print(
            json.dumps(
                {**p.to_dict(), "refs": [vars(r) for r in refs], "renderings": row.n_renderings},
                ensure_ascii=False,
                indent=1,
            )
        )
        return 0
    print(f"SKU:      {p.sku}\nname:     {p.name}\nbarcodes: {' '.join(p.barcodes) or '-'}")
    print(f"category: {p.category or '-'}\nprice:    {'-' if p.price is None else f'{p.price:.2f}'}")
    print(
        f"{len(refs)} references, {row.n_renderings} lane-camera renderings of them (remove a reference, and its "
        f"renderings, with `reid gallery remove {a.dir} --ref ID`):"
    )
    for r in refs:
        print(f"  {r.id:>6}  v{r.added_version:<4} {r.origin:<5} {r.image}  (from {r.source})")
    return 0


def cmd_accept_lane_references(a: argparse.Namespace) -> int:
    from retail_reid.gallery.photos import RefOrigin

    if not 0 < a.min_confidence < 1:
        raise GalleryError(f"--min-confidence must be in (0, 1), got {a.min_confidence}")
    if a.max_per_product < 1:
        raise GalleryError(f"--max-per-product must be at least 1, got {a.max_per_product}")
    rules = ls.Consensus(margin=a.margin, min_passes=a.min_passes, min_days=a.min_days)
    found = ls.suggestions([ls.references_folder(Path(p)) for p in a.sources])
    with GalleryStore.open(a.dir) as store:
        chosen = ls.choose_accepted(
            found, store, min_confidence=a.min_confidence, max_per_product=a.max_per_product, rules=rules, model=a.model
        )
        if not chosen:
            print(f"nothing to accept: no lane reference meets the rules ({sum(map(len, found.values()))} kept)")
            return 0
        return _report(
            store.add_photos(
                [(s.sku, s.path) for s in chosen],
                {},
                action="accept-lane-references",
                operator=a.operator,
                skip_bad=True,
                model=a.model,
                origin=RefOrigin.LANE,
                sources={s.path: ls.lane_source(s) for s in chosen},
            )
        )


def cmd_drop_lane(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir) as store:
        return _report(store.drop_lane(a.lane, operator=a.operator))


def cmd_history(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir, readonly=True) as store:
        rows = store.history()
    if a.json:
        print(
            json.dumps(
                [{**vars(r), "entries": [list(e) for e in r.entries]} for r in rows], ensure_ascii=False, indent=1
            )
        )
        return 0
    for r in rows:
        mark = "*" if r.current else (" " if r.stored else "-")
        print(f"{mark}{r.version:>5}  {_when(r.created)}  {r.operator:<12} {r.action:<13} {r.summary}")
        for sku, detail in r.entries if a.verbose else ():
            print(f"{'':>8}{sku}: {detail}")
    print("* current version; - no longer stored (cannot be rolled back to)")
    return 0


def cmd_rollback(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir) as store:
        return _report(store.rollback(a.version, operator=a.operator))


def cmd_rebuild(a: argparse.Namespace) -> int:
    with GalleryStore.open(a.dir) as store:
        return _report(store.rebuild(a.model, operator=a.operator, progress=True))


def cmd_check(a: argparse.Namespace) -> int:
    result = check_path(a.dir, model=a.model, confusable_threshold=a.threshold, min_refs=a.min_refs)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1) if a.json else format_check(result))
    return 1 if result.damage.damaged else 0


def cmd_repair(a: argparse.Namespace) -> int:
    result = repair(a.dir, operator=a.operator)
    for line in result.done:
        print(f"repaired: {line}")
    for line in result.cannot:
        print(f"cannot repair: {line}")
    if not result.done and not result.cannot:
        print(f"{a.dir}: nothing to repair")
    return 1 if result.cannot else 0


def cmd_export(a: argparse.Namespace) -> int:
    info = export_bundle(a.dir, a.bundle)
    print(
        f"wrote {info.path}: version {info.version}, {info.refs} references of {info.skus} SKUs, "
        f"{info.bytes / 2**20:.1f} MiB"
    )
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    return _report(import_bundle(a.dir, a.bundle, operator=a.operator, progress=True))


CAMERA_OPTIONS = ("side_px", "blur_px", "jpeg_quality", "noise_sd", "hand_share", "hand_reach", "crop_jitter")


def cmd_lane_camera(a: argparse.Namespace) -> int:
    changes = a.level or a.views is not None or a.again or any(getattr(a, k) is not None for k in CAMERA_OPTIONS)
    with GalleryStore.open(a.dir, readonly=True) as store:
        profile = store.lane_profile()
        if not changes:
            if a.json:
                print(json.dumps(profile.to_dict(), indent=1))
            else:
                totals = store.products()
                print(f"lane camera: {profile.describe()}")
                print(
                    f"{sum(r.n_refs for r in totals)} references, {sum(r.n_renderings for r in totals)} lane-camera "
                    "renderings"
                )
            return 0
    camera = LANE_LEVELS[LaneLevel(a.level)] if a.level else profile.camera
    given = {k: v for k in CAMERA_OPTIONS if (v := getattr(a, k)) is not None}
    try:
        camera = LaneCamera.from_dict({**camera.to_dict(), **given})
    except ValueError as e:
        raise GalleryError(str(e)) from None
    wanted = LaneProfile(camera=camera, views=profile.views if a.views is None else a.views)
    with GalleryStore.open(a.dir) as store:
        return _report(store.set_lane_camera(wanted, operator=a.operator, progress=True, again=a.again, model=a.model))


def register(sub: argparse._SubParsersAction) -> None:
    """Add `reid gallery` and its actions, in the order `reid gallery --help` lists them."""
    g = sub.add_parser("gallery", help="create and change the gallery of reference photos per SKU")
    gs = g.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    for add in (
        _add_init,
        _add_add,
        _add_import_folder,
        _add_remove,
        _add_list,
        _add_show,
        _add_check,
        _add_repair,
        _add_export,
        _add_import,
        _add_accept_lane_references,
        _add_drop_lane,
        _add_lane_camera,
        _add_history,
        _add_rollback,
        _add_rebuild,
    ):
        add(gs)


def _add_init(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("init", help="create an empty gallery bound to an embedder model")
    p.add_argument("dir", help="the new gallery's directory (must not exist, or be empty)")
    p.add_argument("--model", help="ONNX embedder (default: the shipped model)")
    p.add_argument(
        "--keep", type=int, default=DEFAULT_KEEP, help=f"versions kept for rollback (default {DEFAULT_KEEP})"
    )
    _operator_arg(p)
    p.set_defaults(func=cmd_init)


def _add_add(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("add", help="add reference photos of one SKU (creating the product if new)")
    p.add_argument("dir")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos of the product")
    p.add_argument("--sku", required=True)
    p.add_argument("--name", help="display name (default: the SKU id for a new product)")
    p.add_argument("--barcode", action="append", default=[], help="GTIN or PLU scanned for this product (repeatable)")
    p.add_argument("--category")
    p.add_argument("--price", type=float)
    _skip_bad_arg(p, verb="add")
    _model_arg(p)
    _operator_arg(p)
    p.set_defaults(func=cmd_add)


def _add_import_folder(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("import-folder", help="add FOLDER/<sku>/*.jpg for many products at once")
    p.add_argument("dir")
    p.add_argument("folder")
    _skip_bad_arg(p, verb="import")
    _model_arg(p)
    _operator_arg(p)
    p.set_defaults(func=cmd_import_folder)


def _add_remove(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("remove", help="retire a product (--sku) or take out one reference (--ref, see `show`)")
    p.add_argument("dir")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sku")
    what.add_argument("--ref", type=int, help="reference id, as `reid gallery show` lists them")
    _operator_arg(p)
    p.set_defaults(func=cmd_remove)


def _add_list(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("list", help="the products and how many references each has")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def _add_show(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("show", help="one product's details and references")
    p.add_argument("dir")
    p.add_argument("--sku", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)


def _add_check(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser(
        "check",
        help="damaged files (checksums; exit 1 if any), confusable SKUs, likely wrong-product photos, duplicates, "
        "SKUs with too few photos",
    )
    p.add_argument("dir")
    p.add_argument(
        "--threshold",
        default="far_0.01",
        help="calibrated threshold above which two SKUs count as confusable (default far_0.01, at which the "
        "pipeline takes an item for another SKU; also eer, far_0.001)",
    )
    p.add_argument(
        "--min-refs", type=int, default=MIN_REFS, help=f"fewer references than this are reported (default {MIN_REFS})"
    )
    p.add_argument("--json", action="store_true")
    _model_arg(p)
    p.set_defaults(func=cmd_check)


def _add_repair(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser(
        "repair",
        help="rebuild CURRENT, the database or damaged versions from the stored versions and photos "
        "(damaged files are moved to DIR/damaged/, never deleted); exit 1 if something cannot be rebuilt",
    )
    p.add_argument("dir")
    _operator_arg(p)
    p.set_defaults(func=cmd_repair)


def _add_export(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("export", help="write the published version to a single archive (a bundle) with checksums")
    p.add_argument("dir")
    p.add_argument("bundle", help="the archive to write (.tar)")
    p.set_defaults(func=cmd_export)


def _add_import(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("import", help="replace the gallery's contents with a bundle's, as a new version (checked first)")
    p.add_argument("dir", help="a gallery created with the bundle's model")
    p.add_argument("bundle")
    _operator_arg(p)
    p.set_defaults(func=cmd_import)


def _add_accept_lane_references(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser(
        "accept-lane-references",
        help="add the lanes' confident crops, and till candidates that pass the consensus, as references without "
        "review (the automatic mode, docs/console.md)",
        description="Rules: only products the gallery holds; only crops not already references; a confident crop "
        "kept at or above --min-confidence; a till candidate only when its SKU has candidates from --min-passes "
        "passes on --min-days days and it looks like its SKU (its photos and its other candidates) by --margin more "
        "than like any other SKU (docs/gallery.md); per product, the most confident first until it holds "
        "--max-per-product lane references. One new version, the references marked as lane references, each "
        "recording its lane and time.",
    )
    p.add_argument("dir")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="STATE",
        help="a lane's state folder, or a folder written by `reid replay --lane-references` (repeat)",
    )
    p.add_argument("--min-confidence", type=float, default=0.95, help="default %(default)s")
    p.add_argument("--max-per-product", type=int, default=5, help="default %(default)s")
    limits = ls.Consensus.LIMITS
    for flag, kind, what in (
        ("margin", float, "a till candidate's cosine margin over any other SKU"),
        ("min-passes", int, "till candidate passes of its SKU, at least"),
        ("min-days", int, "distinct days of those passes, at least"),
    ):
        low, high = limits[flag.replace("-", "_")]
        default = getattr(ls.Consensus(), flag.replace("-", "_"))
        p.add_argument(
            f"--{flag}", type=kind, default=default, help=f"{what}, in [{low:g}, {high:g}] (default {default})"
        )
    _model_arg(p)
    _operator_arg(p)
    p.set_defaults(func=cmd_accept_lane_references)


def _add_drop_lane(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser(
        "drop-lane",
        help="take every lane reference one lane taught out of the gallery, as one version",
        description="Finds the lane references whose recorded source names LANE (those accepted by this version of "
        "accept-lane-references or the console; older ones record only their file: remove them with --ref).",
    )
    p.add_argument("dir")
    p.add_argument("--lane", required=True, help="the lane's name, as its crops record it (the edge's lane id)")
    _operator_arg(p)
    p.set_defaults(func=cmd_drop_lane)


def _add_lane_camera(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser(
        "lane-camera",
        help="show or set the lane camera through which every photo is also rendered (lane-camera renderings)",
        description="Without options: the gallery's lane camera profile. With any: set it (starting from --level, "
        "or from the current profile) and render every catalogue photo again through it, as a new version. "
        "Ranges are LOW HIGH; each view draws from them. --views 0 turns renderings off.",
    )
    p.add_argument("dir")
    p.add_argument("--level", choices=[lv.value for lv in LaneLevel], help="start from a declared lane camera")
    p.add_argument("--side-px", dest="side_px", type=int, nargs=2, metavar=("LOW", "HIGH"), help="item size, px")
    p.add_argument("--blur-px", dest="blur_px", type=int, nargs=2, metavar=("LOW", "HIGH"), help="motion blur, px")
    p.add_argument("--jpeg-quality", dest="jpeg_quality", type=int, nargs=2, metavar=("LOW", "HIGH"))
    p.add_argument("--noise-sd", dest="noise_sd", type=float, help="sensor noise, grey levels")
    p.add_argument("--hand-share", dest="hand_share", type=float, help="share of views with a hand (0..1)")
    p.add_argument("--hand-reach", dest="hand_reach", type=float, help="how far a hand reaches in (1: 8-15 %% hidden)")
    p.add_argument("--crop-jitter", dest="crop_jitter", type=float, help="box error, share of a side")
    p.add_argument("--views", type=int, help=f"renderings per photo (default {DEFAULT_VIEWS}; 0: none)")
    p.add_argument("--again", action="store_true", help="render every photo again even if the profile is unchanged")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    _model_arg(p)
    _operator_arg(p)
    p.set_defaults(func=cmd_lane_camera)


def _add_history(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("history", help="the versions: who changed what, when")
    p.add_argument("dir")
    p.add_argument("-v", "--verbose", action="store_true", help="also each change's per-SKU entries")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)


def _add_rollback(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("rollback", help="make a new version with the contents of an older one")
    p.add_argument("dir")
    p.add_argument("version", type=int)
    _operator_arg(p)
    p.set_defaults(func=cmd_rollback)


def _add_rebuild(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("rebuild", help="re-embed every reference with another model into a new version")
    p.add_argument("dir")
    p.add_argument("--model", required=True, help="the new ONNX embedder")
    _operator_arg(p)
    p.set_defaults(func=cmd_rebuild)


# --- options several actions share --------------------------------------------------------------


def _operator_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operator", help="who makes the change, for the audit log (default: your user name)")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="the gallery's ONNX model file, if it is no longer where the gallery was created")


def _skip_bad_arg(p: argparse.ArgumentParser, *, verb: str) -> None:
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help=f"{verb} the good photos and report the bad ones, instead of refusing all",
    )
