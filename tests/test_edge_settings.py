"""`retail_reid.pipeline.edge.settings`: lane.toml's [edge] tables, the shipped examples, and
mistakes named by file and key."""

from __future__ import annotations

import dataclasses

import pytest
from edge_fixtures import REPO

from retail_reid.pipeline.config import ConfigError, LaneConfig
from retail_reid.pipeline.edge.settings import load_edge_config

# The required keys of a lane.toml; each case adds one mistake.
LANE = 'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n'


def test_the_example_lane_toml_loads_and_relative_paths_follow_the_file(tmp_path):
    edge, lane = load_edge_config(REPO / "deploy" / "lane.toml")
    assert edge.lane == "lane-1" and edge.camera.is_stream and edge.http.host == "127.0.0.1"
    assert lane.zone is not None and lane.events.window_after_s == 0.5
    assert dataclasses.replace(lane, zone=None) == LaneConfig()  # "the default is the value shown"
    (tmp_path / "secret").write_text("tok-123\n")
    (tmp_path / "lane.toml").write_text(
        'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n'
        '[edge.camera]\nsource = "video.mp4"\n[edge.http]\nhost = "0.0.0.0"\ntoken_file = "secret"\n'
    )
    edge, _ = load_edge_config(tmp_path / "lane.toml")
    assert edge.gallery == str(tmp_path / "g") and edge.state_dir == str(tmp_path / "s")
    assert edge.camera.source == str(tmp_path / "video.mp4") and not edge.camera.is_stream
    assert edge.http.token == "tok-123"


def test_the_compose_lane_config_is_complete_but_for_its_secret():
    with pytest.raises(ConfigError, match=r"edge\.http\.token_file: cannot read /run/secrets/lane_token"):
        load_edge_config(REPO / "deploy" / "lane-compose.toml")  # every other key parsed and checked first


@pytest.mark.parametrize(
    "text, needle",
    [
        ("zone = [0, 0, 10, 10]\n", "no [edge] table"),
        ('[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n', "zone: is required"),
        (
            LANE + "[edge.http]\nprot = 1\n",
            "unknown key 'edge.http.prot'",
        ),
        (
            LANE + '[edge.http]\nport = "80"\n',
            "edge.http.port: must be int",
        ),
        ('zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n', "edge.camera.source: is required"),
        (
            LANE + '[edge.http]\nhost = "0.0.0.0"\n',
            "set edge.http.token",
        ),
        (
            LANE + '[edge.webhook]\nurl = "ftp://x"\n',
            "edge.webhook.url",
        ),
        (
            LANE + '[edge.http]\ntoken_file = "nope"\n',
            "edge.http.token_file: cannot read",
        ),
        ('zone = [0, 0, 10, 10]\n[edge]\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n', "edge.gallery: is required"),
    ],
)
def test_config_mistakes_name_the_file_and_the_key(tmp_path, text, needle):
    path = tmp_path / "lane.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_edge_config(path)
    assert str(path) in str(e.value) and needle in str(e.value), str(e.value)
