"""JSON from outside (a till, a broker, a user's file, an archive's manifest), parsed with bounds:
its size is checked before it is decoded, and every way it can fail becomes one error with a
one-line reason, so a reader reports the line and goes on instead of its thread dying.

Python's `json` alone lets through what RFC 8259 does not allow and fails in ways its callers do
not expect: `NaN`, `Infinity` and numbers that overflow to infinity (`1e400`) come back as floats
that poison every sum; an integer of more than 4300 digits raises a bare ValueError (CPython's
guard against quadratic conversion); deep nesting raises RecursionError; bytes that are not UTF-8
raise UnicodeDecodeError; a lone surrogate (`"\\ud800"`) becomes a string that cannot be written
back as UTF-8. Here each is refused as `JsonRejected` (or the caller's own error type).
"""

from __future__ import annotations

import json
import math

from retail_reid.errors import ReidError

MAX_DEPTH = 64  # objects and lists inside one another; no input of ours comes near it
MAX_NUMBER_CHARS = 40  # a number this long is garbage: a double holds 17 significant digits, an int64 19
_BOM = b"\xef\xbb\xbf"
_KINDS = {
    dict: "a JSON object",
    list: "a JSON list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class JsonRejected(ReidError, ValueError):
    """JSON refused: too large, not UTF-8, not JSON, or holding what JSON does not allow; the
    message is one line, led by where the text came from."""


class _Refused(Exception):
    """Raised inside the decoder's hooks, so that it stops at once."""


def _number_text(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS} are accepted)")


def _int(text: str) -> int:
    _number_text(text)
    return int(text)


def _float(text: str) -> float:
    _number_text(text)
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text} is beyond the range of a float")
    return value


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not a number JSON allows")


def _kind(t: type) -> str:
    return _KINDS.get(t, t.__name__)


def _check_tree(value: object, max_depth: int) -> str | None:
    """Why a decoded value is refused (nested too deeply, a string that is not Unicode text), or None."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"a string holds the lone surrogate U+{ord(node[e.start]):04X}, not a character"
        elif isinstance(node, (dict, list)):
            if depth >= max_depth:
                return f"nested more than {max_depth} levels deep"
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return None


def parse_json(
    data: bytes | str,
    where: str,
    *,
    max_bytes: int,
    expect: type | tuple[type, ...] = dict,
    error: type[ReidError] = JsonRejected,
    max_depth: int = MAX_DEPTH,
) -> object:
    """The value `data` holds (of the type `expect`: a JSON object by default), or `error` raised
    as "WHERE: reason" (the reason alone where `where` is empty). A UTF-8 byte-order mark is
    skipped. Nothing larger than `max_bytes` is decoded."""
    at = f"{where}: " if where else ""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise error(f"{at}{size} bytes, more than the limit of {max_bytes}; refused")
    if isinstance(data, bytes):
        try:
            data = data.removeprefix(_BOM).decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{at}not UTF-8 text ({e.reason} at byte {e.start})") from None
    wanted = expect if isinstance(expect, tuple) else (expect,)
    wanted_text = " or ".join(_kind(t) for t in wanted)
    if not data.strip():
        raise error(f"{at}empty; expected {wanted_text}")
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Refused as e:
        raise error(f"{at}{e}") from None
    except json.JSONDecodeError as e:
        raise error(f"{at}not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise error(f"{at}nested more than {max_depth} levels deep") from None
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        raise error(f"{at}expected {wanted_text}, got {_kind(type(value))}")
    problem = _check_tree(value, max_depth)
    if problem is not None:
        raise error(f"{at}{problem}")
    return value


def parse_object(data: bytes | str, where: str, *, max_bytes: int, error: type[ReidError] = JsonRejected) -> dict:
    """`parse_json` of what must be one JSON object."""
    value = parse_json(data, where, max_bytes=max_bytes, error=error)
    assert isinstance(value, dict)  # parse_json checked it
    return value
