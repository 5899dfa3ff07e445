"""Every setting a lane.toml, `reid replay --config` and `reid console` read is declared once with its
type and limits (pipeline/setting_types.py): each number that is not finite or out of range, and each
unknown key, is a one-line error naming the file and the key; the lane config's JSON Schema comes
from the same declarations; the docs state every limit."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from retail_reid.cli import main
from retail_reid.compat import tomllib
from retail_reid.pipeline.config import ConfigError, LaneConfig, load_config
from retail_reid.pipeline.console.settings import ConsoleSettings, flag
from retail_reid.pipeline.contract import SchemaName, load_schema
from retail_reid.pipeline.edge.settings import EdgeConfig, load_edge_config, load_edge_lanes
from retail_reid.pipeline.setting_types import limit_text

REPO = Path(__file__).resolve().parents[1]
NOT_NUMBERS = ("nan", "inf", "-inf", "1e400")  # TOML's own non-finite floats, and one that overflows to inf


def _keys(cls: type, prefix: str = "") -> Iterator[tuple[str, type, str]]:
    """(dotted key, declaring class, field name) of every setting under a settings class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _keys(kind, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{f.name}", cls, f.name


def _is_number(cls: type, name: str) -> bool:
    kind = typing.get_type_hints(cls)[name]
    return kind in (int, float) or float in typing.get_args(kind)


def _floats(cls: type, prefix: str = "") -> list[str]:
    hints = {key: typing.get_type_hints(owner)[name] for key, owner, name in _keys(cls, prefix)}
    return [key for key, kind in hints.items() if kind is float or float in typing.get_args(kind)]


LANE_FLOATS = _floats(LaneConfig)
EDGE_FLOATS = _floats(EdgeConfig, "edge.")


def _lane_toml(key: str, value: str) -> str:
    """The smallest lane.toml `reid edge` takes, with `key = value` in its table."""
    table, _, name = key.rpartition(".")
    edge = name + " = " + value + "\n" if table == "edge" else ""
    camera = name + " = " + value + "\n" if table == "edge.camera" else ""
    rest = f"[{table}]\n{name} = {value}\n" if table not in ("edge", "edge.camera") else ""
    return (
        f'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n{edge}'
        f'[edge.camera]\nsource = "0"\n{camera}{rest}'
    )


def test_there_are_float_settings_in_every_part():
    assert len(LANE_FLOATS) >= 28 and len(EDGE_FLOATS) >= 20
    assert "events.clock_offset_s" in LANE_FLOATS and "edge.webhook.timeout_s" in EDGE_FLOATS


@pytest.mark.parametrize("key", LANE_FLOATS + EDGE_FLOATS)
def test_a_float_setting_that_is_not_finite_is_a_one_line_error_naming_the_file_and_key(tmp_path, key):
    path = tmp_path / "lane.toml"
    for value in NOT_NUMBERS:
        path.write_text(_lane_toml(key, value))
        with pytest.raises(ConfigError) as e:
            load_edge_config(path)
        message = str(e.value)
        assert message.startswith(f"{path}: {key}: must be ") and "\n" not in message, message
        assert message.endswith(f"got {value.replace('1e400', 'inf')}"), message
        if not key.startswith("edge."):  # the same lane settings, read by `reid replay --config`
            table, _, name = key.rpartition(".")
            path.write_text(f"[{table}]\n{name} = {value}\n")
            with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}: must be ")):
                load_config(path)


def test_a_lane_of_several_names_the_lane_and_the_key(tmp_path):
    path = tmp_path / "lane.toml"
    path.write_text(
        'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n'
        '[[lane]]\nname = "north"\n[[lane]]\nname = "south"\n[lane.events]\nclock_offset_s = nan\n'
    )
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [[lane]] 2 (south): events.clock_offset_s: must be in")):
        load_edge_lanes(path)


def test_the_issues_examples_are_refused(tmp_path):
    """clock_offset_s = nan found no pass and raised false alerts; max_lost_s = inf merged passes; a webhook
    timeout of inf killed the webhook thread at its first alert."""
    path = tmp_path / "lane.toml"
    for key, value, limits in [
        ("events.clock_offset_s", "nan", "[-86400, 86400]"),
        ("events.clock_offset_s", "inf", "[-86400, 86400]"),
        ("tracker.max_lost_s", "inf", "(0, 60]"),
        ("edge.webhook.timeout_s", "inf", "(0, 600]"),
        ("edge.webhook.timeout_s", "1e12", "(0, 600]"),  # finite, but overflows a socket timeout
    ]:
        path.write_text(_lane_toml(key, value))
        with pytest.raises(ConfigError) as e:
            load_edge_config(path)
        shown = value.replace("1e12", "1000000000000")
        assert str(e.value) == f"{path}: {key}: must be in {limits}, got {shown}"


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_a_console_number_that_is_not_finite_names_its_flag(tmp_path, capsys, value):
    floats = _floats(ConsoleSettings)
    assert floats == ["max_upload_mb", "session_idle_minutes"]
    for key in floats:
        args = ["console", "--users", str(tmp_path / "u.toml"), "--gallery", str(tmp_path), f"{flag(key)}={value}"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"reid console: error: {flag(key)}: must be in ") and err.count("\n") == 1, err


