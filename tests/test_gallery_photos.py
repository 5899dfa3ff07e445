"""Reading reference photos (gallery/photos.py): the perceptual hash tells re-saved copies from
different photos."""

from __future__ import annotations

from itertools import combinations

import cv2
from gallery_fixtures import TRAIN, bits

from retail_reid.gallery.check import NEAR_DUPLICATE_BITS
from retail_reid.gallery.photos import perceptual_hash
from retail_reid.images import read_image


def test_perceptual_hash_tells_copies_from_different_photos():
    photos = sorted(TRAIN.glob("*/*.jpg"))
    hashes = [perceptual_hash(read_image(p)) for p in photos]
    closest = min(bits(a, b) for a, b in combinations(hashes, 2))
    assert closest > NEAR_DUPLICATE_BITS
    for p, h in zip(photos[::12], hashes[::12], strict=True):
        img = read_image(p)
        _ok, jpeg = cv2.imencode(
            ".jpg", cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 70]
        )
        assert bits(perceptual_hash(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)), h) <= 4
