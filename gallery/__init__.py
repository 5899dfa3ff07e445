"""The gallery: a versioned, crash-safe store of reference embeddings per SKU, searched with FAISS.

Readers (the pipeline) use `Gallery`; operators change it through `GalleryStore` (`reid gallery ...`).
"""

from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.matching import Gallery, SkuMatch, Verification

__all__ = ["Gallery", "GalleryError", "SkuMatch", "Verification"]
