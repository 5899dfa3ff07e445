"""The learning loop (docs/console.md, "Lane references"; docs/gallery.md): does a gallery taught
by the lanes recognise later lanes better, and how much poison does it take in?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learning_loop.py [--data DATASET]
        [--teach 20] [--dev 6] [--test 10] [--passes 50] [--difficulty hard] [--lane-camera hard]
        [--teach-switch-rate 0.05] [--policy till|confident] [--per-pass 3] [--min-confidence 0.95]
        [--sample-confidence 0.9] [--max-per-product 10] [--margin 0.05] [--min-passes 3]
        [--min-days 1] [--review] [--model M] [--config lane.toml] [--work DIR]

A shift on simulated lanes (`reid simulate --difficulty hard` by default, with till cases: quantity
scans, voids, double scans, keyed produce) against galleries built from the dataset's train photos:
the catalogue alone, and the catalogue with lane-camera renderings of each photo (`reid gallery
lane-camera --level hard`). The val photos are split per product into two disjoint halves, so a
benchmark lane never shows a photo a teaching lane showed:

- teach: `--teach` lanes (seeds 700 and up, the first half, `--teach-switch-rate` of the passes
  switched) are replayed against the rendered gallery with a lane-reference sampler (`--policy`);
  the automatic mode's rules (`reid gallery accept-lane-references`; till candidates by consensus)
  accept crops into a copy of it, the taught gallery. Accepted crops whose pass was really another
  product are counted: the poisoning rate.
- dev: `--dev` development lanes (seeds 900 and up, the first half's photos, so not independent of
  the teaching) are replayed against the taught gallery under each way lane references count in
  matching (gallery/matching.py LaneMatching): the rule is chosen here.
- test: `--test` benchmark lanes (seeds 800 and up, the other half) are replayed against each
  gallery, never used to choose anything.

With --review, an analyst also dismisses the teach lanes' false switch alerts as "wrong product
recognised" and gives their crops to the product really there (the console's path for such alerts).

Prints per gallery: Recall@1 of lane crops (each pass's crops, embedded and averaged as the lane
does, matched against the gallery; right when the top SKU is the item's true SKU), precision and
recall of the switch and non-scan alerts, and false loss alerts per 100 normal item passes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

from retail_reid.gallery import Gallery
from retail_reid.gallery.lane_suggestions import (
    Consensus,
    LabelPolicy,
    candidate_vectors,
    choose_accepted,
    choose_consensus,
    lane_source,
    suggestions,
)
from retail_reid.gallery.matching import LaneMatching
from retail_reid.gallery.photos import RefOrigin
from retail_reid.gallery.store import GalleryStore
from retail_reid.models.datasets import folder_set
from retail_reid.models.views import LaneLevel
from retail_reid.pipeline.config import LaneConfig, LaneReferenceConfig, load_config
from retail_reid.pipeline.events import TillLabel
from retail_reid.pipeline.harness.bench_lanes import add_data_argument, build_gallery, folder_view
from retail_reid.pipeline.harness.score import StoreRates, read_events, read_truth, score
from retail_reid.pipeline.harness.simulate import Difficulty, SimConfig, Truth, read_coarse_classes, simulate
from retail_reid.pipeline.harness.simulate_pos import TillRates
from retail_reid.pipeline.lane_references import LaneReferenceSampler
from retail_reid.pipeline.recognition import aggregate
from retail_reid.pipeline.records import PassRecord, Verdict
from retail_reid.pipeline.replay import replay
from retail_reid.pipeline.types import ItemPass, Zone

TEACH_SEED, TEST_SEED, DEV_SEED = 700, 800, 900
KINDS = ("product_switch", "non_scan")
# What the teach lanes' sampled crops depend on: a later run with the same keeps them (--work)
TEACH_SETTINGS = (
    "data",
    "teach",
    "passes",
    "difficulty",
    "lane_camera",
    "teach_switch_rate",
    "sample_confidence",
    "per_pass",
    "per_product",
    "min_sharpness",
    "policy",
    "model",
    "config",
)
# What the till does besides one scan per item on every lane here (docs/scenarios.md), as shares of passes
TILL = TillRates(quantity=0.05, void=0.03, void_kept=0.01, double_scan=0.02, keyed=0.02, keyed_switch=0.01)


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


def make_lane(images: Path, out: Path, seed: int, a: argparse.Namespace, coarse: dict, **overrides: float) -> Truth:
    if not (out / "truth.json").exists():
        cfg = SimConfig.preset(
            a.difficulty, passes=a.passes, transactions=max(1, a.passes // 10), seed=seed, till=TILL, **overrides
        )
        simulate(folder_set(images), out, cfg, coarse=coarse)
    return read_truth(out / "truth.json")


def make_lanes(
    images: Path, work: Path, name: str, seed: int, n: int, a: argparse.Namespace, coarse: dict, **overrides: float
) -> list[tuple[Path, Truth]]:
    """`n` lanes from seed `seed` on, made once and kept in `work` under names that say what they are."""
    tag = "".join(f"-{k.split('_')[0]}{v:g}" for k, v in overrides.items())
    dirs = [work / f"{name}-{a.difficulty.value}{seed + i}-{a.passes}p-till{tag}" for i in range(n)]
    return [(d, make_lane(images, d, seed + i, a, coarse, **overrides)) for i, d in enumerate(dirs)]


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
        self.rates = StoreRates()
        self.labelled = 0  # passes the till labelled (the till policy's sampler)
        self.kept = 0  # of those, passes with a crop kept

    def row(self) -> dict[str, str]:
        cells = {"Recall@1 of lane crops": _cell(self.right, self.crops)}
        for k in KINDS:
            truth, alerts, matched = self.kinds[k]
            cells[f"{k} recall"] = _cell(matched, truth)
            cells[f"{k} precision"] = _cell(matched, alerts)
        per_100 = self.rates.false_per_100_passes
        cells["false loss alerts / 100 normal"] = (
            f"{per_100:.2f} ({self.rates.false_loss_alerts}/{self.rates.normal_passes})" if per_100 is not None else "-"
        )
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

    labels = None if references is None else references.labels

    def count_labels(label: TillLabel) -> int:
        assert labels is not None
        kept = labels(label)
        tally.labelled += 1
        tally.kept += kept > 0
        return kept

    counted = None if labels is None else count_labels
    for scen, truth in lanes:
        out = runs / scen.name
        if references is not None:
            references.lane = scen.name  # each crop says which lane it came from
        cfg = dataclasses.replace(config, zone=Zone(*truth.zone))
        replay(
            scen / truth.video,
            scen / "pos.jsonl",
            gallery,
            out,
            cfg,
            overwrite=True,
            references=hook,
            labels=counted,
        )
        result = score(truth, read_events(out / "events.jsonl"), 1.0)
        tally.rates += result.rates
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
    ap.add_argument("--teach", type=int, default=20, help="lanes whose crops teach the gallery")
    ap.add_argument("--dev", type=int, default=6, help="development lanes that choose the matching rule")
    ap.add_argument("--test", type=int, default=10, help="benchmark lanes scored with each gallery")
    ap.add_argument("--passes", type=int, default=50, help="item passes per lane")
    ap.add_argument("--difficulty", type=Difficulty, default=Difficulty.HARD)
    ap.add_argument(
        "--lane-camera", type=LaneLevel, default=LaneLevel.HARD, help="the rendered gallery's declared lane camera"
    )
    ap.add_argument("--teach-switch-rate", type=float, default=0.05, help="share of the teach lanes' passes switched")
    ap.add_argument(
        "--sample-confidence", type=float, default=0.9, help="the sampler's min_confidence ([lane_references])"
    )
    ap.add_argument("--per-pass", type=int, default=3, help="the sampler's per_pass ([lane_references])")
    ap.add_argument("--per-product", type=int, default=40, help="the sampler's per_product ([lane_references])")
    ap.add_argument(
        "--min-sharpness",
        type=float,
        default=LaneReferenceConfig().min_sharpness,
        help="the sampler's min_sharpness ([lane_references])",
    )
    ap.add_argument("--min-confidence", type=float, default=0.95, help="the automatic mode's rule")
    ap.add_argument("--max-per-product", type=int, default=10, help="the automatic mode's rule")
    ap.add_argument("--policy", type=LabelPolicy, default=LabelPolicy.TILL, help="the sampler's policy")
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
    if not (1 <= a.teach < 100 and 0 <= a.dev < 100 and 1 <= a.test < 100):
        ap.error("--teach and --test must be 1-99 and --dev 0-99 (the seeds of the lane sets must not meet)")
    started = time.perf_counter()
    data = Path(a.data)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_learning_loop_"))
    work.mkdir(parents=True, exist_ok=True)
    train = folder_view(data / "train.txt", data, work / "train")
    teach_photos, test_photos = split_view(folder_view(data / "val.txt", data, work / "val"), work)
    catalogue = build_gallery(work, train, a.model)
    rendered = build_gallery(work, train, a.model, a.lane_camera.value)
    config = load_config(a.config)
    coarse = read_coarse_classes(data / "classes.csv")
    teach = make_lanes(teach_photos, work, "teach", TEACH_SEED, a.teach, a, coarse, switch_rate=a.teach_switch_rate)
    dev = make_lanes(teach_photos, work, "dev", DEV_SEED, a.dev, a, coarse)
    test = make_lanes(test_photos, work, "test", TEST_SEED, a.test, a, coarse)

    refs = work / "lane-references"
    dismissed: list[tuple[str, ItemPass]] | None = [] if a.review else None
    sampling = {k: str(getattr(a, k)) for k in TEACH_SETTINGS}
    stamp = refs / "teach.json"
    if not a.review and stamp.exists() and json.loads(stamp.read_text()) == sampling:
        print(f"teach: the lane references sampled earlier from the same {a.teach} lanes are kept ({refs})")
    else:
        shutil.rmtree(refs, ignore_errors=True)
        gallery = Gallery.open(rendered, model=a.model)
        rules = LaneReferenceConfig(
            min_confidence=a.sample_confidence,
            per_product=a.per_product,
            per_pass=a.per_pass,
            min_sharpness=a.min_sharpness,
            min_gap_s=0,
            policy=a.policy,
        )
        sampler = LaneReferenceSampler(refs, rules, lambda s: float(gallery.calibration.confidence(s)), "teach")
        print(f"teach: {a.teach} lanes against the rendered gallery, sampling lane references", flush=True)
        taught_by = run(teach, gallery, config, work / "runs-teach", sampler, dismissed)
        if a.policy is LabelPolicy.TILL:
            print(f"teach: the till labelled {taught_by.labelled} passes, {taught_by.kept} of them gave a usable crop")
        stamp.write_text(json.dumps(sampling))
    taught = teach_gallery(rendered, work / "gallery-taught", refs, teach, dismissed, a)

    galleries = {"catalogue": (catalogue, LaneMatching.APART), "rendered": (rendered, LaneMatching.APART)}
    galleries |= {f"taught, lane refs {m}": (taught, m) for m in LaneMatching}
    if dev:
        print("dev: the development lanes against the taught gallery, lane references in matching each way")
        rows = {m.value: run(dev, open_as(taught, m, a), config, work / f"runs-dev-{m}").row() for m in LaneMatching}
        table(f"{a.dev} development lanes, taught gallery", rows)
    print("test: the benchmark lanes against each gallery", flush=True)
    rows = {
        name: run(test, open_as(root, m, a), config, work / f"runs-test-{i}").row()
        for i, (name, (root, m)) in enumerate(galleries.items())
    }
    table(f"{a.test} benchmark lanes", rows)
    print(
        f"\n{a.teach} teach + {a.dev} dev + {a.test} test {a.difficulty.value} lanes of {a.passes} passes; "
        f"{time.perf_counter() - started:.0f} s; work folder: {work}"
    )
    return 0


def open_as(root: Path, lane_matching: LaneMatching, a: argparse.Namespace) -> Gallery:
    return Gallery.open(root, model=a.model, lane_matching=lane_matching)


def teach_gallery(
    base: Path,
    taught: Path,
    refs: Path,
    teach: list[tuple[Path, Truth]],
    dismissed: list[tuple[str, ItemPass]] | None,
    a: argparse.Namespace,
) -> Path:
    """A copy of `base` with what the automatic mode accepts from `refs` (and an analyst's reviews)."""
    shutil.rmtree(taught, ignore_errors=True)
    shutil.copytree(base, taught)
    found = suggestions([refs])
    with GalleryStore.open(taught) as store:
        consensus_sweep(found, store, teach, a)
        chosen = choose_accepted(
            found,
            store,
            min_confidence=a.min_confidence,
            max_per_product=a.max_per_product,
            rules=Consensus(margin=a.margin, min_passes=a.min_passes, min_days=a.min_days),
            model=a.model,
        )
        wrong = _wrong_references(chosen, teach)
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
                _crop_files(dismissed, taught.parent / "dismissed"),
                {},
                action="accept-lane-references",
                operator="bench-reviewer",
                skip_bad=True,
                model=a.model,
                origin=RefOrigin.LANE,
            )
            print(f"reviewed: {len(dismissed)} false switch alerts dismissed as wrong product; {result.summary}")
    offered = sum(len(v) for v in found.values())
    poison = f"{wrong / len(chosen):.3f}" if chosen else "-"
    print(
        f"lane references: {offered} crops kept ({a.policy} policy) from {a.teach} lanes, {len(chosen)} accepted for "
        f"{len({s.sku for s in chosen})} products (min confidence {a.min_confidence}, at most {a.max_per_product} per "
        f"product, consensus margin {a.margin}, {a.min_passes} passes); {wrong} of the accepted show another "
        f"product than their SKU (poisoning rate {poison})",
        flush=True,
    )
    return taught


