"""Bad image input: each case is either read correctly or refused with an error naming the file."""

import io
import struct
import threading
import time
import zlib
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


def _png_declaring(width: int, height: int) -> bytes:
    """A small real PNG whose header (IHDR, CRC rewritten) declares width x height pixels, as a
    350 KB file of 119.9 Mpx does."""
    data = bytearray(cv2.imencode(".png", np.zeros((16, 16), np.uint8))[1].tobytes())
    at = data.index(b"IHDR")
    data[at + 4 : at + 12] = struct.pack(">II", width, height)
    data[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 17])))
    return bytes(data)


def test_a_png_just_under_the_old_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    """119.9 Mpx took 1.12 GB to decode; a format that cannot be decoded smaller is held to 24 Mpx."""
    path = tmp_path / "wide.png"
    path.write_bytes(_png_declaring(10950, 10950))
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: pytest.fail("decoded before its size was checked"))
    with pytest.raises(ImageError, match=f"{path}: image is 10950x10950 pixels, more than the limit of 24000000"):
        read_image(path)


def test_a_large_png_under_the_cap_is_decoded_then_shrunk_to_the_longest_side(tmp_path):
    big = np.zeros((4000, 5000), np.uint8)
    big[::100] = 255
    img = read_image(write(tmp_path / "big.png", big))
    assert img.shape == (3277, images.MAX_SIDE, 3) and img.dtype == np.uint8
    assert img[0].mean() > 200 and img[50].mean() < 50  # the stripes survive the area averaging


@pytest.mark.parametrize(("size", "decoded"), [((9000, 6000), (1500, 2250)), ((6000, 4500), (2250, 3000))])
def test_a_large_jpeg_is_decoded_at_reduced_size(tmp_path, size, decoded):
    """Above MAX_SIDE a JPEG is decoded at 1/2, 1/4 or 1/8 scale (the least that fits): a whole
    decode shrunk afterwards would be exactly MAX_SIDE long. 54 Mpx is over the whole-decode cap,
    and allowed for a JPEG."""
    path = tmp_path / "big.jpg"
    Image.new("L", size, 90).save(path, quality=80)
    img = read_image(path)
    assert img.shape == (*decoded, 3) and int(img[10, 10, 0]) in range(85, 96)


def test_a_jpeg_within_the_longest_side_is_decoded_whole(tmp_path, photo):
    img = read_image(write(tmp_path / "p.jpg", photo, ".jpg"))
    assert img.shape == photo.shape


def test_no_more_than_a_few_images_are_decoded_at_once(tmp_path, photo, monkeypatch):
    """The console decodes uploads on several threads: decodes past DECODES_AT_ONCE wait their turn."""
    real, running, most = images.cv2.imdecode, [0], [0]
    lock = threading.Lock()

    def counted(*args):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)  # long enough for the other threads to arrive (no timing is asserted)
            return real(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(images.cv2, "imdecode", counted)
    data = write(tmp_path / "p.png", photo).read_bytes()
    threads = [threading.Thread(target=images.decode_image, args=(data, "p.png")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= most[0] <= images.DECODES_AT_ONCE


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
