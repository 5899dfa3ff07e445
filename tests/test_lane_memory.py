"""The lane over a store day: a simulated lane played again and again through one `LaneProcessor`
(as `reid edge` runs it for weeks), counting the objects the lane owns after each loop. What it
keeps must stay bounded: per open track and per pass a void may still reopen, or in the few
structures with a documented bound (the scans a void looks back over, the transactions done)."""

from __future__ import annotations

import gc
import json
import types
from collections import Counter
from pathlib import Path

import pytest
from gallery_fixtures import built_gallery, embedder  # noqa: F401 (fixtures)

from retail_reid.gallery import Gallery
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.events import DONE_TXNS_KEPT, RECENT_SCANS
from retail_reid.pipeline.harness.simulate import SimConfig, simulate
from retail_reid.pipeline.lane import LaneProcessor
from retail_reid.pipeline.pos import parse_pos_event
from retail_reid.pipeline.sources import open_source
from retail_reid.pipeline.types import Crop, Frame, Zone

SAMPLE_VAL = Path(__file__).resolve().parents[1] / "sample" / "grocery" / "val"
LOOPS = 5
SCENARIO = SimConfig(passes=12, transactions=2, non_scan_rate=0.15, switch_rate=0.15, fps=10, width=320, height=240)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lane-day")
    simulate(folder_set(SAMPLE_VAL), out, SCENARIO)
    return out


def owned(lane: LaneProcessor, bounded: tuple[object, ...] = ()) -> Counter:
    """Objects reachable from the lane, by type name; not through the gallery (shared by every lane,
    and not the lane's to grow), classes, modules or functions, nor into the `bounded` containers."""
    stop = {id(lane.gallery), *map(id, bounded)}
    seen: set[int] = set()
    todo: list[object] = [lane]
    counts: Counter = Counter()
    while todo:
        obj = todo.pop()
        if id(obj) in seen or id(obj) in stop or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        counts[type(obj).__name__] += 1
        todo.extend(gc.get_referents(obj))
    return counts


def test_a_lane_played_all_day_keeps_a_bounded_number_of_objects(built_gallery, scenario):  # noqa: F811
    truth = json.loads((scenario / "truth.json").read_text())
    pos = [json.loads(line) for line in (scenario / "pos.jsonl").read_text().splitlines()]
    zone = Zone.from_list(truth["zone"])
    lane = LaneProcessor(Gallery.open(built_gallery, threads=1), zone, LaneConfig(zone=zone))
    crops, rest, offset, index, decided = [], [], 0.0, 0, 0
    for loop in range(LOOPS):  # each loop another stretch of the day: its own times and transactions
        for e in pos:
            lane.push_pos(parse_pos_event({**e, "ts": e["ts"] + offset, **_txn(e, loop)}, f"loop {loop}"))
        source = open_source(str(scenario / truth["video"]))
        for frame in source:
            decided += len(lane.process(Frame(index=index, ts=frame.ts + offset, image=frame.image)).passes)
            index += 1
        source.close()
        offset += source.frame_count / SCENARIO.fps + 5.0  # then a pause: the loop's passes are all decided
        decided += len(lane.advance(offset - lane.offset).passes)
        gc.collect()
        crops.append(owned(lane)[Crop.__name__])
        rest.append(owned(lane, bounded=(lane.events._recent, lane.events._done_txns)))
    assert decided >= LOOPS * SCENARIO.passes * 0.8  # the lane did see the passes
    # Crops (the heaviest): those of open tracks and of passes a void may still reopen, never a day's worth.
    assert crops[-1] <= max(crops[1:-1]), crops
    # Everything else the lane holds, outside the scans a void may look back at and the transactions
    # done (each with its documented bound), goes back and forth with what is open at a loop's end
    # (a few numbers), but never past what it was after an earlier loop: nothing piles up per loop.
    for name in rest[1] | rest[-1]:
        assert rest[-1][name] <= max(r[name] for r in rest[1:-1]), (name, [r[name] for r in rest])
    assert len(lane.events._recent) <= RECENT_SCANS and len(lane.events._done_txns) <= DONE_TXNS_KEPT


def _txn(event: dict, loop: int) -> dict:
    return {"txn": f"L{loop}-{event['txn']}"} if "txn" in event else {}
