"""Training data: decoded once into memory (JPEG decoding would otherwise compete with the
network for two CPU cores), augmented per sample the way checkout crops vary."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from models.datasets import ImageSet
from models.images import read_image
from models.preprocess import Preprocess


def train_transform(pre: Preprocess) -> v2.Compose:
    """Crop/scale, mirror, tilt, light and colour changes and motion-like blur, on uint8 RGB tensors."""
    fill = [round(255 * m) for m in pre.mean]
    return v2.Compose(
        [
            v2.RandomResizedCrop(pre.size, scale=(0.35, 1.0), ratio=(0.75, 1.333), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.RandomRotation(20, fill=fill)], p=0.5),
            v2.ColorJitter(brightness=0.35, contrast=0.3, saturation=0.3, hue=0.03),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.8))], p=0.25),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pre.mean), list(pre.std)),
        ]
    )


class LabelledImages(Dataset):
    """Images with integer SKU labels; train mode augments, eval mode applies the runtime's
    exact preprocessing (models.preprocess), so validation scores match deployment."""

    def __init__(self, images: ImageSet, sku_index: dict[str, int], pre: Preprocess, train: bool, progress: bool = True):
        self.labels = np.array([sku_index[s] for s in images.labels], np.int64)
        self.pre = pre
        self.train = train
        self.transform = train_transform(pre) if train else None
        cache_side = round(pre.size * 1.25)
        self.images = []
        for p in tqdm(images.paths, desc="decode", unit="img", disable=not progress):
            bgr = read_image(p)
            if train:  # keep a little more than the crop size for RandomResizedCrop, as RGB for torchvision
                bgr = np.ascontiguousarray(_shrink(bgr, cache_side)[:, :, ::-1])
            self.images.append(bgr)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.train:
            x = self.transform(torch.from_numpy(self.images[i]).permute(2, 0, 1))
        else:
            x = torch.from_numpy(self.pre(self.images[i]))
        return x, int(self.labels[i])


def _shrink(bgr: np.ndarray, max_side: int) -> np.ndarray:
    h, w = bgr.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return bgr
    return cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
