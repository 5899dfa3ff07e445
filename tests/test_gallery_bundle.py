"""Bundles (`reid gallery export | import`): a round trip carries the gallery exactly, and every kind
of malicious or damaged archive is refused with the target gallery left as it was."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import sqlite3
import tarfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from gallery_fixtures import VAL

from retail_reid.cli import main
from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.archive import BundleLimits
from retail_reid.gallery.bundle import EMBEDDINGS, MANIFEST, export_bundle, import_bundle
from retail_reid.gallery.snapshot import read_current
from retail_reid.gallery.store import GalleryStore
from retail_reid.images import read_image


@pytest.fixture(scope="module")
def bundle(built_gallery, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "store.tar"
    export_bundle(built_gallery, path)
    return path


@pytest.fixture
def empty_gallery(tmp_path, embedder) -> Path:
    root = tmp_path / "target"
    GalleryStore.init(root, operator="t")
    return root


def contents(root: Path) -> dict[str, dict]:
    """Per SKU: its catalogue row and {photo sha256: embedding bytes} of its active references."""
    with closing(sqlite3.connect(root / "gallery.db")) as conn:
        out = {
            sku: {"product": (name, cat, price), "refs": {}}
            for sku, name, cat, price in conn.execute("SELECT sku, name, category, price FROM products WHERE active")
        }
        for sku, sha, emb in conn.execute("SELECT sku, sha256, embedding FROM refs WHERE removed_version IS NULL"):
            out[sku]["refs"][sha] = emb
    return out


def test_round_trip_carries_the_gallery_exactly(built_gallery, bundle, empty_gallery, embedder, capsys):
    assert main(["gallery", "import", str(empty_gallery), str(bundle), "--operator", "central"]) == 0
    assert (
        "version 2: imported store.tar, version 2 of its gallery (96 references in, 0 out; 12 SKUs in, 0 out)"
        in capsys.readouterr().out
    )
    assert contents(empty_gallery) == contents(built_gallery)
    queries = embedder.embed([read_image(p) for p in sorted(VAL.glob("*/*.jpg"))[::4]])
    a = Gallery.open(built_gallery, embedder=embedder).match(queries, k=3)
    b = Gallery.open(empty_gallery, embedder=embedder).match(queries, k=3)
    assert a == b
    with GalleryStore.open(empty_gallery, readonly=True) as store:
        last = store.history()[-1]
    assert (last.action, last.operator) == ("import", "central") and "96 references in" in last.summary
    for image in (empty_gallery / "images").rglob("*.jpg"):
        assert image.read_bytes() in {p.read_bytes() for p in (built_gallery / "images").rglob(image.name)}


def test_import_replaces_the_contents_as_one_new_version(gallery_dir, bundle, embedder):
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Kiwi", operator="t")
        store.add("Extra", sorted((VAL / "Kiwi").glob("*.jpg"))[:1], embedder=embedder)
    result = import_bundle(gallery_dir, bundle, operator="t")
    g = Gallery.open(gallery_dir, embedder=embedder)
    assert result.version == g.version == 5 and g.has_sku("Kiwi") and not g.has_sku("Extra")
    assert "1 SKU in, 1 out" in result.summary


def rewrite(bundle: Path, dest: Path, edit) -> Path:
    """A copy of `bundle` with its members passed through edit(members) -> [(TarInfo, bytes | None)]."""
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        for info, data in edit(members):
            out.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def with_manifest(members, change):
    manifest = json.loads(members[0][1])
    change(manifest)
    data = json.dumps(manifest).encode()
    info = tarfile.TarInfo(MANIFEST)
    info.size = len(data)
    return [(info, data), *members[1:]]


def extra(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"x"):
    def edit(members):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        return [*members[:2], (info, data if kind == tarfile.REGTYPE else None), *members[2:]]

    return edit


def as_link(kind: bytes):
    def edit(members):
        info = tarfile.TarInfo(members[2][0].name)
        info.type, info.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else MANIFEST
        return [*members[:2], (info, None), *members[3:]]

    return edit


def flip_a_byte(members):
    info, data = members[5]
    return [*members[:5], (info, data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]), *members[6:]]


def oversized_header(members):
    info, _ = members[3]
    info.size = 2**40  # claims a terabyte; the data is not there
    return [*members[:3], (info, None)]


def absurd_manifest_size(manifest):
    name = next(n for n in manifest["files"] if n.startswith("images/"))
    manifest["files"][name]["size"] = 10**12


MALICIOUS = {
    "absolute path": (extra("/tmp/reid-evil-absolute"), "absolute path"),
    "dot-dot": (extra("images/../../reid-evil-dotdot"), "'..'"),
    "symlink": (as_link(tarfile.SYMTYPE), "is a link"),
    "hard link": (as_link(tarfile.LNKTYPE), "is a link"),
    "device": (extra("images/dev", tarfile.CHRTYPE), "not a regular file"),
    "unlisted member": (extra("images/00/notes.txt"), "not listed in the manifest"),
    "absurd size in the manifest": (lambda m: with_manifest(m, absurd_manifest_size), "absurd size"),
    "oversized member": (oversized_header, "bytes, the manifest says"),
    "altered photo": (flip_a_byte, "does not match its sha256"),
    "manifest not first": (lambda m: [*m[1:], m[0]], "first member must be manifest.json"),
    "missing photo": (lambda m: m[:-1], "missing"),
    "wrong format": (lambda m: with_manifest(m, lambda d: d.update(format="zip")), "not a gallery bundle"),
    "bad product": (
        lambda m: with_manifest(m, lambda d: d["products"][0].update(sku="  ")),
        "products\\[0\\]: field 'sku'",
    ),
    "bad barcode": (lambda m: with_manifest(m, lambda d: d["products"][0].update(barcodes=["123"])), "barcode"),
    "same photo twice": (
        lambda m: with_manifest(m, lambda d: d["references"].append(d["references"][0])),
        "a reference twice",
    ),
}


@pytest.mark.parametrize("case", MALICIOUS)
def test_malicious_or_damaged_archives_are_refused(bundle, empty_gallery, tmp_path, case):
    edit, message = MALICIOUS[case]
    bad = rewrite(bundle, tmp_path / "bad.tar", edit)
    with pytest.raises(GalleryError, match=message):
        import_bundle(empty_gallery, bad)
    assert read_current(empty_gallery) == 1 and contents(empty_gallery) == {}
    assert not list((empty_gallery / "images").rglob("*.*"))
    assert not Path("/tmp/reid-evil-absolute").exists() and not (tmp_path.parent / "reid-evil-dotdot").exists()


def test_not_an_archive_and_embeddings_of_another_model_are_refused(bundle, tmp_path, variant_model):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    other = tmp_path / "other"
    GalleryStore.init(other, model=variant_model)
    with pytest.raises(GalleryError, match="not a gallery bundle"):
        import_bundle(other, junk)
    with pytest.raises(GalleryError, match="no such file"):
        import_bundle(other, tmp_path / "missing.tar")
    with pytest.raises(GalleryError, match=r"embeddings are from model .* this gallery's model is"):
        import_bundle(other, bundle)
    assert read_current(other) == 1


def test_embeddings_that_are_not_unit_vectors_are_refused(bundle, empty_gallery, tmp_path):
    def scale(members):
        emb = np.load(io.BytesIO(members[1][1])) * 2
        buf = io.BytesIO()
        np.save(buf, emb)
        data = buf.getvalue()
        out = with_manifest(members, lambda d: d["files"][EMBEDDINGS].update(sha256=hashlib.sha256(data).hexdigest()))
        info = tarfile.TarInfo(EMBEDDINGS)
        info.size = len(data)
        return [out[0], (info, data), *out[2:]]

    with pytest.raises(GalleryError, match="finite unit vectors"):
        import_bundle(empty_gallery, rewrite(bundle, tmp_path / "scaled.tar", scale))
    assert read_current(empty_gallery) == 1


class Spaces(io.RawIOBase):
    """`size` bytes of spaces, produced as they are read (a huge member without holding it in memory)."""

    def __init__(self, size: int):
        self.left = size

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = b" " * n
        self.left -= n
        return n


def test_a_compressed_bundle_with_a_huge_manifest_is_refused_before_it_is_read(empty_gallery, tmp_path):
    """100 MiB of manifest compress to a few hundred kilobytes: refused from its header, never read or parsed."""
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = 100 * 2**20
        tar.addfile(info, Spaces(info.size))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(GalleryError, match=f"{MANIFEST} is {100 * 2**20} bytes, more than the limit of"):
        import_bundle(empty_gallery, bomb)
    assert read_current(empty_gallery) == 1


def test_an_oversized_pax_header_is_refused_before_it_is_read(bundle, empty_gallery, tmp_path):
    def padded(members):
        members[0][0].pax_headers = {"comment": "x" * 2**20}  # tarfile would read all of it at once
        return members

    with pytest.raises(GalleryError, match=r"a member header of \d+ bytes, more than the limit of 65536"):
        import_bundle(empty_gallery, rewrite(bundle, tmp_path / "pax.tar", padded))
    assert read_current(empty_gallery) == 1 and contents(empty_gallery) == {}


def test_files_listed_but_used_by_no_reference_are_refused_before_unpacking(bundle, empty_gallery, tmp_path):
    """Listed and present, but no reference uses them: they would only fill the temporary folder."""
    junk = [(f"images/{i:02x}/{hashlib.sha256(bytes([i])).hexdigest()}.jpg", bytes([i]) * 4096) for i in range(20)]

    def padded(members):
        def listed(d):
            d["files"].update(
                {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in junk}
            )

        out = with_manifest(members, listed)
        for name, data in junk:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.append((info, data))
        return out

    with pytest.raises(GalleryError, match="files lists 20 photos no reference uses"):
        import_bundle(empty_gallery, rewrite(bundle, tmp_path / "unused.tar", padded))
    assert read_current(empty_gallery) == 1 and contents(empty_gallery) == {}


@pytest.mark.parametrize(
    "limits, message",
    [
        (BundleLimits(archive_bytes=100_000), r"is \d+ bytes, more than the limit of 100000"),
        (BundleLimits(members=50), "lists 97 files, more than the limit of 49"),
        (BundleLimits(unpacked_bytes=1_000_000), "unpacks to more than the 1000000 bytes"),
        (BundleLimits(image_bytes=10_000), r"has an absurd size \d+ \(limit 10000 bytes\)"),
    ],
)
def test_each_limit_is_enforced_while_reading(bundle, empty_gallery, tmp_path, limits, message):
    packed = tmp_path / "store.tar.xz"
    with lzma.open(packed, "wb", preset=0) as out:
        out.write(bundle.read_bytes())
    with pytest.raises(GalleryError, match=message):
        import_bundle(empty_gallery, packed, limits=limits)
    assert read_current(empty_gallery) == 1 and contents(empty_gallery) == {}
    assert import_bundle(empty_gallery, packed).version == 2  # within the default limits it imports


def raw_manifest(edit_text):
    """Members with the manifest's JSON text edited as bytes (json.dumps cannot write what is tested)."""

    def edit(members):
        data = edit_text(members[0][1])
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        return [(info, data), *members[1:]]

    return edit


@pytest.mark.parametrize(
    "edit_text, reason",
    [
        (
            lambda t: t.replace(b'"gallery_version": ', b'"gallery_version": 1' + b"0" * 49_999 + b', "was": '),
            "a number of 50000 characters",
        ),
        (lambda t: t[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested more than 64 levels deep"),
        (
            lambda t: t.replace(b'"gallery_version": ', b'"gallery_version": NaN, "was": '),
            "NaN is not a number JSON allows",
        ),
    ],
    ids=["50,000-digit number", "deep nesting", "NaN"],
)
def test_a_manifest_with_a_huge_number_or_deep_nesting_is_one_line_error(
    bundle, empty_gallery, tmp_path, capsys, edit_text, reason
):
    """These manifests used to end `reid gallery import` in a traceback (ValueError, RecursionError)."""
    bad = rewrite(bundle, tmp_path / "bad.tar", raw_manifest(edit_text))
    assert main(["gallery", "import", str(empty_gallery), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: {MANIFEST}: {reason}" in err
    assert read_current(empty_gallery) == 1 and contents(empty_gallery) == {}
