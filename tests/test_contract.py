"""The published contract (pipeline/schemas/): the documents are valid JSON Schema 2020-12 and
OpenAPI 3.1, the POS schema accepts exactly what the POS parser accepts, and the HTTP server's
routes and answers are the ones the OpenAPI document describes. What the replay and the live
service write is validated in test_replay.py and test_edge_service.py, on their own runs."""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import re
import time
from importlib import resources
from pathlib import Path

import pytest
from contract_fixtures import BASE, api_component, assert_valid, validator
from edge_fixtures import alert, call, free_port, metrics, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_reid.compat import tomllib
from retail_reid.pipeline.cli import cmd_schema
from retail_reid.pipeline.contract import SchemaName, load_schema, schema_file
from retail_reid.pipeline.edge import http_api
from retail_reid.pipeline.edge.camera import CameraFeed, FrameQueue
from retail_reid.pipeline.edge.pos_intake import PosFileTailer, PosInbox
from retail_reid.pipeline.edge.settings import CameraConfig
from retail_reid.pipeline.pos import PosError, PosEvent, parse_pos_event

jsonschema = pytest.importorskip("jsonschema")
REPO = Path(__file__).resolve().parents[1]


def _shipped_path(name: SchemaName) -> Path:
    with resources.as_file(schema_file(name)) as path:
        return Path(path)


@pytest.mark.parametrize("name", [n for n in SchemaName if n is not SchemaName.OPENAPI])
def test_each_schema_is_valid_json_schema_2020_12_with_its_file_name_as_id(name):
    doc = load_schema(name)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$id"] == BASE + name.file_name


def test_the_openapi_document_is_valid_openapi_3_1_and_its_references_resolve():
    spec_validator = pytest.importorskip("openapi_spec_validator")
    path = _shipped_path(SchemaName.OPENAPI)
    doc = load_schema(SchemaName.OPENAPI)
    assert doc["openapi"].startswith("3.1")
    spec_validator.validate(doc, base_uri=path.as_uri())
    broken = copy.deepcopy(doc)
    broken["components"]["schemas"]["EventsPage"]["properties"]["events"]["items"] = {"$ref": "evnt.schema.json"}
    with pytest.raises(Exception, match=r"evnt\.schema\.json"):
        spec_validator.validate(broken, base_uri=path.as_uri())


def test_reid_schema_prints_and_writes_the_shipped_files(tmp_path, capsys):
    class Args:
        name, out = "health", None

    assert cmd_schema(Args()) == 0
    assert json.loads(capsys.readouterr().out) == load_schema(SchemaName.HEALTH)
    Args.name, Args.out = None, str(tmp_path / "contract")
    assert cmd_schema(Args()) == 0
    assert sorted(p.name for p in (tmp_path / "contract").iterdir()) == sorted(n.file_name for n in SchemaName)
    assert (tmp_path / "contract" / "openapi.json").read_text() == _shipped_path(SchemaName.OPENAPI).read_text()


def test_the_package_ships_the_schemas():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "retail_reid.pipeline.schemas" in setuptools["packages"]
    assert setuptools["package-data"]["retail_reid.pipeline.schemas"] == ["*.json"]
    shipped = {n.file_name for n in SchemaName if n.shipped}
    assert shipped == {p.name for p in (REPO / "pipeline" / "schemas").glob("*.json")}


# --- POS lines: the schema and the parser agree ------------------------------------------------------


def _parser_accepts(obj: object) -> bool:
    try:
        parse_pos_event(obj, "test")  # type: ignore[arg-type]
    except PosError:
        return False
    return True


TEXT = st.one_of(
    st.none(),
    st.sampled_from(["Banana", " 0042 ", "", "  ", "\t", "Ban\x00ana", "\x85Kiwi", "Kiwi\n", "B" * 256, "B" * 257]),
    st.text(max_size=4),
    st.integers(0, 99),
    st.booleans(),
)
POS_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(),
            st.booleans(),
            st.text(max_size=3),
            st.none(),
        ),
        "type": st.one_of(
            st.sampled_from(["scan", "txn_start", "txn_end", "void", "refund", "SCAN"]), st.none(), st.integers()
        ),
        "sku": TEXT,
        "barcode": TEXT,
        "txn": TEXT,
        "qty": st.one_of(st.none(), st.integers(-2, 1002), st.sampled_from([2.0, 2.5, 1e300, "3"]), st.booleans()),
        "entry": st.one_of(st.none(), st.sampled_from(["scanned", "keyed", "weighed", "Keyed", ""]), st.integers()),
        "weight_kg": st.one_of(
            st.none(),
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=101),
            st.booleans(),
            st.text(max_size=2),
        ),
        "operator": st.text(max_size=5),  # unknown fields are ignored by both
    },
)


@settings(max_examples=400, deadline=None)
@given(POS_LIKE)
def test_the_pos_schema_accepts_exactly_what_the_parser_accepts(obj):
    assert validator(SchemaName.POS_EVENT).is_valid(obj) == _parser_accepts(obj), obj


