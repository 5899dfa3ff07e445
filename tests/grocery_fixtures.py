"""The bundled sample laid out like the grocery data, for tests of class-disjoint training."""

import csv
from pathlib import Path

SAMPLE = Path("sample/grocery")


def grocery_root(tmp_path: Path) -> Path:
    """The bundled sample laid out like the grocery data: train.txt, val.txt, classes.csv."""
    root = tmp_path / "grocery"
    root.mkdir()
    for split in ("train", "val"):
        (root / split).symlink_to((SAMPLE / split).resolve())
        lines = [f"{p.relative_to(SAMPLE)}, 0, 0" for p in sorted((SAMPLE / split).glob("*/*.jpg"))]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "iconic").symlink_to((SAMPLE / "iconic").resolve())
    rows = list(csv.DictReader((SAMPLE / "classes.csv").read_text().splitlines()))
    with open(root / "classes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({**row, "Iconic Image Path (str)": f"/iconic/{row['Class Name (str)']}.jpg"})
    return root
