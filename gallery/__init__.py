"""The gallery: a versioned, crash-safe store of reference embeddings per SKU, searched with FAISS.

Readers (the pipeline) use `Gallery`; operators change it through `GalleryStore` (`reid gallery ...`).
"""
from gallery.errors import GalleryError
from gallery.matching import Gallery, SkuMatch, Verification

__all__ = ["Gallery", "GalleryError", "SkuMatch", "Verification"]
