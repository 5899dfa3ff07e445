"""Validators for the published contract (retail_reid.pipeline.contract): every shipped document
in one `referencing` registry, so the schemas' references to each other resolve offline.
jsonschema (the [dev] extra) is imported when a validator is first needed, so a module that uses
these only in some tests is not skipped as a whole without it."""

from __future__ import annotations

from functools import cache

import pytest

from retail_reid.pipeline.contract import SchemaName, load_schema

BASE = "https://retail-reid.invalid/schemas/"


@cache
def _registry():
    """The shipped documents by URI; openapi.json (no `$id`) under the same base as the rest."""
    pytest.importorskip("jsonschema")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resources(
        (BASE + name.file_name, Resource.from_contents(load_schema(name), DRAFT202012)) for name in SchemaName
    )


def validator(name: SchemaName | str, pointer: str = ""):
    """A Draft 2020-12 validator for a shipped document, or for its part at `pointer` (an OpenAPI component)."""
    registry = _registry()
    from jsonschema import Draft202012Validator

    ref = BASE + SchemaName(name).file_name + (f"#{pointer}" if pointer else "")
    return Draft202012Validator({"$ref": ref}, registry=registry)


def assert_valid(name: SchemaName | str, instance: object, pointer: str = "", what: str = "") -> None:
    """Fail with every violation listed, naming the document and the instance's paths."""
    from jsonschema.exceptions import best_match

    errors = sorted(validator(name, pointer).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        deepest = [best_match(e.context) if e.context else e for e in errors]  # inside a oneOf: the branch's reason
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in deepest]
        raise AssertionError(f"{what or repr(instance)[:200]} does not follow {name}{pointer}:\n" + "\n".join(lines))


def api_component(component: str) -> str:
    """The JSON pointer of an OpenAPI component schema, for `assert_valid("openapi", ..., pointer)`."""
    return f"/components/schemas/{component}"