def consensus_sweep(found: dict, store: GalleryStore, teach: list[tuple[Path, Truth]], a: argparse.Namespace) -> None:
    """How many till candidates the consensus would accept, and how many of them are poison, at
    several settings: the teach lanes' own figures, where --margin and --min-passes are chosen."""
    vectors = candidate_vectors(found, store.embedder(model=a.model))
    refs = store.reference_vectors()
    print("consensus on the teach lanes' till candidates (accepted, products, another product's):")
    for min_passes in (2, 3, 5):
        cells = []
        for margin in (0.0, 0.02, 0.05, 0.1):
            chosen = choose_consensus(
                found,
                vectors=vectors,
                refs=refs,
                rules=Consensus(margin=margin, min_passes=min_passes, min_days=a.min_days),
                max_per_product=a.max_per_product,
                lane_refs={},
                known=set(),
            )
            cells.append(
                f"margin {margin:g}: {len(chosen)}, {len({c.sku for c in chosen})}, {_wrong_references(chosen, teach)}"
            )
        print(f"  min passes {min_passes}: " + "; ".join(cells))


def table(title: str, rows: dict[str, dict[str, str]]) -> None:
    names = list(rows)
    width = max(22, *(len(n) + 2 for n in names))
    print(f"\n{title}\n{'':32s}" + "".join(f"{n:>{width}s}" for n in names))
    for label in next(iter(rows.values())):
        print(f"{label:32s}" + "".join(f"{rows[n][label]:>{width}s}" for n in names))
    print(flush=True)


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


def _wrong_references(chosen: list, teach: list[tuple[Path, Truth]]) -> int:
    """Accepted crops whose pass was really another product (a switch the lane judged ok): poison."""
    by_lane = {d.name: truth for d, truth in teach}
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
