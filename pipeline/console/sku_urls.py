"""SKU ids in the console's addresses. A SKU may hold any printable character, `/` included
(`gallery/catalog.py`), but a server decodes `%2F` back into `/` before routing, and a browser
resolves a `.` or `..` segment before sending. So the id is percent-encoded twice, every `/`, `%`
and `.` included: the server's one decoding leaves one layer, which `to_python` removes. The SKU
only ever keys a gallery lookup, never a file path."""

from __future__ import annotations

from urllib.parse import quote, unquote

from werkzeug.routing import BaseConverter


class SkuConverter(BaseConverter):
    """`<sku:sku>`: one path segment holding any SKU id."""

    def to_url(self, value: str) -> str:
        return quote(quote(value, safe="").replace(".", "%2E"), safe="")

    def to_python(self, value: str) -> str:
        return unquote(value)
