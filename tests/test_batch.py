"""`reid replay-batch` on Ray started locally (2 CPUs, no dashboard): small simulated lanes replayed
by two workers give exactly what `reid replay` gives; a rerun skips what is complete and redoes
what changed; a worker killed mid-recording leaves nothing that looks complete, and the rerun
ends where a clean run does; bad recordings fail alone. The manifest's own checks need no Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import pytest
from edge_fixtures import wait_until
from test_records import assert_lines_come_back

from retail_reid.cli import main
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.batch.chunks import ChunkError, plan_chunks, write_chunk_inputs
from retail_reid.pipeline.batch.manifest import ManifestError, read_manifest
from retail_reid.pipeline.batch.outputs import MARKER, WORK
from retail_reid.pipeline.batch.runner import LOCAL_ONLY_ENV, BatchError, BatchOptions, require_ray, run_batch
from retail_reid.pipeline.batch.worker import GallerySpec
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.harness.simulate import SimConfig, simulate
from retail_reid.pipeline.pos import PosEvent, read_pos_log

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "grocery"
FIELDS = ("id", "video", "pos", "config", "store", "lane", "start")
OUTPUTS = ("events.jsonl", "passes.jsonl")
TIMING = ("processing_seconds", "speed_x_realtime", "frame_ms")  # what differs between two runs of one recording


@pytest.fixture(scope="module")
def lanes(tmp_path_factory) -> list[Path]:
    """Two short simulated lanes (6 item passes each, two transactions)."""
    root = tmp_path_factory.mktemp("lanes")
    out = []
    for seed in (20, 23):
        lane = root / f"lane{seed}"
        simulate(folder_set(SAMPLE / "val"), lane, SimConfig(passes=6, transactions=2, non_scan_rate=0.2, seed=seed))
        zone = json.loads((lane / "truth.json").read_text())["zone"]
        (lane / "lane.toml").write_text(f"zone = {zone}\n")
        out.append(lane)
    return out


IDENTITY = ["--store", "S1", "--lane", "L1", "--start", "2026-11-30T08:00:00"]  # a single replay as _row's


def _row(rid: str, lane: Path, store: str = "S1", lane_name: str = "L1", **override: str) -> dict:
    row = {
        "id": rid,
        "video": str(lane / "video.mp4"),
        "pos": str(lane / "pos.jsonl"),
        "config": str(lane / "lane.toml"),
        "store": store,
        "lane": lane_name,
        "start": "2026-11-30T08:00:00",
    }
    return {**row, **override}


def _write_csv(path: Path, rows: list[dict]) -> Path:
    path.write_text(",".join(FIELDS) + "\n" + "".join(",".join(r[f] for f in FIELDS) + "\n" for r in rows))
    return path


def _rows(lanes: list[Path]) -> list[dict]:
    return [
        _row("s1-l1", lanes[0]),
        _row("s1-l2", lanes[1], lane_name="L2"),
        _row("s2-l1", lanes[1], store="S2"),
        _row("s2-l2", lanes[0], store="S2", lane_name="L2"),
    ]


@pytest.fixture(scope="module")
def ray_local():
    os.environ.update(LOCAL_ONLY_ENV)  # on 127.0.0.1: tests reach no address but this machine's loopback
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _batch(manifest: Path, gallery: Path, out: Path) -> dict:
    return run_batch(read_manifest(manifest), GallerySpec(path=gallery), out, BatchOptions(workers=2))


@pytest.fixture(scope="module")
def clean(ray_local, lanes, built_gallery, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted batch of four recordings; the reference the other runs must equal."""
    root = tmp_path_factory.mktemp("clean")
    manifest = _write_csv(root / "manifest.csv", _rows(lanes))
    return root / "out", _batch(manifest, built_gallery, root / "out")


def _outputs(out: Path, rid: str) -> dict[str, str]:
    return {name: (out / "recordings" / rid / name).read_text() for name in OUTPUTS}


