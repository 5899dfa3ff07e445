"""What a product is in the catalogue, and the rules its fields must follow (checked before anything
is written, so a bad field never reaches the store)."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

from retail_reid.gallery.errors import GalleryError

MAX_SKU_LEN = 100
MAX_TEXT_LEN = 200


@dataclass(frozen=True)
class Product:
    """One catalogue entry. Barcodes are GTIN-8/12/13/14 (with a valid check digit) or 4-5 digit PLUs."""

    sku: str
    name: str
    barcodes: tuple[str, ...] = ()
    category: str | None = None
    price: float | None = None

    def to_dict(self) -> dict:
        return {
            "sku": self.sku,
            "name": self.name,
            "barcodes": list(self.barcodes),
            "category": self.category,
            "price": self.price,
        }

    @classmethod
    def from_dict(cls, d: object, where: str) -> Product:
        """Parse and validate a product read from a file; `where` names the file and entry for errors."""
        if not isinstance(d, dict):
            raise GalleryError(f"{where}: expected an object with 'sku' and 'name', got {type(d).__name__}")
        sku = check_sku(d.get("sku"), f"{where}: field 'sku'")
        barcodes = d.get("barcodes") or []
        if not isinstance(barcodes, list):
            raise GalleryError(f"{where}: field 'barcodes' must be a list")
        return cls(
            sku,
            check_text(d.get("name", sku), f"{where}: field 'name'"),
            tuple(check_barcode(b, f"{where}: field 'barcodes'") for b in barcodes),
            None if d.get("category") is None else check_text(d["category"], f"{where}: field 'category'"),
            check_price(d.get("price"), f"{where}: field 'price'"),
        )


def _check_chars(text: str, what: str) -> None:
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")]
    if bad:
        raise GalleryError(f"{what}: contains control or unassigned characters {bad[:3]!r}")


def check_sku(sku: object, what: str = "SKU") -> str:
    """A SKU id: non-empty, printable, no surrounding whitespace; normalised to Unicode NFC."""
    if not isinstance(sku, str):
        raise GalleryError(f"{what}: SKU id must be text, got {sku!r}")
    if not sku.strip():
        raise GalleryError(f"{what}: SKU id is empty or only whitespace")
    if sku != sku.strip():
        raise GalleryError(f"{what}: SKU id {sku!r} starts or ends with whitespace")
    if len(sku) > MAX_SKU_LEN:
        raise GalleryError(f"{what}: SKU id is {len(sku)} characters long, more than {MAX_SKU_LEN}")
    _check_chars(sku, what)
    return unicodedata.normalize("NFC", sku)


def check_text(text: object, what: str) -> str:
    """A display name or category: non-empty printable text (any script), normalised to NFC."""
    if not isinstance(text, str) or not text.strip():
        raise GalleryError(f"{what}: must be non-empty text, got {text!r}")
    text = text.strip()
    if len(text) > MAX_TEXT_LEN:
        raise GalleryError(f"{what}: is {len(text)} characters long, more than {MAX_TEXT_LEN}")
    _check_chars(text, what)
    return unicodedata.normalize("NFC", text)


def gtin_check_digit(body: str) -> int:
    """The GS1 check digit of the digits before it (weights 3,1,3,... from the right)."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def check_barcode(code: object, what: str = "barcode") -> str:
    """A GTIN-8/12/13/14 with a correct check digit (typos there mean alerts on the wrong product),
    or a 4-5 digit PLU."""
    if not isinstance(code, str) or not code.isascii() or not code.isdigit():
        raise GalleryError(f"{what}: barcode {code!r} must be digits only")
    if len(code) in (4, 5):
        return code
    if len(code) not in (8, 12, 13, 14):
        raise GalleryError(
            f"{what}: barcode {code!r} has {len(code)} digits; expected a 4-5 digit PLU or an 8, 12, 13 or 14 digit "
            "GTIN"
        )
    if gtin_check_digit(code[:-1]) != int(code[-1]):
        raise GalleryError(
            f"{what}: barcode {code!r} has a wrong check digit (expected {gtin_check_digit(code[:-1])}); mistyped?"
        )
    return code


def check_price(price: object, what: str = "price") -> float | None:
    if price is None:
        return None
    try:
        value = float(price)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise GalleryError(f"{what}: price must be a number, got {price!r}") from None
    if isinstance(price, bool) or not math.isfinite(value) or value < 0:
        raise GalleryError(f"{what}: price must be a non-negative number, got {price!r}")
    return value
