"""Where labelled product photos come from: list files, split files, folder-per-SKU trees and
the catalog ("iconic") photos of the grocery data. Torch-free: used by embed, eval and training."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from retail_reid.errors import ReidError
from retail_reid.images import IMAGE_SUFFIXES


class DataError(ReidError, ValueError):
    """A list file or image folder that cannot be read; names the file and line."""


@dataclass(frozen=True)
class ImageSet:
    """Image paths with their SKU labels (one label per path)."""

    paths: tuple[Path, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __add__(self, other: ImageSet) -> ImageSet:
        return ImageSet(self.paths + other.paths, self.labels + other.labels)

    @property
    def skus(self) -> list[str]:
        return sorted(set(self.labels))

    def only(self, skus: set[str]) -> ImageSet:
        """The images whose SKU is in `skus`."""
        keep = [i for i, s in enumerate(self.labels) if s in skus]
        return ImageSet(tuple(self.paths[i] for i in keep), tuple(self.labels[i] for i in keep))


def read_list_file(path: str | Path, root: str | Path | None = None) -> list[Path]:
    """One image path per line; anything after the first comma is ignored (so the grocery
    split files work as they are); blank lines and a UTF-8 BOM are tolerated.
    Relative paths are taken from `root`, else from the list file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{p}: list file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read list file ({e.strerror or e})") from None
    base = Path(root) if root is not None else p.parent
    out = []
    for line in text.splitlines():
        entry = line.split(",", 1)[0].strip()
        if entry:
            out.append(base / entry)
    if not out:
        raise DataError(f"{p}: list file names no images")
    return out


def split_file_set(path: str | Path, root: str | Path | None = None) -> ImageSet:
    """A grocery-style split file: the SKU of each image is the name of its folder."""
    paths = read_list_file(path, root)
    return ImageSet(tuple(paths), tuple(q.parent.name for q in paths))


def folder_set(folder: str | Path) -> ImageSet:
    """FOLDER/<sku>/*.jpg (any common image suffix), sorted for reproducibility."""
    f = Path(folder)
    if not f.is_dir():
        raise DataError(f"{f}: not a folder")
    paths, labels = [], []
    for sku_dir in sorted(d for d in f.iterdir() if d.is_dir()):
        for img in sorted(sku_dir.iterdir()):
            if img.suffix.lower() in IMAGE_SUFFIXES and img.is_file():
                paths.append(img)
                labels.append(sku_dir.name)
    if not paths:
        raise DataError(f"{f}: no images found in FOLDER/<sku>/ sub-folders")
    return ImageSet(tuple(paths), tuple(labels))


def iconic_set(root: str | Path) -> ImageSet:
    """One catalog photo per SKU: ROOT/classes.csv of the grocery data, or a folder of <sku>.jpg files."""
    root = Path(root)
    csv_path = root / "classes.csv"
    if not csv_path.exists():
        if not root.is_dir():
            raise DataError(f"{root}: neither a folder of <sku>.jpg catalog photos nor a dataset with classes.csv")
        photos = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not photos:
            raise DataError(f"{root}: no catalog photos (<sku>.jpg) found")
        return ImageSet(tuple(photos), tuple(p.stem for p in photos))
    rows = list(csv.DictReader(csv_path.read_text(encoding="utf-8-sig").splitlines()))
    paths, labels = [], []
    for lineno, row in enumerate(rows, start=2):
        try:
            name, rel = row["Class Name (str)"], row["Iconic Image Path (str)"]
        except KeyError as e:
            raise DataError(f"{csv_path}:{lineno}: missing column {e}") from None
        paths.append(root / rel.lstrip("/"))
        labels.append(name)
    return ImageSet(tuple(paths), tuple(labels))


def image_set(spec: str | Path, root: str | Path | None = None) -> ImageSet:
    """A split/list file (labels from folder names) or a folder-per-SKU tree."""
    p = Path(spec)
    if p.is_dir():
        return folder_set(p)
    return split_file_set(p, root)


@dataclass(frozen=True)
class GroceryData:
    """The three image sets of a grocery-style dataset root: train.txt, val.txt, classes.csv."""

    train: ImageSet
    val: ImageSet
    iconic: ImageSet | None

    @classmethod
    def load(cls, root: str | Path) -> GroceryData:
        root = Path(root)
        iconic = iconic_set(root) if (root / "classes.csv").exists() else None
        return cls(split_file_set(root / "train.txt", root), split_file_set(root / "val.txt", root), iconic)

    @property
    def train_and_iconic(self) -> ImageSet:
        """The train photos followed by the catalog photos (if any): what the caches render."""
        return self.train + self.iconic if self.iconic else self.train

    def only(self, skus: set[str]) -> GroceryData:
        return GroceryData(self.train.only(skus), self.val.only(skus), self.iconic.only(skus) if self.iconic else None)