def test_each_recording_equals_a_single_replay(clean, lanes, built_gallery, tmp_path):
    out, summary = clean
    assert summary["recordings"] == {"done": 4, "reused": 0, "failed": 0}
    # two workers, each loading the gallery once, replayed the four recordings between them
    assert len({r["worker"] for r in summary["per_recording"]}) == 2
    for rid, lane in (("s1-l1", lanes[0]), ("s1-l2", lanes[1])):
        single = tmp_path / rid
        ours = json.loads((out / "recordings" / rid / "summary.json").read_text())
        rec = ours["recording"]  # the manifest's store, lane and start, given to the single replay as flags
        args = ["replay", str(lane / "video.mp4"), "--pos", str(lane / "pos.jsonl"), "--gallery", str(built_gallery)]
        args += ["--store", rec["store"], "--lane", rec["lane"], "--start", rec["start"]]
        assert main([*args, "--config", str(lane / "lane.toml"), "--out", str(single)]) == 0
        assert _outputs(out, rid) == {name: (single / name).read_text() for name in OUTPUTS}
        assert_lines_come_back(single / "events.jsonl", single / "passes.jsonl")  # the recording's identity too
        theirs = json.loads((single / "summary.json").read_text())
        assert {k: v for k, v in ours.items() if k not in TIMING} == {
            k: v for k, v in theirs.items() if k not in TIMING
        }
        assert sorted(p.name for p in (out / "recordings" / rid / "crops").iterdir()) == sorted(
            p.name for p in (single / "crops").iterdir()
        )


def test_chain_summary_adds_up(clean):
    out, summary = clean
    per = {r["id"]: r for r in summary["per_recording"]}
    alerts = sum(sum(r["alerts"].values()) for r in per.values())
    txns = sum(r["transactions"] for r in per.values())
    hours = sum(r["video_seconds"] for r in per.values()) / 3600
    totals = summary["totals"]
    assert totals["alerts"] == alerts > 0 and totals["transactions"] == txns == 8
    assert totals["alerts_per_lane_hour"] == pytest.approx(alerts / hours, rel=1e-3)
    assert totals["alerts_per_1000_transactions"] == pytest.approx(1000 * alerts / txns, rel=1e-3)
    assert [(g["store"], g["lane"]) for g in summary["by_lane"]] == [
        ("S1", "L1"),
        ("S1", "L2"),
        ("S2", "L1"),
        ("S2", "L2"),
    ]
    assert sum(g["alerts"] for g in summary["by_store"]) == alerts
    # the same recording under two lanes counts the same
    assert per["s1-l1"]["alerts"] == per["s2-l2"]["alerts"]
    events = [json.loads(line) for line in (out / "recordings" / "s1-l1" / "events.jsonl").read_text().splitlines()]
    assert per["s1-l1"]["alerts"] == {t: sum(e["type"] == t for e in events) for t in per["s1-l1"]["alerts"]}
    for rid, store, lane in (("s1-l1", "S1", "L1"), ("s2-l2", "S2", "L2")):  # the console dates and labels by it
        recorded = json.loads((out / "recordings" / rid / "summary.json").read_text())["recording"]
        assert recorded == {"store": store, "lane": lane, "start": "2026-11-30T08:00:00+00:00"}
    assert summary["baskets"]["transactions"] == 8 and 0 <= summary["baskets"]["mean"]["jaccard"] <= 1
    assert len(summary["slowest"]) == 4 and summary["failed"] == []
    page = (out / "index.html").read_text()
    assert page.count("<svg ") == 2  # alerts per lane-hour by store and lane, and the slowest recordings
    assert all(f">{s} / {lane}</text>" in page for s, lane in [("S1", "L1"), ("S1", "L2"), ("S2", "L1"), ("S2", "L2")])
    for rid in per:
        assert f'href="recordings/{rid}/report.html"' in page and (out / "recordings" / rid / "report.html").is_file()
    assert json.loads((out / "summary.json").read_text()) == summary


