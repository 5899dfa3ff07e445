"""Small fixture folders for the console tests: a lane's state folder as `reid edge` writes it, a
replay's output folder as `reid replay` writes it (with its POS log), and an operators file.
The crops are real photos of the bundled sample, so the pages show what an analyst would see."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from retail_reid.pipeline.console.settings import ConsoleSettings
from retail_reid.pipeline.console.users import add_operator

SAMPLE_VAL = Path(__file__).resolve().parents[1] / "sample" / "grocery" / "val"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
LANE_T0 = 1_767_000_000.0  # 2025-12-29, a Monday: the lane's alerts fall in ISO week 2026-W01
LANE_POS = [  # (seconds after LANE_T0, type, SKU): what the lane received over HTTP
    (5.0, "txn_start", None),
    (30.0, "scan", "Granny-Smith"),
    (40.5, "scan", "Red-Bell-Pepper"),  # the product switch's scan
    (59.0, "scan", "Lemon"),
    (300.0, "txn_end", None),  # far from every alert
]


def _photo(sku: str, i: int = 1) -> Path:
    return SAMPLE_VAL / sku / f"{sku}_{i:03d}.jpg"


def _event(kind: str, t: float, track: int | None, seen: str | None, scanned: str | None, evidence: list[str]) -> dict:
    return {
        "type": kind,
        "t_start": t,
        "t_end": t + 1.2,
        "track_id": track,
        "seen_sku": seen,
        "seen_score": 0.81 if seen else None,
        "seen_confidence": 0.99 if seen else None,
        "scanned_sku": scanned,
        "scanned_score": 0.21 if scanned and seen else None,
        "scanned_confidence": 0.01 if scanned and seen else None,
        "scan_ts": t + 0.5 if scanned else None,
        "txn": "T1",
        "evidence": evidence,
    }


def make_lane(root: Path, lane: str = "lane-1") -> Path:
    """A state folder with four alerts and a basket line, as `reid edge` writes them."""
    ev = root / "evidence" / "20251229T092000Z-9f3a1c2e"
    ev.mkdir(parents=True)
    lines = []
    specs = [
        ("non_scan", 12.0, 3, "Lime", None),
        ("product_switch", 40.0, 7, "Bravo-Orange-Juice", "Red-Bell-Pepper"),
        ("product_switch", 75.0, 9, "Kiwi", "Lime"),
        ("scan_without_item", 90.0, None, None, "Avocado"),
    ]
    for seq, (kind, dt, track, seen, scanned) in enumerate(specs, start=1):
        evidence = []
        if track == 7:  # the product switch: crops, lane frame and clip as the lane service writes them
            evidence = list(_lane_evidence(root, f"evidence/{ev.name}", track, seen, LANE_T0 + dt))
        elif track is not None:
            for i in range(2):
                rel = f"evidence/{ev.name}/track{track:05d}_{i}.jpg"
                shutil.copy(_photo(seen or "Lime", i + 1), root / rel)
                evidence.append(rel)
            if track == 9:  # a clip as lanes wrote them before they wrote MP4: an MJPEG AVI
                evidence.append(_old_avi_clip(root, f"evidence/{ev.name}/track{track:05d}.avi", seen or "Lime"))
        head = {
            "seq": seq,
            "id": f"{lane}-9f3a1c2e-{seq}",
            "lane": lane,
            "written_at": LANE_T0 + dt + 3,
            "gallery_version": 2,
        }
        lines.append({**head, **_event(kind, LANE_T0 + dt, track, seen, scanned, evidence)})
    basket = {
        "seq": 5,
        "id": f"{lane}-9f3a1c2e-5",
        "lane": lane,
        "written_at": LANE_T0 + 100,
        "gallery_version": 2,
        "type": "basket",
        "txn": "T1",
        "seen": {},
        "scanned": {},
        **dict.fromkeys(("jaccard", "dice", "overlap", "tversky"), 1.0),
    }
    (root / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [*lines, basket]))
    _pos_record(root)
    return root


def make_busy_lane(root: Path, alerts: int = 50, lane: str = "lane-2") -> Path:
    """A lane's state folder with a day's worth of `alerts` alerts to review, a minute apart from
    LANE_T0 + 1000 s, ten to a transaction (T100, T101, ...), each with one crop of a product of
    the sample (product switches scanned as the next product, every fifth a non-scan)."""
    skus = sorted(p.name for p in SAMPLE_VAL.iterdir())
    crops = root / "evidence" / "busy"
    crops.mkdir(parents=True)
    for sku in skus:
        shutil.copy(_photo(sku), crops / f"{sku}.jpg")
    lines = []
    for i in range(alerts):
        seen, other = skus[i % len(skus)], skus[(i + 1) % len(skus)]
        kind, scanned = ("non_scan", None) if i % 5 == 4 else ("product_switch", other)
        event = _event(kind, LANE_T0 + 1000 + 60 * i, 100 + i, seen, scanned, [f"evidence/busy/{seen}.jpg"])
        head = {"seq": i + 1, "id": f"{lane}-busy-{i + 1}", "lane": lane, "written_at": LANE_T0 + 1003 + 60 * i}
        head["gallery_version"] = 2
        lines.append({**head, **event, "txn": f"T{100 + i // 10}"})
    (root / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def _lane_evidence(root: Path, folder: str, track: int, sku: str, t0: float) -> tuple[str, ...]:
    """What `reid edge` with `[edge.clips]` keeps of a pass from `t0` to `t0 + 1.2`: two crops,
    the lane mid-pass and a clip, from frames of a lane showing the item's photo moving across."""
    import cv2
    import numpy as np

    from retail_reid.pipeline.edge.clips import ClipEvidenceWriter, ClipRing
    from retail_reid.pipeline.edge.settings import ClipConfig
    from retail_reid.pipeline.types import Crop, Frame, ItemPass

    photo = cv2.resize(cv2.imread(str(_photo(sku))), (80, 80))
    ring = ClipRing(ClipConfig(enabled=True, before_s=0.5, after_s=0.5))
    writer = ClipEvidenceWriter(root, folder, ring, offset_s=0.0)
    crops = []
    for i in range(45):  # 3 s at 15 fps, from 1 s before the pass
        ts = t0 - 1.0 + i / 15
        image = np.full((240, 320, 3), 90, np.uint8)
        x = 10 + i * 5
        image[80:160, x : x + 80] = photo
        ring.add(Frame(index=i, ts=ts, image=image))
        writer.see(ts, image)
        if i in (20, 25):  # the crops: the sample's photos, as the other alerts' are
            crop = cv2.imread(str(_photo(sku, len(crops) + 1)))
            crops.append(Crop(image=crop, ts=ts, box=(x, 80, x + 80, 160), quality=1.0))
    return writer(ItemPass(track_id=track, t_start=t0, t_end=t0 + 1.2, frames=18, crops=tuple(crops)))


