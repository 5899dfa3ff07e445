"""Fixtures shared by several test modules (the session-wide gallery of the bundled sample), and no wall-clock
deadline for hypothesis: on a busy machine a slow example is not a failing one."""

from gallery_fixtures import built_gallery, embedder, gallery_dir, variant_model
from hypothesis import settings

settings.register_profile("no-deadline", deadline=None)
settings.load_profile("no-deadline")

__all__ = ["built_gallery", "embedder", "gallery_dir", "variant_model"]