def test_rerun_skips_complete_recordings_and_redoes_changed_ones(clean, lanes, built_gallery, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean[0], out)  # the clean run stays the reference of the other tests
    markers = {rid: (out / "recordings" / rid / MARKER).stat().st_mtime_ns for rid in ("s1-l1", "s1-l2")}
    manifest = _write_csv(tmp_path / "manifest.csv", _rows(lanes))
    again = _batch(manifest, built_gallery, out)
    assert again["recordings"] == {"done": 0, "reused": 4, "failed": 0}
    assert {rid: (out / "recordings" / rid / MARKER).stat().st_mtime_ns for rid in markers} == markers
    # a changed POS log (one scan dropped) is replayed again; the others are not
    pos = tmp_path / "pos.jsonl"
    lines = (lanes[0] / "pos.jsonl").read_text().splitlines(keepends=True)
    scan = next(i for i, line in enumerate(lines) if '"scan"' in line)
    pos.write_text("".join(lines[:scan] + lines[scan + 1 :]))
    rows = _rows(lanes)
    rows[0] = _row("s1-l1", lanes[0], pos=str(pos))
    changed = _batch(_write_csv(tmp_path / "manifest.csv", rows), built_gallery, out)
    assert changed["recordings"] == {"done": 1, "reused": 3, "failed": 0}
    assert json.loads((out / "recordings" / "s1-l1" / "summary.json").read_text())["pos"] == str(pos)


def test_a_killed_worker_leaves_nothing_complete_and_the_rerun_matches_a_clean_run(
    clean, lanes, built_gallery, tmp_path
):
    reference, _ = clean
    manifest = _write_csv(tmp_path / "manifest.csv", _rows(lanes))
    out = tmp_path / "out"
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(_batch(manifest, built_gallery, out)))
    runner.start()
    killed = None
    while runner.is_alive() and killed is None:  # a worker's work folder (ID.PID) exists: it is mid-recording
        for work in (out / WORK).glob("*.*") if (out / WORK).is_dir() else ():
            rid, pid = work.name.rsplit(".", 1)
            if not rid.startswith(".") and pid.isdigit():
                os.kill(int(pid), signal.SIGKILL)
                killed = rid
                break
        time.sleep(0.01)
    runner.join()
    assert killed is not None, "no worker was caught mid-recording"
    failed = {f["id"]: f["error"] for f in result["failed"]}
    assert list(failed) == [killed] and "worker died" in failed[killed]
    assert not (out / "recordings" / killed / MARKER).exists()
    assert result["recordings"]["done"] == 3  # the replacement worker went on with the rest
    rerun = _batch(manifest, built_gallery, out)
    assert rerun["recordings"] == {"done": 1, "reused": 3, "failed": 0}
    for rid in ("s1-l1", "s1-l2", "s2-l1", "s2-l2"):
        assert _outputs(out, rid) == _outputs(reference, rid), rid
    assert not (out / WORK).exists() or not list((out / WORK).iterdir())


