"""Upload bytes -> a checked image array, in memory. Pure: bytes in, array out.

The type is told by the first bytes (TIFF, PNG, JPEG), never by the file name or
the declared content type. TIFFs are read with tifffile (a stack of planes is
refused, as by :func:`cellbench.io.read_image`); PNG and JPEG as
:func:`cellbench.io.read_image` reads them (``skimage.io.imread``), so an upload
and the same file given to ``cellbench segment`` become the same array. The pixel
count is checked from the header, before the pixels are decoded.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

from cellbench.io import CellbenchIOError, check_image

__all__ = ["MAGIC", "UploadError", "decode_upload", "safe_stem", "sniff"]

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


def _too_many(h: int, w: int, max_pixels: int) -> UploadError:
    return UploadError(
        422,
        f"the image is {w} x {h} px ({h * w / 1e6:.1f} megapixels); this server takes at most "
        f"{max_pixels / 1e6:g} megapixels (--max-megapixels). Crop or downscale it, or segment "
        "it with `cellbench segment`, which has no such limit.",
    )


def _tiff(data: bytes, max_pixels: int) -> np.ndarray:
    import tifffile

    from cellbench.io import tiff_layout

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        if not tif.series:
            raise UploadError(422, "the TIFF holds no image")
        series = tif.series[0]
        shape, axes = tuple(series.shape), series.axes
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
        sizes = dict(zip(axes, shape, strict=True))
        if sizes.get("Y", 0) * sizes.get("X", 0) > max_pixels:
            raise _too_many(sizes.get("Y", 0), sizes.get("X", 0), max_pixels)
        array = series.asarray()
    array = array.reshape(tuple(n for a, n in zip(axes, shape, strict=True) if n != 1 or a in "YX"))
    if layout == "first":
        array = np.ascontiguousarray(np.moveaxis(array, 0, -1))
    return array


def _pillow(data: bytes, max_pixels: int) -> np.ndarray:
    import skimage.io
    from PIL import Image

    with Image.open(io.BytesIO(data)) as header:  # reads the header only
        w, h = header.size
        n_frames = getattr(header, "n_frames", 1)
    if h * w > max_pixels:
        raise _too_many(h, w, max_pixels)
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
        Largest ``H x W`` accepted; checked before the pixels are decoded.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` with ``C <= 4``, the file's dtype: what
        :func:`cellbench.io.read_image` gives for the same file.

    Raises
    ------
    UploadError
        415 when the bytes are empty or not a TIFF, PNG or JPEG, or cannot be decoded
        (truncated, damaged); 422 when the image decodes but cannot be segmented (a
        stack of planes, too many pixels, zero size, more than 4 channels, NaN).
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
    try:
        array = _tiff(data, max_pixels) if kind == "tiff" else _pillow(data, max_pixels)
    except UploadError:
        raise
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
