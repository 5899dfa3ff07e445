"""Training data: decoded once into memory (JPEG decoding would otherwise compete with the
network for two CPU cores), augmented per sample the way checkout crops vary."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from retail_reid.images import read_image
from retail_reid.models.datasets import ImageSet
from retail_reid.models.preprocess import Preprocess
from retail_reid.models.views import AUGMENTATIONS, SKIN_RGB, lane_camera


class LaneCamera:
    """A checkout camera's view of the product (`retail_reid.models.views.lane_camera`) on a uint8
    RGB tensor, drawn from numpy's global random state (seeded by training's seed)."""

    def __init__(
        self, sides: tuple[int, int], blur_px: int = 9, noise: float = 6.0, quality: tuple[int, int] = (35, 95)
    ):
        self.sides, self.blur_px, self.noise, self.quality = sides, blur_px, noise, quality

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        # lane_camera's JPEG encoder reads BGR: reorder the RGB tensor's channels on the way in and out
        bgr = np.ascontiguousarray(img.permute(1, 2, 0).numpy()[:, :, ::-1])
        big = lane_camera(bgr, _GLOBAL_RANDOM, self.sides, self.blur_px, self.noise, self.quality)
        return torch.from_numpy(np.ascontiguousarray(big[:, :, ::-1])).permute(2, 0, 1)


_GLOBAL_RANDOM = np.random.mtrand._rand  # the RandomState behind np.random.*, which np.random.seed seeds


def train_transform(pre: Preprocess, augment: str = "photo") -> v2.Compose:
    """Augmentations on uint8 RGB tensors. "photo": crop/scale, mirror, tilt, light and colour
    changes and motion-like blur. "checkout": views like a lane camera's crops of the product:
    mostly whole, sometimes smaller in the frame, tilted, seen by a lane camera (low resolution,
    motion blur, sensor noise, compression), partly hidden by a hand. "checkout-hard": the same,
    smaller, more blurred and more hidden, as the hard lanes' camera sees items."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    fill = [round(255 * m) for m in pre.mean]
    colour = [
        v2.ColorJitter(brightness=0.35, contrast=0.3, saturation=0.3, hue=0.03),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.8))], p=0.25),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if augment == "photo":
        geometry = [
            v2.RandomResizedCrop(pre.size, scale=(0.35, 1.0), ratio=(0.75, 1.333), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.RandomRotation(20, fill=fill)], p=0.5),
        ]
        return v2.Compose(geometry + colour + [v2.Normalize(list(pre.mean), list(pre.std))])
    # "checkout-hard": the hard camera of `reid simulate --difficulty hard`: items of 80-130 px,
    # 12-19 px of motion blur, stronger noise and blocking, a hand over up to a third of the item.
    hard = augment == "checkout-hard"
    camera = LaneCamera((70, 140), blur_px=20, noise=8.0, quality=(30, 95)) if hard else LaneCamera((90, 200))
    geometry = [
        v2.RandomResizedCrop(pre.size, scale=(0.6, 1.0), ratio=(0.75, 1.333), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply(
            [v2.RandomZoomOut(fill=fill, side_range=(1.0, 1.4)), v2.Resize((pre.size, pre.size), antialias=True)], p=0.4
        ),
        v2.RandomApply([v2.RandomRotation(15, fill=fill)], p=0.5),
        v2.RandomApply([camera], p=0.75 if hard else 0.6),
    ]
    cover = (0.05, 0.33) if hard else (0.02, 0.12)
    hand = [v2.RandomErasing(p=0.5 if hard else 0.3, scale=cover, ratio=(0.5, 2.0), value=list(SKIN_RGB))]
    return v2.Compose(geometry + colour + hand + [v2.Normalize(list(pre.mean), list(pre.std))])


class LabelledImages(Dataset):
    """Images with integer SKU labels; train mode augments, eval mode applies the runtime's
    exact preprocessing (retail_reid.models.preprocess), so validation scores match deployment."""

    def __init__(
        self,
        images: ImageSet,
        sku_index: dict[str, int],
        pre: Preprocess,
        train: bool,
        progress: bool = True,
        augment: str = "photo",
    ):
        self.labels = np.array([sku_index[s] for s in images.labels], np.int64)
        self.pre = pre
        self.train = train
        self.transform = train_transform(pre, augment) if train else None
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
            assert self.transform is not None  # set whenever train is
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