def test_bad_recordings_fail_alone(ray_local, lanes, built_gallery, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    empty_pos = tmp_path / "empty.jsonl"
    empty_pos.write_text("")
    rows = [
        _row("good", lanes[0]),
        _row("missing", lanes[0], video=str(tmp_path / "nowhere.mp4")),
        _row("corrupt", lanes[0], video=str(corrupt)),
        _row("no-pos", lanes[0], pos=str(empty_pos)),
    ]
    manifest = _write_csv(tmp_path / "manifest.csv", rows)
    code = main(["replay-batch", str(manifest), "--gallery", str(built_gallery), "--out", str(tmp_path / "out")])
    assert code == 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["recordings"] == {"done": 1, "reused": 0, "failed": 3}
    errors = {f["id"]: f["error"] for f in summary["failed"]}
    assert "nowhere.mp4" in errors["missing"] and "not found" in errors["missing"]
    assert str(corrupt) in errors["corrupt"]
    assert str(empty_pos) in errors["no-pos"] and "empty" in errors["no-pos"]
    assert (tmp_path / "out" / "recordings" / "good" / MARKER).is_file()
    assert not any((tmp_path / "out" / "recordings" / rid).exists() for rid in errors)
    page = (tmp_path / "out" / "index.html").read_text()
    assert "Failed (3)" in page and "nowhere.mp4" in page
    out = capsys.readouterr().out
    assert "failed: missing:" in out and "1 replayed" in out


def test_gallery_bundle_is_imported_by_each_worker(ray_local, clean, lanes, built_gallery, tmp_path):
    bundle = tmp_path / "g.tar"
    assert main(["gallery", "export", str(built_gallery), str(bundle)]) == 0
    manifest = _write_csv(tmp_path / "manifest.csv", _rows(lanes)[:2])
    args = ["replay-batch", str(manifest), "--gallery-bundle", str(bundle), "--out", str(tmp_path / "out")]
    assert main([*args, "--workers", "2"]) == 0
    reference, _ = clean
    for rid in ("s1-l1", "s1-l2"):
        assert _outputs(tmp_path / "out", rid) == _outputs(reference, rid)


# --- long recordings in chunks -------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_lane(tmp_path_factory) -> Path:
    """About 50 s of lane: 20 passes in four transactions, with every kind of alert planted."""
    lane = tmp_path_factory.mktemp("long") / "lane"
    config = SimConfig(
        passes=20, transactions=4, non_scan_rate=0.15, switch_rate=0.15, scan_without_item_rate=0.07, seed=7
    )
    simulate(folder_set(SAMPLE / "val"), lane, config)
    zone = json.loads((lane / "truth.json").read_text())["zone"]
    (lane / "lane.toml").write_text(f"zone = {zone}\n")
    return lane


@pytest.fixture(scope="module")
def loose_lane(long_lane, tmp_path_factory) -> Path:
    """The long lane with its last transaction's scans loose (no transaction, as some tills log
    scans outside a sale): its passes belong to no transaction, so a replay reports a loose basket."""
    lane = tmp_path_factory.mktemp("loose") / "lane"
    shutil.copytree(long_lane, lane)
    events = [json.loads(line) for line in (long_lane / "pos.jsonl").read_text().splitlines()]
    last = events[-1]["txn"]
    kept = [
        {k: v for k, v in e.items() if k != "txn"} if e.get("txn") == last else e
        for e in events
        if not (e.get("txn") == last and e["type"] in ("txn_start", "txn_end"))
    ]
    (lane / "pos.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    return lane


def test_chunks_own_every_frame_once_and_replay_whole_transactions():
    pos = [
        PosEvent(ts=5.0, type="txn_start", txn="T1"),
        PosEvent(ts=30.0, type="scan", sku="Kiwi", txn="T1"),
        PosEvent(ts=41.0, type="txn_end", txn="T1"),
        PosEvent(ts=50.0, type="scan", sku="Lime"),
    ]
    plan = plan_chunks(1500, 15.0, pos, LaneConfig(), chunk_s=20.0, overlap_s=8.0)
    owned = [f for c in plan.chunks for f in range(*c.own)]
    assert owned == list(range(1500)) and len(plan.chunks) == 5
    for c in plan.chunks:
        assert c.media[0] == max(0, c.own[0] - 120) and c.media[0] % 15 == 0  # starts on whole seconds
        assert c.media[1] >= min(1500, c.own[1] + 120)
    # T1 begins in chunk 0 and ends at 41 s: chunk 0 replays until 41 s + the overlap
    assert plan.chunks[0].media[1] == 41 * 15 + 120
    assert [plan.owner(t) for t in (-1.0, 0.0, 19.99, 20.0, 99.9)] == [0, 0, 0, 1, 4]
    assert plan_chunks(450, 15.0, pos, LaneConfig(), chunk_s=20.0, overlap_s=8.0) is None  # short: whole
    assert plan_chunks(1500, 15.0, pos, LaneConfig(), chunk_s=0.0, overlap_s=8.0) is None  # chunking off


def test_a_chunk_that_cannot_be_cut_exactly_is_refused(lanes, tmp_path):
    frames = int(cv2.VideoCapture(str(lanes[0] / "video.mp4")).get(cv2.CAP_PROP_FRAME_COUNT))
    pos, _ = read_pos_log(lanes[0] / "pos.jsonl")
    plan = plan_chunks(frames + 200, 15.0, pos, LaneConfig(), chunk_s=4.0, overlap_s=2.0)
    with pytest.raises(ChunkError, match=f"frame {frames} does not decode"):
        chunk = next(c for c in plan.chunks if c.media[0] <= frames < c.media[1])  # the recording ends inside it
        write_chunk_inputs(lanes[0] / "video.mp4", lanes[0] / "pos.jsonl", plan, chunk, tmp_path)


def test_a_recording_that_cannot_be_cut_is_replayed_whole(ray_local, lanes, built_gallery, tmp_path):
    """A truncated file lists frames it cannot decode: its chunks give up and it runs as `reid replay` runs it."""
    cap = cv2.VideoCapture(str(lanes[0] / "video.mp4"))
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (640, 480))
    for _ in range(90):
        writer.write(cap.read()[1])
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    single = tmp_path / "single"
    args = ["replay", str(cut), "--pos", str(lanes[0] / "pos.jsonl"), "--gallery", str(built_gallery), *IDENTITY]
    assert main([*args, "--config", str(lanes[0] / "lane.toml"), "--out", str(single)]) == 0
    manifest = _write_csv(tmp_path / "manifest.csv", [_row("cut", lanes[0], video=str(cut))])
    listed = int(cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT))
    pos, _ = read_pos_log(lanes[0] / "pos.jsonl")
    assert plan_chunks(listed, 15.0, pos, LaneConfig(), chunk_s=1.0, overlap_s=0.5) is not None  # it is cut up first
    options = BatchOptions(workers=2, chunk_s=1.0, overlap_s=0.5)
    summary = run_batch(read_manifest(manifest), GallerySpec(path=built_gallery), tmp_path / "out", options)
    assert summary["recordings"]["done"] == 1
    merged = tmp_path / "out" / "recordings" / "cut"
    assert _outputs(tmp_path / "out", "cut") == {name: (single / name).read_text() for name in OUTPUTS}
    ours = json.loads((merged / "summary.json").read_text())
    assert "chunks" not in ours and ours["frames_dropped"] > 0


