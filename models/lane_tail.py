"""Teaching the upper stages of a network the lane camera, from cached lower-stage maps (issue 22).

The lane head (`retail_reid.models.lane_training`) sees only the teacher's pooled features, after
its convolutions have lost what the lane camera's blur hid. Here the stages that look at the
item's parts learn from the renderings themselves, sized for two CPU cores:

1. `build_tail_cache`: every train and catalog photo as taken and rendered by the declared lane
   cameras (seeded), and the val photos as the lane benchmark shows them (`val_views`), through the
   frozen lower stages of the ImageNet backbone once: their output maps (float16) are cached, with
   the teacher's embedding of each clean photo.
2. `train_tail`: a copy of the last stages, the head convolution and a projection to the teacher's
   embedding size train on the cached maps: the metric loss plus a pull of every view's embedding
   towards the teacher's embedding of its clean photo, so the student learns the teacher's space
   and clean galleries keep their geometry.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.samplers import MPerClassSampler
from torch import nn
from tqdm import tqdm

from retail_reid.images import read_image
from retail_reid.models.backbone import create_backbone
from retail_reid.models.datasets import GroceryData
from retail_reid.models.evaluate import Embedded, calibrate
from retail_reid.models.export import cpu_session, export_onnx, set_calibration
from retail_reid.models.lane_training import VAL_VIEWS, CacheFolder, val_views
from retail_reid.models.losses import build_objective
from retail_reid.models.net import Tail, Trunk
from retail_reid.models.preprocess import Preprocess
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.models.train import lr_lambda, seed_everything
from retail_reid.models.views import LANE_LEVELS, LaneLevel

# the views cached per training photo after the photo itself: (level, count)
TRAIN_RENDERINGS = ((LaneLevel.MILD, 2), (LaneLevel.MIDDLE, 3), (LaneLevel.HARD, 3))
PER_PHOTO = 1 + sum(n for _, n in TRAIN_RENDERINGS)
BATCH = 32


def train_renderings(img: np.ndarray, index: int, seed: int) -> list[np.ndarray]:
    rng = np.random.RandomState(seed * 1_000_003 + index + 7)
    return [img] + [LANE_LEVELS[level].render(img, rng) for level, n in TRAIN_RENDERINGS for _ in range(n)]


@dataclass(frozen=True, kw_only=True)
class TailCacheSpec:
    backbone: str = "tf_efficientnet_lite0"
    tail_stages: int = 2
    size: int = 224
    seed: int = 0


@dataclass
class TailCache(CacheFolder):
    """A cache folder: the trunk's maps of every view, the teacher's embedding of each clean photo."""

    def maps(self, part: str) -> np.ndarray:
        """part "train" (PER_PHOTO rows a photo) or "val" (VAL_VIEWS rows a photo), read into memory."""
        return np.load(self.folder / f"{part}_maps.npy")

    @property
    def teacher(self) -> np.ndarray:
        return np.load(self.folder / "teacher.npy")


def build_tail_cache(
    data_root: str | Path,
    out: str | Path,
    teacher: str | Path | None = None,
    spec: TailCacheSpec | None = None,
    threads: int = 2,
    progress: bool = True,
) -> TailCache:
    """Write the cache folder `out`; parts finished by an earlier, stopped call are kept."""
    spec = spec or TailCacheSpec()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "meta.json").exists():
        return TailCache.open(folder)
    data = GroceryData.load(data_root)
    train = data.train_and_iconic
    pre = Preprocess(size=spec.size)
    session = cpu_session(Trunk(create_backbone(spec.backbone), spec.tail_stages), spec.size, threads)
    embedder = OnnxEmbedder(teacher, threads=threads)
    if not (folder / "teacher.npy").exists():
        clean = (read_image(p) for p in tqdm(train.paths, desc="teacher", disable=not progress))
        np.save(folder / "teacher.tmp.npy", embedder.embed(clean))
        (folder / "teacher.tmp.npy").replace(folder / "teacher.npy")
    for part, paths, make, per in (
        ("val", list(data.val.paths), val_views, VAL_VIEWS),
        ("train", list(train.paths), train_renderings, PER_PHOTO),
    ):
        if (folder / f"{part}_maps.npy").exists():
            continue
        n = len(paths) * per
        outs: np.memmap | None = None
        row = 0
        for i, p in enumerate(tqdm(paths, desc=part, disable=not progress)):
            x = np.stack([pre(v) for v in make(read_image(p), i, spec.seed)]).astype(np.float32)
            (maps,) = session.run(None, {"x": x})
            if outs is None:
                outs = np.lib.format.open_memmap(
                    folder / f"{part}_maps.tmp.npy", "w+", np.float16, (n, *maps.shape[1:])
                )
            outs[row : row + per] = maps
            row += per
        assert outs is not None
        outs.flush()
        del outs
        (folder / f"{part}_maps.tmp.npy").replace(folder / f"{part}_maps.npy")
    meta = {
        **asdict(spec),
        "data_root": str(Path(data_root).resolve()),
        "teacher": {"path": str(embedder.path), "fingerprint": embedder.fingerprint, "dim": embedder.dim},
        "train_renderings": [[str(lv), n] for lv, n in TRAIN_RENDERINGS],
        "train_labels": list(train.labels),
        "n_gallery": len(data.train),
        "val_labels": list(data.val.labels),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return TailCache(folder, meta)


class LaneTail(nn.Module):
    """The backbone's last stages and head convolution (from ImageNet weights) and a projection."""

    def __init__(self, backbone: str, tail_stages: int, dim: int):
        super().__init__()
        net = create_backbone(backbone)
        net.reset_classifier(0)
        self.tail = Tail(net, tail_stages)
        self.project = nn.Linear(net.num_features, dim)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.tail(maps).flatten(1)), dim=1)