def test_the_pos_schema_takes_the_documented_examples_and_refuses_non_objects():
    for line in (
        {"ts": 12.34, "type": "scan", "sku": "Granny-Smith", "txn": "T1"},
        {"ts": 1767000000.1, "type": "scan", "barcode": "0042"},
        {"ts": 3, "type": "txn_start", "txn": "T88"},
        {"ts": 12.3, "type": "scan", "sku": "Arla-Standard-Milk", "qty": 3, "txn": "T1"},
        {"ts": 20.1, "type": "void", "sku": "Arla-Standard-Milk", "txn": "T1"},
        {"ts": 21.0, "type": "scan", "sku": "Lime", "entry": "weighed", "weight_kg": 0.52, "txn": "T1"},
    ):
        assert_valid(SchemaName.POS_EVENT, line)
    for bad in ([], "scan", 12, None):
        assert not validator(SchemaName.POS_EVENT).is_valid(bad) and not _parser_accepts(bad)


# --- the HTTP API: routes and answers -----------------------------------------------------------------


def _paths_in_source() -> set[str]:
    """Every string in http_api.py that looks like a path: the routes are among them."""
    tree = ast.parse(Path(http_api.__file__).read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"/[a-z/]+", node.value)
    }


def _documented(path: str, method: str) -> bool:
    for template, ops in load_schema(SchemaName.OPENAPI)["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]*", template), path) and method.lower() in ops:
            return True
    return False


def test_every_route_the_server_serves_is_documented_and_every_documented_route_is_served(api):
    url = api[0]
    served = set()
    for path in _paths_in_source() | {"/nowhere", "/lanes/l/pos", "/lanes/l/events", "/lanes/l/evidence/"}:
        for method in ("GET", "POST"):
            code, body, _ = call(url + path, data=b"{}" if method == "POST" else None, method=method)
            if not (code == 404 and b"no such resource" in body):
                served.add((path, method))
    assert served, "the probe found no route at all"
    for path, method in served:
        assert _documented(path, method), f"{method} {path} is served but not in openapi.json"
    for template, ops in load_schema(SchemaName.OPENAPI)["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]*", template)
        for method in ops:
            assert any(re.fullmatch(pattern, p) and m == method.upper() for p, m in served), (
                f"{method.upper()} {template} is documented but not served"
            )


def test_the_api_answers_follow_the_openapi_document(api):
    url, _, log, _, _ = api
    for i in range(1, 4):
        log.append(dataclasses.replace(alert(i), seen_confidence=0.9, evidence=(f"evidence/t{i}.jpg",)), 7)
    code, body, _ = call(url + "/pos", json.dumps([{"ts": time.time(), "type": "scan", "sku": "A"}]).encode())
    assert code == 202
    assert_valid(SchemaName.OPENAPI, json.loads(body), api_component("Accepted"))
    code, body, _ = call(url + "/events?since=1&limit=5")
    assert code == 200 and len(json.loads(body)["events"]) == 2
    assert_valid(SchemaName.OPENAPI, json.loads(body), api_component("EventsPage"))
    refusals = {
        "bad json": call(url + "/pos", b"{nope"),
        "bad field": call(url + "/pos", b'{"ts": 0, "type": "scan"}'),
        "no token": call(url + "/pos", b"{}", token=None),
        "too big": call(url + "/pos", b"[" + b" " * 4096 + b"]"),
        "bad since": call(url + "/events?since=x"),
        "no route": call(url + "/nowhere"),
    }
    assert [code for code, _, _ in refusals.values()] == [400, 400, 401, 413, 400, 404]
    for what, (_, body, _) in refusals.items():
        assert_valid(SchemaName.OPENAPI, json.loads(body), api_component("Error"), what=what)


# --- health parts in the states the live run does not reach ---------------------------------------------


def test_health_parts_in_other_states_follow_the_health_schema(tmp_path):
    feed = CameraFeed(
        CameraConfig(source=f"http://127.0.0.1:{free_port()}/cam.mjpg", open_timeout_s=0.5, reconnect_min_s=0.05),
        FrameQueue(4, lambda: None),
        metrics(),
    )
    feed.start()
    try:
        assert wait_until(lambda: feed.status()["error"] is not None)
        assert_valid(SchemaName.HEALTH, feed.status(), "/properties/camera", what="a stream that cannot be opened")
    finally:
        feed.stop()
    assert_valid(SchemaName.HEALTH, feed.status(), "/properties/camera", what="a stopped stream")
    video = CameraFeed(CameraConfig(source=str(tmp_path / "v.mp4")), FrameQueue(4, lambda: None), metrics())
    assert_valid(SchemaName.HEALTH, video.status(), "/properties/camera", what="a video file not started")
    box = PosInbox(10, metrics(), clock_offset_s=0.0, max_skew_s=300.0)
    assert box.last() is None
    box.put([PosEvent(ts=time.time(), type="scan", barcode="0042")], "file")
    assert_valid(SchemaName.HEALTH, box.last(), "/properties/pos/properties/last_event")
    tailer = PosFileTailer(tmp_path / "pos.jsonl", box, tmp_path / "offset.json", 0.1, True, metrics())
    assert_valid(SchemaName.HEALTH, tailer.status(), "/properties/pos/properties/file")
