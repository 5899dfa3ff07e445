"""Teaching an embedder to see as a lane camera does (issue 22), sized for two CPU cores.

A lane camera destroys the fine texture that a photo-trained embedder leans on. Fine-tuning whole
networks on freshly rendered views takes days on this project's CPUs, so the work is split:

1. `build_lane_cache`: every training photo is rendered by the declared lane cameras
   (`retail_reid.models.views.LANE_LEVELS`, seeded) and the teacher, an ONNX embedder of the product
   (the shipped one), runs once per view; the cache keeps its embedding and, where its graph has
   them, the pooled features of its branches (a composed model: the fine-tuned network's and the
   ImageNet backbone's). The val photos at every level (k views each) are cached too, so one cache
   also scores the teacher, the ImageNet-only backbone inside it, and every head trained on it.
2. `train_head`: a small residual head on the cached pooled features trains for many epochs with
   the metric loss plus a feature-preserving term that pulls each view's embedding towards the
   teacher's embedding of its clean photo. Its last layer starts at zero, so training starts from
   the teacher exactly, and a clean photo keeps its place: galleries keep their geometry.
3. `attach_head` appends the head to the teacher's graph: one ONNX file, the teacher's cost plus
   two small matrix products.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from pytorch_metric_learning.samplers import MPerClassSampler
from torch import nn
from tqdm import tqdm

from retail_reid.images import read_image
from retail_reid.models.datasets import GroceryData
from retail_reid.models.losses import build_objective
from retail_reid.models.metrics import sku_scores
from retail_reid.models.onnx_file import save_whole, set_info
from retail_reid.models.runtime import OUTPUT_NAME, ModelInfo, OnnxEmbedder
from retail_reid.models.train import lr_lambda, seed_everything
from retail_reid.models.views import LANE_LEVELS, LaneLevel

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11; only named in annotations

TRAIN_LEVELS = (LaneLevel.MIDDLE, LaneLevel.HARD)  # one view each, after the photo itself
EVAL_VIEWS = 6  # views of each val photo per level: single crops, and one pass averaged
VAL_VIEWS = 1 + EVAL_VIEWS * len(LaneLevel)  # the photo as taken, then each level's views
# lane_recall's figures: the photo as taken, then per level a single crop and a pass
RECALL_COLUMNS = ("clean", *(f"{lv}{kind}" for lv in LaneLevel for kind in ("", " pass")))
POOLED = ("view", "imagenet/view")  # a composed model's pooled features (fine-tuned, ImageNet), flip pairs
BATCH = 16


def train_views(img: np.ndarray, index: int, seed: int) -> list[np.ndarray]:
    rng = np.random.RandomState(seed * 1_000_003 + index)
    return [img] + [LANE_LEVELS[level].render(img, rng) for level in TRAIN_LEVELS]


def val_views(img: np.ndarray, index: int, seed: int) -> list[np.ndarray]:
    views = [img]
    for level in LaneLevel:
        views += LANE_LEVELS[level].views(img, seed * 1_000_003 + index + 500_009, EVAL_VIEWS)
    return views


class _Tapped:
    """The teacher's graph with its pooled features as extra outputs (flip pairs averaged)."""

    def __init__(self, teacher: OnnxEmbedder, threads: int):
        self.embedder = teacher
        model = onnx.load(str(teacher.path))
        names = {o for node in model.graph.node for o in node.output}
        self.pooled = [p for p in POOLED if p in names]
        model.graph.output.extend(helper.make_empty_tensor_value_info(p) for p in self.pooled)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tapped.onnx"
            onnx.save(model, str(path))
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.flip = bool(teacher.info.extra.get("flip_tta"))

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        x = np.stack([self.embedder.preprocess(im) for im in images]).astype(np.float32)
        emb, *pooled = self.session.run(None, {"images": x})
        n = len(images)
        pooled = [p.reshape(p.shape[0], -1) for p in pooled]
        pooled = [(p[:n] + p[n:]) / 2 if self.flip else p for p in pooled]
        return [emb, np.concatenate(pooled, axis=1) if pooled else np.zeros((n, 0), np.float32)]


