"""Fixtures shared by several test modules: the session-wide gallery of the bundled sample, and a
live edge HTTP API."""

from edge_fixtures import api
from gallery_fixtures import built_gallery, embedder, gallery_dir, val_queries, variant_model

__all__ = ["api", "built_gallery", "embedder", "gallery_dir", "val_queries", "variant_model"]