def _old_avi_clip(root: Path, rel: str, sku: str, frames: int = 30) -> str:
    """An MJPEG AVI of the item's photo moving across the lane (`frames` at 15 fps)."""
    import cv2
    import numpy as np

    photo = cv2.resize(cv2.imread(str(_photo(sku))), (80, 80))
    writer = cv2.VideoWriter(str(root / rel), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (320, 240))
    for i in range(frames):
        image = np.full((240, 320, 3), 90, np.uint8)
        image[80:160, 10 + i * 5 : 90 + i * 5] = photo
        writer.write(image)
    writer.release()
    return rel


def _pos_record(root: Path) -> None:
    """The lane's record of the POS events it received, as `reid edge` keeps it: small files, so
    that the first events were already moved to pos.1.jsonl."""
    from retail_reid.pipeline.edge.pos_record import PosRecord
    from retail_reid.pipeline.pos import PosEvent, PosEventType

    record = PosRecord(root, max_bytes=200)
    for dt, kind, sku in LANE_POS:
        record.append([PosEvent(ts=LANE_T0 + dt, type=PosEventType(kind), sku=sku, txn="T1")])
    record.close()


def make_replay(root: Path) -> Path:
    """A replay output folder: two alerts, their crops, summary.json naming the POS log."""
    (root / "crops").mkdir(parents=True)
    pos = root.parent / f"{root.name}-pos.jsonl"
    pos.write_text(
        "".join(
            json.dumps(x) + "\n"
            for x in [
                {"ts": 0.5, "type": "txn_start", "txn": "T1"},
                {"ts": 4.1, "type": "scan", "sku": "Granny-Smith", "txn": "T1"},
                {"ts": 10.6, "type": "scan", "sku": "Lemon", "txn": "T1"},
                {"ts": 30.0, "type": "txn_end", "txn": "T1"},
            ]
        )
    )
    events = []
    for track, kind, t, seen, scanned in (
        (5, "product_switch", 10.1, "Lime", "Lemon"),
        (10, "non_scan", 20.2, "Kiwi", None),
    ):
        evidence = []
        for i in range(2):
            rel = f"crops/track{track:05d}_{i}.jpg"
            shutil.copy(_photo(seen, i + 1), root / rel)
            evidence.append(rel)
        events.append(_event(kind, t, track, seen, scanned, evidence))
    (root / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in events))
    (root / "summary.json").write_text(json.dumps({"video": "video.mp4", "pos": str(pos), "counts": {}}))
    return root


