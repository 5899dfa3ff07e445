"""`reid train | interpolate | checkpoint-from-onnx | embed | eval | export | calibrate`: the embedder's
commands. Torch is imported only inside the commands that train, rebuild, export or calibrate, so
embed and eval run on a runtime-only install."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retail_reid.errors import ReidError
from retail_reid.models.calibration import SCORINGS
from retail_reid.models.datasets import ImageSet, iconic_set, image_set, read_list_file
from retail_reid.models.research.folds import FOLDS_FILE
from retail_reid.models.views import AUGMENTATIONS

if TYPE_CHECKING:
    from torch import nn

    from retail_reid.models.evaluate import Embedded
    from retail_reid.models.lane_training import LaneCache, ResidualHead


def _need_train_extra() -> None:
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise ReidError("this command needs the training dependencies: pip install 'retail-reid[train]'") from None


def _limit(images: ImageSet, skus: int, per_sku: int) -> ImageSet:
    """The first `skus` SKUs (sorted) with at most `per_sku` images each: small, reproducible runs."""
    keep = set(sorted(set(images.labels))[:skus]) if skus else set(images.labels)
    seen: dict[str, int] = {}
    paths, labels = [], []
    for p, s in zip(images.paths, images.labels, strict=True):
        if s in keep and (not per_sku or seen.get(s, 0) < per_sku):
            seen[s] = seen.get(s, 0) + 1
            paths.append(p)
            labels.append(s)
    return ImageSet(tuple(paths), tuple(labels))


def cmd_train(a: argparse.Namespace) -> int:
    _need_train_extra()
    from retail_reid.models.train import TrainConfig, train

    all_train, all_val = image_set(a.train, a.root), image_set(a.val, a.root)
    train_set = _limit(all_train, a.limit_skus, a.limit_per_sku)
    held_out: set[str] = set()
    if a.fold is not None:  # class-disjoint: the fold's SKUs are neither trained on nor used to keep the best
        from retail_reid.models.research.folds import read_folds

        folds = read_folds(a.folds)
        held_out = folds.held_out(a.fold)
        train_set = train_set.only(folds.trained(a.fold))
    if a.iconic:
        train_set = train_set + iconic_set(a.iconic).only(set(train_set.labels))
    val_set = all_val
    if a.limit_skus or held_out:
        val_set = val_set.only(set(train_set.labels))
    cfg = TrainConfig(
        out=a.out,
        backbone=a.backbone,
        pretrained=not a.no_pretrained,
        weights=a.weights,
        dim=a.dim,
        size=a.size,
        loss=a.loss,
        miner=a.miner,
        margin=a.margin,
        epochs=a.epochs,
        skus_per_batch=a.skus_per_batch,
        per_sku=a.per_sku,
        lr_backbone=a.lr_backbone,
        lr_head=a.lr_head,
        weight_decay=a.weight_decay,
        warmup_epochs=a.warmup_epochs,
        freeze_blocks=a.freeze_blocks,
        seed=a.seed,
        threads=a.threads,
        device=a.device,
        steps_per_epoch=a.steps_per_epoch,
        init=a.init,
        augment=a.augment,
    )
    try:
        best = train(cfg, train_set, val_set, resume=a.resume, progress=not a.quiet)
    except ValueError as e:
        raise ReidError(str(e)) from None
    print(f"best checkpoint: {best}")
    if held_out:
        _evaluate_held_out(best, a.fold, held_out, all_train, all_val, a.root, a.quiet)
    return 0


def cmd_train_tail(a: argparse.Namespace) -> int:
    _need_train_extra()
    import torch

    from retail_reid.models.research.disjoint import fold_report
    from retail_reid.models.research.feature_cache import FeatureCache, build_cache
    from retail_reid.models.research.folds import read_folds
    from retail_reid.models.research.tail_train import Recipe, embed_eval, save_checkpoint, train_on_cache

    if a.threads:
        torch.set_num_threads(a.threads)
    cache_dir = Path(a.cache)
    if not (cache_dir / "meta.json").exists():
        if not a.data:
            raise ReidError(f"{cache_dir}: no feature cache there; give --data ROOT to compute it")
        build_cache(a.data, cache_dir, a.backbone, a.size, a.views, threads=a.threads or 2, progress=not a.quiet)
    cache = FeatureCache.open(cache_dir)
    recipe = Recipe(
        dim=a.dim,
        tail_stages=a.tail_stages,
        imagenet_weight=a.imagenet_weight,
        head_hidden=a.head_hidden,
        loss=a.loss,
        miner=a.miner,
        margin=a.margin,
        epochs=a.epochs,
        lr_tail=a.lr_tail,
        lr_head=a.lr_head,
        skus_per_batch=a.skus_per_batch,
        per_sku=a.per_sku,
        seed=a.seed,
    )
    skus = set(cache.train_labels)
    if a.fold is not None:
        skus = read_folds(a.folds).trained(a.fold)
    try:
        net, summary = train_on_cache(cache, recipe, skus, log=not a.quiet)
    except ValueError as e:
        raise ReidError(str(e)) from None
    best = save_checkpoint(net, recipe, cache, skus, Path(a.out))
    emb = embed_eval(cache, net)
    report = {"trained": fold_report(emb, skus)}
    if a.fold is not None:
        report["held_out"] = fold_report(emb, read_folds(a.folds).held_out(a.fold))
    (best.parent / "summary.json").write_text(json.dumps({**summary, "recipe": recipe.to_dict(), **report}, indent=2))
    print(f"checkpoint: {best} ({summary['seconds']:.0f} s of training)")
    for name, r in report.items():
        print(_format_report(f"{name} SKUs (val photos against train centroids)", r))
    return 0


def _evaluate_held_out(
    best: Path, fold: int, held_out: set[str], train: ImageSet, val: ImageSet, root: str | None, quiet: bool
) -> None:
    """Export the fold's best checkpoint (training size, flip averaged, as shipped models are) and judge it
    on the SKUs it never saw: writes embedder.onnx and class_disjoint.json beside best.pt
    (benchmarks/bench_class_disjoint.py --fold-run judges every fold's embedder.onnx and pools them)."""
    from retail_reid.models.datasets import GroceryData
    from retail_reid.models.export import export_onnx
    from retail_reid.models.research.disjoint import embed_data, fold_report
    from retail_reid.models.runtime import OnnxEmbedder
    from retail_reid.models.train import load_checkpoint

    net, pre, state = load_checkpoint(best)
    extra = {"backbone": state["config"]["backbone"], "trained": state["config"]["loss"], "fold": fold}
    model = export_onnx(net, pre, best.parent / "embedder.onnx", extra)
    has_iconic = root is not None and (Path(root) / "classes.csv").exists()
    data = GroceryData(train=train, val=val, iconic=iconic_set(root) if root is not None and has_iconic else None)
    report = fold_report(embed_data(OnnxEmbedder(model), data, skus=held_out, progress=not quiet), held_out)
    out = {"fold": fold, "checkpoint": str(best), "skus": sorted(held_out), "held_out": report}
    (best.parent / "class_disjoint.json").write_text(json.dumps(out, indent=2))
    print(_format_report(f"fold {fold}: {len(held_out)} SKUs never trained on (centroid scoring)", report))


def cmd_interpolate(a: argparse.Namespace) -> int:
    _need_train_extra()
    from retail_reid.models.interpolate import interpolate

    try:
        out = interpolate(a.start, a.tuned, a.weight, Path(a.out) / "best.pt")
    except ValueError as e:
        raise ReidError(str(e)) from None
    print(f"{out}: {1 - a.weight:g} x {a.start} + {a.weight:g} x {a.tuned}")
    return 0


def cmd_checkpoint_from_onnx(a: argparse.Namespace) -> int:
    _need_train_extra()
    from retail_reid.models.from_onnx import checkpoint_from_onnx

    photos = image_set(a.photos, a.root).paths
    try:
        out = checkpoint_from_onnx(a.model, a.out, list(photos[:: max(1, len(photos) // a.count)][: a.count]))
    except ValueError as e:
        raise ReidError(str(e)) from None
    print(f"{out}: the network of {a.model}, its batch norms recalibrated; fine-tune it with reid train --init")
    return 0


def cmd_embed(a: argparse.Namespace) -> int:
    from retail_reid.models.runtime import OnnxEmbedder

    if bool(a.list) == bool(a.images):
        raise ReidError("give either --list FILE or image paths, not both and not neither")
    root = Path(a.root) if a.root else None
    paths = read_list_file(a.list, root) if a.list else [root / p if root else Path(p) for p in a.images]
    embedder = OnnxEmbedder(a.model)
    emb, good, errors = embedder.embed_files(paths, progress=not a.quiet)
    for e in errors:
        print(f"bad image: {e}", file=sys.stderr)
    if errors and not a.skip_bad:
        raise ReidError(
            f"{len(errors)} of {len(paths)} images could not be read (listed above); nothing written "
            "(--skip-bad embeds the rest)"
        )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    rows = out.with_suffix(".paths.txt")
    rows.write_text("".join(f"{paths[i]}\n" for i in good))
    print(f"wrote {len(good)} embeddings of dimension {embedder.dim} to {out} (row order in {rows})")
    return 1 if errors else 0


def _format_report(name: str, report: dict) -> str:
    lines = [f"== {name}"]
    for section, metrics in report.items():
        lines.append(f"  {section}:")
        lines += [f"    {k:<22} {v:.4f}" for k, v in metrics.items()]
    return "\n".join(lines)


def cmd_eval(a: argparse.Namespace) -> int:
    from retail_reid.models.evaluate import evaluate
    from retail_reid.models.runtime import OnnxEmbedder

    gallery, queries = image_set(a.gallery, a.root), image_set(a.queries, a.root)
    iconic = iconic_set(a.iconic) if a.iconic else None
    models = a.model or [None]
    reports = {}
    for m in models:
        embedder = OnnxEmbedder(m)
        reports[str(embedder.path)] = evaluate(embedder, gallery, queries, iconic, progress=not a.quiet)
        print(_format_report(str(embedder.path), reports[str(embedder.path)]))
    if len(reports) > 1:
        (base_name, base), *others = reports.items()
        for name, rep in others:
            print(f"== change from {base_name} to {name}")
            for section in rep:
                for k, v in rep[section].items():
                    if not k.startswith("threshold"):
                        print(f"    {section}.{k:<22} {v - base[section][k]:+.4f}")
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=2))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    _need_train_extra()
    from retail_reid.models.export import check_parity, export_onnx
    from retail_reid.models.preprocess import Preprocess

    if bool(a.checkpoint) == a.imagenet_only:
        raise ReidError("give a CHECKPOINT or --imagenet-only")
    net: nn.Module
    if a.imagenet_only:
        from retail_reid.models.backbone import create_backbone
        from retail_reid.models.net import ImageNetFeatures

        net, pre, extra = (
            ImageNetFeatures(create_backbone(a.backbone)),
            Preprocess(size=a.size or 224),
            {"backbone": a.backbone, "trained": "imagenet-only"},
        )
    else:
        from retail_reid.models.train import load_checkpoint

        try:
            net, pre, state = load_checkpoint(a.checkpoint)
        except ValueError as e:
            raise ReidError(str(e)) from None
        extra = {
            "backbone": state["config"]["backbone"],
            "trained": state["config"]["loss"],
            "train_size": pre.size,
            "skus": len(state["skus"]),
            "val": state["val"],
        }
        if a.size:  # the network is fully convolutional: evaluate at another size than it was trained at
            pre = Preprocess.from_dict({**pre.to_dict(), "size": a.size})
    out = Path(a.out)
    export_onnx(net, pre, out, extra, flip_tta=not a.no_flip)
    calib = image_set(a.calib, a.root)
    worst = check_parity(net, out, list(calib.paths[:32]))
    print(f"parity: min cosine torch vs ONNX fp32 over 32 real images = {worst:.6f}")
    references = image_set(a.gallery, a.root)
    _calibrate(out, references, calib, a.scoring, a.quiet)
    if a.int8:
        _write_int8(out, Path(a.int8), references, calib, a)
    return 0


def _calibrate(model: Path, references: ImageSet, queries: ImageSet, scoring: str, quiet: bool) -> None:
    """Fit and store the model's calibrations (every scoring, `scoring` the default) and say what they are."""
    from retail_reid.models.evaluate import embed_set
    from retail_reid.models.runtime import OnnxEmbedder

    _check_calibration_sets(references.labels, queries.labels)
    embedder = OnnxEmbedder(model)
    gallery = embed_set(embedder, references, progress=not quiet)
    _store_calibration(model, gallery, embed_set(embedder, queries, progress=not quiet), scoring)


def _check_calibration_sets(references: Sequence[str], queries: Sequence[str]) -> None:
    if len(set(references)) < 2:
        raise ReidError(
            "calibration needs references of at least two SKUs (a query must have other SKUs to be told from)"
        )
    if not set(references) & set(queries):
        raise ReidError(
            "calibration needs queries of SKUs that have references: no SKU of the queries is among the references' "
            f"{len(set(references))} SKUs"
        )


def _store_calibration(model: Path, gallery: Embedded, queries: Embedded, scoring: str) -> None:
    """Fit the calibrations on embedded references and queries, store them in `model` and say what they are."""
    from retail_reid.models.evaluate import calibrate
    from retail_reid.models.export import set_calibration

    calibrations = calibrate(gallery, queries, scoring)
    try:
        set_calibration(model, calibrations)
    except OSError as e:
        raise ReidError(f"{model}: cannot rewrite the model file ({e.strerror or e}); it is unchanged") from None
    for c in calibrations:
        print(
            f"{model}: {c.scoring} scoring{' (default)' if c is calibrations[0] else ''}: "
            + ", ".join(f"{k} at {v:.3f}" for k, v in sorted(c.thresholds.items()))
        )


def cmd_train_lane_head(a: argparse.Namespace) -> int:
    _need_train_extra()
    import torch

    from retail_reid.models.evaluate import Embedded
    from retail_reid.models.lane_training import (
        HeadRecipe,
        attach_head,
        build_lane_cache,
        head_embeddings,
        lane_recall,
        train_head,
    )
    from retail_reid.models.runtime import OnnxEmbedder

    if a.threads:
        torch.set_num_threads(a.threads)
    cache = build_lane_cache(a.root, a.cache, a.teacher, threads=a.threads or 2, progress=not a.quiet)
    if cache.meta["teacher"]["fingerprint"] != OnnxEmbedder(a.teacher).fingerprint:
        raise ReidError(
            f"{a.cache}: cached from another teacher ({cache.meta['teacher']['path']}); use another --cache"
        )
    recipe = HeadRecipe(
        hidden=a.hidden,
        epochs=a.epochs,
        distill=a.distill,
        lr=a.lr,
        clean_share=a.clean_share,
        skus_per_batch=a.skus_per_batch,
        per_sku=a.per_sku,
        seed=a.seed,
    )
    try:
        head, summary = train_head(cache, recipe, log=not a.quiet)
    except ValueError as e:
        raise ReidError(str(e)) from None
    out = attach_head(cache.meta["teacher"]["path"], head, a.out, recipe.to_dict())
    rows = cache.gallery_rows
    gallery = Embedded(head_embeddings(cache, head, "train")[rows], cache.gallery_labels, [])
    val = head_embeddings(cache, head, "val")
    labels = np.asarray(cache.meta["val_labels"])
    clean = Embedded(val.reshape(len(labels), -1, val.shape[1])[:, 0], labels, [])
    _check_calibration_sets(list(gallery.labels), list(labels))
    _store_calibration(out, gallery, clean, a.scoring)
    worst = _cache_parity(cache, head, out)
    if worst < 0.999:
        raise ReidError(f"{out}: the ONNX graph disagrees with the trained head (cosine {worst:.4f})")
    print(f"{out}: {cache.meta['teacher']['path']} + a lane head ({summary['seconds']} s of training)")
    print(json.dumps(lane_recall(gallery.emb, gallery.labels, val, labels)))
    return 0


def _cache_parity(cache: LaneCache, head: ResidualHead, onnx_path: Path, n: int = 4) -> float:
    """The smallest cosine between the ONNX model's and the cache's embeddings of the first photos."""
    from retail_reid.images import read_image
    from retail_reid.models.lane_training import TRAIN_LEVELS, head_embeddings
    from retail_reid.models.runtime import OnnxEmbedder

    got = OnnxEmbedder(onnx_path).embed([read_image(p) for p in cache.meta["train_paths"][:n]])
    want = head_embeddings(cache, head, "train")[: n * (1 + len(TRAIN_LEVELS)) : 1 + len(TRAIN_LEVELS)]
    return float((got * want).sum(1).min())


def cmd_compose(a: argparse.Namespace) -> int:
    _need_train_extra()  # building models (onnx, and torch's quantisation tools for --int8) is the [train] extra's
    from retail_reid.models.compose import compose, principal_basis
    from retail_reid.models.evaluate import embed_set
    from retail_reid.models.runtime import OnnxEmbedder

    references, calib = image_set(a.gallery, a.root), image_set(a.calib, a.root)
    features = embed_set(OnnxEmbedder(a.imagenet), references, progress=not a.quiet).emb
    mean, basis = principal_basis(features, a.pca) if a.pca else (features.mean(0), None)
    out = compose(a.trained, a.imagenet, a.weight, mean, a.out, basis)
    kept = f", {a.pca} principal directions kept" if a.pca else ""
    print(
        f"{out}: {1 - a.weight:g} x {a.trained} + {a.weight:g} x {a.imagenet} "
        f"(centred on {len(references)} photos{kept})"
    )
    _calibrate(out, references, calib, a.scoring, a.quiet)
    if a.int8:
        _write_int8(out, Path(a.int8), references, calib, a)
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    _need_train_extra()
    _write_int8(Path(a.model), Path(a.out), image_set(a.gallery, a.root), image_set(a.calib, a.root), a)
    return 0


def _write_int8(fp32: Path, out: Path, references: ImageSet, calib: ImageSet, a: argparse.Namespace) -> None:
    """The int8 model of `fp32`, its ranges from `a.int8_images` of the references spread evenly, calibrated."""
    from retail_reid.models.export import quantize_int8

    q = quantize_int8(fp32, out, list(references.paths[:: max(1, len(references) // a.int8_images)]))
    _calibrate(q, references, calib, a.scoring, a.quiet)


def cmd_calibrate(a: argparse.Namespace) -> int:
    _need_train_extra()
    _calibrate(Path(a.model), image_set(a.gallery, a.root), image_set(a.calib, a.root), a.scoring, a.quiet)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the embedder's subcommands to the `reid` parser, in the order `reid --help` lists them."""
    for add in (
        _add_train,
        _add_quantize,
        _add_train_tail,
        _add_train_lane_head,
        _add_train_lane_tail,
        _add_compose,
        _add_interpolate,
        _add_checkpoint_from_onnx,
        _add_embed,
        _add_eval,
        _add_export,
        _add_calibrate,
    ):
        add(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune the embedder (needs the [train] extra)")
    _root_option(p)
    p.add_argument("--train", required=True, help="split file (train.txt) or folder-per-SKU tree")
    p.add_argument("--val", required=True, help="split file (val.txt) or folder-per-SKU tree, for keep-best")
    p.add_argument(
        "--iconic",
        metavar="PATH",
        help="add catalog photos as extra training views: a dataset root with classes.csv or a folder of <sku>.jpg",
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, config.json, metrics.jsonl")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm model name")
    p.add_argument("--weights", help="backbone state dict file (any naming scheme with matching tensor order)")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start from a trained embedder's best.pt (same backbone and size) and fine-tune it further",
    )
    p.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        default="photo",
        help="photo: crops, tilts, light and colour; checkout: also views like a lane camera's (whole item, small, "
        "low resolution, motion-blurred, noisy, compressed, partly hidden by a hand); checkout-hard: the same as the "
        "hard lanes' camera sees items (70-140 px, blur up to 20 px, a hand over up to a third)",
    )
    p.add_argument("--dim", type=int, default=128, help="embedding size")
    p.add_argument("--size", type=int, default=224, help="input size in pixels")
    _loss_options(p, default="triplet")
    p.add_argument("--epochs", type=int, default=10)
    _batch_options(p)
    p.add_argument("--lr-backbone", type=float, default=2e-4)
    p.add_argument("--lr-head", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--freeze-blocks", type=int, default=0, help="freeze the stem and the first N blocks")
    p.add_argument("--steps-per-epoch", type=int, default=0, help="0: one pass over the training images")
    _fold_options(
        p,
        fold="class-disjoint run: train without fold K's SKUs, then export OUT/embedder.onnx and evaluate those "
        "SKUs into OUT/class_disjoint.json (benchmarks/bench_class_disjoint.py --fold-run pools the folds)",
    )
    p.add_argument("--limit-skus", type=int, default=0, help="use only the first N SKUs (quick runs)")
    p.add_argument("--limit-per-sku", type=int, default=0, help="at most N training images per SKU")
    _seed_and_threads(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="an fp32 ONNX embedder -> static int8, calibrated (e.g. for a CPU without VNNI; [train] extra)"
    )
    p.add_argument("model", help="fp32 ONNX embedder (reid export or reid compose)")
    p.add_argument("--out", required=True, help="int8 ONNX file")
    _photo_sets(
        p,
        gallery="reference photos: int8 ranges and calibration",
        calib="query photos of the same SKUs, for calibration",
    )
    _int8_options(p, also_write=False)
    _calibration_options(p)
    p.set_defaults(func=cmd_quantize)


def _add_train_tail(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tail",
        help="train an embedder that keeps the ImageNet features in view, from cached backbone features "
        "(minutes on a CPU; needs the [train] extra)",
    )
    p.add_argument("--cache", required=True, help="feature cache folder (computed there first when --data is given)")
    p.add_argument("--data", help="grocery-style dataset root (train.txt, val.txt, classes.csv) to build the cache")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm model name, when building the cache")
    p.add_argument("--size", type=int, default=224, help="input size in pixels, when building the cache")
    p.add_argument("--views", type=int, default=8, help="augmented views per training photo, when building the cache")
    p.add_argument("--out", required=True, help="run folder: best.pt (for reid export) and summary.json")
    p.add_argument("--dim", type=int, default=128, help="size of the trained projection")
    p.add_argument("--tail-stages", type=int, default=0, help="backbone stages trained after the frozen trunk")
    p.add_argument("--head-hidden", type=int, default=0, help="hidden units of the projection (0: linear)")
    p.add_argument(
        "--imagenet-weight", type=float, default=0.5, help="share of the ImageNet features' cosine in the embedding's"
    )
    _loss_options(p, default="multi-similarity")
    p.add_argument("--epochs", type=int, default=20)
    _batch_options(p)
    p.add_argument("--lr-tail", type=float, default=5e-4)
    p.add_argument("--lr-head", type=float, default=2e-3)
    _fold_options(p, fold="class-disjoint run: train without fold K's SKUs and report them")
    _seed_and_threads(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_tail)


def _add_train_lane_head(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-lane-head",
        help="teach an embedder the lane camera's views: a residual head on its features, trained from a cache of "
        "seeded lane-camera renderings (an hour to cache, minutes to train on a CPU; needs the [train] extra)",
    )
    p.add_argument("--root", required=True, help="grocery-style dataset root (train.txt, val.txt, classes.csv)")
    p.add_argument("--cache", required=True, help="lane cache folder (computed there first; resumes a stopped build)")
    p.add_argument("--teacher", help="the ONNX embedder to teach (default: the shipped model)")
    p.add_argument("--out", required=True, help="the taught ONNX embedder (calibrated on the cached val photos)")
    p.add_argument("--hidden", type=int, default=512, help="hidden units of the residual head")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--distill", type=float, default=1.0, help="weight of the pull towards the clean photo's place")
    p.add_argument("--clean-share", type=float, default=0.25, help="share of training views that are the photo itself")
    p.add_argument("--lr", type=float, default=1e-3)
    _batch_options(p)
    _seed_and_threads(p, threads="CPU threads (0: the library defaults)")  # the cache's ONNX runs and torch's
    _calibration_options(p)
    p.set_defaults(func=cmd_train_lane_head)


def _add_train_lane_tail(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-lane-tail",
        help="teach an embedder's upper stages the lane camera's views, from a cache of the frozen lower stages' "
        "maps of seeded lane-camera renderings (minutes to cache, about a minute an epoch on a CPU; needs the "
        "[train] extra)",
    )
    p.add_argument("--root", required=True, help="grocery-style dataset root (train.txt, val.txt, classes.csv)")
    p.add_argument("--cache", required=True, help="tail cache folder (computed there first; resumes a stopped build)")
    p.add_argument("--teacher", help="the ONNX embedder whose space it learns (default: the shipped model)")
    p.add_argument("--out", required=True, help="the student as an ONNX embedder (calibrated on the cached val views)")
    p.add_argument(
        "--checkpoint", help="save after every epoch here and resume from it (default: checkpoint.pt beside --out)"
    )
    p.add_argument("--epochs-now", type=int, help="run at most this many epochs now (resume later with the same call)")
    p.add_argument("--tail-stages", type=int, default=2, help="the backbone's last stages that train (the cache's)")
    p.add_argument("--size", type=int, default=224, help="input size in pixels (the cache's)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--distill", type=float, default=3.0, help="weight of the pull towards the clean photo's place")
    p.add_argument("--clean-share", type=float, default=0.25, help="share of training views that are the photo itself")
    _batch_options(p)
    _seed_and_threads(p, threads="CPU threads (0: the library defaults)")
    _calibration_options(p)
    p.set_defaults(func=cmd_train_lane_tail)


def cmd_train_lane_tail(a: argparse.Namespace) -> int:
    _need_train_extra()
    import torch

    from retail_reid.models.lane_tail import (
        PER_PHOTO,
        TailCacheSpec,
        TailRecipe,
        build_tail_cache,
        export_tail,
        tail_embeddings,
        train_tail,
    )
    from retail_reid.models.lane_training import lane_recall
    from retail_reid.models.runtime import OnnxEmbedder

    if a.threads:
        torch.set_num_threads(a.threads)
    spec = TailCacheSpec(tail_stages=a.tail_stages, size=a.size, seed=a.seed)
    cache = build_tail_cache(a.root, a.cache, a.teacher, spec, threads=a.threads or 2, progress=not a.quiet)
    if cache.meta["teacher"]["fingerprint"] != OnnxEmbedder(a.teacher).fingerprint:
        raise ReidError(
            f"{a.cache}: cached from another teacher ({cache.meta['teacher']['path']}); use another --cache"
        )
    if (cache.meta["tail_stages"], cache.meta["size"]) != (spec.tail_stages, spec.size):
        raise ReidError(
            f"{a.cache}: holds maps for --tail-stages {cache.meta['tail_stages']} --size {cache.meta['size']}; "
            "use those or another --cache"
        )
    recipe = TailRecipe(
        epochs=a.epochs,
        distill=a.distill,
        clean_share=a.clean_share,
        skus_per_batch=a.skus_per_batch,
        per_sku=a.per_sku,
        seed=a.seed,
    )
    out = Path(a.out)
    checkpoint = Path(a.checkpoint) if a.checkpoint else out.with_name("checkpoint.pt")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        net, summary = train_tail(cache, recipe, checkpoint=checkpoint, epochs_now=a.epochs_now, log=not a.quiet)
    except ValueError as e:
        raise ReidError(str(e)) from None
    if summary["epochs"] < recipe.epochs:
        print(f"{checkpoint}: {summary['epochs']} of {recipe.epochs} epochs trained; run the same command to go on")
        return 0
    export_tail(cache, net, out, recipe, a.scoring)
    n = cache.meta["n_gallery"]
    gallery = tail_embeddings(cache, net, "train", np.arange(n) * PER_PHOTO)
    figures = lane_recall(
        gallery, cache.train_labels[:n], tail_embeddings(cache, net, "val"), np.asarray(cache.meta["val_labels"])
    )
    print(f"{out}: the student of {cache.meta['teacher']['path']} ({summary['seconds']} s of training)")
    print(json.dumps(figures))
    return 0


def _add_compose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compose",
        help="join a fine-tuned ONNX embedder with the ImageNet backbone's features into one calibrated model",
    )
    p.add_argument("trained", help="ONNX embedder of reid export (fine-tuned)")
    p.add_argument("imagenet", help="ONNX of reid export --imagenet-only, with the same --size and flip")
    p.add_argument(
        "--weight", type=float, required=True, help="share of the ImageNet features' cosine in the composed cosine"
    )
    p.add_argument(
        "--pca",
        type=int,
        metavar="K",
        help="keep the ImageNet features' K leading principal directions over --gallery (default: all)",
    )
    p.add_argument("--out", required=True, help="composed ONNX file")
    _photo_sets(
        p,
        gallery="reference photos: centre the ImageNet features, calibrate",
        calib="query photos of the same SKUs, for calibration",
    )
    _int8_options(p, also_write=True)
    _calibration_options(p)
    p.set_defaults(func=cmd_compose)


def _add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate", help="mix a model's weights with its fine-tuned run's (WiSE-FT; needs the [train] extra)"
    )
    p.add_argument(
        "start",
        help="best.pt the fine-tuning started from (reid train --init), or 'imagenet': the tuned run's backbone at "
        "its ImageNet weights, its head kept",
    )
    p.add_argument("tuned", help="best.pt of the fine-tuned run")
    p.add_argument("--weight", type=float, required=True, help="share of the fine-tuned weights, 0 to 1")
    p.add_argument("--out", required=True, help="run folder for the mixed best.pt (export it with reid export)")
    p.set_defaults(func=cmd_interpolate)


def _add_checkpoint_from_onnx(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "checkpoint-from-onnx",
        help="a best.pt rebuilt from an exported embedder, to fine-tune it with reid train --init (needs [train])",
    )
    p.add_argument("model", help="ONNX embedder made by reid export from a reid train run")
    p.add_argument("--out", required=True, help="the best.pt to write")
    p.add_argument("--photos", required=True, help="photos (split file or folder) to recalibrate batch norms on")
    _root_option(p)
    p.add_argument("--count", type=int, default=256, help="photos used, spread evenly over --photos")
    p.set_defaults(func=cmd_checkpoint_from_onnx)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed images with an ONNX model into a .npy file")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--list", help="file with one image path per line (text after a comma is ignored)")
    p.add_argument("--root", help="folder that relative paths start from")
    p.add_argument("--model", help="ONNX embedder (default: the shipped model)")
    p.add_argument("--out", required=True, help="output .npy (float32, unit rows, input order)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="embed the readable images and list the others (exit status 1 when any was skipped)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_embed)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="retrieval and verification metrics of ONNX models")
    p.add_argument("--model", action="append", help="ONNX embedder; repeat to compare (default: the shipped model)")
    _root_option(p)
    p.add_argument("--gallery", required=True, help="split file or folder: the references")
    p.add_argument("--queries", required=True, help="split file or folder: the queries")
    p.add_argument(
        "--iconic",
        metavar="PATH",
        help="also use catalog photos as the gallery: a dataset root with classes.csv or a folder of <sku>.jpg",
    )
    p.add_argument("--json", help="write the reports as JSON here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to calibrated ONNX (and int8)")
    p.add_argument("checkpoint", nargs="?", help="best.pt from reid train")
    p.add_argument(
        "--imagenet-only", action="store_true", help="export the ImageNet backbone's pooled features (a baseline)"
    )
    p.add_argument(
        "--backbone",
        default="tf_efficientnet_lite0",
        help="with --imagenet-only: the timm backbone (tf_efficientnet_lite0/1/2 have packaged weights)",
    )
    p.add_argument(
        "--size",
        type=int,
        help="input size in pixels (default: the training size; 224 for --imagenet-only). Random-resized-crop "
        "training makes objects look larger than at test time, so a somewhat larger test size often helps",
    )
    p.add_argument("--out", required=True, help="output .onnx")
    _photo_sets(
        p,
        gallery="references for calibration (e.g. train.txt)",
        calib="validation queries for parity and calibration (e.g. val.txt)",
    )
    p.add_argument("--no-flip", action="store_true", help="do not bake test-time flip averaging into the graph")
    _int8_options(p, also_write=True)
    _calibration_options(p)
    p.set_defaults(func=cmd_export)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="refit an ONNX embedder's calibration on your own references and queries (in place)"
    )
    p.add_argument(
        "model", help="the .onnx file to recalibrate (rewritten whole; galleries bound to it must be rebuilt)"
    )
    _photo_sets(
        p,
        gallery="split file or folder-per-SKU tree: the references",
        calib="split file or folder-per-SKU tree: queries of the same SKUs, not in --gallery",
    )
    _calibration_options(p)
    p.set_defaults(func=cmd_calibrate)


# --- options several commands share -------------------------------------------------------------


def _root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="folder that relative paths in split files start from")


def _photo_sets(p: argparse.ArgumentParser, *, gallery: str, calib: str) -> None:
    """--root, --gallery (references) and --calib (queries of the same SKUs): what a calibration is fitted on."""
    _root_option(p)
    p.add_argument("--gallery", required=True, help=gallery)
    p.add_argument("--calib", required=True, help=calib)


def _int8_options(p: argparse.ArgumentParser, *, also_write: bool) -> None:
    """How many references set the int8 ranges, after --int8 OUT where the int8 model is a second output."""
    if also_write:
        p.add_argument("--int8", metavar="OUT", help="also write a statically quantised int8 model here")
    p.add_argument("--int8-images", type=int, default=200, help="reference photos that calibrate int8 ranges")


def _calibration_options(p: argparse.ArgumentParser) -> None:
    """The last options of every command that calibrates the model it writes."""
    _scoring_option(p)
    p.add_argument("--quiet", action="store_true")


def _scoring_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scoring",
        choices=SCORINGS,
        default="centroid",
        help="how galleries score a SKU by default: the normalised mean of its references (centroid, the default: "
        "0.82 Recall@1 on grocery val against 0.78 with the shipped model) or its nearest reference; "
        "both are calibrated",
    )


def _loss_options(p: argparse.ArgumentParser, *, default: str) -> None:
    p.add_argument("--loss", default=default, choices=["triplet", "contrastive", "multi-similarity", "arcface"])
    p.add_argument(
        "--miner", default="semihard", choices=["all", "hard", "semihard", "easy"], help="triplet miner type"
    )
    p.add_argument("--margin", type=float, default=0.2, help="triplet loss and miner margin")


def _batch_options(p: argparse.ArgumentParser) -> None:
    """P x K batches: P SKUs, K photos of each."""
    p.add_argument("--skus-per-batch", type=int, default=16, help="P")
    p.add_argument("--per-sku", type=int, default=4, help="K")


def _fold_options(p: argparse.ArgumentParser, *, fold: str) -> None:
    p.add_argument("--fold", type=int, help=fold)
    p.add_argument(
        "--folds", default=str(FOLDS_FILE), help="folds file for --fold (default: the project's, inside the package)"
    )


def _seed_and_threads(p: argparse.ArgumentParser, threads: str = "torch CPU threads (0: torch's default)") -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help=threads)
