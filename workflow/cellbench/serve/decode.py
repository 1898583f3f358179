"""Upload bytes -> a checked image array, in memory. Pure: bytes in, array out.

The type is told by the first bytes (TIFF, PNG, JPEG), never by the file name or
the declared content type. TIFFs are read with tifffile (a stack of planes is
refused, as by :func:`cellbench.io.read_image`); PNG and JPEG as
:func:`cellbench.io.read_image` reads them (``skimage.io.imread``), so an upload
and the same file given to ``cellbench segment`` become the same array.

What decoding will cost is counted from the file's header, before any pixel is
decoded: the data type, the channels (samples per pixel), the pages and the
``H x W`` pixels of the image the file holds (a TIFF's first series; a PNG's or
JPEG's size and bands, read without Pillow's own size check so that a huge header
gets this server's answer). An image with more than :data:`MAX_CHANNELS` channels,
more pixels than ``max_pixels`` or pixels that are not numbers is refused (422)
with what was counted, so an upload's decoded size is at most ``max_pixels x 4``
values whatever it claims.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

from cellbench.io import CellbenchIOError, check_image

__all__ = ["MAGIC", "MAX_CHANNELS", "UploadError", "decode_upload", "safe_stem", "sniff"]

#: first bytes -> image type; anything else is refused (415).
MAGIC: dict[bytes, str] = {
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
}

_ACCEPTED = "TIFF (8/16-bit, float), PNG or JPEG; grey, grey+alpha, RGB or RGBA"
#: Most channels an image may have (grey, grey+alpha, RGB, RGBA), as in cellbench.io.
MAX_CHANNELS = 4


class UploadError(ValueError):
    """An upload the server refuses: the HTTP status and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sniff(data: bytes) -> str | None:
    """``"tiff"``, ``"png"``, ``"jpeg"`` from the first bytes, else None."""
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            return kind
    return None


def safe_stem(filename: str | None, default: str = "upload") -> str:
    """A name for answers' file names only (never a path): ``[A-Za-z0-9._-]``, 64 at most."""
    name = re.split(r"[\\/]", filename or "")[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:64]
    return stem or default


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 1024:.0f} KiB"


def _too_many(h: int, w: int, max_pixels: int, counted: str = "") -> UploadError:
    return UploadError(
        422,
        f"the image is {w} x {h} px ({h * w / 1e6:.1f} megapixels{counted}); this server takes "
        f"at most {max_pixels / 1e6:g} megapixels (--max-megapixels). Crop or downscale it, or "
        "segment it with `cellbench segment`, which has no such limit.",
    )


def _check_header(
    h: int, w: int, channels: int, dtype: np.dtype, max_pixels: int, counted: str
) -> None:
    """Refuse, from what the header says and before decoding, what cannot be segmented.

    ``counted`` describes what was read (pages, shape, bytes once decoded) for messages.
    """
    if dtype.kind not in "biuf":
        raise UploadError(
            422,
            f"the image pixels have data type {dtype} ({counted}), which is not a number "
            "type; save the image with integer (e.g. uint8/uint16) or float pixels.",
        )
    if channels > MAX_CHANNELS:
        raise UploadError(
            422,
            f"the image has {channels} channels (samples per pixel; {counted}); this server "
            f"segments images with at most {MAX_CHANNELS} (grey, grey+alpha, RGB or RGBA). Keep "
            "the channels to segment on (e.g. image[..., :3]) and save again.",
        )
    if h * w > max_pixels:
        raise _too_many(h, w, max_pixels, f"; {counted}")