@dataclass(frozen=True, kw_only=True)
class TailRecipe:
    epochs: int = 30
    distill: float = 3.0  # weight of the pull towards the teacher's embedding of the clean photo
    clean_share: float = 0.25  # share of the batches' views that are the photo itself
    loss: str = "multi-similarity"
    lr_tail: float = 5e-4
    lr_head: float = 2e-3
    weight_decay: float = 1e-4
    skus_per_batch: int = 16
    per_sku: int = 4
    seed: int = 0


def train_tail(
    cache: TailCache,
    recipe: TailRecipe,
    checkpoint: Path | None = None,
    epochs_now: int | None = None,
    log: bool = False,
) -> tuple[LaneTail, dict]:
    """Train on the cached maps of every training photo; with `checkpoint`, save after each epoch and
    resume from it (a stopped run loses at most one epoch). `epochs_now` caps the epochs this call
    runs, so a shared machine can train in slices that add up to the recipe's run."""
    seed_everything(recipe.seed)
    labels = cache.train_labels
    keep = sorted(set(labels))
    if len(keep) < recipe.skus_per_batch:
        raise ValueError(
            f"{len(keep)} SKUs to train on, fewer than the {recipe.skus_per_batch} SKUs a batch holds: "
            "lower --skus-per-batch"
        )
    y = np.searchsorted(keep, labels)
    maps = torch.from_numpy(cache.maps("train"))
    teacher = torch.from_numpy(cache.teacher)
    net = LaneTail(cache.meta["backbone"], cache.meta["tail_stages"], teacher.shape[1])
    objective = build_objective(recipe.loss, teacher.shape[1], len(keep))
    batch = recipe.skus_per_batch * recipe.per_sku
    steps = max(1, len(y) // batch)
    opt = torch.optim.AdamW(
        [
            {"params": net.tail.parameters(), "lr": recipe.lr_tail},
            {"params": list(net.project.parameters()) + list(objective.loss.parameters()), "lr": recipe.lr_head},
        ],
        weight_decay=recipe.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, recipe.epochs * steps))
    start, seconds, losses = 0, 0.0, []
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["recipe"] != asdict(recipe):
            changed = sorted(k for k, v in asdict(recipe).items() if state["recipe"].get(k) != v)
            raise ValueError(
                f"{checkpoint}: saved by a run with other settings ({', '.join(changed)}); "
                "use those settings, or another checkpoint to start afresh"
            )
        net.load_state_dict(state["net"])
        objective.loss.load_state_dict(state["loss"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, seconds, losses = state["epoch"], state["seconds"], state["losses"]
    stop = recipe.epochs if epochs_now is None else min(recipe.epochs, start + epochs_now)
    for epoch in range(start, stop):
        t0 = time.time()
        net.train()
        # each epoch's draws depend on the seed and the epoch alone, so a resumed run repeats them
        # (the sampler draws from numpy's global state and reorders its own labels as it goes)
        np.random.seed(recipe.seed * 100_003 + epoch)
        rng = np.random.RandomState(recipe.seed * 100_003 + epoch)
        sampler = MPerClassSampler(y, m=recipe.per_sku, batch_size=batch, length_before_new_iter=steps * batch)
        order = np.fromiter(iter(sampler), np.int64)
        total = np.zeros(2)
        for s in range(steps):
            b = order[s * batch : (s + 1) * batch]
            view = np.where(rng.rand(len(b)) < recipe.clean_share, 0, rng.randint(1, PER_PHOTO, size=len(b)))
            e = net(maps[torch.from_numpy(b * PER_PHOTO + view)].float())
            metric = objective(e, torch.from_numpy(y[b]))
            pull = (1 - (e * teacher[torch.from_numpy(b)]).sum(1)).mean()
            loss = metric + recipe.distill * pull
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += (metric.item(), pull.item())
        seconds += time.time() - t0
        losses.append([round(float(x), 5) for x in total / steps])
        if log:
            print(
                f"  epoch {epoch + 1}/{recipe.epochs} metric {total[0] / steps:.4f} pull {total[1] / steps:.4f} "
                f"({seconds:.0f} s)",
                flush=True,
            )
        if checkpoint is not None:
            state = {
                "net": net.state_dict(),
                "loss": objective.loss.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "epoch": epoch + 1,
                "seconds": seconds,
                "losses": losses,
                "recipe": asdict(recipe),
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
    summary = {"seconds": round(seconds, 1), "photos": len(y), "skus": len(keep), "epochs": stop, "losses": losses}
    return net.eval(), summary


@torch.no_grad()
def tail_embeddings(cache: TailCache, net: LaneTail, part: str, rows: np.ndarray | None = None) -> np.ndarray:
    """The student's embeddings of a cached part (all rows, or `rows`)."""
    maps = cache.maps(part)
    rows = np.arange(len(maps)) if rows is None else rows
    out = [net(torch.from_numpy(maps[rows[i : i + 256]]).float()).numpy() for i in range(0, len(rows), 256)]
    return np.concatenate(out)


class _Student(nn.Module):
    """The frozen ImageNet trunk and the trained tail: what the exported file computes."""

    def __init__(self, backbone: str, tail_stages: int, tail: LaneTail):
        super().__init__()
        self.trunk = Trunk(create_backbone(backbone), tail_stages)
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.trunk(x))


def export_tail(
    cache: TailCache, net: LaneTail, out: str | Path, recipe: TailRecipe, scoring: str = "centroid"
) -> Path:
    """Write the student as one ONNX embedder (no flip: the cache's figures are what it computes),
    calibrated on the cached val views of every level against the train photos as taken, so its
    confidence is fitted on what a lane camera shows it, and checked against the cache."""
    out = Path(out)
    student = _Student(cache.meta["backbone"], cache.meta["tail_stages"], net).eval()
    extra = {
        "backbone": cache.meta["backbone"],
        "trained": "lane-tail",
        "lane_tail": {"teacher": cache.meta["teacher"]["fingerprint"], "recipe": asdict(recipe)},
        "skus": len(set(cache.meta["train_labels"])),
    }
    export_onnx(student, Preprocess(size=cache.meta["size"]), out, extra, flip_tta=False)
    n_gallery = cache.meta["n_gallery"]
    labels = np.asarray(cache.meta["val_labels"])
    gallery = Embedded(
        tail_embeddings(cache, net, "train", np.arange(n_gallery) * PER_PHOTO), cache.train_labels[:n_gallery], []
    )
    val = tail_embeddings(cache, net, "val")
    set_calibration(out, calibrate(gallery, Embedded(val, np.repeat(labels, VAL_VIEWS), []), scoring))
    data = GroceryData.load(cache.meta["data_root"])
    views = val_views(read_image(data.val.paths[0]), 0, cache.meta["seed"])
    worst = float((OnnxEmbedder(out).embed(views) * val[:VAL_VIEWS]).sum(1).min())
    if worst < 0.999:
        raise ValueError(
            f"{out}: the ONNX graph disagrees with the trained tail on the cached views (cosine {worst:.4f})"
        )
    return out
