"""The learning loop (docs/console.md, "Lane references"): does a gallery taught by the lanes'
confident crops recognise later lanes better?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learning_loop.py [--data DATASET]
        [--teach 3] [--test 3] [--passes 40] [--difficulty hard] [--min-confidence 0.95]
        [--sample-confidence 0.9] [--max-per-product 5] [--policy confident|till] [--margin 0.05]
        [--min-passes 3] [--min-days 1] [--review] [--model M] [--config lane.toml] [--work DIR]

A shift on simulated lanes (`reid simulate --difficulty hard` by default) against a gallery built
from the dataset's train photos. The val photos are split per product into two disjoint halves, so
a later lane never shows the very photo an earlier lane taught: the first `--teach` lanes (seeds
700 and up) are made from one half and replayed with a lane-reference sampler; their crops are
accepted by the automatic mode's rules (`reid gallery accept-lane-references`; with --policy till
the sampler keeps what the till labelled and the consensus rule decides) into a copy of the
gallery; the `--test` lanes (seeds 800 and up, the other half) are then replayed against the
gallery before and after. With --review, an analyst also dismisses the teach lanes' false switch
alerts as "wrong product recognised" and gives their crops to the product really there (the
console's path for such alerts).

Prints, before and after: Recall@1 of lane crops (each test pass's crops, embedded and averaged as
the lane does, matched against the gallery; right when the top SKU is the item's true SKU), and
precision and recall of the switch and non-scan alerts.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

from retail_reid.gallery import Gallery
from retail_reid.gallery.lane_suggestions import Consensus, LabelPolicy, choose_accepted, lane_source, suggestions
from retail_reid.gallery.photos import RefOrigin
from retail_reid.gallery.store import GalleryStore
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.config import LaneConfig, LaneReferenceConfig, load_config
from retail_reid.pipeline.harness.bench_lanes import add_data_argument, build_gallery, folder_view
from retail_reid.pipeline.harness.score import read_events, read_truth, score
from retail_reid.pipeline.harness.simulate import Difficulty, SimConfig, Truth, read_coarse_classes, simulate
from retail_reid.pipeline.lane_references import LaneReferenceSampler
from retail_reid.pipeline.recognition import aggregate
from retail_reid.pipeline.records import PassRecord, Verdict
from retail_reid.pipeline.replay import replay
from retail_reid.pipeline.types import ItemPass, Zone

TEACH_SEED, TEST_SEED = 700, 800
KINDS = ("product_switch", "non_scan")


def split_view(val: Path, dest: Path) -> tuple[Path, Path]:
    """Two folder-per-SKU views of the val photos, every other photo of each SKU in each."""
    halves = (dest / "val-teach", dest / "val-test")
    for sku_dir in sorted(p for p in val.iterdir() if p.is_dir()):
        for i, photo in enumerate(sorted(sku_dir.iterdir())):
            link = halves[i % 2] / sku_dir.name / photo.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(photo.resolve())
    return halves


def make_lane(images: Path, out: Path, seed: int, a: argparse.Namespace, coarse: dict) -> Truth:
    if not (out / "truth.json").exists():
        cfg = SimConfig.preset(a.difficulty, passes=a.passes, transactions=max(1, a.passes // 10), seed=seed)
        simulate(folder_set(images), out, cfg, coarse=coarse)
    return read_truth(out / "truth.json")


def true_sku(truth: Truth, item: ItemPass) -> str | None:
    """The SKU of the simulated pass that overlaps the lane's pass most (the simulator's clock is the POS clock)."""
    best, overlap = None, 0.0
    for p in truth.passes:
        o = min(p.t_end, item.t_end) - max(p.t_start, item.t_start)
        if o > overlap:
            best, overlap = p.sku, o
    return best


class Tally:
    def __init__(self) -> None:
        self.kinds = {k: [0, 0, 0] for k in KINDS}  # truth, alerts, matched
        self.right = 0
        self.crops = 0

    def row(self) -> dict[str, str]:
        cells = {"Recall@1 of lane crops": _cell(self.right, self.crops)}
        for k in KINDS:
            truth, alerts, matched = self.kinds[k]
            cells[f"{k} recall"] = _cell(matched, truth)
            cells[f"{k} precision"] = _cell(matched, alerts)
        return cells


def _cell(n: int, d: int) -> str:
    return f"{n / d:.3f} ({n}/{d})" if d else f"- (0/{d})"


def run(
    lanes: list[tuple[Path, Truth]],
    gallery: Gallery,
    config: LaneConfig,
    runs: Path,
    references: LaneReferenceSampler | None = None,
    dismissed: list[tuple[str, ItemPass]] | None = None,
) -> Tally:
    """Replay lanes against a gallery; score alerts and the top-1 SKU of every pass's crops. With
    `dismissed`, collect the false switch alerts an analyst would dismiss as "wrong product
    recognised", with the SKU really there (the one scanned)."""
    tally = Tally()
    items: list[tuple[ItemPass, PassRecord]] = []  # the lane's decided passes, emptied after each lane

    def hook(item: ItemPass, record: PassRecord) -> None:
        items.append((item, record))
        if references is not None:
            references(item, record)

    for scen, truth in lanes:
        out = runs / scen.name
        if references is not None:
            references.lane = scen.name  # each crop says which lane it came from
        cfg = dataclasses.replace(config, zone=Zone(*truth.zone))
        labels = None if references is None else references.labels
        replay(
            scen / truth.video, scen / "pos.jsonl", gallery, out, cfg, overwrite=True, references=hook, labels=labels
        )
        result = score(truth, read_events(out / "events.jsonl"), 1.0)
        for t in result.types:
            if t.type in tally.kinds:
                for i, n in enumerate((t.truth, t.alerts, t.matched)):
                    tally.kinds[t.type][i] += n
        for item, record in items:
            sku = true_sku(truth, item)
            if sku is None or not item.crops:
                continue
            if dismissed is not None and record.verdict is Verdict.PRODUCT_SWITCH and sku == record.scanned_sku:
                dismissed.append((sku, item))
            vec = aggregate(gallery.embedder.embed([c.image for c in item.crops]))
            top = gallery.match(vec[None], k=1)[0]
            tally.crops += 1
            tally.right += bool(top) and top[0].sku == sku
        print(f"  {scen.name}: {len(items)} passes decided", flush=True)
        items.clear()
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(ap)
    ap.add_argument("--teach", type=int, default=3, help="lanes whose crops teach the gallery")
    ap.add_argument("--test", type=int, default=3, help="later lanes scored before and after")
    ap.add_argument("--passes", type=int, default=40, help="item passes per lane")
    ap.add_argument("--difficulty", type=Difficulty, default=Difficulty.HARD)
    ap.add_argument(
        "--sample-confidence", type=float, default=0.9, help="the sampler's min_confidence ([lane_references])"
    )
    ap.add_argument("--min-confidence", type=float, default=0.95, help="the automatic mode's rule")
    ap.add_argument("--max-per-product", type=int, default=5, help="the automatic mode's rule")
    ap.add_argument("--policy", type=LabelPolicy, default=LabelPolicy.CONFIDENT, help="the sampler's policy")
    ap.add_argument("--margin", type=float, default=Consensus().margin, help="the consensus rule (till candidates)")
    ap.add_argument("--min-passes", type=int, default=Consensus().min_passes, help="the consensus rule")
    ap.add_argument("--min-days", type=int, default=Consensus().min_days, help="the consensus rule")
    ap.add_argument(
        "--review",
        action="store_true",
        help="also an analyst who dismisses the teach lanes' false switch alerts as wrong product and adds "
        "their crops to the product really there",
    )
    ap.add_argument("--model", help="embedder (default: the shipped model)")
    ap.add_argument("--config", help="lane config TOML")
    ap.add_argument("--work", help="keep views, galleries, lanes and runs here (default: a temporary folder)")
    a = ap.parse_args()
    if not (1 <= a.teach < 100 and 1 <= a.test < 100):
        ap.error("--teach and --test must be 1-99 (the seeds of the two lane sets must not meet)")
    started = time.perf_counter()
    data = Path(a.data)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_learning_loop_"))
    work.mkdir(parents=True, exist_ok=True)
    train = folder_view(data / "train.txt", data, work / "train")
    teach_photos, test_photos = split_view(folder_view(data / "val.txt", data, work / "val"), work)
    base = build_gallery(work, train, a.model)
    config = load_config(a.config)
    coarse = read_coarse_classes(data / "classes.csv")
    kind = a.difficulty.value
    teach_dirs = [work / f"teach-{kind}{TEACH_SEED + i}-{a.passes}p" for i in range(a.teach)]
    teach = [make_lane(teach_photos, d, TEACH_SEED + i, a, coarse) for i, d in enumerate(teach_dirs)]
    test_dirs = [work / f"test-{kind}{TEST_SEED + i}-{a.passes}p" for i in range(a.test)]
    test = [make_lane(test_photos, d, TEST_SEED + i, a, coarse) for i, d in enumerate(test_dirs)]

    print("before: the test lanes against the gallery of train photos", flush=True)
    before = run(
        list(zip(test_dirs, test, strict=True)), Gallery.open(base, model=a.model), config, work / "runs-before"
    )

    refs = work / "lane-references"
    shutil.rmtree(refs, ignore_errors=True)
    gallery = Gallery.open(base, model=a.model)
    rules = LaneReferenceConfig(min_confidence=a.sample_confidence, per_product=20, min_gap_s=0, policy=a.policy)
    sampler = LaneReferenceSampler(refs, rules, lambda s: float(gallery.calibration.confidence(s)), "teach")
    print("teach: the first lanes, sampling lane references", flush=True)
    dismissed: list[tuple[str, ItemPass]] | None = [] if a.review else None
    run(list(zip(teach_dirs, teach, strict=True)), gallery, config, work / "runs-teach", sampler, dismissed)

    taught = work / "gallery-taught"
    shutil.rmtree(taught, ignore_errors=True)
    shutil.copytree(base, taught)
    with GalleryStore.open(taught) as store:
        chosen = choose_accepted(
            suggestions([refs]),
            store,
            min_confidence=a.min_confidence,
            max_per_product=a.max_per_product,
            rules=Consensus(margin=a.margin, min_passes=a.min_passes, min_days=a.min_days),
            model=a.model,
        )
        wrong = _wrong_references(chosen, teach_dirs, teach)
        if chosen:
            result = store.add_photos(
                [(s.sku, s.path) for s in chosen],
                {},
                action="accept-lane-references",
                operator="bench",
                skip_bad=True,
                model=a.model,
                origin=RefOrigin.LANE,
                sources={s.path: lane_source(s) for s in chosen},
            )
            print(f"taught: version {result.version}: {result.summary}")
        if dismissed:
            result = store.add_photos(
                _crop_files(dismissed, work / "dismissed"),
                {},
                action="accept-lane-references",
                operator="bench-reviewer",
                skip_bad=True,
                model=a.model,
                origin=RefOrigin.LANE,
            )
            print(f"reviewed: {len(dismissed)} false switch alerts dismissed as wrong product; {result.summary}")
    print(
        f"lane references: {sampler.kept} kept from {a.teach} lanes, {len(chosen)} accepted "
        f"(min confidence {a.min_confidence}, at most {a.max_per_product} per product); "
        f"{wrong} of the accepted show another product than their SKU",
        flush=True,
    )

    print("after: the test lanes against the taught gallery", flush=True)
    after = run(
        list(zip(test_dirs, test, strict=True)), Gallery.open(taught, model=a.model), config, work / "runs-after"
    )

    rows_before, rows_after = before.row(), after.row()
    print(f"\n{'':30s}{'before':>22s}{'after':>22s}")
    for label in rows_before:
        print(f"{label:30s}{rows_before[label]:>22s}{rows_after[label]:>22s}")
    print(
        f"\n{a.teach} teach + {a.test} test {kind} lanes of {a.passes} passes; "
        f"{time.perf_counter() - started:.0f} s; work folder: {work}"
    )
    return 0


def _crop_files(passes: list[tuple[str, ItemPass]], folder: Path) -> list[tuple[str, Path]]:
    """The passes' crops as JPEG files, as the lane's evidence would hold them."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = []
    for i, (sku, item) in enumerate(passes):
        for j, crop in enumerate(item.crops):
            path = folder / f"pass{i:04d}_{j}.jpg"
            cv2.imwrite(str(path), crop.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            files.append((sku, path))
    return files


def _wrong_references(chosen: list, dirs: list[Path], truths: list[Truth]) -> int:
    """Accepted crops whose pass was really another product (a switch the lane judged ok): poison."""
    by_lane = dict(zip((d.name for d in dirs), truths, strict=True))
    wrong = 0
    for s in chosen:
        truth = by_lane.get(s.crop.lane)
        if truth is None:
            continue
        t = s.crop.ts
        actual = [p.sku for p in truth.passes if p.t_start - 1.0 <= t <= p.t_end + 1.0]
        wrong += bool(actual) and s.sku not in actual
    return wrong


if __name__ == "__main__":
    sys.exit(main())
