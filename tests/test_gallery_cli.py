"""`reid gallery ...` (gallery/cli.py) end to end: the commands' output, and errors as one line with
exit status 2."""

from __future__ import annotations

import json
import tarfile

import pytest
from gallery_fixtures import SKUS, TRAIN, VAL, run_reid

from retail_reid.cli import main
from retail_reid.gallery import GalleryError
from retail_reid.gallery.bundle import EMBEDDINGS, MANIFEST, export_bundle


def test_cli_init_import_add_list_show(tmp_path, capsys):
    root = tmp_path / "g"
    assert main(["gallery", "init", str(root), "--operator", "alice"]) == 0
    assert main(["gallery", "import-folder", str(root), str(VAL), "--operator", "bob"]) == 0
    out = capsys.readouterr()
    assert "version 2: import-folder" in out.out and "embed" in out.err  # the progress bar
    photo = sorted((TRAIN / "Kiwi").glob("*.jpg"))[0]
    assert (
        main(["gallery", "add", str(root), "--sku", "Kiwi", "--name", "Kiwi grün", "--barcode", "4011", str(photo)])
        == 0
    )
    assert main(["gallery", "list", str(root), "--json"]) == 0
    listed = {p["sku"]: p for p in json.loads(capsys.readouterr().out.split("\n", 1)[1])}
    assert set(listed) == set(SKUS) and listed["Kiwi"]["name"] == "Kiwi grün" and listed["Kiwi"]["barcodes"] == ["4011"]
    assert listed["Kiwi"]["refs"] == len(list((VAL / "Kiwi").glob("*.jpg"))) + 1
    assert main(["gallery", "show", str(root), "--sku", "Kiwi"]) == 0
    assert str(photo) in capsys.readouterr().out
    assert main(["gallery", "history", str(root), "-v"]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "bob" in out and "Kiwi: updated product 'Kiwi': name='Kiwi grün'; barcodes +4011" in out


def test_cli_errors_are_one_line_and_exit_2(gallery_dir, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = run_reid("gallery", "add", gallery_dir, "--sku", "Kiwi", empty)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"reid gallery: error: 1 of 1 photos cannot be added; nothing changed (--skip-bad adds the rest): {empty}: "
        "file is empty (0 bytes)"
    )
    result = run_reid("gallery", "show", tmp_path, "--sku", "Kiwi")
    assert result.returncode == 2 and "not a gallery" in result.stderr and "Traceback" not in result.stderr


def test_export_via_cli(built_gallery, tmp_path, capsys):
    out = tmp_path / "b.tar"
    assert main(["gallery", "export", str(built_gallery), str(out)]) == 0
    assert "version 2, 96 references of 12 SKUs" in capsys.readouterr().out
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names[:2] == [MANIFEST, EMBEDDINGS] and len(names) == 2 + 96
    with pytest.raises(GalleryError, match="no such directory"):
        export_bundle(built_gallery, tmp_path / "missing" / "b.tar")
