"""Fine-tuning the embedder: P SKUs x K photos per batch, a PML objective, AdamW with warm-up and
cosine decay, keep-best on validation MAP@R, resumable checkpoints and a JSON-lines metrics log."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from torch.utils.data import DataLoader
from tqdm import tqdm

from retail_reid.models.backbone import DEFAULT_BACKBONE, create_backbone
from retail_reid.models.data import LabelledImages
from retail_reid.models.datasets import ImageSet
from retail_reid.models.losses import build_objective
from retail_reid.models.metrics import reality_check
from retail_reid.models.net import KEEP_IMAGENET, EmbeddingNet, KeepImageNetNet
from retail_reid.models.preprocess import Preprocess


@dataclass
class TrainConfig:
    out: str
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = True
    weights: str | None = None
    dim: int = 128
    size: int = 224
    loss: str = "triplet"
    miner: str = "semihard"
    margin: float = 0.2
    epochs: int = 10
    skus_per_batch: int = 16  # P
    per_sku: int = 4  # K
    lr_backbone: float = 2e-4
    lr_head: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    freeze_blocks: int = 0
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    steps_per_epoch: int = 0  # 0: one pass over the training images
    preprocess: dict = field(default_factory=dict)
    init: str | None = None  # start from this best.pt's weights (fine-tune a trained embedder further)
    augment: str = "photo"  # "photo" or "checkout" (retail_reid.models.data.train_transform)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: TrainConfig) -> EmbeddingNet:
    net = EmbeddingNet(create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights), cfg.dim)
    net.freeze_stages(cfg.freeze_blocks)
    return net


@torch.no_grad()
def embed_dataset(net: torch.nn.Module, data: LabelledImages, device: torch.device, batch_size: int = 64) -> np.ndarray:
    net.eval()
    out = []
    for x, _ in DataLoader(data, batch_size=batch_size):
        out.append(net(x.to(device)).float().cpu().numpy())
    return np.concatenate(out)


def lr_lambda(warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def train(
    cfg: TrainConfig, train_set: ImageSet, val_set: ImageSet, resume: bool = False, progress: bool = True
) -> Path:
    """Train and return the path of the best checkpoint (by validation MAP@R)."""
    start = None
    if cfg.init:  # checked before any data is decoded
        start = read_checkpoint(cfg.init)
        were = TrainConfig(**start["config"])
        if (were.backbone, were.dim) != (cfg.backbone, cfg.dim):
            raise ValueError(
                f"{cfg.init}: a {were.backbone} with {were.dim}-d embeddings; this run is a {cfg.backbone} with "
                f"{cfg.dim}-d"
            )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    pre = Preprocess(size=cfg.size, **cfg.preprocess)
    skus = sorted(set(train_set.labels))
    sku_index = {s: i for i, s in enumerate(skus)}
    unknown = sorted(set(val_set.labels) - set(skus))
    if unknown:
        raise ValueError(f"validation SKUs not in the training data: {unknown[:5]}")

    train_data = LabelledImages(train_set, sku_index, pre, train=True, progress=progress, augment=cfg.augment)
    val_data = LabelledImages(val_set, sku_index, pre, train=False, progress=progress)
    batch = cfg.skus_per_batch * cfg.per_sku
    steps = cfg.steps_per_epoch or max(1, len(train_data) // batch)
    sampler = MPerClassSampler(train_data.labels, m=cfg.per_sku, batch_size=batch, length_before_new_iter=steps * batch)
    loader = DataLoader(train_data, batch_size=batch, sampler=sampler, drop_last=True)

    net = build_model(cfg)
    if start is not None:
        net.load_state_dict(start["model"])
    net = net.to(device)
    objective = build_objective(cfg.loss, cfg.dim, len(skus), cfg.miner, cfg.margin)
    objective.loss.to(device)
    backbone_params = [p for p in net.backbone.parameters() if p.requires_grad]
    head_params = list(net.head.parameters()) + list(objective.loss.parameters())
    opt = torch.optim.AdamW(
        [{"params": backbone_params, "lr": cfg.lr_backbone}, {"params": head_params, "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(round(cfg.warmup_epochs * steps), cfg.epochs * steps))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best = 0, -1.0
    last = out / "last.pt"
    if resume and last.exists():
        state = torch.load(last, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        objective.loss.load_state_dict(state["loss"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        torch.set_rng_state(state["rng"])
        np.random.seed(cfg.seed + start_epoch)

    meta = {"config": asdict(cfg), "skus": skus, "preprocess": pre.to_dict()}
    (out / "config.json").write_text(json.dumps(meta, indent=2))
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        t0, total, n = time.time(), 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                emb = net(x)
            loss = objective(emb.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total, n = total + loss.item(), n + 1
            bar.set_postfix(loss=f"{total / n:.4f}")
        val = reality_check(embed_dataset(net, val_data, device), val_data.labels)
        row = {
            "epoch": epoch + 1,
            "loss": total / max(n, 1),
            "lr_backbone": opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 1),
            **{f"val_{k}": v for k, v in val.items()},
        }
        with open(out / "metrics.jsonl", "a") as log:
            log.write(json.dumps(row) + "\n")
        if progress:
            print(json.dumps(row))
        if val["map_at_r"] > best:
            best = val["map_at_r"]
            torch.save({"model": net.state_dict(), **meta, "epoch": epoch + 1, "val": val}, out / "best.pt")
        torch.save(
            {
                "model": net.state_dict(),
                "loss": objective.loss.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "best": best,
                "rng": torch.get_rng_state(),
            },
            last,
        )
    return out / "best.pt"


def read_checkpoint(path: str | Path) -> dict:
    """A best.pt of `reid train` as saved (weights only; no pickled code is loaded)."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: checkpoint not found (give a best.pt of reid train)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a checkpoint of reid train (no model weights and config)")
    return state


def load_checkpoint(path: str | Path) -> tuple[EmbeddingNet | KeepImageNetNet, Preprocess, dict]:
    """Rebuild a trained network from best.pt (of `reid train`, or of `reid train-tail`)."""
    state = read_checkpoint(path)
    net: EmbeddingNet | KeepImageNetNet
    if state.get("arch") == KEEP_IMAGENET:
        r = state["recipe"]
        backbone = create_backbone(state["config"]["backbone"], pretrained=False)
        net = KeepImageNetNet(backbone, r["dim"], r["tail_stages"], r["imagenet_weight"], r["head_hidden"])
    else:
        cfg = TrainConfig(**state["config"])
        net = EmbeddingNet(create_backbone(cfg.backbone, pretrained=False), cfg.dim)
    net.load_state_dict(state["model"])
    return net.eval(), Preprocess.from_dict(state["preprocess"]), state
