"""Class-disjoint folds: the SKUs split into K groups so an embedder can be trained on some SKUs and
judged on SKUs it never saw (Musgrave et al.'s protocol), as a store's new products will be. A coarse
kind (all apples, all oat milks) stays in one fold: look-alikes are the hard case, and a held-out
apple is easy to place if three other apples were trained on."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from retail_reid.models.datasets import DataError

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable  # only named in annotations
    else:
        from importlib.abc import Traversable

# The project's folds (81 grocery SKUs in 4), package data beside this module so that an installed
# wheel has them too.
FOLDS_FILE = resources.files("retail_reid.models.research").joinpath("folds.json")


@dataclass(frozen=True)
class Folds:
    """K disjoint groups of SKUs, with each SKU's coarse kind (so the split can be re-derived)."""

    coarse: dict[str, str]  # SKU -> coarse kind
    folds: tuple[tuple[str, ...], ...]

    def held_out(self, fold: int) -> set[str]:
        """The SKUs fold `fold` evaluates on (never trained on in that fold)."""
        if not 0 <= fold < len(self.folds):
            raise DataError(f"fold {fold} does not exist: there are {len(self.folds)} (0 to {len(self.folds) - 1})")
        return set(self.folds[fold])

    def trained(self, fold: int) -> set[str]:
        """The SKUs fold `fold` trains on: every other fold's."""
        return set(self.coarse) - self.held_out(fold)

    def to_json(self) -> str:
        return json.dumps(
            {
                "rule": "coarse kinds largest first, each into the fold with the fewest SKUs (ties: lowest fold)",
                "coarse": self.coarse,
                "folds": [list(f) for f in self.folds],
            },
            indent=1,
        )


def coarse_kinds(classes_csv: str | Path) -> dict[str, str]:
    """SKU (fine class name) -> coarse class name, from the grocery data's classes.csv."""
    path = Path(classes_csv)
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    out = {}
    for lineno, row in enumerate(rows, start=2):
        try:
            out[row["Class Name (str)"]] = row["Coarse Class Name (str)"]
        except KeyError as e:
            raise DataError(f"{path}:{lineno}: missing column {e}") from None
    if not out:
        raise DataError(f"{path}: names no classes")
    return out


def make_folds(coarse: dict[str, str], k: int = 4) -> Folds:
    """Split the SKUs into `k` folds of nearly equal size, each coarse kind whole: kinds largest first
    (ties by name), each into the fold holding the fewest SKUs so far (ties: the lowest fold).
    Deterministic: the same classes give the same folds."""
    kinds: dict[str, list[str]] = {}
    for sku, kind in coarse.items():
        kinds.setdefault(kind, []).append(sku)
    if not 2 <= k <= len(kinds):
        raise DataError(f"cannot make {k} folds of {len(kinds)} coarse kinds (need 2 to {len(kinds)})")
    folds: list[list[str]] = [[] for _ in range(k)]
    for kind in sorted(kinds, key=lambda c: (-len(kinds[c]), c)):
        smallest = min(range(k), key=lambda i: (len(folds[i]), i))
        folds[smallest] += kinds[kind]
    return Folds(coarse=dict(sorted(coarse.items())), folds=tuple(tuple(sorted(f)) for f in folds))


def read_folds(path: str | Path | Traversable = FOLDS_FILE) -> Folds:
    """Folds written by `Folds.to_json` (the project's are `FOLDS_FILE`), checked disjoint."""
    p = Path(path) if isinstance(path, str) else path
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        coarse, folds = dict(raw["coarse"]), tuple(tuple(f) for f in raw["folds"])
    except OSError as e:
        raise DataError(f"{p}: cannot read folds ({e.strerror or e})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{p}: not a folds file (needs 'coarse' and 'folds'; {e})") from None
    seen: dict[str, int] = {}
    for i, fold in enumerate(folds):
        for sku in fold:
            if sku in seen:
                raise DataError(f"{p}: SKU {sku!r} is in fold {seen[sku]} and fold {i}")
            if sku not in coarse:
                raise DataError(f"{p}: SKU {sku!r} of fold {i} has no coarse kind")
            seen[sku] = i
    return Folds(coarse=coarse, folds=folds)
