"""Writers killed with kill -9 at each step of a change, concurrent writers in separate processes, a
reader matching while versions are published, a full disk and a read-only gallery: the gallery is
always openable at a whole version, and nothing is lost or left half done."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from gallery_fixtures import REPO, SKUS, VAL, writer_env

from retail_reid.faults import FAIL_ENV, STEPS, STOP_ENV
from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.snapshot import Snapshot, read_current, stored_versions
from retail_reid.gallery.store import GalleryStore
from retail_reid.gallery.writer import PENDING
from retail_reid.images import read_image

NEW_PHOTOS = sorted((VAL / "Lemon").glob("*.jpg"))[:3]


def start_reid(*args: object, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "retail_reid", *map(str, args)],
        cwd=REPO,
        env=writer_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_stopped(proc: subprocess.Popen) -> None:
    """Wait until the writer stops itself at its REID_GALLERY_STOP_AT step (SIGSTOP)."""
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        proc.returncode = os.waitstatus_to_exitcode(status)
        raise AssertionError(f"writer ended before its stop step: {proc.stdout.read()} {proc.stderr.read()}")


def kill_at(step: str, *args: object) -> None:
    proc = start_reid(*args, **{STOP_ENV: step})
    wait_stopped(proc)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def active_refs(root: Path, photos: bool = False) -> list[int]:
    """The current references' ids (`photos`: without the lane-camera renderings)."""
    with closing(sqlite3.connect(root / "gallery.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        only = " AND rendering_of IS NULL" if photos else ""
        return [i for (i,) in conn.execute(f"SELECT id FROM refs WHERE removed_version IS NULL{only} ORDER BY id")]


def images(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "images").rglob("*") if p.is_file()}


def assert_whole(root: Path, embedder, tidy: bool = True) -> Gallery:
    """The published version opens, and holds exactly the database's current references; `tidy`:
    no half-written files are left (a killed writer's are removed by the next writer)."""
    g = Gallery.open(root, embedder=embedder)
    snap = Snapshot.load(root, g.version)
    assert sorted(snap.ref_ids.tolist()) == active_refs(root)
    if tidy:
        assert not list((root / "versions").glob(".*")) and not list(root.glob(".*")) and not (root / PENDING).exists()
    assert g.match(embedder.embed([read_image(NEW_PHOTOS[0])]), k=1)[0]
    return g


def set_keep(root: Path, keep: int) -> None:
    with closing(sqlite3.connect(root / "gallery.db")) as conn, conn:  # the inner `with conn` commits
        conn.execute("UPDATE meta SET value = ? WHERE key = 'keep_versions'", (str(keep),))


@pytest.mark.parametrize("step", STEPS)
def test_add_killed_at_any_step_leaves_a_whole_version(gallery_dir, embedder, step):
    set_keep(gallery_dir, 1)  # so that the change reaches the prune step
    refs_before, images_before = active_refs(gallery_dir, photos=True), images(gallery_dir)
    kill_at(step, "gallery", "add", gallery_dir, "--sku", "Lemon", *NEW_PHOTOS)
    committed = STEPS.index(step) > STEPS.index("commit")
    g = (
        assert_whole(gallery_dir, embedder, tidy=False)
        if step != "switch"
        else Gallery.open(gallery_dir, embedder=embedder)
    )
    # a reader sees the previous version until the killed change is published
    assert g.version == (3 if step == "prune" else 2)
    assert (len(active_refs(gallery_dir, photos=True)) == len(refs_before) + 3) == committed
    # the next writer tidies up (and publishes a committed change) without help
    with GalleryStore.open(gallery_dir) as store:
        result = store.remove_sku("Kiwi", operator="next")
    assert result.version == (4 if committed else 3)
    g = assert_whole(gallery_dir, embedder)
    assert g.version == result.version and not g.has_sku("Kiwi")
    assert g.has_sku("Lemon") and (len(active_refs(gallery_dir, photos=True)) == len(refs_before) - 8 + 3 * committed)
    if not committed:  # photos stored for the change that never happened are gone again
        assert images(gallery_dir) == images_before
    assert stored_versions(gallery_dir) == [result.version]


@pytest.mark.parametrize("step", ["version", "switch"])
def test_rebuild_killed_keeps_the_gallery_usable(gallery_dir, embedder, variant_model, step):
    kill_at(step, "gallery", "rebuild", gallery_dir, "--model", variant_model)
    g = Gallery.open(gallery_dir, embedder=embedder)  # still version 2, on the old model
    assert g.version == 2
    with GalleryStore.open(gallery_dir) as store:
        if step == "version":  # not committed: the gallery is bound to the old model still
            assert store.meta["model_fingerprint"] == embedder.fingerprint
            store.rebuild(variant_model, operator="again")
        else:
            store.remove_sku("Kiwi", operator="next")  # publishes the committed rebuild first
    with pytest.raises(GalleryError, match="reid gallery rebuild"):
        Gallery.open(gallery_dir, embedder=embedder)
    g = Gallery.open(gallery_dir, model=variant_model)
    assert (g.version, g.has_sku("Kiwi")) == ((3, True) if step == "version" else (4, False))
    assert sorted(Snapshot.load(gallery_dir, g.version).ref_ids.tolist()) == active_refs(gallery_dir)


@pytest.mark.parametrize("delay", [0.5, 1.5, 2.5])
def test_add_killed_at_a_random_moment(gallery_dir, embedder, delay):
    proc = start_reid("gallery", "add", gallery_dir, "--sku", "Lemon", *NEW_PHOTOS)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert Gallery.open(gallery_dir, embedder=embedder).version in (2, 3)
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Kiwi", operator="next")
    assert_whole(gallery_dir, embedder)


def test_two_writers_at_once_both_succeed_one_after_the_other(gallery_dir, embedder):
    first = start_reid(
        "gallery", "add", gallery_dir, "--sku", "Lemon", "--operator", "ann", *NEW_PHOTOS, **{STOP_ENV: "commit"}
    )
    wait_stopped(first)  # holds the lock, in the middle of its change
    second = start_reid(
        "gallery",
        "add",
        gallery_dir,
        "--sku",
        "Müsli",
        "--operator",
        "bob",
        *sorted((VAL / "Avocado").glob("*.jpg"))[:2],
    )
    for line in second.stderr:  # the second writer embeds its photos, then waits for the lock
        if "waiting for it to finish" in line:
            break
    else:
        raise AssertionError(f"the second writer did not wait for the first: {second.communicate()}")
    os.kill(first.pid, signal.SIGCONT)
    out1, err1 = first.communicate(timeout=600)  # only against a hang
    out2, err2 = second.communicate(timeout=600)  # only against a hang
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "version 3" in out1 and "version 4" in out2
    g = assert_whole(gallery_dir, embedder)
    assert g.version == 4 and g.has_sku("Müsli")
    with GalleryStore.open(gallery_dir, readonly=True) as store:
        assert [(h.version, h.operator) for h in store.history()[2:]] == [(3, "ann"), (4, "bob")]
        assert store.product("Lemon")[0].n_refs == 11 and store.product("Müsli")[0].n_refs == 2


def test_many_writers_in_parallel_lose_nothing(gallery_dir, embedder):
    procs = [
        start_reid("gallery", "remove", gallery_dir, "--sku", sku, "--operator", f"op{i}")
        for i, sku in enumerate(SKUS[:4])
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)  # only against a hang
        assert p.returncode == 0, err
    g = assert_whole(gallery_dir, embedder)
    assert g.version == 6 and g.skus() == SKUS[4:]


WRITER = textwrap.dedent("""
    import sys
    from retail_reid.gallery.store import GalleryStore
    root, skus = sys.argv[1], sys.argv[2:]
    with GalleryStore.open(root) as store:
        for sku in skus:
            removed = store.remove_sku(sku, operator="writer").version
            store.rollback(removed - 1, operator="writer")  # still stored: 2 versions are kept
""")


def test_a_reader_matching_while_versions_are_published_only_sees_whole_versions(gallery_dir, embedder):
    set_keep(gallery_dir, 2)  # old versions are pruned while the reader loads new ones
    churn = SKUS[:4]
    # version 2 + 2i + 1 lacks churn[i]; every even version is the full gallery again
    expected = {2: set(SKUS)} | {2 + 2 * i + 1: set(SKUS) - {s} for i, s in enumerate(churn)}
    expected |= {2 + 2 * i + 2: set(SKUS) for i in range(len(churn))}
    queries = embedder.embed([read_image(p) for p in sorted(VAL.glob("*/*.jpg"))[::3]])
    g = Gallery.open(gallery_dir, embedder=embedder)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(gallery_dir), *churn],
        cwd=REPO,
        env=writer_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, fresh_opens = [], 0
    while True:
        done = writer.poll() is not None
        g.refresh()
        skus = set(g.skus())
        assert skus == expected[g.version]
        for ranked in g.match(queries, k=3):
            assert len(ranked) == 3 and {m.sku for m in ranked} <= skus
        if not seen or seen[-1] != g.version:
            seen.append(g.version)
        other = Gallery.open(gallery_dir, embedder=embedder)  # a lane starting meanwhile
        assert set(other.skus()) == expected[other.version]
        fresh_opens += 1
        if done:
            break
    assert writer.returncode == 0, writer.stderr.read()
    assert seen == sorted(seen) and seen[-1] == 2 + 2 * len(churn) and len(seen) > 2
    assert_whole(gallery_dir, embedder)


