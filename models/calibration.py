"""Similarity -> confidence: a logistic fit on validation genuine/impostor scores, plus the
operating thresholds (at chosen false-accept rates) that product-switch alerts use.

Scores, and so thresholds, depend on how a SKU is scored from its references: by its nearest
reference ("nearest") or by their normalised mean ("centroid"). A calibration says which it was fitted
for, and the gallery scores that way."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCORINGS = ("centroid", "nearest")


@dataclass(frozen=True)
class Calibration:
    """confidence(s) = sigmoid(a * s + b); thresholds map names such as 'far_0.01' to similarities
    of SKU scores made the `scoring` way."""

    a: float
    b: float
    thresholds: dict[str, float] = field(default_factory=dict)
    scoring: str = "nearest"

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"calibration scoring must be one of {SCORINGS}, got {self.scoring!r}")

    def confidence(self, similarity: np.ndarray | float) -> np.ndarray:
        s = np.asarray(similarity, np.float64)
        return (1.0 / (1.0 + np.exp(-(self.a * s + self.b)))).astype(np.float32)

    def threshold(self, name: str) -> float:
        try:
            return self.thresholds[name]
        except KeyError:
            raise KeyError(f"calibration has no threshold {name!r}; it has {sorted(self.thresholds)}") from None

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "thresholds": dict(self.thresholds), "scoring": self.scoring}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        try:
            a, b = float(d["a"]), float(d["b"])
            thresholds = {str(k): float(v) for k, v in d.get("thresholds", {}).items()}
            scoring = d.get("scoring", "nearest")  # files written before there was a choice
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"calibration must have numbers 'a', 'b' and a 'thresholds' map: {e}") from None
        if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
            raise ValueError(f"calibration slope a must be a positive finite number, got a={a}, b={b}")
        return cls(a, b, thresholds, scoring)


def fit_logistic(genuine: np.ndarray, impostor: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """Class-balanced 1-D logistic regression by Newton's method (Platt scaling)."""
    x = np.concatenate([genuine, impostor]).astype(np.float64)
    y = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    w = np.concatenate([np.full(len(genuine), 0.5 / len(genuine)), np.full(len(impostor), 0.5 / len(impostor))])
    X = np.stack([x, np.ones_like(x)], 1)
    theta = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ theta)))
        grad = X.T @ (w * (p - y))
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def fit_calibration(
    genuine: np.ndarray, impostor: np.ndarray, thresholds: dict[str, float], scoring: str = "nearest"
) -> Calibration:
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("calibration needs both genuine and impostor scores")
    a, b = fit_logistic(genuine, impostor)
    return Calibration(a, b, thresholds, scoring)
