"""Choose how a pass's views are chosen and weighted by their quality, on the development lanes, offline.

    OMP_NUM_THREADS=1 REID_THREADS=1 .venv/bin/python benchmarks/tune_view_quality.py --data $GROCERY \
        --scenarios 4 --passes 40 --work /tmp/viewq [--keep 8] [--model M]

Replays the development lanes (easy seeds 10+, hard seeds 30+; never the benchmark's) once, keeping
`--keep` crops a pass (the best by the lane's quality score, `pipeline.view_quality`), and embeds
every kept crop once. Then, for each setting, it chooses a pass's views as the lane does (the best
`crops.per_track` by score, or more for the rows that show what more views would give), combines
them with the lane's own `Recogniser.combine` and judges the pass with `Recogniser.judge`, against the
simulator's truth. Per setting and camera: lane-crop Recall@1 (the true SKU first, over every pass
with an item), switch recall, false switch alerts per 100 normal scanned passes, and how often a
found switch names the seen SKU right. Settings: the weight power (0: a plain mean), and how views
are ranked: the quality score, the score without its hand factor, or the lane's ranking before the
quality score (with a plain mean: the lane as it was). The kept crops were chosen by the quality
score, so the other rankings choose within them, a close reach of what they would choose.

The rule the lane's ranking and `WEIGHT_POWER` were chosen by: the ranking that names the most
passes right (Recall@1) on both cameras' development passes together at the lane's number of views
(a plain mean), false switch alerts rising on neither camera against the quality score's; on a tie,
the quality score. Then the power that names the most passes right with that ranking summed over
the lane's views and the larger counts (at 2 views the two best views of a pass are alike and the
weights move nothing), false switch alerts rising at none of them; on a tie, the lower power.

It also reports the hand estimate per camera (easy: fingers at the item's edge; hard: a hand over up
to a third of it) and for skin-coloured products, with its spread between the views of one pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.gallery import Gallery
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.pipeline.crops import CUT_PENALTY, touches_edge
from retail_reid.pipeline.harness.bench_lanes import FIRST_SEED, Bench, parse_lane_arguments, prepare, simulated_lane
from retail_reid.pipeline.harness.offline_judging import (
    CachedVerify,
    Count,
    ScannedPass,
    collected_once,
    hash_config,
    judge_all,
    overlapping,
)
from retail_reid.pipeline.harness.simulate import Difficulty, Pass
from retail_reid.pipeline.recognition import MATCHES_KEPT, Recogniser, Recognition, Thresholds
from retail_reid.pipeline.records import PassRecord
from retail_reid.pipeline.replay import replay
from retail_reid.pipeline.types import Crop, ItemPass, Zone
from retail_reid.pipeline.view_quality import ViewQuality, sharpness, view_quality

POWERS = (0.0, 0.5, 1.0, 2.0, 4.0)
EXTRA_VIEWS = (4, 8)  # rows beyond crops.per_track: what more views a pass would give (the embedder's cost grows)
SKIN_COLOURED = {"Potato", "Peach", "Nectarine", "Onion", "Ginger", "Mango", "Papaya"}  # coarse classes


class Ranking(StrEnum):
    """How a pass's views are ranked (the best `crops.per_track` are kept)."""

    QUALITY = "quality score"  # size x sharpness x hand, the lane's
    NO_HAND = "size x sharpness"  # the quality score without its hand factor
    BEFORE = "before: sqrt(box area x (sharpness + 1))"  # the lane's ranking before the quality score


@dataclass(frozen=True)
class PassViews:
    """A decided pass with an item: what really passed, its scan, and every kept crop with its
    unit embedding, its quality and whether the zone's edge cut it."""

    lane: str
    truth: Pass
    scanned_sku: str | None  # as the lane assigned it
    crops: tuple[Crop, ...]
    vectors: np.ndarray
    quality: tuple[ViewQuality, ...]
    cut: tuple[bool, ...]

    def scores(self, kind: Ranking) -> np.ndarray:
        """Each crop's score as the lane's crop selection computes it (`Ranking.QUALITY`), without its
        hand factor, or as it did before the quality score."""
        if kind is Ranking.BEFORE:
            raw = [np.sqrt(box_area(c.box) * (sharpness(c.image) + 1.0)) for c in self.crops]
        else:
            raw = [q.score if kind is Ranking.QUALITY else q.size * q.sharpness for q in self.quality]
        return np.array([r * (CUT_PENALTY if c else 1.0) for r, c in zip(raw, self.cut, strict=True)])


