"""Bad image input: each case is either read correctly or refused with an error naming the file."""

import io
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from retail_reid import images
from retail_reid.images import ImageError, read_image
from retail_reid.models.datasets import DataError, read_list_file

SAMPLE = "sample/grocery/train/Banana"


@pytest.fixture
def photo(tmp_path):
    src = next(Path(SAMPLE).glob("*.jpg"))
    return cv2.imread(str(src))


def write(path, img, ext=".png"):
    ok, buf = cv2.imencode(ext, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_reads_a_real_photo_as_bgr_uint8(photo):
    assert photo.dtype == np.uint8 and photo.ndim == 3
    img = read_image(next(Path(SAMPLE).glob("*.jpg")))
    assert img.shape == photo.shape and img.dtype == np.uint8


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
        (b"\x89PNG\r\n\x1a\nbroken", "truncated"),
    ],
)
def test_refuses_empty_and_corrupt_files(tmp_path, content, message):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=message) as e:
        read_image(p)
    assert str(p) in str(e.value)


def test_refuses_truncated_jpeg(tmp_path, photo):
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="image not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


def test_grayscale_16bit_and_rgba_become_bgr8(tmp_path, photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    img = read_image(write(tmp_path / "g.png", gray))
    assert img.shape == photo.shape and np.array_equal(img[:, :, 0], gray)

    deep = photo.astype(np.uint16) * 257
    img = read_image(write(tmp_path / "d.png", deep))
    assert img.dtype == np.uint8 and np.array_equal(img, photo)

    rgba = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    img = read_image(write(tmp_path / "a.png", rgba))
    assert img.shape == photo.shape and np.array_equal(img, photo)


def test_tiny_image_is_refused(tmp_path):
    with pytest.raises(ImageError, match="1x1 pixels"):
        read_image(write(tmp_path / "dot.png", np.zeros((1, 1, 3), np.uint8)))


def test_huge_image_is_read(tmp_path):
    big = np.zeros((10000, 10000, 3), np.uint8)
    big[::100] = 255
    img = read_image(write(tmp_path / "big.png", big))
    assert img.shape == (10000, 10000, 3)


def test_list_file_with_bom_blank_lines_and_split_columns(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_bytes("\ufeffa/x.jpg, 3, 1\n\n   \nb/y.jpg\n".encode("utf-8"))
    assert read_list_file(lst) == [tmp_path / "a/x.jpg", tmp_path / "b/y.jpg"]
    assert read_list_file(lst, root="/data") == [Path("/data/a/x.jpg"), Path("/data/b/y.jpg")]


def test_list_file_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_list_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=str(empty)):
        read_list_file(empty)


def _png_of_size(width: int, height: int) -> bytes:
    """A real 16-bit PNG of that size (compressed to a few hundred kilobytes)."""
    return cv2.imencode(".png", np.zeros((height, width), np.uint16))[1].tobytes()


def _patched(ext: str, offset_of, pack) -> bytes:
    """A small real image of format `ext` whose header is rewritten to declare 12000 x 11000 pixels."""
    data = bytearray(
        cv2.imencode(ext, np.full((16, 16, 3), 128, np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes()
    )
    at = offset_of(bytes(data))
    data[at : at + len(pack)] = pack
    return bytes(data)


def _tiff_of_size(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="TIFF", compression="tiff_adobe_deflate")
    return out.getvalue()


HUGE = {
    "16-bit png": lambda: _png_of_size(12000, 11000),
    "jpeg": lambda: _patched(".jpg", lambda d: d.index(b"\xff\xc0") + 5, struct.pack(">HH", 11000, 12000)),
    "bmp": lambda: _patched(".bmp", lambda d: 18, struct.pack("<ii", 12000, 11000)),
    "tiff": lambda: _tiff_of_size(12000, 11000),
    "webp": lambda: _patched(".webp", lambda d: d.index(b"VP8 ") + 14, struct.pack("<HH", 12000, 11000)),
}


@pytest.mark.parametrize("kind", HUGE)
def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch, kind):
    """A 1 MB file can declare gigabytes of pixels: its size is read from the header, and it is never decoded."""
    path = tmp_path / "huge.img"
    path.write_bytes(HUGE[kind]())

    def decode(*args):
        raise AssertionError("decoded before its size was checked")

    monkeypatch.setattr(images.cv2, "imdecode", decode)
    with pytest.raises(ImageError, match=f"{path}: image is 12000x11000 pixels, more than the limit"):
        read_image(path)
