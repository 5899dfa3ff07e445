"""How much one view of an item can tell about which product it is, as a number in [0, 1].

A pass gives a few views of its item, and on a checkout lane they differ a lot: the item is small
as it enters and large under the camera, smeared by motion at speed and sharp as it slows, and the
cashier's hand covers more of it in some frames than in others. The embedder cannot tell a view that
lost the product's detail from one that kept it, so a pass's embedding was the plain mean of its
views, and a blurred, hand-covered view spoke as loudly as a clean one. `view_quality` scores each
view on the three things that lose detail, each in [0, 1], and their product (`ViewQuality.score`)
chooses the views a pass keeps and weights them in its embedding (`recognition.aggregate`).

- size: the crop's short side over `FULL_SIDE` (the item's detail grows with its pixels up to
  about the size the lane camera gives a near item), at most 1;
- sharpness: the variance of the Laplacian at a fixed scale (`sharpness`), as s / (s + `SHARP_HALF`),
  so a view at the lane's usability bar scores one half and sharper views approach 1;
- hand: the share of the crop that is skin-coloured (YCrCb, the classic skin box) and smooth (a
  hand has no print; the shelves of fruit and warm-lit shops in product photos are skin-coloured
  but textured: colour alone read 0.46 of an easy lane's crops as hand, where the fingers only
  touch the item), in regions that reach the crop's edge: a hand enters the item's box from
  outside, while skin-coloured print inside the item does not. A smooth skin-coloured product
  (potato, peach, bread) reads as hand too, but it does so in every view of its pass alike, and
  only the ratio between a pass's views matters: a constant factor drops out of both the choice
  and the weights (`HAND_FLOOR` keeps such views from scoring 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FULL_SIDE = 128  # px: a short side at which a view counts as full size
SHARP_HALF = 200.0  # the sharpness (`sharpness`) scored one half: the lane's usability bar
HAND_FLOOR = 0.1  # the hand factor's least value: an all-skin crop still counts a little
SHARPNESS_SIDE = 96  # crops are measured at this long side, so sharpness does not grow with size
HAND_SIDE = 64  # crops are measured for skin at this long side (cheap; a hand is a big region)
# Skin in OpenCV's YCrCb: Chai and Ngan's box (Cr 133-173, Cb 77-127), its blue-difference floor
# raised to 85 as it also takes in yellow and orange packaging; a floor on the luma keeps dark
# shadow out. Every skin tone the simulator draws (pipeline.harness.simulate) lies inside it.
SKIN_LOW = np.array([40, 133, 85], np.uint8)
SMOOTH_BELOW = 8.0  # grey levels: a hand's local spread (5x5 px at HAND_SIDE), twice a noisy camera's
SKIN_HIGH = np.array([255, 173, 127], np.uint8)


@dataclass(frozen=True, kw_only=True)
class ViewQuality:
    """A view's size, sharpness and hand cover, each in [0, 1]; `score` is what it is worth."""

    size: float
    sharpness: float
    hand: float

    @property
    def score(self) -> float:
        return self.size * self.sharpness * max(HAND_FLOOR, 1.0 - self.hand)


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian at a fixed scale: low for motion-blurred or out-of-focus views."""
    h, w = image.shape[:2]
    s = SHARPNESS_SIDE / max(h, w)
    gray = cv2.cvtColor(
        cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA),
        cv2.COLOR_BGR2GRAY,
    )
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def hand_fraction(image: np.ndarray) -> float:
    """The share of a BGR crop that is skin-coloured, smooth and connected to the crop's edge."""
    h, w = image.shape[:2]
    s = min(1.0, HAND_SIDE / max(h, w))
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    skin = cv2.inRange(cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb), SKIN_LOW, SKIN_HIGH)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    mean = cv2.blur(gray, (5, 5))
    smooth = cv2.blur(gray * gray, (5, 5)) - mean * mean < SMOOTH_BELOW**2
    skin = cv2.morphologyEx(np.where(smooth, skin, 0).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, labels = cv2.connectedComponents(skin, connectivity=8)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]  # label 0 is the background of the skin mask
    return float(np.isin(labels, border).mean()) if border.size else 0.0


def view_quality(image: np.ndarray) -> ViewQuality:
    """Score one BGR crop of an item (see the module's docstring)."""
    s = sharpness(image)
    return ViewQuality(
        size=min(1.0, min(image.shape[:2]) / FULL_SIDE),
        sharpness=s / (s + SHARP_HALF),
        hand=hand_fraction(image),
    )
