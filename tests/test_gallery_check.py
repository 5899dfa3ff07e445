"""`reid gallery check` on real photos: a planted wrong-product reference, a planted re-encoded
duplicate and a SKU with too few photos are reported; the duplicate search is exact."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from gallery_fixtures import TRAIN, VAL, bits

from retail_reid.cli import main
from retail_reid.gallery import GalleryError
from retail_reid.gallery.check import NEAR_DUPLICATE_BITS, RefInfo, check_path, find_duplicates
from retail_reid.gallery.store import GalleryStore


def resaved(src: Path, dest: Path) -> Path:
    """The same picture, smaller and re-encoded, as a second copy from another source would be."""
    img = cv2.imread(str(src))
    h, w = img.shape[:2]
    cv2.imwrite(
        str(dest),
        cv2.resize(img, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA),
        [cv2.IMWRITE_JPEG_QUALITY, 80],
    )
    return dest


@pytest.fixture
def planted(gallery_dir, embedder, tmp_path):
    wrong = sorted((VAL / "Banana").glob("*.jpg"))[0]  # a banana photo filed under the milk
    original = sorted((TRAIN / "Lemon").glob("*.jpg"))[2]
    copy = resaved(original, tmp_path / "lemon-copy.jpg")
    with GalleryStore.open(gallery_dir) as store:
        store.add("Arla-Standard-Milk", [wrong], embedder=embedder)
        store.add("Lemon", [copy], embedder=embedder)
        store.add("Dragon-Fruit", [sorted((VAL / "Kiwi").glob("*.jpg"))[0]], embedder=embedder)
    return gallery_dir, wrong, original, copy


def test_check_reports_the_planted_problems(planted):
    root, wrong, original, copy = planted
    result = check_path(root)
    report = result.quality
    assert result.damage.damaged == [] and report.version == 5 and report.refs == 99
    flagged = {o.source: o for o in report.outliers}
    assert str(wrong) in flagged  # other outliers may be flagged too: the check is a screen, not a verdict
    assert flagged[str(wrong)].sku == "Arla-Standard-Milk" and flagged[str(wrong)].nearest_sku == "Banana"
    assert flagged[str(wrong)].nearest_similarity > flagged[str(wrong)].own_similarity
    dupes = {(d.source_a, d.source_b) for d in report.duplicates}
    assert (str(original), str(copy)) in dupes
    assert [(f.sku, f.refs) for f in report.few_refs] == [("Dragon-Fruit", 1)]
    assert all(p.similarity >= report.confusable_similarity and p.sku_a < p.sku_b for p in report.confusable)


def test_check_json_and_table(planted, capsys):
    root, wrong, _, copy = planted
    assert main(["gallery", "check", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"damaged", "unverified", "confusable", "outliers", "duplicates", "few_refs", "version"}
    assert any(o["source"] == str(wrong) for o in data["outliers"])
    assert main(["gallery", "check", str(root), "--min-refs", "9"]) == 0
    out = capsys.readouterr().out
    assert str(copy) in out and str(wrong) in out and "SKUs with fewer than 9 references: 11" in out
    with pytest.raises(GalleryError, match=r"no threshold 'far_0.5'"):
        check_path(root, confusable_threshold="far_0.5")


def test_a_clean_gallery_has_no_duplicates_and_enough_references(built_gallery):
    result = check_path(built_gallery)
    assert result.damage.damaged == result.damage.unverified == []
    assert result.quality.duplicates == [] and result.quality.few_refs == []


def test_duplicate_search_finds_exactly_the_pairs_brute_force_finds():
    rng = np.random.default_rng(1)
    hashes = [int(h) for h in rng.integers(-(2**63), 2**63 - 1, size=300, dtype=np.int64)]
    for i in range(150):  # copies of the first hashes with 0 to 9 bits flipped
        flipped = hashes[i] & (2**64 - 1)
        for bit in rng.choice(64, i % (NEAR_DUPLICATE_BITS + 2), replace=False):
            flipped ^= 1 << int(bit)
        hashes.append(flipped - 2**64 if flipped >= 2**63 else flipped)
    refs = [RefInfo(i, "s", "img", f"src{i}", int(h)) for i, h in enumerate(hashes)]
    expect = {(a.id, b.id) for a, b in combinations(refs, 2) if bits(a.phash, b.phash) <= NEAR_DUPLICATE_BITS}
    found = find_duplicates(refs)
    assert {(d.ref_a, d.ref_b) for d in found} == expect and len(expect) > 100
    assert all(d.bits == bits(refs[d.ref_a].phash, refs[d.ref_b].phash) for d in found)