def _tiff(data: bytes, max_pixels: int) -> np.ndarray:
    import tifffile

    from cellbench.io import tiff_layout

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        n_pages = len(tif.pages)  # the page offsets only: nothing is decoded
        if not tif.series:
            raise UploadError(422, "the TIFF holds no image")
        series = tif.series[0]
        shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
        n_series = sum(1 for s in tif.series if tuple(s.shape) == shape and s.dtype == series.dtype)
        layout, planes = tiff_layout(shape, axes)
        if n_series > 1 or layout == "stack":
            planes = planes * max(n_series, 1)
            raise UploadError(
                422,
                f"the TIFF is a stack of {planes} planes (axes {axes!r}, shape {shape}); the "
                "server segments one 2-D image (H, W) or (H, W, C). Save one plane (or a "
                "maximum projection) and upload that.",
            )
        kept = [n for a, n in zip(axes, shape, strict=True) if n != 1 or a in "YX"]
        if len(kept) < 2:
            raise UploadError(422, f"the TIFF holds no 2-D image (axes {axes!r}, shape {shape})")
        if layout == "first":
            channels, h, w = kept
        else:
            h, w, channels = (*kept, 1) if len(kept) == 2 else kept
        pages = f"{n_pages} page{'s' if n_pages != 1 else ''}"
        counted = (
            f"counted before decoding: {pages}, shape {shape}, axes {axes!r}, {dtype}, "
            f"{_mib(math.prod(shape) * dtype.itemsize)} once decoded"
        )
        _check_header(h, w, channels, dtype, max_pixels, counted)
        array = series.asarray()
    array = array.reshape(tuple(n for a, n in zip(axes, shape, strict=True) if n != 1 or a in "YX"))
    if layout == "first":
        array = np.ascontiguousarray(np.moveaxis(array, 0, -1))
    return array


def _pillow(data: bytes, max_pixels: int, kind: str) -> np.ndarray:
    import skimage.io
    from PIL import JpegImagePlugin, PngImagePlugin

    # the format's own class reads the header without Image.open's decompression-bomb
    # check, so that a huge size gets this server's 422, not Pillow's error
    header_class = PngImagePlugin.PngImageFile if kind == "png" else JpegImagePlugin.JpegImageFile
    with header_class(io.BytesIO(data)) as header:  # reads the header only
        w, h = header.size
        bands = len(header.getbands())
        mode = header.mode
        n_frames = getattr(header, "n_frames", 1)
    counted = f"counted before decoding: mode {mode}, {bands} band{'s' if bands != 1 else ''}"
    _check_header(h, w, bands, np.dtype(np.uint8), max_pixels, counted)
    if n_frames > 1:
        raise UploadError(422, f"the image has {n_frames} frames; upload a single image")
    return np.asarray(skimage.io.imread(io.BytesIO(data)))


def decode_upload(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image and check it can be segmented.

    Parameters
    ----------
    data : bytes
        The uploaded file.
    max_pixels : int
        Largest ``H x W`` accepted. It, the channels (at most :data:`MAX_CHANNELS`)
        and the data type are checked from the header, before the pixels are decoded.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` with ``C <= 4``, the file's dtype: what
        :func:`cellbench.io.read_image` gives for the same file.

    Raises
    ------
    UploadError
        415 when the bytes are empty or not a TIFF, PNG or JPEG, or cannot be decoded
        (truncated, damaged); 422 when the image cannot be segmented (a stack of
        planes, too many pixels, more than 4 channels or not a number type, all
        found before decoding; zero size, NaN).
    """
    if not data:
        raise UploadError(415, f"the upload is empty; send an image: {_ACCEPTED}")
    kind = sniff(data)
    if kind is None:
        raise UploadError(
            415,
            f"the upload is not an image this server reads (its first bytes are not those of "
            f"a TIFF, PNG or JPEG file, whatever its name); send {_ACCEPTED}",
        )
    from PIL import Image

    try:
        array = _tiff(data, max_pixels) if kind == "tiff" else _pillow(data, max_pixels, kind)
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:  # --max-megapixels above Pillow's own limit
        raise UploadError(
            422,
            f"the image is larger than the image library reads ({exc}); crop or downscale it, "
            "or segment it with `cellbench segment`",
        ) from None
    except Exception as exc:  # truncated or damaged: every decoder raises its own errors
        first = (str(exc).strip().splitlines() or ["no details"])[0][:200]
        raise UploadError(
            415,
            f"the upload starts like a {kind.upper()} file but cannot be decoded "
            f"({type(exc).__name__}: {first}); it may be truncated or damaged",
        ) from None
    if array.ndim >= 2 and math.prod(array.shape[:2]) > max_pixels:
        raise _too_many(array.shape[0], array.shape[1], max_pixels)
    try:
        return check_image(array, "the uploaded image")
    except CellbenchIOError as exc:
        raise UploadError(422, str(exc)) from None
