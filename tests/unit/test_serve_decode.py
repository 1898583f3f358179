"""``cellbench.serve.decode``: what an upload costs is counted from its header, before decoding.

The memory bombs are small files whose header promises a large image: a 322 kB TIFF of
1000 x 1000 px with 300 samples per pixel (286 MiB decoded), 2000 zlib pages of 40000 x 4
(305 MiB), PNG and JPEG headers of 100000 x 100000 and 65000 x 65000 px. Each must be
refused (422, saying what was counted) without decoding a pixel: the decoders are replaced
by ones that fail the test, and the memory traced while refusing stays under 8 MiB.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import tifffile
from cellbench.serve.decode import UploadError, decode_upload
from PIL import Image

MAX_PIXELS = 64_000_000  # the server's default --max-megapixels 64
PEAK_BYTES = 8 * 2**20


def _tiff(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # "writing zero-size array to nonconformant TIFF"
        warnings.simplefilter("ignore", UserWarning)
        tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _samples_bomb() -> bytes:
    return _tiff(
        np.zeros((1000, 1000, 300), np.uint8),
        compression="zlib",
        photometric="minisblack",
        planarconfig="contig",
    )


def _pages_bomb() -> bytes:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tif:
        for _ in range(2000):
            tif.write(np.zeros((40000, 4), np.uint8), compression="zlib", metadata=None)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_header(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture()
def no_decoding(monkeypatch):
    """Fail the test if any pixel is decoded."""

    def decoded(*args, **kwargs):
        pytest.fail("the pixels were decoded before the upload was refused")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", decoded)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", decoded)
    monkeypatch.setattr("skimage.io.imread", decoded)


def _refused(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[UploadError, int]:
    tracemalloc.start()
    try:
        with pytest.raises(UploadError) as err:
            decode_upload(data, max_pixels=max_pixels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return err.value, peak


def test_many_samples_per_pixel_are_counted_before_decoding(no_decoding) -> None:
    data = _samples_bomb()
    assert len(data) < 400_000
    error, peak = _refused(data)
    assert error.status == 422
    assert error.message.startswith("the image has 300 channels (samples per pixel; counted")
    assert "before decoding: 1 page, shape (1000, 1000, 300), axes 'YXS', uint8" in error.message
    assert "286 MiB once decoded" in error.message and "at most 4" in error.message
    assert peak < PEAK_BYTES


def test_many_pages_are_counted_before_decoding(no_decoding) -> None:
    data = _pages_bomb()
    assert len(data) < 1_000_000
    error, peak = _refused(data)
    assert error.status == 422
    # tifffile's own (H, W, C) layout: 2000 pages of 40000 x 4 are a 2000 x 40000 image
    assert error.message.startswith("the image is 40000 x 2000 px (80.0 megapixels; counted")
    assert "2000 pages, shape (2000, 40000, 4), axes 'IYX', uint8, 305 MiB once decoded" in (
        error.message
    )
    assert "at most 64 megapixels (--max-megapixels)" in error.message
    assert peak < PEAK_BYTES


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (_png_header(100_000, 100_000), "100000 x 100000 px (10000.0 megapixels"),
        (_jpeg_header(65_000, 65_000), "65000 x 65000 px (4225.0 megapixels"),
    ],
    ids=["png", "jpeg"],
)
def test_huge_png_and_jpeg_headers_get_the_server_limit(no_decoding, data, size) -> None:
    # Pillow's own check (a DecompressionBombError) used to answer 415 "cannot be decoded"
    error, peak = _refused(data)
    assert error.status == 422 and error.message.startswith(f"the image is {size}")
    assert "(--max-megapixels)" in error.message
    assert peak < PEAK_BYTES


def test_pixel_type_is_checked_before_decoding(no_decoding) -> None:
    error, _ = _refused(_tiff(np.zeros((20, 20), np.complex64)))
    assert error.status == 422
    assert error.message.startswith("the image pixels have data type complex64 (counted before")


def test_channel_first_samples_and_stacks_are_counted_too(no_decoding) -> None:
    planar = _tiff(
        np.zeros((300, 30, 30), np.uint8), planarconfig="separate", photometric="minisblack"
    )
    error, _ = _refused(planar)
    assert error.status == 422 and "300 channels" in error.message and "'SYX'" in error.message
    stack = _tiff(np.zeros((6, 30, 30), np.uint8), metadata={"axes": "ZYX"})
    error, _ = _refused(stack)
    assert error.status == 422 and "a stack of 6 planes" in error.message


def test_images_within_the_limits_still_decode() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    assert np.array_equal(decode_upload(_tiff(rgb), max_pixels=1200), rgb)
    two = np.stack([rgb[..., 0], rgb[..., 1]])  # channel-first (2, H, W)
    assert np.array_equal(decode_upload(_tiff(two), max_pixels=1200), rgb[..., :2])
    with pytest.raises(UploadError, match=r"40 x 30 px \(0.0 megapixels; counted"):
        decode_upload(_tiff(rgb), max_pixels=1199)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    assert np.array_equal(decode_upload(buffer.getvalue(), max_pixels=1200), rgb)


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 415, "the upload is empty"),
        (_tiff(np.zeros((40, 40), np.uint16))[:200], 415, "cannot be decoded"),
        (_tiff(np.zeros((0, 0), np.uint8)), 422, "image is empty"),
        (_tiff(np.full((8, 8), np.nan, np.float32)), 422, "non-finite values"),
        (_tiff(np.full((8, 8), 1e300)), 422, "pixel values up to 1e+300"),
        (b"II*\x00\x08\x00\x00\x00\x00\x00\x08\x00\x00\x00", 422, "holds no 2-D image"),
        (_png_header(0, 0), 415, "cannot be decoded"),
        (_jpeg_header(64, 64)[:60], 415, "cannot be decoded"),
        (b"GIF89a" + bytes(40), 415, "first bytes"),
    ],
    ids=[
        "zero bytes",
        "truncated TIFF",
        "0 x 0 TIFF",
        "NaN",
        "float64 beyond float32",
        "TIFF with an empty, circular IFD",
        "0 x 0 PNG",
        "truncated JPEG",
        "GIF",
    ],
)
def test_further_bad_uploads_get_a_4xx_with_a_message(data, status, words) -> None:
    with pytest.raises(UploadError) as err:
        decode_upload(data, max_pixels=MAX_PIXELS)
    assert err.value.status == status and words in err.value.message


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.eye(8, dtype=bool), "bool"),
        (np.linspace(0, 1, 64).reshape(8, 8), "float64"),
        (np.arange(64, dtype=np.int64).reshape(8, 8), "int64"),
    ],
)
def test_unusual_number_types_decode_as_stored(array, dtype) -> None:
    decoded = decode_upload(_tiff(array), max_pixels=MAX_PIXELS)
    assert decoded.dtype == np.dtype(dtype) and np.array_equal(decoded, array)
