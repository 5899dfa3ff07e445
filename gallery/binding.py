"""A gallery is bound to the embedder model its references were embedded with (by the model file's
sha256): embeddings of two models are not comparable, so any other model is refused."""

from __future__ import annotations

from pathlib import Path

from retail_reid.gallery.errors import GalleryError
from retail_reid.models.runtime import OnnxEmbedder


def bound_embedder(
    root: Path,
    fingerprint: str,
    model_path: str,
    embedder: OnnxEmbedder | None = None,
    model: str | Path | None = None,
    threads: int | None = None,
    arena: bool = True,
) -> OnnxEmbedder:
    """The given embedder, or one loaded (with `threads` inference threads, None: REID_THREADS or
    all cores; `arena` as OnnxEmbedder takes it) from `model`, the gallery's stored model path, or
    else the default model; refused unless its fingerprint is the gallery's."""
    if embedder is None:
        if model is None:
            model = model_path if Path(model_path).is_file() else None
        embedder = OnnxEmbedder(model, threads=threads, arena=arena)
    if embedder.fingerprint != fingerprint:
        raise GalleryError(
            f"{root}: the gallery was built with model {fingerprint[:12]} ({model_path}), but {embedder.path} is model "
            f"{embedder.fingerprint[:12]}; re-embed the gallery with `reid gallery rebuild {root} --model "
            f"{embedder.path}` "
            "or use the gallery's model"
        )
    return embedder