def box_area(box: tuple[int, int, int, int]) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


class RememberingEmbedder:
    """The gallery's embedder, remembering each crop's embedding: the lane embeds every kept crop
    already, so collecting them costs no second pass through the model."""

    def __init__(self, embedder: OnnxEmbedder):
        self._embedder = embedder
        self._known: dict[bytes, np.ndarray] = {}

    @staticmethod
    def _key(image: np.ndarray) -> bytes:
        return hashlib.sha1(repr(image.shape).encode() + image.tobytes()).digest()

    def embed(self, images: Iterable[np.ndarray]) -> np.ndarray:
        images = list(images)
        keys = [self._key(i) for i in images]
        new = [(k, i) for k, i in zip(keys, images, strict=True) if k not in self._known]
        if new:
            self._known.update(zip([k for k, _ in new], self._embedder.embed([i for _, i in new]), strict=True))
        return np.stack([self._known[k] for k in keys]) if keys else self._embedder.embed([])

    def __getattr__(self, name: str) -> object:  # everything else is the embedder's
        return getattr(self._embedder, name)


class RememberingGallery:
    """The gallery, embedding through a `RememberingEmbedder`."""

    def __init__(self, gallery: Gallery):
        self._gallery = gallery
        self.embedder = RememberingEmbedder(gallery.embedder)

    def __getattr__(self, name: str) -> object:  # everything else is the gallery's
        return getattr(self._gallery, name)


def collect(difficulty: Difficulty, a: argparse.Namespace, bench: Bench) -> list[PassViews]:
    """Replay the development lanes of one difficulty keeping `--keep` crops a pass; every kept
    crop is embedded once, by the lane."""
    gallery = RememberingGallery(bench.gallery)
    config = dataclasses.replace(bench.config, crops=dataclasses.replace(bench.config.crops, per_track=a.keep))
    out: list[PassViews] = []
    first = FIRST_SEED[difficulty][1]
    for seed in range(first, first + a.scenarios):
        scen, truth = simulated_lane(bench, difficulty, seed, a.passes)
        zone = Zone(*truth.zone)
        kept: list[tuple[ItemPass, PassRecord]] = []
        replay(
            scen / truth.video,
            scen / "pos.jsonl",
            gallery,  # type: ignore[arg-type]
            bench.work / f"viewq-{difficulty}{seed}",
            dataclasses.replace(config, zone=zone),
            overwrite=True,
            references=lambda item, record, into=kept: into.append((item, record)),
        )
        for item, rec in kept:
            truth_pass = overlapping(truth.passes, rec.t_start, rec.t_end)
            if truth_pass is None or not item.crops:
                continue
            out.append(
                PassViews(
                    lane=f"{difficulty}{seed}",
                    truth=truth_pass,
                    scanned_sku=rec.scanned_sku,
                    crops=item.crops,
                    vectors=gallery.embedder.embed([c.image for c in item.crops]),
                    quality=tuple(view_quality(c.image) for c in item.crops),
                    cut=tuple(touches_edge(np.array(c.box, np.float32), zone) for c in item.crops),
                )
            )
        print(f"{difficulty} lane seed {seed}: {len(out)} passes with an item so far", flush=True)
    return out


@dataclass
class Tally:
    named: int = 0
    passes: int = 0
    switch: Count = dataclasses.field(default_factory=Count)

    def row(self) -> str:
        return (
            f"Recall@1 {self.named / max(1, self.passes):.3f} ({self.named}/{self.passes})  switch {self.switch.row()}"
        )


def judge(passes: list[PassViews], recogniser: Recogniser, views: int, ranking: Ranking) -> Tally:
    """Each pass recognised from its best `views` crops by the setting's ranking, then judged."""
    chosen = []
    for p in passes:
        scores = p.scores(ranking)
        best = np.argsort(-scores, kind="stable")[:views]
        crops = [dataclasses.replace(p.crops[i], quality=float(scores[i])) for i in best]
        chosen.append(recogniser.combine(crops, p.vectors[best]))
    matches = recogniser.gallery.match(np.stack([e for e, _ in chosen]), k=MATCHES_KEPT)
    recognitions = [
        Recognition(embedding=embedding, matches=tuple(m), views=usable)
        for (embedding, usable), m in zip(chosen, matches, strict=True)
    ]
    scanned = [
        ScannedPass(p.lane, p.truth.t_start, p.scanned_sku, p.truth, rec)
        for p, rec in zip(passes, recognitions, strict=True)
        if p.scanned_sku is not None
    ]
    return Tally(
        named=sum(bool(m) and m[0].sku == p.truth.sku for p, m in zip(passes, matches, strict=True)),
        passes=len(passes),
        switch=judge_all(scanned, recogniser),
    )


