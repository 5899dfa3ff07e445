"""Reading an untrusted tar archive (a gallery bundle) as one bounded stream.

Every limit is checked while the archive is read, before the bytes it guards are held in memory or
written to disk: the archive's size on disk, how many bytes it unpacks to (gzip, bzip2 and xz
decompress as they are read; a bomb stops at the limit), the size of each PAX or GNU long-name
header (Python's tarfile would read a 300 MiB header whole), and how many members it has.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from retail_reid.gallery.errors import GalleryError

BLOCK = tarfile.BLOCKSIZE
READ_AHEAD = 2 * tarfile.RECORDSIZE  # what tarfile's stream reader may ask for beyond the member it reads
HEADER_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)


@dataclass(frozen=True)
class BundleLimits:
    """What an imported bundle may hold. The defaults fit a gallery of about 150,000 references."""

    archive_bytes: int = 16 * 2**30  # the file as given, compressed or not
    unpacked_bytes: int = 16 * 2**30  # the tar stream after decompression
    manifest_bytes: int = 64 * 2**20  # about 430 bytes a reference; parsing takes several times this
    header_bytes: int = 64 * 2**10  # one PAX or GNU long-name header (a bundle's names need none)
    members: int = 150_002  # the manifest, the embeddings and one photo a reference
    image_bytes: int = 64 * 2**20  # larger than any product photo the embedder would accept


DEFAULT_LIMITS = BundleLimits()


class BoundedStream:
    """A file's bytes, refusing to deliver more than `limit` of them (the limit can be narrowed as the
    reader learns what the rest must hold)."""

    def __init__(self, source: BinaryIO, limit: int, name: Path):
        self.source, self.limit, self.name, self.position = source, limit, name, 0

    def read(self, size: int = -1) -> bytes:
        allowed = self.limit - self.position + 1  # one byte more than allowed shows the overflow
        data = self.source.read(allowed if size is None or size < 0 else min(size, allowed))
        self.position += len(data)
        if self.position > self.limit:
            raise GalleryError(
                f"{self.name}: unpacks to more than the {self.limit} bytes its manifest and the limits allow; refused"
            )
        return data

    def narrow(self, remaining: int) -> None:
        """From here on at most `remaining` more bytes (never widens the limit)."""
        self.limit = min(self.limit, self.position + remaining)


def _bounded_tarinfo(limits: BundleLimits, name: Path) -> type[tarfile.TarInfo]:
    class BoundedTarInfo(tarfile.TarInfo):
        """A member header that refuses an oversized PAX or long-name header before tarfile reads it."""

        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in HEADER_TYPES and self.size > limits.header_bytes:
                raise GalleryError(
                    f"{name}: a member header of {self.size} bytes, more than the limit of {limits.header_bytes}; "
                    "refused"
                )
            return super()._proc_member(tar)  # type: ignore[misc]

    return BoundedTarInfo


@contextlib.contextmanager
def open_archive(path: Path, limits: BundleLimits) -> Iterator[tuple[tarfile.TarFile, BoundedStream]]:
    """The archive as a tar stream (members in order, each read once) and the bound on its bytes."""
    with contextlib.ExitStack() as stack:
        try:
            raw = stack.enter_context(open(path, "rb"))
        except FileNotFoundError:
            raise GalleryError(f"{path}: no such file") from None
        except OSError as e:
            raise GalleryError(f"{path}: cannot read ({e.strerror or e})") from None
        size = os.fstat(raw.fileno()).st_size
        if size > limits.archive_bytes:
            raise GalleryError(f"{path}: is {size} bytes, more than the limit of {limits.archive_bytes}; refused")
        magic = raw.read(6)
        raw.seek(0)
        source: BinaryIO = raw
        if magic.startswith(b"\x1f\x8b"):
            source = stack.enter_context(gzip.GzipFile(fileobj=raw))  # type: ignore[assignment]
        elif magic.startswith(b"BZh"):
            source = stack.enter_context(bz2.BZ2File(raw))  # type: ignore[assignment]
        elif magic.startswith(b"\xfd7zXZ\x00"):
            source = stack.enter_context(lzma.LZMAFile(raw))  # type: ignore[assignment]
        stream = BoundedStream(source, limits.unpacked_bytes, path)
        stream.narrow(3 * BLOCK + limits.header_bytes + limits.manifest_bytes + READ_AHEAD)  # up to the manifest
        try:
            tar = stack.enter_context(
                # typeshed asks a stream's fileobj for write, seek and tell too, which mode "r|" never calls
                tarfile.open(fileobj=stream, mode="r|", tarinfo=_bounded_tarinfo(limits, path))  # type: ignore[call-overload]
            )
        except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as e:
            raise GalleryError(f"{path}: not a gallery bundle (not a readable tar archive: {e})") from None
        try:
            yield tar, stream
        except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as e:
            raise GalleryError(f"{path}: damaged archive ({e})") from None


def stream_bytes(sizes: list[int], limits: BundleLimits) -> int:
    """The most bytes the rest of a tar stream may take for members of these sizes (headers, padding,
    the end of the archive, and tarfile's read-ahead)."""
    padded = sum(BLOCK + -(-size // BLOCK) * BLOCK for size in sizes)
    return padded + len(sizes) * 2 * BLOCK + 2 * BLOCK + READ_AHEAD + tarfile.RECORDSIZE
