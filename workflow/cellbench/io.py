"""Image / label reading and atomic writing.

Every file a stage produces goes through this module, so that an interrupted or
failed run never leaves a half-written result behind: data is written to a
temporary sibling first and moved into place with :func:`os.replace`, which is
atomic on POSIX file systems.

Label convention (the common format, DESIGN.md section 2): a label image is a
2-D ``(H, W)`` integer array, ``0`` is background and ``1..N`` are instances; no
pixel belongs to two instances. On disk labels are ``uint16`` TIFF when
``N < 65536`` and ``uint32`` otherwise, zlib-compressed, which Fiji and napari
open directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

__all__ = [
    "CellbenchIOError",
    "atomic_dir",
    "atomic_path",
    "read_image",
    "read_labels",
    "read_json",
    "write_csv",
    "write_image",
    "write_json",
    "write_labels",
    "write_text",
]


class CellbenchIOError(ValueError):
    """A file could not be read as what it should be; the message names it and the fix."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    The temporary file is removed if the block raises, so ``path`` is either
    the complete old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path`` whole.

    An existing ``path`` is kept untouched until the new directory is complete,
    then swapped out. On error the temporary directory is deleted and ``path``
    is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_image(path: str | os.PathLike, image: np.ndarray, *, compression: str = "zlib") -> Path:
    """Write an image (any dtype, ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``) as TIFF, atomically."""
    path = Path(path)
    image = np.ascontiguousarray(image)
    photometric = "rgb" if image.ndim == 3 and image.shape[-1] in (3, 4) else "minisblack"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, compression=compression, photometric=photometric)
    return path


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write an ``(H, W)`` instance label image as uint16 (or uint32) TIFF, atomically.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D, not integer, or has negative values.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels for {path} must be 2-D (H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels for {path} must be integers, got {labels.dtype}")
    top = int(labels.max(initial=0))
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"labels for {path} contain negative values")
    dtype = np.uint16 if top < 2**16 else np.uint32
    return write_image(path, labels.astype(dtype, copy=False))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG/JPEG image as a numpy array, keeping its dtype.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``.
    """
    path = Path(path)
    if not path.is_file():
        raise CellbenchIOError(f"{path}: no such file. Re-run the stage that writes it.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
        import skimage.io

        return skimage.io.imread(path)
    except Exception as exc:  # corrupted or unsupported file: name it
        raise CellbenchIOError(
            f"{path}: cannot be read as an image ({type(exc).__name__}: {exc}). "
            "Check that the file is complete, or delete it and re-run the stage that wrote it."
        ) from exc


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an instance label image and check it is a valid ``(H, W)`` integer array.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 (or int64 for more than 2**31 - 1 instances), 0 = background.
    """
    labels = read_image(path)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise CellbenchIOError(
            f"{path}: a label image must be a 2-D integer array (0 = background, 1..N instances), "
            f"got shape {labels.shape} and dtype {labels.dtype}. Convert it to a single-channel "
            "uint16/uint32 TIFF."
        )
    return labels.astype(np.int64 if labels.max(initial=0) >= 2**31 else np.int32, copy=False)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with an error that names the file when it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CellbenchIOError(f"{path}: no such file. Re-run the stage that writes it.") from exc
    except json.JSONDecodeError as exc:
        raise CellbenchIOError(
            f"{path}: not valid JSON ({exc}). Delete it and re-run the stage that writes it."
        ) from exc


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV without its index, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
