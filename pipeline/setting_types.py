"""What every settings class (the lane's, the edge's, the console's) is declared with: pydantic v2
dataclasses whose fields carry their own types and limits, so a setting is declared once and its
checks, its JSON Schema and its error message all come from that declaration. A float must be
finite (TOML's nan, inf and 1e400 are refused) and within its range; an unknown key is refused;
a failure is one line naming the key, as the hand-written checks before them did."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Annotated

from pydantic import ConfigDict, Strict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from retail_reid.errors import ReidError

C = typing.TypeVar("C", bound=type)


class ConfigError(ReidError, ValueError):
    """A config file or value that cannot be used; names the file and key."""


# The pydantic config of every settings dataclass: unknown keys are errors, floats are finite.
SETTINGS = ConfigDict(extra="forbid", allow_inf_nan=False)

# Scalars as TOML gives them, never converted from another type: an integer passes as a float,
# but a bool is not a number and "0.5" is not one either.
Real = Annotated[float, Strict()]
Whole = Annotated[int, Strict()]
Text = Annotated[str, Strict()]
Flag = Annotated[bool, Strict()]

RULE = "setting_rule"  # the error type of `rule`
NAMED = "setting_named"  # the error type of `named`


def rule(ok: bool, field: str, message: str) -> None:
    """A check across fields (or beyond a range), in a settings class's `__post_init__`; `field`
    is the key it names, relative to that class."""
    if not ok:
        raise PydanticCustomError(RULE, "{message}", {"message": message, "field": field})


def named(message: str) -> PydanticCustomError:
    """An error from a field's own validator whose message already starts with the field's key
    (the zone's checks name "zone" or "exclude[2]" themselves)."""
    return PydanticCustomError(NAMED, "{message}", {"message": message})


def at_most(low: float, high: float, low_key: str, high_key: str) -> None:
    """A rule that one setting (a first wait) is at most another (the longest wait)."""
    rule(low <= high, low_key, f"must be at most {high_key} ({_number(high)}), got {_number(low)}")


def settings(
    prefix: str = "", *, error: type[Exception] = ConfigError, key: Callable[[str], str] = str
) -> Callable[[C], C]:
    """Make a settings dataclass raise `error` with a one-line message instead of pydantic's
    ValidationError when it is built (from a table, by hand or by dataclasses.replace). `prefix`
    is where its table sits (e.g. "detector.motion"); `key` turns a dotted key into the name
    the user gave (the console's command-line flags)."""

    def wrap(cls: C) -> C:
        init = vars(cls)["__init__"]

        @functools.wraps(init)
        def __init__(self: object, *args: object, **kwargs: object) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                raise error(describe(e, cls, prefix, key)) from None

        cls.__init__ = __init__  # type: ignore[misc]
        return cls

    return wrap


def _fields(cls: object) -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = getattr(cls, "__pydantic_fields__", {})
    return fields


def _nested(info: FieldInfo) -> type | None:
    """The settings class a field holds (a table), if it holds one."""
    kind = info.annotation
    return kind if isinstance(kind, type) and _fields(kind) else None


def _bounds(item: object) -> Iterator[tuple[str, float]]:
    """The limits declared on a field (ge, gt, le, lt), also inside a union's members."""
    for name in ("ge", "gt", "le", "lt"):
        value = getattr(item, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, value
    if isinstance(item, FieldInfo):
        yield from _bounds(item.annotation)
        for meta in item.metadata:
            yield from _bounds(meta)
    for arg in typing.get_args(item):
        if not isinstance(arg, (str, int, float)):
            yield from _bounds(arg)
    for meta in getattr(item, "__metadata__", ()):
        yield from _bounds(meta)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def limits(info: FieldInfo) -> str:
    """A field's declared range as the messages and the docs write it ("[0, 1]", "(0, 60]"); empty
    for a field without one."""
    found = dict(_bounds(info))
    if not found:
        return ""
    low = f"[{_number(found['ge'])}" if "ge" in found else f"({_number(found['gt'])}" if "gt" in found else "(-inf"
    high = f"{_number(found['le'])}]" if "le" in found else f"{_number(found['lt'])})" if "lt" in found else "inf)"
    return f"{low}, {high}"


def limit_text(cls: type, name: str) -> str:
    """The declared range of a settings class's field, for help texts: "(0, 1024]"."""
    return limits(_fields(cls)[name])


def _shown(value: object) -> str:
    return _number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


# pydantic's error types for a value of the wrong type, and the type they asked for
TYPE_NAMES = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "list_type": "list",
    "tuple_type": "list",
    "enum_type": "str",
}


def _located(error: ErrorDetails, root: type, prefix: str) -> tuple[str, FieldInfo | None, list[str]]:
    """The dotted key an error's location names (union members skipped), the field, and the keys
    known where an unknown one was given."""
    parts = [prefix] if prefix else []
    cls: type | None = root
    info: FieldInfo | None = None
    known: list[str] = []
    for item in error["loc"]:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif cls is not None and item in _fields(cls):
            info = _fields(cls)[item]
            parts.append(item)
            cls = _nested(info)
        elif cls is not None and error["type"] == "unexpected_keyword_argument":
            known = sorted(_fields(cls))
            parts.append(str(item))
    return ".".join(parts), info, known


def describe(error: ValidationError, root: type, prefix: str = "", key: Callable[[str], str] = str) -> str:
    """The first problem of a ValidationError as one line: the key, then what is wrong with it."""
    errors = error.errors()
    where, info, known = _located(errors[0], root, prefix)
    first = errors[0]
    kind = first["type"]
    if kind == "unexpected_keyword_argument":
        return f"unknown key '{key(where)}' (known here: {', '.join(known)})"
    if kind == RULE:
        field = first.get("ctx", {})["field"]
        return f"{key('.'.join(p for p in (where, field) if p))}: {first['msg']}"
    same = [e for e in errors if _located(e, root, prefix)[0] == where]
    got = first["input"]
    shown = f"{type(got).__name__} {_shown(got)}"
    if kind == NAMED:
        return ".".join(p for p in (where.rpartition(".")[0], first["msg"]) if p)
    if kind == "dataclass_type":
        return f"{key(where)}: must be a table ([{where}]), got {shown}"
    if kind == "enum" and info is not None and isinstance(info.annotation, type) and issubclass(info.annotation, Enum):
        return f"{key(where)}: must be one of {', '.join(str(m.value) for m in info.annotation)}, got {_shown(got)}"
    bounded = next((e for e in same if e["type"] not in TYPE_NAMES), None)
    if bounded is not None and info is not None and limits(info):
        return f"{key(where)}: must be in {limits(info)}, got {_shown(bounded['input'])}"
    if all(e["type"] in TYPE_NAMES for e in same):
        names = " or ".join(dict.fromkeys(TYPE_NAMES[e["type"]] for e in same))
        return f"{key(where)}: must be {names}, got {shown}"
    return f"{key(where)}: {first['msg'][0].lower()}{first['msg'][1:]}, got {_shown(got)}"
