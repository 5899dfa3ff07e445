"""How a lane camera sees a product, as numpy image functions (torch-free, so evaluation can show
an embedder the same views that training augments with): a lane camera's degradations and a hand
covering part of the item, each driven by the random state it is given, so a seeded view repeats."""

from __future__ import annotations

import cv2
import numpy as np

SKIN_RGB = (0.80, 0.62, 0.52)  # a hand's colour, in [0, 1]
# Training's augmentations (`retail_reid.models.data.train_transform`): "photo", a lane camera's
# views ("checkout"), and the hard lanes' camera ("checkout-hard").
AUGMENTATIONS = ("photo", "checkout", "checkout-hard")


def lane_camera(
    img: np.ndarray,
    rng: np.random.RandomState,
    sides: tuple[int, int] = (90, 200),
    blur_px: int = 9,
    noise: float = 6.0,
    quality: tuple[int, int] = (35, 95),
) -> np.ndarray:
    """The photo shrunk so its longer side is a random length in `sides` (a lane camera sees an item
    at 100-200 pixels, a phone at thousands), smeared along a random direction as if moving during
    the exposure, with sensor noise and video-codec blocking, then scaled back up. Each degradation is
    applied at the small size, where the camera makes it. `img` is HxWx3 uint8 BGR (the JPEG encoder
    weighs the channels as B, G, R when it computes luma and chroma)."""
    h, w = img.shape[:2]
    s = min(1.0, float(rng.randint(sides[0], sides[1] + 1)) / max(h, w))  # never enlarge
    small = cv2.resize(
        np.ascontiguousarray(img), (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA
    )
    if rng.rand() < 0.6:
        small = cv2.filter2D(small, -1, motion_kernel(rng.randint(2, blur_px + 1), rng.uniform(0, 180)))
    noisy = small.astype(np.float32) + rng.normal(0.0, rng.uniform(0, noise), small.shape)
    small = np.clip(noisy, 0, 255).astype(np.uint8)
    if rng.rand() < 0.5:
        q = int(rng.randint(quality[0], quality[1] + 1))
        decoded = cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)
        assert decoded is not None  # cv2's own JPEG encoding always decodes
        small = decoded
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line `length` pixels long at `angle_deg`: the blur of straight motion."""
    k: np.ndarray = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle_deg, 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    return k / k.sum()


def hand_occlusion(img: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """A hand holding the item, the commonest occlusion at a checkout: a shaded skin-coloured palm
    entering from a random edge with four fingers reaching over the item, hiding about 8-15 % of
    a BGR crop. Soft-edged, so the occluder is not a sharp rectangle the network could learn to ignore."""
    h, w = img.shape[:2]
    side = rng.randint(4)  # 0 left, 1 right, 2 top, 3 bottom: the edge the hand comes from
    along, across = (h, w) if side < 2 else (w, h)
    centre = rng.uniform(0.25, 0.75) * along
    palm_half = rng.uniform(0.18, 0.3) * along  # half the palm's width along the edge
    depth = rng.uniform(0.12, 0.22) * across  # how far the palm reaches in
    finger = rng.uniform(0.15, 0.3) * across  # and the fingers beyond it
    mask: np.ndarray = np.zeros((h, w), np.float32)

    def point(a: float, c: float) -> tuple[int, int]:
        """(along, across-from-the-edge) -> (x, y) pixel."""
        c = c if side in (0, 2) else across - 1 - c
        return (round(c), round(a)) if side < 2 else (round(a), round(c))

    def axes(a: float, c: float) -> tuple[int, int]:
        return (max(1, round(c)), max(1, round(a))) if side < 2 else (max(1, round(a)), max(1, round(c)))

    cv2.ellipse(mask, point(centre, 0), axes(palm_half, depth), 0, 0, 360, 1.0, -1)
    for i in range(4):
        a = centre - palm_half * 0.75 + i * palm_half * 0.5
        length = finger * (0.8 + 0.2 * (1 - abs(i - 1.5) / 1.5))
        cv2.ellipse(mask, point(a, depth), axes(palm_half * 0.14, length), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.01 * max(h, w)))[..., None]
    skin = np.array(SKIN_RGB[::-1], np.float32) * 255 * rng.uniform(0.7, 1.1)
    shade = 1.0 - 0.25 * np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * rng.rand()
    out = img.astype(np.float32) * (1 - mask) + np.clip(skin * shade, 0, 255) * mask
    return np.clip(out, 0, 255).astype(np.uint8)