@pytest.mark.parametrize("step", ["image", "version", "commit"])
def test_a_full_disk_refuses_the_change_and_changes_nothing(gallery_dir, embedder, monkeypatch, step):
    refs_before, images_before, versions_before = (
        active_refs(gallery_dir),
        images(gallery_dir),
        stored_versions(gallery_dir),
    )
    monkeypatch.setenv(FAIL_ENV, step)
    with (
        GalleryStore.open(gallery_dir) as store,
        pytest.raises(GalleryError, match=r"No space left on device.*nothing changed, still at version 2"),
    ):
        store.add("Lemon", NEW_PHOTOS, embedder=embedder)
    assert (active_refs(gallery_dir), images(gallery_dir), stored_versions(gallery_dir)) == (
        refs_before,
        images_before,
        versions_before,
    )
    assert not (gallery_dir / PENDING).exists() and read_current(gallery_dir) == 2
    monkeypatch.delenv(FAIL_ENV)
    with GalleryStore.open(gallery_dir) as store:
        assert store.add("Lemon", NEW_PHOTOS, embedder=embedder).version == 3
    assert_whole(gallery_dir, embedder)


def test_a_full_disk_at_the_switch_keeps_readers_on_the_old_version_until_the_next_change(
    gallery_dir, embedder, monkeypatch
):
    monkeypatch.setenv(FAIL_ENV, "switch")
    with (
        GalleryStore.open(gallery_dir) as store,
        pytest.raises(GalleryError, match="version 3 is saved but could not be published"),
    ):
        store.remove_sku("Kiwi")
    assert Gallery.open(gallery_dir, embedder=embedder).has_sku("Kiwi")
    monkeypatch.setenv(FAIL_ENV, "prune")  # failing to delete old versions does not fail a change
    with GalleryStore.open(gallery_dir) as store:
        assert store.remove_sku("Lemon").version == 4
    g = assert_whole(gallery_dir, embedder)
    assert not g.has_sku("Kiwi") and not g.has_sku("Lemon")