def _decisions(path: Path) -> list[dict]:
    """Lines without what chunks may change: track ids, evidence names and scores, in time order."""
    drop = ("track_id", "evidence", "seen_score", "seen_confidence", "scanned_score", "scanned_confidence")
    lines = [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]
    return sorted(lines, key=lambda d: (d.get("type", ""), str(d["txn"]), d.get("t_start") or 0.0))


@pytest.mark.parametrize("lane_name", ["long_lane", "loose_lane"])
def test_a_long_recording_in_chunks_makes_the_decisions_of_one_replay(
    ray_local, lane_name, built_gallery, tmp_path, request
):
    long_lane = request.getfixturevalue(lane_name)
    single = tmp_path / "single"
    args = ["replay", str(long_lane / "video.mp4"), "--pos", str(long_lane / "pos.jsonl"), *IDENTITY]
    assert (
        main([*args, "--gallery", str(built_gallery), "--config", str(long_lane / "lane.toml"), "--out", str(single)])
        == 0
    )
    manifest = _write_csv(tmp_path / "manifest.csv", [_row("long", long_lane)])
    options = BatchOptions(workers=2, chunk_s=12.0, overlap_s=20.0)
    summary = run_batch(read_manifest(manifest), GallerySpec(path=built_gallery), tmp_path / "out", options)
    assert summary["recordings"]["done"] == 1
    merged = tmp_path / "out" / "recordings" / "long"
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (merged, single))
    assert len(ours["chunks"]) == 4
    assert_lines_come_back(merged / "events.jsonl", merged / "passes.jsonl")
    for key in ("counts", "passes", "scans", "frames_processed", "frames_dropped", "video_seconds"):
        assert ours[key] == theirs[key], key
    frame = 1 / 15 + 1e-3
    for name in OUTPUTS:
        a, b = _decisions(merged / name), _decisions(single / name)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):  # a pass may start or end a frame apart (the background model)
            for key in ("t_start", "t_end"):
                if key in x:
                    assert x.pop(key) == pytest.approx(y.pop(key), abs=frame), (x, y)
            if "view_quality" in x:  # ... so its views may be other frames: measurements, not decisions
                assert len(x.pop("view_quality")) == len(y.pop("view_quality")), (x, y)
            if {x.get("verdict"), y.get("verdict")} == {"ok", "unconfirmed"}:
                x.pop("verdict"), y.pop("verdict")  # a scanned SKU scoring right at switch_reject: no alert either way
            assert x == y
    ids = [json.loads(line)["track_id"] for line in (merged / "passes.jsonl").read_text().splitlines()]
    assert len(set(ids)) == len(ids)
    for e in map(json.loads, (merged / "events.jsonl").read_text().splitlines()):
        assert all((merged / p).is_file() for p in e.get("evidence", []))
        assert e.get("track_id") is None or e["track_id"] in ids
    scores = [
        (json.loads(x)["seen_score"], json.loads(y)["seen_score"])
        for x, y in zip(
            sorted((merged / "passes.jsonl").read_text().splitlines(), key=lambda s: json.loads(s)["t_end"]),
            sorted((single / "passes.jsonl").read_text().splitlines(), key=lambda s: json.loads(s)["t_end"]),
            strict=True,
        )
    ]
    assert max(abs(a - b) for a, b in scores) < 0.05
    assert 'class="card"' in (merged / "report.html").read_text()
    loose = [e for e in map(json.loads, (single / "events.jsonl").read_text().splitlines()) if e["type"] == "basket"]
    assert any(e["txn"] is None for e in loose) == (lane_name == "loose_lane")


