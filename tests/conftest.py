"""Fixtures shared by several test modules: the session-wide gallery of the bundled sample and a live
edge HTTP API; and no wall-clock deadline for hypothesis: on a busy machine a slow example is not a
failing one."""

from edge_fixtures import api
from gallery_fixtures import built_gallery, embedder, gallery_dir, val_queries, variant_model
from hypothesis import settings

settings.register_profile("no-deadline", deadline=None)
settings.load_profile("no-deadline")

__all__ = ["api", "built_gallery", "embedder", "gallery_dir", "val_queries", "variant_model"]
