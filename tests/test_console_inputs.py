"""What the console reads from a replay's folder (events.jsonl, summary.json, the POS log it names)
goes through the bounded JSON parser: a malformed line is skipped and counted, never an exception
in a request (issue 23, item 1)."""

from __future__ import annotations

import json

from malformed_json import MALFORMED_POS_LINES

from retail_reid.pipeline.console.alerts import AlertFolder, SourceKind


def test_a_replay_folder_with_malformed_lines_shows_the_rest(tmp_path):
    malformed = [data for data, _ in MALFORMED_POS_LINES.values()]
    alert = {"type": "non_scan", "t_start": 3.0, "t_end": 4.0, "seen_sku": "Kiwi", "txn": "T1"}
    (tmp_path / "events.jsonl").write_bytes(b"\n".join([*malformed, json.dumps(alert).encode()]) + b"\n")
    pos = tmp_path / "pos.jsonl"
    pos.write_bytes(b"\n".join([*malformed, b'{"ts": 3.5, "type": "scan", "sku": "Lime"}']) + b"\n")
    (tmp_path / "summary.json").write_text(json.dumps({"pos": str(pos)}))
    folder = AlertFolder("replay", SourceKind.REPLAY, tmp_path)
    [shown] = folder.alerts()
    assert shown.type == "non_scan" and shown.key == str(len(malformed) + 1) and folder.bad_lines == len(malformed)
    events, why = folder.pos_around(shown)
    assert [e.sku for e in events] == ["Lime"] and why is None


def test_a_summary_that_is_not_bounded_json_names_no_pos_log(tmp_path):
    (tmp_path / "events.jsonl").write_text("")
    (tmp_path / "summary.json").write_bytes(b'{"pos": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    folder = AlertFolder("replay", SourceKind.REPLAY, tmp_path)
    assert folder.pos_files == []
    assert folder.pos_missing == f"{tmp_path / 'summary.json'} names no POS log (nested more than 64 levels deep)"
