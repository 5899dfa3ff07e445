"""Lane-camera renderings of reference photos: what a gallery adds so that it sees products as its
lanes do (a photo taken with a phone is thousands of pixels of sharp texture; a lane camera gives
80-130 blurred, JPEG-blocked pixels, often under a hand).

Each gallery has a lane camera profile (`LaneProfile`: a `LaneCamera` and how many views of each
photo it renders), kept in the database's meta and in every version's manifest. Each catalogue
photo's views are drawn from a random state seeded by the photo's sha256, so the same photo, profile
and model always give the same vectors (a rebuild, a bundle import or a re-render repeats them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.image_store import sha256_bytes
from retail_reid.gallery.photos import read_bytes
from retail_reid.images import ImageError, decode_image
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.models.views import LANE_LEVELS, LaneCamera, LaneLevel

META_KEY = "lane_camera"  # in the database's meta and each version's manifest
DEFAULT_VIEWS = 2
MAX_VIEWS = 16  # each view is one more vector per photo to embed, store and average


@dataclass(frozen=True, kw_only=True)
class LaneProfile:
    """How a gallery renders its photos: `views` lane-camera views of each photo through `camera`
    (0: no renderings)."""

    camera: LaneCamera = field(default_factory=lambda: LANE_LEVELS[LaneLevel.MIDDLE])
    views: int = DEFAULT_VIEWS

    def __post_init__(self) -> None:
        if not (isinstance(self.views, int) and 0 <= self.views <= MAX_VIEWS):
            raise GalleryError(f"lane camera: views must be a whole number in 0..{MAX_VIEWS}, not {self.views!r}")

    def to_dict(self) -> dict[str, object]:
        return {"views": self.views, **self.camera.to_dict()}

    @classmethod
    def from_dict(cls, raw: object, where: str) -> LaneProfile:
        """A profile as `to_dict` wrote it; anything else is a GalleryError naming `where` and the field."""
        if not isinstance(raw, dict):
            raise GalleryError(f"{where}: the lane camera profile must be an object, not {type(raw).__name__}")
        raw = dict(raw)
        views = raw.pop("views", DEFAULT_VIEWS)
        try:
            return cls(camera=LaneCamera.from_dict(raw), views=views)
        except (ValueError, GalleryError) as e:
            raise GalleryError(f"{where}: {e}") from None

    def describe(self) -> str:
        """One line for an operator."""
        if not self.views:
            return "off (no lane-camera renderings)"
        c = self.camera
        views = f"{self.views} view{'s' * (self.views > 1)} per photo"
        return (
            f"{views}: item {c.side_px[0]}-{c.side_px[1]} px, motion blur {c.blur_px[0]}-"
            f"{c.blur_px[1]} px, noise sd {c.noise_sd:g}, JPEG quality {c.jpeg_quality[0]}-{c.jpeg_quality[1]}, "
            f"a hand on {c.hand_share:.0%} (reach {c.hand_reach:g}), box jitter {c.crop_jitter:g}"
        )


OFF = LaneProfile(views=0)


def profile_from_meta(meta: dict[str, str], where: str) -> LaneProfile:
    """The gallery's profile; a gallery made before profiles existed renders nothing until one is set."""
    if META_KEY not in meta:
        return OFF
    try:
        raw = json.loads(meta[META_KEY])
    except json.JSONDecodeError as e:
        raise GalleryError(f"{where}: meta {META_KEY!r} is not valid JSON ({e})") from None
    return LaneProfile.from_dict(raw, f"{where}: meta {META_KEY!r}")


def profile_json(profile: LaneProfile) -> str:
    return json.dumps(profile.to_dict(), sort_keys=True)


def seed_for(sha256: str) -> int:
    """The random seed of a photo's views: from its content, so the same photo renders the same."""
    return int(sha256[:8], 16)


def embed_renderings(
    photos: Sequence[tuple[str, Path]], profile: LaneProfile, embedder: OnnxEmbedder, progress: bool = False
) -> np.ndarray:
    """Render and embed `profile.views` views of each (sha256, path) photo: (len(photos), views, D).

    Every photo was read before (added, stored or unpacked), so one that no longer reads as the
    same image is an error naming it.
    """
    dim = embedder.dim
    if not profile.views or not photos:
        return np.zeros((len(photos), profile.views, dim), np.float32)

    def views() -> Iterator[np.ndarray]:
        for sha, path in tqdm(photos, desc="lane-camera views", unit="photo", disable=not progress):
            try:
                data = read_bytes(path)
                if sha256_bytes(data) != sha:
                    raise ImageError(f"{path}: the file changed while it was being added; add it again")
                image = decode_image(data, str(path))
            except ImageError as e:
                raise GalleryError(str(e)) from None
            yield from profile.camera.views(image, seed_for(sha), profile.views)

    return embedder.embed(views()).reshape(len(photos), profile.views, dim)
