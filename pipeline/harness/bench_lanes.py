"""The benchmark lanes: what the lane benchmarks and tuners (benchmarks/bench_replay.py, tune_switch.py,
tune_view_quality.py, bench_batch.py, bench_learning_loop.py, bench_lane_views.py) share, so each imports
the installed package instead of its siblings.

A work folder holds the grocery data's splits as folders of symlinks, a gallery of the train photos
(built once per model) and the lanes simulated from the val photos (once per seed). Benchmark and
development lanes never share a seed (`FIRST_SEED`): settings are tuned on the development lanes only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from retail_reid.errors import ReidError
from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.renderings import DEFAULT_VIEWS, LaneProfile
from retail_reid.gallery.store import ChangeResult, GalleryStore
from retail_reid.models.datasets import folder_set, split_file_set
from retail_reid.models.views import LANE_LEVELS, LaneLevel
from retail_reid.pipeline.config import LaneConfig, load_config
from retail_reid.pipeline.harness.score import read_truth
from retail_reid.pipeline.harness.simulate import Difficulty, SimConfig, Truth, read_coarse_classes, simulate

FIRST_SEED = {  # (benchmark, development) seed of lane 0
    Difficulty.EASY: (100, 10),
    Difficulty.HARD: (300, 30),
}


def folder_view(split: Path, root: Path, dest: Path) -> Path:
    """FOLDER/<sku>/<photo> symlinks for a grocery split file (the gallery imports folders)."""
    images = split_file_set(split, root)
    for path, sku in zip(images.paths, images.labels, strict=True):
        link = dest / sku / path.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return dest


def _changed(result: ChangeResult) -> None:
    print(f"version {result.version}: {result.summary}")  # as `reid gallery` reports a change


def build_gallery(work: Path, train: Path, model: str | None, lane_camera: str | None = None) -> Path:
    """The train photos' gallery (with lane-camera renderings at the declared level `lane_camera`,
    the profile's default views, when given), built once per model and kept in `work`: the steps
    `reid gallery init`, `import-folder` and `lane-camera --level` take."""
    root = work / (f"gallery-{lane_camera}" if lane_camera else "gallery")
    if root.exists():
        try:
            Gallery.open(root, model=model)
            return root  # reused: built earlier with this same model
        except GalleryError as e:  # made with another model: start over
            print(f"rebuilding the gallery ({e})")
            shutil.rmtree(root)
    t = time.perf_counter()
    try:
        _changed(GalleryStore.init(root, model=model))
        with GalleryStore.open(root) as store:
            _changed(store.import_folder(train, progress=True))
        if lane_camera:
            profile = LaneProfile(camera=LANE_LEVELS[LaneLevel(lane_camera)], views=DEFAULT_VIEWS)
            with GalleryStore.open(root) as store:
                _changed(store.set_lane_camera(profile, progress=True))
    except ReidError as e:
        shutil.rmtree(root, ignore_errors=True)
        raise SystemExit(f"{root}: building the gallery failed, so it was removed: {e}") from None
    print(f"gallery: built from {train} in {time.perf_counter() - t:.0f} s")
    return root


@dataclass(frozen=True)
class Bench:
    """What every lane of a run shares: the work folder (the grocery splits as folders, the
    lanes, the runs), the gallery of the train photos, the lane config and the coarse classes."""

    work: Path
    gallery: Gallery
    config: LaneConfig
    coarse: dict


def prepare(a: argparse.Namespace, prefix: str) -> Bench:
    """The work folder (--work, or a new temporary one) with the splits' folder views, the gallery
    (built once per model) and the config (--config)."""
    data = Path(a.data)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    train = folder_view(data / "train.txt", data, work / "train")
    folder_view(data / "val.txt", data, work / "val")
    gallery = Gallery.open(build_gallery(work, train, a.model, a.lane_camera), model=a.model)
    return Bench(work, gallery, load_config(a.config), read_coarse_classes(data / "classes.csv"))


def simulated_lane(bench: Bench, difficulty: Difficulty, seed: int, passes: int) -> tuple[Path, Truth]:
    """Lane `seed` of a difficulty, simulated from the val photos once (kept in the work folder)."""
    sim = SimConfig.preset(difficulty, passes=passes, transactions=max(1, passes // 10), seed=seed)
    scen = bench.work / f"scenario-{difficulty}{seed}"
    if not (scen / "truth.json").exists():
        simulate(folder_set(bench.work / "val"), scen, sim, coarse=bench.coarse)
    return scen, read_truth(scen / "truth.json")


def add_data_argument(
    ap: argparse.ArgumentParser, what: str = "the Grocery Store Dataset folder with train.txt and val.txt"
) -> None:
    """--data, defaulting to $GROCERY (required when that is unset): every grocery benchmark takes it so."""
    ap.add_argument(
        "--data",
        default=os.environ.get("GROCERY"),
        required="GROCERY" not in os.environ,
        help=f"{what} (default: $GROCERY)",
    )


def parse_lane_arguments(ap: argparse.ArgumentParser, scenarios: int, passes: int) -> argparse.Namespace:
    """The options every lane benchmark takes (--data, --scenarios, --passes, --model, --config,
    --work), added to `ap`, parsed and checked."""
    add_data_argument(ap)
    ap.add_argument("--scenarios", type=int, default=scenarios, help="lanes per difficulty (1-19)")
    ap.add_argument("--passes", type=int, default=passes, help="item passes per lane")
    ap.add_argument("--model", help="embedder (default: the shipped model)")
    ap.add_argument("--config", help="lane config TOML")
    ap.add_argument(
        "--lane-camera",
        choices=[level.value for level in LaneLevel],
        help="also render the gallery's photos through this declared lane camera (default: none, as a new gallery)",
    )
    ap.add_argument("--work", help="keep views, gallery, scenarios and runs here (default: a temporary folder)")
    a = ap.parse_args()
    if not 1 <= a.scenarios < 20:
        ap.error("--scenarios must be 1-19 (more would reach the other lane set's seeds)")
    return a