def hand_report(lanes: dict[Difficulty, list[PassViews]], coarse: dict[str, str]) -> None:
    """The hand estimate per camera and for skin-coloured products: mean, and the spread between a pass's views."""
    print("\nhand estimate (share of the crop): mean over views; mean spread (max - min) within a pass")
    for d, passes in lanes.items():
        for label, group in (
            ("all products", passes),
            ("skin-coloured products", [p for p in passes if coarse.get(p.truth.sku) in SKIN_COLOURED]),
            ("other products", [p for p in passes if coarse.get(p.truth.sku) not in SKIN_COLOURED]),
        ):
            hands = [np.array([q.hand for q in p.quality]) for p in group]
            if hands:
                mean = float(np.mean(np.concatenate(hands)))
                spread = float(np.mean([h.max() - h.min() for h in hands]))
                print(f"  {d} {label:24s} {len(group):4d} passes  mean {mean:.3f}  spread within a pass {spread:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=int, default=8, help="crops kept a pass while collecting (1-32)")
    a = parse_lane_arguments(ap, scenarios=4, passes=40)
    if not 1 <= a.keep <= 32:
        ap.error("--keep must be 1-32")
    bench = prepare(a, "tune_view_quality_")
    gallery, config = bench.gallery, bench.config
    key = f"{gallery.embedder.fingerprint[:12]}-{a.scenarios}x{a.passes}-keep{a.keep}-{hash_config(config)}"
    cache = bench.work / f"pass-views-{key}.pickle"
    lanes = collected_once(cache, lambda: {d: collect(d, a, bench) for d in Difficulty})
    # The views' quality is measured again (cheap), so a changed score needs no new replays.
    lanes = {
        d: [dataclasses.replace(p, quality=tuple(view_quality(c.image) for c in p.crops)) for p in passes]
        for d, passes in lanes.items()
    }
    hand_report(lanes, bench.coarse)
    thresholds = Thresholds.resolve(config.events, gallery.calibration)
    cached = CachedVerify(gallery)
    per_track = config.crops.per_track
    results = {}
    settings = [(v, r, w) for v in (per_track, *EXTRA_VIEWS) for r in Ranking for w in POWERS]
    for views, ranking, power in settings:
        if ranking is Ranking.BEFORE and power > 0:
            continue  # its scores are not in [0, 1]: it ranked views, the pass took their plain mean
        r = Recogniser(cached, thresholds, weight_power=power)  # type: ignore[arg-type]
        results[views, ranking, power] = {d: judge(p, r, views, ranking) for d, p in lanes.items()}
        print(f"\nviews {views}, ranked by {ranking}, weight power {power}:")
        for d, t in results[views, ranking, power].items():
            print(f"  {d}: {t.row()}")

    def named(views: int, ranking: Ranking, power: float) -> int:
        return sum(t.named for t in results[views, ranking, power].values())

    def no_more_false(views: int, ranking: Ranking, power: float) -> bool:
        plain = results[views, Ranking.QUALITY, 0.0]
        return all(t.switch.false <= plain[d].switch.false for d, t in results[views, ranking, power].items())

    # The ranking, at the lane's views (with a plain mean: at 2 views the power moves nothing).
    ranking = max(
        (r for r in (Ranking.QUALITY, Ranking.NO_HAND) if no_more_false(per_track, r, 0.0)),
        key=lambda r: (named(per_track, r, 0.0), r is Ranking.QUALITY),
    )
    # The power, over the lane's views and more, where weights can act.
    counts = (per_track, *EXTRA_VIEWS)
    power = max(
        (w for w in POWERS if all(no_more_false(v, ranking, w) for v in counts)),
        key=lambda w: (sum(named(v, ranking, w) for v in counts), -w),
    )
    print(
        f"\nchosen by the rule: ranked by {ranking} ({named(per_track, ranking, 0.0)} passes named right at "
        f"{per_track} views; before: {named(per_track, Ranking.BEFORE, 0.0)}), weight power {power} "
        f"({sum(named(v, ranking, power) for v in counts)} named right over {counts} views; plain mean: "
        f"{sum(named(v, ranking, 0.0) for v in counts)})"
    )
    print(f"work folder: {bench.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
