"""Fixtures shared by several test modules (the session-wide gallery of the bundled sample)."""

from gallery_fixtures import built_gallery, embedder, gallery_dir, val_queries, variant_model

__all__ = ["built_gallery", "embedder", "gallery_dir", "val_queries", "variant_model"]
