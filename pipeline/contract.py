"""The published contract: JSON Schemas (draft 2020-12) of what the lane writes and takes (events,
POS lines, the edge health document) and the OpenAPI 3.1 document of the edge HTTP API, shipped
as files in `retail_reid/pipeline/schemas/` so that integrators validate against the same text
the tests hold the writers to. The schemas refer to each other by file name (`$ref:
"event.schema.json#/$defs/alert"`), so they are kept, and handed out, together."""

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


class SchemaName(StrEnum):
    """The shipped documents, by the name `reid schema NAME` takes."""

    EVENT = "event"  # a line of `reid replay`'s events.jsonl
    EDGE_EVENT = "edge-event"  # a line of the edge's events.jsonl, a GET /events item, a webhook body
    POS_EVENT = "pos-event"  # a POS log line, or one event of a POST /pos body
    HEALTH = "health"  # the edge's GET /health body
    OPENAPI = "openapi"  # the edge HTTP API

    @property
    def file_name(self) -> str:
        return "openapi.json" if self is SchemaName.OPENAPI else f"{self.value}.schema.json"


def schema_file(name: SchemaName) -> Traversable:
    """The shipped file (inside the installed package; may be inside a wheel or zip)."""
    return resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FOLDER).joinpath(name.file_name)


def schema_text(name: SchemaName) -> str:
    return schema_file(name).read_text(encoding="utf-8")


def load_schema(name: SchemaName) -> dict:
    """The document as a dict, e.g. to build a validator: every schema's `$id` ends in its file
    name, so a registry keyed by `$id` resolves their references to each other."""
    return json.loads(schema_text(name))