def test_without_ray_the_batch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    with pytest.raises(BatchError, match=r"pip install 'retail-reid\[ray\]'"):
        require_ray()


# --- the manifest --------------------------------------------------------------------------------


def test_a_manifests_store_lane_and_start_are_the_recordings_identity(tmp_path):
    (tmp_path / "lane.toml").write_text("zone = [0, 0, 10, 10]\n")
    rows = [
        _row("utc", tmp_path, video="v.mp4", pos="p.jsonl", config="lane.toml"),  # no offset: UTC
        _row("paris", tmp_path, "S9", "L4", start="2026-11-30T09:00:00+01:00", config="lane.toml"),
        _row("zulu", tmp_path, start="2026-11-30T08:00:00Z", config="lane.toml"),
    ]
    utc, paris, zulu = (r.identity for r in read_manifest(_write_csv(tmp_path / "m.csv", rows)))
    assert utc.to_dict() == {"store": "S1", "lane": "L1", "start": "2026-11-30T08:00:00+00:00"}
    assert (paris.store, paris.lane) == ("S9", "L4") and utc.time_of(10.0) == paris.time_of(10.0) == zulu.time_of(10.0)
    assert utc.time_of(10.0) == 1_796_025_610.0  # 2026-11-30 08:00:10 UTC


