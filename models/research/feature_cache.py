"""Backbone features of augmented training views and of the evaluation views, computed once.

Recipes that keep the trunk at its ImageNet weights (`retail_reid.models.net.KeepImageNetNet`) only
train what follows it, so the trunk's outputs can be stored per view and every recipe, fold and
epoch runs from them: on two CPU cores a comparison of many recipes over four folds takes minutes
instead of days. The trunk runs on onnxruntime (several times faster than torch eager on a CPU).

A cache folder holds, for the training views (V augmented views per training photo, half "photo"
and half "checkout" augmentations) and for the evaluation views (the train photos as the gallery,
the catalog photos, the val photos as photographed / as a lane camera sees them / with a hand, the
views `retail_reid.models.research.disjoint` shows an ONNX model, each with its mirror): the input of the
last stage (`tap1`), of the last two stages (`tap2`), both float16, and the pooled ImageNet
features (`pooled`); `meta.json` says which row is which.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

from retail_reid.images import read_image
from retail_reid.models.backbone import create_backbone
from retail_reid.models.data import LabelledImages, train_transform
from retail_reid.models.datasets import GroceryData
from retail_reid.models.export import cpu_session
from retail_reid.models.net import _stages
from retail_reid.models.preprocess import Preprocess
from retail_reid.models.research.disjoint import Query, view_images

if TYPE_CHECKING:
    from retail_reid.models.backbone import TimmBackbone

TAPS = (1, 2)  # trunk outputs stored: the input of the last stage, and of the last two
EVAL_SETS = ("gallery", "iconic", *(str(q) for q in (Query.PHOTO, Query.LANE, Query.HAND)))


class _Taps(nn.Module):
    """The trunk outputs for each tail length in TAPS, and the pooled ImageNet features."""

    def __init__(self, backbone: TimmBackbone):
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.n = len(_stages(backbone))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = self.backbone
        x = b.bn1(b.conv_stem(x))
        taps = {}
        for i, stage in enumerate(b.blocks):
            if self.n - i in TAPS:
                taps[self.n - i] = x
            x = stage(x)
        return (*(taps[t] for t in TAPS), b.global_pool(b.bn2(b.conv_head(x))))


@dataclass
class FeatureCache:
    """A cache folder opened for reading (the arrays memory-mapped)."""

    folder: Path
    meta: dict
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, folder: str | Path) -> FeatureCache:
        folder = Path(folder)
        return cls(folder, json.loads((folder / "meta.json").read_text()))

    def array(self, part: str, what: str) -> np.ndarray:
        """part: "train" or "eval"; what: "tap1", "tap2" or "pooled"; read into memory once (a few GB at
        most: random batches from a memory map would read the disk for every row)."""
        key = f"{part}_{what}"
        if key not in self._arrays:
            self._arrays[key] = np.load(self.folder / f"{key}.npy")
        return self._arrays[key]

    @property
    def train_labels(self) -> np.ndarray:
        """The SKU of each training photo (its V views are rows i*V .. i*V+V-1)."""
        return np.asarray(self.meta["train_labels"])

    def eval_rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (each view's first row; its mirror is the next) and labels of an evaluation set."""
        start, labels = self.meta["eval"][name]["start"], np.asarray(self.meta["eval"][name]["labels"])
        return start + 2 * np.arange(len(labels)), labels


def _session(backbone: str, size: int, threads: int) -> ort.InferenceSession:
    return cpu_session(_Taps(create_backbone(backbone)), size, threads)


def _write(
    session: ort.InferenceSession, tensors: Iterator[np.ndarray], n: int, folder: Path, part: str, progress: bool
) -> None:
    """Run the trunk over `n` preprocessed CHW tensors, batch by batch, into PART_*.npy files."""
    outs = None
    row, batch = 0, []
    for x in tqdm(tensors, total=n, desc=part, unit="view", disable=not progress):
        batch.append(x)
        if len(batch) == 32 or row + len(batch) == n:
            got = session.run(None, {"x": np.stack(batch).astype(np.float32)})
            if outs is None:
                names = [f"tap{t}" for t in TAPS] + ["pooled"]
                outs = [
                    np.lib.format.open_memmap(
                        folder / f"{part}_{name}.npy",
                        "w+",
                        np.float32 if name == "pooled" else np.float16,
                        (n, *g.shape[1:]),
                    )
                    for name, g in zip(names, got, strict=True)
                ]
            for o, g in zip(outs, got, strict=True):
                o[row : row + len(batch)] = g
            row, batch = row + len(batch), []
    for o in outs or []:
        o.flush()


def build_cache(
    data_root: str | Path,
    out: str | Path,
    backbone: str = "tf_efficientnet_lite0",
    size: int = 224,
    views: int = 8,
    seed: int = 0,
    view_seed: int = 0,
    threads: int = 2,
    progress: bool = True,
) -> FeatureCache:
    """Compute the cache of `backbone` at `size` px for the grocery data at `data_root` (train.txt,
    val.txt, classes.csv): `views` augmented views of each train and catalog photo (training draws
    one per photo per epoch), and the evaluation views with the lane-camera seed `view_seed`."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    data = GroceryData.load(data_root)
    pre = Preprocess(size=size)
    session = _session(backbone, size, threads)
    torch.manual_seed(seed)
    np.random.seed(seed)

    train = data.train_and_iconic
    skus = sorted(set(train.labels))
    images = LabelledImages(train, {s: i for i, s in enumerate(skus)}, pre, train=True, progress=progress)
    augment = [train_transform(pre, "photo"), train_transform(pre, "checkout")]

    def train_views() -> Iterator[np.ndarray]:
        for i in range(len(images)):
            for v in range(views):
                images.transform = augment[v * 2 // views]
                yield images[i][0].numpy()

    _write(session, train_views(), len(images) * views, folder, "train", progress)

    eval_sets: dict[str, tuple[list[np.ndarray], list[str]]] = {}
    index = {p: i for i, p in enumerate(data.val.paths)}
    for name, image_set in (("gallery", data.train), ("iconic", data.iconic)):
        if image_set is not None:
            eval_sets[name] = ([read_image(p) for p in image_set.paths], list(image_set.labels))
    for view in (Query.PHOTO, Query.LANE, Query.HAND):
        good: list[int] = []
        imgs = list(view_images([(index[p], p) for p in data.val.paths], view, view_seed, good, []))
        eval_sets[str(view)] = (imgs, [data.val.labels[i] for i in good])

    def eval_views() -> Iterator[np.ndarray]:
        for imgs, _ in eval_sets.values():
            for img in imgs:
                x = pre(img)
                yield x
                yield np.ascontiguousarray(x[:, :, ::-1])  # the mirror, for flip averaging

    n_eval = 2 * sum(len(imgs) for imgs, _ in eval_sets.values())
    _write(session, eval_views(), n_eval, folder, "eval", progress)
    starts, row = {}, 0
    for name, (imgs, labels) in eval_sets.items():
        starts[name] = {"start": row, "labels": labels}
        row += 2 * len(imgs)
    meta = {
        "backbone": backbone,
        "size": size,
        "views": views,
        "seed": seed,
        "view_seed": view_seed,
        "taps": list(TAPS),
        "preprocess": pre.to_dict(),
        "train_labels": list(train.labels),
        "train_paths": [str(p) for p in train.paths],
        "eval": starts,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return FeatureCache(folder, meta)