def csrf_token(client, page: str = "/login") -> str:
    """The CSRF token of a form on `page` (Flask's test client)."""
    html = client.get(page).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def confirmation(client, preview: str) -> tuple[str, dict[str, str]]:
    """A gallery change's preview page and its confirm form's fields (the POST to the same address makes it)."""
    r = client.get(preview)
    assert r.status_code == 200, r.get_data(as_text=True)
    page = r.get_data(as_text=True)
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    return page, {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page).group(1), "token": token}


def sign_in(client, name: str = "alice") -> None:
    r = client.post("/login", data={"csrf_token": csrf_token(client), "operator": name, "password": PASSWORDS[name]})
    assert r.status_code == 303


def make_users(path: Path) -> Path:
    for name, password in PASSWORDS.items():
        add_operator(path, name, password)
    return path


def make_settings(tmp: Path, gallery: Path, **extra) -> ConsoleSettings:
    return ConsoleSettings(
        lanes=(make_lane(tmp / "lane-1"),),
        replays=(make_replay(tmp / "replay-a"),),
        gallery=gallery,
        users=make_users(tmp / "users.toml"),
        data=tmp / "console-data",
        **extra,
    )


def make_lane_references(root: Path, sku: str = "Lime", photos: int = 3) -> Path:
    """A lane-references folder as `reid edge` keeps it: `photos` crops of `sku` (sample photos)."""
    import cv2

    from retail_reid.pipeline.config import LaneReferenceConfig
    from retail_reid.pipeline.lane_references import LaneReferenceSampler
    from retail_reid.pipeline.records import PassRecord, Verdict
    from retail_reid.pipeline.types import Crop, ItemPass

    sampler = LaneReferenceSampler(root, LaneReferenceConfig(min_gap_s=0), confidence=lambda s: s, lane="lane-1")
    for i in range(photos):
        image = cv2.imread(str(_photo(sku, 1 + i)))
        crop = Crop(image=image, ts=float(i), box=(0, 0, image.shape[1], image.shape[0]), quality=1.0)
        item = ItemPass(track_id=100 + i, t_start=float(i), t_end=i + 1.0, frames=5, crops=(crop,))
        record = PassRecord(
            track_id=100 + i,
            t_start=float(i),
            t_end=i + 1.0,
            verdict=Verdict.OK,
            seen_sku=sku,
            seen_score=0.97 - i / 100,
            scanned_sku=sku,
        )
        assert sampler(item, record) == 1, f"{sku} photo {1 + i} was not kept"
    return root