def test_manifest_csv_and_json_lines_read_alike(lanes, tmp_path):
    rows = _rows(lanes)
    csv_ = read_manifest(_write_csv(tmp_path / "m.csv", rows))
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    jsonl = read_manifest(tmp_path / "m.jsonl")
    assert [(r.id, r.video, r.store, r.lane, r.start) for r in jsonl] == [
        (r.id, r.video, r.store, r.lane, r.start) for r in csv_
    ]
    assert csv_[0].config.zone is not None and csv_[1].line == 3 and jsonl[1].line == 2
    # relative paths are resolved against the manifest's folder
    rel = tmp_path / "rel.csv"
    _write_csv(rel, [_row("a", Path("lane"))])
    (tmp_path / "lane").mkdir()
    (tmp_path / "lane" / "lane.toml").write_text("zone = [1, 2, 30, 40]\n")
    assert read_manifest(rel)[0].video == tmp_path / "lane" / "video.mp4"


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda text: text.replace("start", "begin", 1), ":1: unknown field 'begin'"),
        (lambda text: text.replace(",start", "", 1), ":1: field 'start' is missing"),
        (lambda text: text.replace("2026-11-30T08:00:00", "yesterday", 1), ":2: field 'start': 'yesterday' is not"),
        (lambda text: text.replace("s1-l2", "s1-l1", 1), ":3: field 'id': 's1-l1' repeats line 2"),
        (lambda text: text.replace("s1-l2", "../up", 1), ":3: field 'id': '../up' must be"),
        (lambda text: text.replace(",S1,", ",,", 1), ":2: field 'store': is empty"),
        (lambda text: text + "a,b\n", ":6: 2 fields, the header names 7"),
        (lambda text: text.replace("lane.toml", "nope.toml", 1), "field 'config': "),
        (lambda text: text.split("\n", 1)[0] + "\n", "lists no recordings"),
    ],
)
def test_manifest_errors_name_the_line_and_field(lanes, tmp_path, edit, needle):
    path = tmp_path / "m.csv"
    path.write_text(edit(_write_csv(path, _rows(lanes)).read_text()))
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert needle in str(e.value) and str(e.value).startswith(str(path)) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "line, needle",
    [
        ("[1, 2]", ":2: expected a JSON object, got a JSON list"),
        ("{bad", ":2: not valid JSON"),
        ('{"id": 1' + "0" * 4999 + "}", ":2: a number of 5000 characters"),
        ('{"id": ' + "[" * 5000 + "]" * 5000 + "}", ":2: nested more than 64 levels deep"),
        ('{"id": NaN}', ":2: NaN is not a number JSON allows"),
        ('{"id": "a"}', ":2: field 'video' is missing"),
        (
            '{"id": "a", "video": "v", "pos": "p", "config": "c", "store": 12, "lane": "l", "start": "s"}',
            ":2: field 'store': must be a string, got int",
        ),
        ('{"id": "a", "camera": 1}', ":2: unknown field 'camera'"),
    ],
)
def test_json_lines_manifest_errors(tmp_path, line, needle):
    path = tmp_path / "m.jsonl"
    path.write_text("\n" + line + "\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert needle in str(e.value)


def test_manifest_files_that_cannot_be_used(lanes, tmp_path):
    toml = tmp_path / "nozone.toml"
    toml.write_text("[tracker]\nmax_lost_s = 1\n")
    path = _write_csv(tmp_path / "m.csv", [_row("a", lanes[0], config=str(toml))])
    with pytest.raises(ManifestError, match=r"m.csv:2: field 'config': .*nozone.toml: no 'zone"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "absent.csv")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match=r"must end in \.csv or \.jsonl"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "m2.csv").write_bytes(b"id,\xff\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(tmp_path / "m2.csv")


def _processes_using(marker: str) -> list[str]:
    """Processes whose command line, working folder or open files name `marker` (a Ray worker renames
    its command line, but keeps its log files in the session folder open)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            paths = [os.readlink(fd) for fd in (proc / "fd").iterdir()] + [os.readlink(proc / "cwd")]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in cmd or any(marker in p for p in paths):
            found.append(f"{proc.name}: {cmd[:150]}")
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_batch_killed_with_sigkill_leaves_no_ray_process_behind(lanes, built_gallery, tmp_path):
    """kill -9 of `reid replay-batch` once its workers are busy: every process of the Ray it started
    (raylet, GCS, agents, workers) ends too. Ray's folder is the test's own, to tell its processes."""
    pytest.importorskip("ray")
    ray_tmp = tempfile.mkdtemp(prefix="rk-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    manifest = _write_csv(tmp_path / "manifest.csv", _rows(lanes))
    out = tmp_path / "out"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["replay-batch", str(manifest), "--gallery", str(built_gallery), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "retail_reid", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    said: list[str] = []
    threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    try:

        def busy() -> bool:
            return (out / WORK).is_dir() and any(p.name.rsplit(".", 1)[-1].isdigit() for p in (out / WORK).iterdir())

        assert wait_until(lambda: busy() or proc.poll() is not None, 300), "the batch never started a recording"
        assert proc.poll() is None and _processes_using(ray_tmp), "no Ray process to leave behind"
        proc.kill()
        proc.wait()
        # The watchdog says it is done once it has stopped them: no wait on Ray's own clocks.
        assert wait_until(lambda: any(f"process {proc.pid} died; stopped the" in line for line in said), 120), said
        assert _processes_using(ray_tmp) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
