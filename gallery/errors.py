"""The gallery's user-facing error: the `reid` command prints it as one line and exits 2."""

from retail_reid.errors import ReidError


class GalleryError(ReidError, ValueError):
    """A gallery that cannot be opened or changed as asked; the message names the culprit and the fix."""
