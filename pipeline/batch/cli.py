"""`reid replay-batch`: replay a chain's recordings on Ray workers (see docs/batch.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retail_reid.errors import ReidError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay-batch",
        help="replay many recordings (a manifest) on Ray workers, with a chain summary",
        description="Replay every recording a manifest lists, as `reid replay` would, on Ray workers (this "
        "machine by default); OUT/recordings/ID holds each recording's outputs, OUT/summary.json and "
        "OUT/index.html the chain summary. A rerun skips recordings already complete (see docs/batch.md).",
    )
    p.add_argument("manifest", help="recordings, CSV with a header row or JSON lines (.jsonl); see docs/batch.md")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--gallery", help="gallery folder every worker can read")
    g.add_argument("--gallery-bundle", help="gallery bundle (reid gallery export) each worker imports once")
    p.add_argument("--out", required=True, help="folder for the results (created; reruns reuse what is complete)")
    p.add_argument("--model", help="embedder model file (default: the gallery's own; for a bundle the shipped one)")
    p.add_argument("--workers", type=int, help="Ray workers (default: one per CPU Ray offers)")
    p.add_argument("--threads", type=int, default=1, help="inference threads per worker, and Ray CPUs it takes")
    p.add_argument(
        "--chunk-minutes",
        type=float,
        default=0.0,
        help="split recordings longer than 1.5 times this into chunks this long, replayed side by side "
        "(default 0: never; chunked outputs make the same decisions, not byte-identical scores: docs/batch.md)",
    )
    p.add_argument(
        "--chunk-overlap-s",
        type=float,
        default=120.0,
        help="seconds each chunk replays before and after its own (motion detector memory, passes, scan windows)",
    )
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: this machine")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from retail_reid.pipeline.batch.manifest import read_manifest
    from retail_reid.pipeline.batch.worker import GallerySpec

    try:
        from retail_reid.pipeline.batch.runner import BatchError, BatchOptions, run_batch
    except ImportError as e:  # matplotlib, which draws the summary page's charts (Ray is checked when it runs)
        raise ReidError(f"reid replay-batch needs the [ray] extra: pip install 'retail-reid[ray]' ({e})") from None

    for name in ("workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BatchError(f"--{name} must be at least 1, got {value}")
    if not args.chunk_minutes >= 0:
        raise BatchError(f"--chunk-minutes must be 0 (never split) or more, got {args.chunk_minutes}")
    if not args.chunk_overlap_s > 0:
        raise BatchError(f"--chunk-overlap-s must be more than 0, got {args.chunk_overlap_s}")
    recordings = read_manifest(args.manifest)
    spec = GallerySpec(
        path=Path(args.gallery) if args.gallery else None,
        bundle=Path(args.gallery_bundle) if args.gallery_bundle else None,
        model=Path(args.model) if args.model else None,
    )
    options = BatchOptions(
        workers=args.workers,
        address=args.address,
        threads=args.threads,
        chunk_s=60.0 * args.chunk_minutes,
        overlap_s=args.chunk_overlap_s,
        progress=True,
    )
    summary = run_batch(recordings, spec, args.out, options)
    counts = summary["recordings"]
    totals = summary["totals"]
    print(
        f"{len(recordings)} recordings: {counts['done']} replayed, {counts['reused']} already complete, "
        f"{counts['failed']} failed; {totals['lane_hours']} lane-hours, {totals['transactions']} transactions, "
        f"{totals['alerts']} alerts"
    )
    for f in summary["failed"]:
        print(f"failed: {f['id']}: {f['error']}")
    print(f"wrote {Path(args.out) / 'summary.json'}, index.html and recordings/ID/")
    return 2 if summary["failed"] else 0