def _run(tapped: _Tapped, views: Iterator[np.ndarray], n: int, folder: Path, part: str, progress: bool) -> None:
    """Teacher outputs of `n` views (an iterator of images) into PART_emb.npy and PART_pooled.npy."""
    outs: list[np.memmap] | None = None
    row, batch = 0, []
    for img in tqdm(views, total=n, desc=part, unit="view", disable=not progress):
        batch.append(img)
        if len(batch) == BATCH or row + len(batch) == n:
            got = tapped(batch)
            if outs is None:
                outs = [
                    np.lib.format.open_memmap(folder / f"{part}_{name}.tmp.npy", "w+", np.float32, (n, g.shape[1]))
                    for name, g in zip(("emb", "pooled"), got, strict=True)
                ]
            for o, g in zip(outs, got, strict=True):
                o[row : row + len(batch)] = g
            row, batch = row + len(batch), []
    for o, name in zip(outs or [], ("emb", "pooled"), strict=True):
        o.flush()
        del o
        (folder / f"{part}_{name}.tmp.npy").replace(folder / f"{part}_{name}.npy")


@dataclass
class CacheFolder:
    """A cache folder of views of the training photos, opened by its meta.json."""

    folder: Path
    meta: dict

    @classmethod
    def open(cls, folder: str | Path) -> Self:
        folder = Path(folder)
        return cls(folder, json.loads((folder / "meta.json").read_text()))

    @property
    def train_labels(self) -> np.ndarray:
        return np.asarray(self.meta["train_labels"])


@dataclass
class LaneCache(CacheFolder):
    """A lane cache folder: the teacher's embeddings and pooled features of every cached view."""

    def array(self, part: str, what: str) -> np.ndarray:
        """part "train" (1 + len(TRAIN_LEVELS) rows a photo) or "val" (VAL_VIEWS rows a photo);
        what "emb" or "pooled"."""
        return np.load(self.folder / f"{part}_{what}.npy")

    @property
    def gallery_rows(self) -> np.ndarray:
        """The train photos as taken (not the catalog photos): the gallery every score is against."""
        return np.arange(self.meta["n_gallery"]) * (1 + len(TRAIN_LEVELS))

    @property
    def gallery_labels(self) -> np.ndarray:
        return self.train_labels[: self.meta["n_gallery"]]


