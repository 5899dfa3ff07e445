"""How a lane camera sees a product, as numpy image functions (torch-free, so evaluation can show
an embedder the same views that training augments with): a lane camera's degradations and a hand
covering part of the item, each driven by the random state it is given, so a seeded view repeats."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from retail_reid.compat import StrEnum

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


def hand_occlusion(img: np.ndarray, rng: np.random.RandomState, reach: float = 1.0) -> np.ndarray:
    """A hand holding the item, the commonest occlusion at a checkout: a shaded skin-coloured palm
    entering from a random edge with four fingers reaching over the item, hiding about 8-15 % of
    a BGR crop (`reach` scales how far it reaches in). Soft-edged, so the occluder is not a sharp
    rectangle the network could learn to ignore."""
    h, w = img.shape[:2]
    side = rng.randint(4)  # 0 left, 1 right, 2 top, 3 bottom: the edge the hand comes from
    along, across = (h, w) if side < 2 else (w, h)
    centre = rng.uniform(0.25, 0.75) * along
    palm_half = rng.uniform(0.18, 0.3) * along  # half the palm's width along the edge
    depth = rng.uniform(0.12, 0.22) * across * reach  # how far the palm reaches in
    finger = rng.uniform(0.15, 0.3) * across * reach  # and the fingers beyond it
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


class LaneLevel(StrEnum):
    """The declared lane cameras that benchmarks, training and rendered galleries share."""

    MILD = "mild"  # a good camera close to the scan zone
    MIDDLE = "middle"  # a typical 640x480 lane: small items, motion blur, compression, hands
    HARD = "hard"  # `reid simulate --difficulty hard`'s camera: long blur, tiny items, big hands


@dataclass(frozen=True, kw_only=True)
class LaneCamera:
    """How one lane camera renders an item: each field is a declared range that a view draws from its
    seeded random state, so a seed and a profile give the same view on every machine. `render` takes
    a photo (HxWx3 uint8 BGR) and returns the crop the lane's detector would cut: small, blurred along
    the item's motion, noisy, JPEG-blocked, partly under a hand. The default is the middle level."""

    side_px: tuple[int, int] = (80, 130)  # the item's longer side in the frame
    blur_px: tuple[int, int] = (5, 9)  # motion blur length at that size (every view is moving)
    noise_sd: float = 4.0  # sensor noise, grey levels
    jpeg_quality: tuple[int, int] = (35, 35)
    hand_share: float = 0.5  # share of views with a hand over part of the item
    hand_reach: float = 1.0  # scales how far the hand reaches in (1: about 8-15 % of the crop hidden)
    crop_jitter: float = 0.06  # the detector's box is off by up to this share of a side, each side

    def __post_init__(self) -> None:
        for name in ("side_px", "blur_px", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"lane camera: {name} must be a range 0 < low <= high, not {(lo, hi)}")
        if not 1 <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"lane camera: jpeg_quality must lie in 1..100, not {self.jpeg_quality}")
        for name, top in (("noise_sd", 64.0), ("hand_share", 1.0), ("hand_reach", 3.0), ("crop_jitter", 0.3)):
            value = getattr(self, name)
            if not 0 <= value <= top:
                raise ValueError(f"lane camera: {name} must lie in 0..{top}, not {value}")

    def render(self, img: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        """One view of the photo `img` through this camera (the small crop, as the lane sees it)."""
        if rng.rand() < self.hand_share:
            img = hand_occlusion(img, rng, self.hand_reach)
        img = _jitter(img, rng, self.crop_jitter)
        h, w = img.shape[:2]
        s = min(1.0, rng.randint(self.side_px[0], self.side_px[1] + 1) / max(h, w))
        small = cv2.resize(img, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
        small = cv2.filter2D(
            small, -1, motion_kernel(rng.randint(self.blur_px[0], self.blur_px[1] + 1), rng.uniform(0, 180))
        )
        noisy = small.astype(np.float32) + rng.normal(0.0, self.noise_sd, small.shape)
        small = np.clip(noisy, 0, 255).astype(np.uint8)
        q = int(rng.randint(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        decoded = cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)
        assert decoded is not None  # cv2's own JPEG encoding always decodes
        return decoded

    def views(self, img: np.ndarray, seed: int, n: int) -> list[np.ndarray]:
        """`n` views of one photo, the same for the same seed."""
        rng = np.random.RandomState(seed)
        return [self.render(img, rng) for _ in range(n)]

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> LaneCamera:
        """A profile as `to_dict` wrote it; unknown keys and bad values are a ValueError naming them."""
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"lane camera: unknown field(s) {', '.join(sorted(unknown))}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        try:
            return cls(**kw)  # type: ignore[arg-type]
        except TypeError as e:
            raise ValueError(f"lane camera: {e}") from None


LANE_LEVELS: dict[LaneLevel, LaneCamera] = {
    LaneLevel.MILD: LaneCamera(
        side_px=(120, 200), blur_px=(1, 4), noise_sd=2.0, jpeg_quality=(60, 90), hand_share=0.25, crop_jitter=0.04
    ),
    # the row of issue 22's table: 80-130 px, blur 5-9 px, noise sd 4, JPEG 35, a hand on half
    LaneLevel.MIDDLE: LaneCamera(),
    # the hard lanes' camera: 80-130 px items smeared 12-19 px, a hand over up to about a third
    LaneLevel.HARD: LaneCamera(
        side_px=(80, 130), blur_px=(12, 19), noise_sd=6.0, jpeg_quality=(30, 50), hand_share=0.6, hand_reach=2.0
    ),
}


def _jitter(img: np.ndarray, rng: np.random.RandomState, share: float) -> np.ndarray:
    """The photo as a detector's box cuts it: each side moved in or out by up to `share` of the side
    (out: the edge pixels repeat, as background would show)."""
    h, w = img.shape[:2]
    t, b, lt, r = (round(rng.uniform(-share, share) * s) for s in (h, h, w, w))
    img = cv2.copyMakeBorder(img, max(0, -t), max(0, -b), max(0, -lt), max(0, -r), cv2.BORDER_REPLICATE)
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[max(0, t) : h - max(0, b), max(0, lt) : w - max(0, r)])