@pytest.fixture
def read_only_gallery(built_gallery):
    """A gallery copy without write permission."""
    base = Path(tempfile.mkdtemp(prefix="reid-ro-"))
    root = base / "gallery"
    shutil.copytree(built_gallery, root)
    for p in [base, *root.rglob("*"), root]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    yield root
    for p in [base, root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(base)


def without_write_override(*args: object) -> subprocess.CompletedProcess:
    """`reid ...` bound by file permissions: root ignores them unless its capabilities are dropped."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a directory read-only for the test")
        caps = "-dac_override,-dac_read_search,-fowner"
        prefix = [setpriv, "--bounding-set", caps, "--inh-caps", caps]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "retail_reid", *map(str, args)],
        cwd=REPO,
        env=writer_env(),
        capture_output=True,
        text=True,
    )


def test_a_read_only_gallery_refuses_changes_but_can_be_read(read_only_gallery):
    root = read_only_gallery
    result = without_write_override("gallery", "remove", root, "--sku", "Kiwi")
    assert result.returncode == 2 and "read-only" in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = without_write_override("gallery", "list", root)
    assert result.returncode == 0 and "12 products, 96 references" in result.stdout, result.stderr
    result = without_write_override("gallery", "check", root, "--json")  # opens it as a lane does (Gallery.open)
    assert result.returncode == 0 and json.loads(result.stdout)["refs"] == 96, result.stderr
    assert read_current(root) == 2 and len(active_refs(root, photos=True)) == 96
    result = without_write_override("gallery", "init", root.parent / "new-gallery")
    assert result.returncode == 2 and "cannot create the gallery (Permission denied" in result.stderr, result.stderr
    assert not (root.parent / "new-gallery").exists()