def build_lane_cache(
    data_root: str | Path,
    out: str | Path,
    teacher: str | Path | None = None,
    seed: int = 0,
    threads: int = 2,
    progress: bool = True,
) -> LaneCache:
    """Render, run the teacher and write the cache folder `out`; a part written by an earlier,
    stopped call is kept."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "meta.json").exists():
        return LaneCache.open(folder)
    data = GroceryData.load(data_root)
    train = data.train_and_iconic
    tapped = _Tapped(OnnxEmbedder(teacher, threads=threads), threads)
    for part, paths, make, per in (
        ("val", list(data.val.paths), val_views, VAL_VIEWS),
        ("train", list(train.paths), train_views, 1 + len(TRAIN_LEVELS)),
    ):
        if not (folder / f"{part}_pooled.npy").exists():
            views = (v for i, p in enumerate(paths) for v in make(read_image(p), i, seed))
            _run(tapped, views, len(paths) * per, folder, part, progress)
    meta = {
        "data_root": str(Path(data_root).resolve()),
        "seed": seed,
        "train_levels": [str(lv) for lv in TRAIN_LEVELS],
        "eval_views": EVAL_VIEWS,
        "cameras": {str(lv): cam.to_dict() for lv, cam in LANE_LEVELS.items()},
        "teacher": {
            "path": str(tapped.embedder.path),
            "fingerprint": tapped.embedder.fingerprint,
            "dim": tapped.embedder.dim,
            "pooled": tapped.pooled,
        },
        "train_labels": list(train.labels),
        "train_paths": [str(p) for p in train.paths],
        "n_gallery": len(data.train),
        "val_labels": list(data.val.labels),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return LaneCache(folder, meta)


class ResidualHead(nn.Module):
    """embedding = normalise(teacher's embedding + W2 relu(W1 pooled + b1) + b2), W2 and b2 from zero."""

    def __init__(self, features: int, dim: int, hidden: int = 512):
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, teacher: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(teacher + self.out(F.relu(self.hidden(pooled))), dim=1)


@dataclass(frozen=True, kw_only=True)
class HeadRecipe:
    """What `train_head` trains with; every field has the recipe's value by default."""

    hidden: int = 512
    epochs: int = 60
    distill: float = 1.0  # weight of the pull towards the teacher's embedding of the clean photo
    clean_share: float = 0.25  # share of the batches' views that are the photo itself
    loss: str = "multi-similarity"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1  # on the pooled features
    skus_per_batch: int = 16
    per_sku: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def train_head(
    cache: LaneCache, recipe: HeadRecipe, skus: list[str] | None = None, log: bool = False
) -> tuple[ResidualHead, dict]:
    """Train a head on the cached views of the photos of `skus` (all by default)."""
    seed_everything(recipe.seed)
    per = 1 + len(TRAIN_LEVELS)
    labels = cache.train_labels
    keep = sorted(set(skus) if skus is not None else set(labels))
    if len(keep) < recipe.skus_per_batch:
        raise ValueError(
            f"{len(keep)} SKUs to train on, fewer than the {recipe.skus_per_batch} SKUs a batch holds: "
            "lower --skus-per-batch"
        )
    photos = np.flatnonzero(np.isin(labels, keep))
    y = np.searchsorted(keep, labels[photos])
    emb = torch.from_numpy(cache.array("train", "emb"))
    pooled = torch.from_numpy(cache.array("train", "pooled"))
    mean, std = pooled.mean(0), pooled.std(0) + 1e-6
    head = ResidualHead(pooled.shape[1], emb.shape[1], recipe.hidden)
    with torch.no_grad():  # standardise the features inside the first layer, so the graph needs no extra node
        head.hidden.weight.div_(std)
        head.hidden.bias.sub_(head.hidden.weight @ mean)
    objective = build_objective(recipe.loss, emb.shape[1], len(keep))
    batch = recipe.skus_per_batch * recipe.per_sku
    steps = max(1, len(photos) // batch)
    opt = torch.optim.AdamW(
        list(head.parameters()) + list(objective.loss.parameters()), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, recipe.epochs * steps))
    sampler = MPerClassSampler(y, m=recipe.per_sku, batch_size=batch, length_before_new_iter=steps * batch)
    rng = np.random.RandomState(recipe.seed)
    drop = nn.Dropout(recipe.dropout)
    t0 = time.time()
    for epoch in range(recipe.epochs):
        head.train()
        order = np.fromiter(iter(sampler), np.int64)
        total = np.zeros(2)
        for s in range(steps):
            b = photos[order[s * batch : (s + 1) * batch]]
            level = np.where(rng.rand(len(b)) < recipe.clean_share, 0, rng.randint(1, per, size=len(b)))
            rows = torch.from_numpy(b * per + level)
            e = head(emb[rows], drop(pooled[rows]))
            metric = objective(e, torch.from_numpy(y[order[s * batch : (s + 1) * batch]]))
            pull = (1 - (e * emb[torch.from_numpy(b * per)]).sum(1)).mean()
            loss = metric + recipe.distill * pull
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += (metric.item(), pull.item())
        if log and (epoch + 1) % 10 == 0:
            print(f"  epoch {epoch + 1}/{recipe.epochs} metric {total[0] / steps:.4f} pull {total[1] / steps:.4f}")
    return head.eval(), {"seconds": round(time.time() - t0, 1), "skus": len(keep), "photos": len(photos)}


@torch.no_grad()
def head_embeddings(cache: LaneCache, head: ResidualHead | None, part: str) -> np.ndarray:
    """A cached part's embeddings: the teacher's (`head` None) or the head's."""
    emb = cache.array(part, "emb")
    if head is None:
        return emb
    return head(torch.from_numpy(emb), torch.from_numpy(cache.array(part, "pooled"))).numpy()


def imagenet_embeddings(cache: LaneCache, part: str) -> np.ndarray:
    """The ImageNet backbone's pooled features inside a composed teacher, normalised: the baseline row."""
    names = cache.meta["teacher"]["pooled"]  # the branches' pooled features, side by side in this order
    if "imagenet/view" not in names:
        raise ValueError(f"{cache.folder}: the teacher has no ImageNet branch")
    pooled = cache.array(part, "pooled")
    width, i = pooled.shape[1] // len(names), names.index("imagenet/view")
    pooled = pooled[:, i * width : (i + 1) * width]
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def lane_recall(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    val: np.ndarray,
    val_labels: np.ndarray,
    rendered: np.ndarray | None = None,
) -> dict[str, float]:
    """Recall@1 of the val photos' SKUs against the gallery's centroids: as taken, and per lane level
    for single views and for passes (the level's views of a photo averaged). `val` holds VAL_VIEWS
    rows per photo: the photo, then EVAL_VIEWS views of each level in LaneLevel order. With
    `rendered` (a bool per gallery row: a lane-camera rendering), a SKU scores the better of its
    photos' and its renderings' centroids, as the product's gallery does (gallery/matching.py)."""
    val = val.reshape(len(val_labels), VAL_VIEWS, -1)

    def recall(queries: np.ndarray, labels: np.ndarray) -> float:
        skus, scores = sku_scores(gallery, gallery_labels, queries, "centroid")
        if rendered is not None:
            for kind in (~rendered, rendered):
                kind_skus, kind_scores = sku_scores(gallery[kind], gallery_labels[kind], queries, "centroid")
                if not np.array_equal(kind_skus, skus):
                    raise ValueError("every SKU needs photos and renderings to be scored by its better centroid")
                scores = kind_scores if kind is not rendered else np.maximum(scores, kind_scores)
        return round(float(np.mean(skus[scores.argmax(1)] == labels)), 3)

    out = {"clean": recall(val[:, 0], val_labels)}
    for i, level in enumerate(LaneLevel):
        views = val[:, 1 + i * EVAL_VIEWS : 1 + (i + 1) * EVAL_VIEWS]
        out[f"{level}"] = recall(views.reshape(-1, views.shape[2]), np.repeat(val_labels, EVAL_VIEWS))
        passes = views.sum(1)
        out[f"{level} pass"] = recall(passes / np.linalg.norm(passes, axis=1, keepdims=True), val_labels)
    return out


def attach_head(teacher: str | Path, head: ResidualHead, out: str | Path, recipe: dict) -> Path:
    """Write `out`: the teacher's graph with `head` on its pooled features after its embedding."""
    model = onnx.load(str(teacher))
    g = model.graph
    inner = "lane_head/teacher_embeddings"
    for node in g.node:
        node.output[:] = [inner if x == OUTPUT_NAME else x for x in node.output]
        node.input[:] = [inner if x == OUTPUT_NAME else x for x in node.input]
    names = {o for node in g.node for o in node.output}
    pooled = [p for p in POOLED if p in names]
    p = "lane_head/"
    nodes = []
    halves = []
    for i, name in enumerate(pooled):  # the flip pairs' rows averaged: [2n, d] -> [2, n, d] -> mean
        nodes += [
            helper.make_node("Reshape", [name, p + "pairs_shape"], [p + f"pairs{i}"], name=p + f"pairs{i}"),
            helper.make_node(
                "ReduceMean", [p + f"pairs{i}", p + "axis0"], [p + f"mean{i}"], keepdims=0, name=p + f"mean{i}"
            ),
        ]
        halves.append(p + f"mean{i}")
    nodes += [
        helper.make_node("Concat", halves, [p + "features"], axis=1, name=p + "features"),
        helper.make_node("Gemm", [p + "features", p + "w1", p + "b1"], [p + "h"], transB=1, name=p + "hidden"),
        helper.make_node("Relu", [p + "h"], [p + "relu"], name=p + "relu"),
        helper.make_node("Gemm", [p + "relu", p + "w2", p + "b2"], [p + "delta"], transB=1, name=p + "out"),
        helper.make_node("Add", [inner, p + "delta"], [p + "sum"], name=p + "add"),
        helper.make_node("LpNormalization", [p + "sum"], [OUTPUT_NAME], axis=1, p=2, name=p + "normalise"),
    ]
    sd = {k: v.numpy().astype(np.float32) for k, v in head.state_dict().items()}
    d = int(sd["hidden.weight"].shape[1] / len(pooled))
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([2, -1, d], np.int64), p + "pairs_shape"),
            numpy_helper.from_array(np.array([0], np.int64), p + "axis0"),
            numpy_helper.from_array(sd["hidden.weight"], p + "w1"),
            numpy_helper.from_array(sd["hidden.bias"], p + "b1"),
            numpy_helper.from_array(sd["out.weight"], p + "w2"),
            numpy_helper.from_array(sd["out.bias"], p + "b2"),
        ]
    )
    g.node.extend(nodes)
    dim = sd["out.weight"].shape[0]
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", dim]))
    onnx.checker.check_model(model)
    t = OnnxEmbedder(teacher)
    extra = {
        **t.info.extra,
        "trained": "lane-head",
        "lane_head": {"teacher": t.fingerprint, "recipe": recipe, "join_nodes": [n.name for n in nodes]},
    }
    set_info(model, ModelInfo(dim, t.preprocess, (), extra))
    out = Path(out)
    save_whole(model, out)
    return out
