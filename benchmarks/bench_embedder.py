"""Embedding speed: the same 256 real crops through torch eager fp32, ONNX fp32 and ONNX int8,
at the same thread count. Prints images per second and the speed-ups over torch.

    python benchmarks/bench_embedder.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from retail_reid.images import read_image
from retail_reid.models.runtime import OnnxEmbedder, default_model_path

SAMPLE = Path(__file__).resolve().parent.parent / "sample" / "grocery"


def real_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """n crops of the bundled product photos, of varied size and aspect, as a detector would cut."""
    rng = np.random.default_rng(seed)
    photos = [read_image(p) for p in sorted(SAMPLE.glob("*/*/*.jpg"))]
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crops.append(img[y : y + ch, x : x + cw])
    return crops


def timed(fn, crops: list[np.ndarray], repeats: int) -> float:
    fn(crops[:32])  # warm-up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn(crops)
        best = min(best, time.perf_counter() - t)
    return len(crops) / best


def composed_eager_class():
    """The eager twin of a `reid compose` graph (defined on first use: torch is imported lazily)."""
    import torch
    import torch.nn.functional as F

    class ComposedEager(torch.nn.Module):
        """The stem and first `shared` blocks once (the shipped fine-tuning froze 3), then the fine-tuned
        network's and the ImageNet backbone's later blocks, joined as `reid compose` joins them (the
        ImageNet features projected onto `kept` directions when it kept fewer than all)."""

        def __init__(self, trained: torch.nn.Module, imagenet: torch.nn.Module, kept: int, shared: int = 3):
            super().__init__()
            imagenet.reset_classifier(0)
            self.trained, self.imagenet, self.shared = trained, imagenet, shared
            features = imagenet.num_features
            self.project = torch.nn.Linear(features, kept, bias=False) if kept < features else torch.nn.Identity()

        def _rest(self, backbone: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
            return backbone.forward_head(backbone.bn2(backbone.conv_head(backbone.blocks[self.shared :](z))))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = self.trained.backbone
            z = b.blocks[: self.shared](b.bn1(b.conv_stem(x)))
            t = F.normalize(self.trained.head(self._rest(b, z)), dim=1)
            return torch.cat([t, F.normalize(self.project(self._rest(self.imagenet, z)), dim=1)], dim=1)

    return ComposedEager


def torch_embed_fn(onnx_model: OnnxEmbedder, checkpoint: str | None, threads: int, batch: int):
    import torch

    from retail_reid.models.backbone import create_backbone
    from retail_reid.models.net import EmbeddingNet, FlipAverage

    torch.set_num_threads(threads)
    composed = onnx_model.info.extra.get("composed")
    if checkpoint:
        from retail_reid.models.train import load_checkpoint

        net = load_checkpoint(checkpoint)[0]
    elif composed:  # a `reid compose` graph: its eager twin, weights untrained (speed does not depend on them)
        imagenet = create_backbone(composed["imagenet"]["backbone"], pretrained=False)
        kept = composed.get("imagenet_dims", imagenet.num_features)
        net = composed_eager_class()(
            EmbeddingNet(create_backbone(composed["trained"]["backbone"], pretrained=False), onnx_model.dim - kept),
            imagenet,
            kept,
        )
    else:  # same architecture and size as the shipped model; speed does not depend on the weights
        net = EmbeddingNet(
            create_backbone(onnx_model.info.extra.get("backbone", "tf_efficientnet_lite0"), pretrained=False),
            onnx_model.dim,
        )
    net = FlipAverage(net) if onnx_model.info.extra.get("flip_tta") else net
    net.eval()
    pre = onnx_model.preprocess

    def run(crops):
        with torch.inference_mode():
            for i in range(0, len(crops), batch):
                net(torch.from_numpy(np.stack([pre(c) for c in crops[i : i + batch]])))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", default=str(default_model_path()))
    ap.add_argument("--int8", default=str(default_model_path().with_name("embedder-int8.onnx")))
    ap.add_argument("--checkpoint", help="torch checkpoint of the same model (default: same architecture, untrained)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crops", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    crops = real_crops(a.crops)
    fp32 = OnnxEmbedder(a.fp32, threads=a.threads, batch_size=a.batch)
    int8 = OnnxEmbedder(a.int8, threads=a.threads, batch_size=a.batch)
    rates = {"torch eager fp32": timed(torch_embed_fn(fp32, a.checkpoint, a.threads, a.batch), crops, a.repeats)}
    rates["onnx fp32"] = timed(fp32.embed, crops, a.repeats)
    rates["onnx int8"] = timed(int8.embed, crops, a.repeats)
    print(
        f"{a.crops} real crops, {a.threads} threads, batch {a.batch}, input {fp32.preprocess.size}px, flip-TTA "
        f"{fp32.info.extra.get('flip_tta')}"
    )
    base = rates["torch eager fp32"]
    for name, r in rates.items():
        print(f"  {name:<18} {r:8.1f} img/s   {r / base:5.2f}x torch")


if __name__ == "__main__":
    main()
