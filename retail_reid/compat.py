"""Standard-library names that Python 3.11 added, for the 3.10 that Ubuntu 22.04 and JetPack 6 edge boxes
ship: `tomllib` (the `tomli` package it came from) and `StrEnum`. Import them from here."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum  # noqa: TID251

    import tomllib  # noqa: TID251
else:  # 3.10: tests/test_packaging.py runs the installed wheel on it where a python3.10 is on PATH
    from enum import Enum

    import tomli as tomllib

    class StrEnum(str, Enum):
        """3.11's `enum.StrEnum`: members are strings, `str()` and f-strings give the value."""

        def __str__(self) -> str:
            return str(self.value)

        @staticmethod
        def _generate_next_value_(name: str, start: int, count: int, last_values: list) -> str:
            return name.lower()  # auto() gives the lower-cased member name, as on 3.11


__all__ = ["StrEnum", "tomllib"]