def test_console_settings_out_of_range_are_refused_with_their_flag(tmp_path, capsys):
    assert main(["console", "--users", str(tmp_path / "u.toml"), "--gallery", str(tmp_path), "--threads", "0"]) == 2
    assert capsys.readouterr().err == "reid console: error: --threads: must be in [1, 256], got 0\n"


@pytest.mark.parametrize("table", sorted({key.rpartition(".")[0] for key, _, _ in _keys(LaneConfig)} - {""}))
def test_an_unknown_key_is_refused_in_every_lane_table(tmp_path, table):
    path = tmp_path / "lane.toml"
    path.write_text(f"[{table}]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown key '{table}.bogus' (known here: ")):
        load_config(path)


@pytest.mark.parametrize("table", sorted({key.rpartition(".")[0] for key, _, _ in _keys(EdgeConfig, "edge.")}))
def test_an_unknown_key_is_refused_in_every_edge_table(tmp_path, table):
    path = tmp_path / "lane.toml"
    path.write_text(_lane_toml(f"{table}.bogus", "1"))
    with pytest.raises(ConfigError) as e:
        load_edge_config(path)
    assert str(e.value).startswith(f"{path}: unknown key '{table}.bogus' (known here: "), str(e.value)


# --- the schema ------------------------------------------------------------------------------------


def _property(schema: dict, key: str) -> dict:
    """The schema of a dotted key, following $refs into $defs."""
    node = schema
    for part in key.split("."):
        node = node["properties"][part]
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rpartition("/")[2]]
    return node


def test_reid_schema_prints_the_lane_configs_schema_and_it_holds_the_examples(capsys):
    jsonschema = pytest.importorskip("jsonschema")
    assert main(["schema", "lane-config"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == load_schema(SchemaName.LANE_CONFIG)
    validator = jsonschema.Draft202012Validator(schema)
    for example in ("deploy/lane.toml", "deploy/lane-compose.toml"):
        validator.validate(tomllib.loads((REPO / example).read_text()))
    validator.validate(tomllib.loads('[edge]\ngallery = "g"\n[[lane]]\nname = "a"\nstate_dir = "s"\n[lane.tracker]\n'))
    for bad in (
        "[tracker]\nmax_lost_s = 100\n",
        "[tracker]\nmax_lost = 1\n",
        "[edge.http]\nprot = 1\n",
        '[[lane]]\nname = "a"\nbogus = 1\n',
        "[events]\nswitch_accept = 1.5\n",
        '[detector]\nkind = "magic"\n',
    ):
        assert not validator.is_valid(tomllib.loads(bad)), bad
    for key in LANE_FLOATS + EDGE_FLOATS:  # every float has both ends of its range in the schema
        node = _property(schema, key)
        numbers = [node, *node.get("anyOf", [])]
        number = next(n for n in numbers if n.get("type") == "number")
        assert {"minimum", "exclusiveMinimum"} & set(number) and {"maximum", "exclusiveMaximum"} & set(number), key


# --- the docs ----------------------------------------------------------------------------------------


def _documented(doc: Path) -> dict[str, str]:
    """`table.key` -> its lines, from the TOML blocks of a doc."""
    lines: dict[str, str] = {}
    for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S):
        table = ""
        for line in block.splitlines():
            header = re.match(r"\[([\w.]+)\]", line)
            if header:
                table = header.group(1) + "."
            setting = re.match(r"(\w+) = ", line)
            if setting:
                lines[table + setting.group(1)] = lines.get(table + setting.group(1), "") + line + "\n"
    return lines


@pytest.mark.parametrize(
    "doc, cls, prefix", [("docs/pipeline.md", LaneConfig, ""), ("docs/edge.md", EdgeConfig, "edge.")]
)
def test_the_docs_list_every_setting_with_its_limits(doc, cls, prefix):
    documented = _documented(REPO / doc)
    for key, owner, name in _keys(cls, prefix):
        assert key in documented, f"{doc} does not list {key}"
        if _is_number(owner, name) and limit_text(owner, name):
            assert limit_text(owner, name) in documented[key], (
                f"{doc}: {key} without its limits {limit_text(owner, name)}"
            )


MALFORMED_TOML = {
    "a 5000-digit number": ("[events]\nclock_offset_s = " + "1" * 5000 + "\n").encode(),
    "deep nesting": ("zone = " + "[" * 5000 + "]" * 5000 + "\n").encode(),
    "nan": b"[events]\nclock_offset_s = nan\n",
    "1e400": b"[events]\nclock_offset_s = 1e400\n",
    "invalid UTF-8": b"[events]\nclock_offset_s = 1.0  # \xff\xfe\n",
    "a huge file": b"# " + b"x" * (2 << 20) + b"\n",
}


@pytest.mark.parametrize("case", MALFORMED_TOML)
@pytest.mark.parametrize("loader", [load_config, load_edge_config], ids=["replay", "edge"])
def test_a_malformed_config_file_is_one_line_naming_it(tmp_path, case, loader):
    """The lane config is an input path like the POS ones (issue 23, item 1): each malformed file is
    refused in one line naming it, never with a ValueError or RecursionError from the parser."""
    path = tmp_path / "lane.toml"
    path.write_bytes(MALFORMED_TOML[case])
    with pytest.raises(ConfigError) as e:
        loader(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
