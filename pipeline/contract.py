"""The published contract: JSON Schemas (draft 2020-12) of what the lane writes and takes (events,
POS lines, the edge health document, the lane config) and the OpenAPI 3.1 document of the edge HTTP
API, shipped as files in `retail_reid/pipeline/schemas/` so that integrators validate against the
same text the tests hold the writers to (the lane config's is made from the settings classes). The
schemas refer to each other by file name (`$ref: "event.schema.json#/$defs/alert"`), so they are
kept, and handed out, together."""

from __future__ import annotations

import json
import sys
from importlib import resources
from typing import TYPE_CHECKING

from retail_reid.compat import StrEnum

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable  # only named in annotations
    else:
        from importlib.abc import Traversable

SCHEMA_PACKAGE = "retail_reid.pipeline"
SCHEMA_FOLDER = "schemas"
SCHEMA_BASE = "https://retail-reid.invalid/schemas/"  # every document's `$id` is this and its file name


class SchemaName(StrEnum):
    """The shipped documents, by the name `reid schema NAME` takes."""

    EVENT = "event"  # a line of `reid replay`'s events.jsonl
    EDGE_EVENT = "edge-event"  # a line of the edge's events.jsonl, a GET /events item, a webhook body
    POS_EVENT = "pos-event"  # a POS log line, or one event of a POST /pos body
    HEALTH = "health"  # the edge's GET /health body
    OPENAPI = "openapi"  # the edge HTTP API
    LANE_CONFIG = "lane-config"  # lane.toml (and `reid replay --config`), from the settings' declarations

    @property
    def file_name(self) -> str:
        return "openapi.json" if self is SchemaName.OPENAPI else f"{self.value}.schema.json"

    @property
    def shipped(self) -> bool:
        """Kept as a file; the lane config's schema is made from the settings classes instead."""
        return self is not SchemaName.LANE_CONFIG


def schema_file(name: SchemaName) -> Traversable:
    """The shipped file (inside the installed package; may be inside a wheel or zip)."""
    return resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FOLDER).joinpath(name.file_name)


def schema_text(name: SchemaName) -> str:
    return (
        schema_file(name).read_text(encoding="utf-8")
        if name.shipped
        else json.dumps(lane_config_schema(), indent=2) + "\n"
    )


def lane_config_schema() -> dict:
    """The JSON Schema of lane.toml, made from the settings' declarations (types, limits, defaults)."""
    from retail_reid.pipeline.edge.settings import lane_toml_schema

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_BASE + SchemaName.LANE_CONFIG.file_name,
        **lane_toml_schema(),
        "title": "Lane config",
        "description": "A lane.toml as TOML parses it: the lane's settings (what `reid replay --config` reads), "
        "and for `reid edge` its [edge] tables or several [[lane]] tables. Numbers are finite and within the limits "
        "shown; unknown keys are refused.",
    }


def load_schema(name: SchemaName) -> dict:
    """The document as a dict, e.g. to build a validator: every schema's `$id` ends in its file
    name, so a registry keyed by `$id` resolves their references to each other."""
    return json.loads(schema_text(name))
