"""Image / label reading and atomic writing.

Every file a stage produces goes through this module, so that an interrupted or
failed run never leaves a half-written result behind: data is written to a
temporary sibling first and moved into place with :func:`os.replace`, which is
atomic on POSIX file systems. A write that fails because the disk is full (or the
disk quota is used up) raises :class:`DiskFullError`, which names the file, the
folder and the space left, after the temporary has been removed. Results get the
permissions the user's umask gives (``0644`` files and ``0755`` folders under umask
``022``), so colleagues can read them, and temporaries left behind by killed runs are
removed by the next write to the same target (see :func:`atomic_path`).

Every image and label read goes through :func:`check_image` / :func:`check_labels`,
whose errors name the file and the fix.

Label convention (the common format, DESIGN.md section 2): a label image is a
2-D ``(H, W)`` integer array, ``0`` is background and ``1..N`` are instances; no
pixel belongs to two instances. On disk labels are ``uint16`` TIFF when
``N < 65536`` and ``uint32`` otherwise, zlib-compressed, which Fiji and napari
open directly.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

__all__ = [
    "CellbenchIOError",
    "DiskFullError",
    "STALE_TEMP_AGE_S",
    "atomic_dir",
    "atomic_path",
    "check_image",
    "check_labels",
    "disk_full_error",
    "read_image",
    "read_labels",
    "read_json",
    "size_text",
    "tiff_layout",
    "write_csv",
    "write_image",
    "write_json",
    "write_labels",
    "write_text",
]

#: Temporaries older than this (seconds) are removed whatever host or process made them.
STALE_TEMP_AGE_S = 7 * 24 * 3600

_PROC_STATUS = "/proc/self/status"
_MAX_CHANNELS = 4
#: Largest pixel magnitude of a float image: models compute in float32 (max ~3.4e38), and
#: normalisation subtracts two pixel values.
_MAX_FLOAT = 1e38
_LABEL_FIX = "Save the instance labels as a single-channel uint16/uint32 TIFF"
_STACK_FIX = (
    "cellbench segments 2-D images. Save one plane, or a maximum projection "
    "(numpy: stack.max(axis=0); Fiji: Image > Stacks > Z Project...), as a 2-D TIFF "
    "and use that file instead"
)


class CellbenchIOError(ValueError):
    """A file could not be read as what it should be; the message names it and the fix."""


class DiskFullError(CellbenchIOError):
    """A result could not be written: no space left on its disk, or the disk quota is used up.

    The message names the file, the folder and the space left there. Nothing partial is
    left behind: the temporary is removed before this is raised. ``original`` is the
    error the write raised (an :class:`OSError` with ``ENOSPC`` or ``EDQUOT``, mostly).
    """

    def __init__(self, message: str, original: BaseException) -> None:
        super().__init__(message)
        self.original = original


#: ``errno`` values meaning "no room to write": disk full, disk quota exceeded.
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
#: A write that fails with another error while less than this is free counts as disk full
#: (torch.save reports a full disk as a RuntimeError without an errno).
_NEARLY_FULL_BYTES = 1 << 20


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def size_text(n: float) -> str:
    """A byte count for people: ``512 bytes``, ``3.2 KiB``, ``1.5 MiB``, ``7.0 GiB``."""
    for unit in ("bytes", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def disk_full_error(
    exc: BaseException, path: str | os.PathLike, *, nearly_full: bool = False
) -> DiskFullError | None:
    """The :class:`DiskFullError` for a failed write of ``path``, or None for another failure.

    Parameters
    ----------
    exc : BaseException
        What the write raised. A :class:`DiskFullError` about a file inside ``path``
        is named again after ``path``.
    path : str or os.PathLike
        The file (or folder) being written, as the user knows it (not a temporary).
    nearly_full : bool
        Also count an :class:`OSError` or :class:`RuntimeError` without a disk-full
        ``errno`` as disk full when less than 1 MiB is free next to ``path``
        (``torch.save`` reports a full disk so).

    Returns
    -------
    DiskFullError or None
        For an :class:`OSError` with ``ENOSPC`` or ``EDQUOT`` (and the case above);
        else None.
    """
    renamed = isinstance(exc, DiskFullError)
    if renamed:
        exc = exc.original
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parents) if p.is_dir()), Path("."))
    free = _free_bytes(folder)
    code = getattr(exc, "errno", None)
    if not (
        renamed
        or (isinstance(exc, OSError) and code in _DISK_FULL)
        or (
            nearly_full
            and isinstance(exc, OSError | RuntimeError)
            and free is not None
            and free < _NEARLY_FULL_BYTES
        )
    ):
        return None
    quota = code in _DISK_FULL and code != errno.ENOSPC
    what = "the disk quota is used up" if quota else "the disk is full"
    left = f"{size_text(free)} free there" if free is not None else "free space unknown"
    detail = (getattr(exc, "strerror", None) or str(exc)).strip() or "no details"
    return DiskFullError(
        f"{path}: cannot be written: {what} (folder {folder}, {left}; "
        f"{type(exc).__name__}: {detail}). Nothing partial was left behind. Free some "
        "space (or ask for a larger quota), or write to a folder on another disk, and "
        "run again.",
        exc,
    )


# ---------------------------------------------------------------------------
# atomic writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    The temporary file is removed if the block raises, so ``path`` is either
    the complete old file or the complete new one, never a partial write. The
    file gets the permissions the umask gives (``0o666 & ~umask``).

    The temporary is called ``.{name}.{host}.{pid}.{random}.tmp``. Before it is
    made, stale temporaries of the same target are removed: those of a process
    on this host that is no longer running, and any older than
    :data:`STALE_TEMP_AGE_S` whatever the host.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its parent folders are created.

    Yields
    ------
    pathlib.Path
        An empty temporary file in the same folder; write the content there.

    Raises
    ------
    DiskFullError
        The disk is full or the quota used up (see :func:`disk_full_error`); the
        temporary is removed first and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        full = disk_full_error(exc, path)
        if full is not None:
            raise full from exc
        raise
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        full = disk_full_error(exc, path, nearly_full=True)
        if full is not None:
            raise full from getattr(exc, "original", exc)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path`` whole.

    An existing ``path`` is kept untouched until the new directory is complete,
    then swapped out (it is moved aside to ``.{name}.{host}.{pid}.{random}.old``
    for the instant of the swap). On error, including a termination signal turned
    into an exception by :func:`cellbench.cleanup.install_termination_handlers`,
    the temporary directory is deleted and ``path`` is left as it was. The folder
    gets the permissions the umask gives (``0o777 & ~umask``).

    Stale temporaries of the same target are removed first, as in
    :func:`atomic_path`; a previous result that a killed run left moved aside
    (``.old``) while ``path`` is missing is put back instead of deleted.

    Parameters
    ----------
    path : str or os.PathLike
        The folder to produce; its parent folders are created.

    Yields
    ------
    pathlib.Path
        An empty temporary folder in the same parent; write the content there.

    Raises
    ------
    DiskFullError
        The disk is full or the quota used up, naming ``path`` (not the temporary
        folder); the temporary folder is removed first and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        full = disk_full_error(exc, path)
        if full is not None:
            raise full from exc
        raise
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            _discard(old)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if old is not None and (old.exists() or old.is_symlink()) and not path.exists():
            with contextlib.suppress(OSError):  # stopped between the two renames: undo the first
                os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(exc, path)  # names the folder, not the temporary one
        if full is not None:
            raise full from getattr(exc, "original", exc)
        raise


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic set-and-restore (racy only between threads)
    os.umask(mask)
    return mask


@functools.cache
def _host() -> str:
    """This host's short name (file-name safe), plus the PID namespace where Linux has one.

    PIDs are only comparable within one PID namespace: a container can share the
    host's name (``--network=host``) but not its processes.
    """
    name = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"
    try:
        namespace = re.sub(r"[^0-9]", "", os.readlink("/proc/self/ns/pid"))  # "pid:[4026531836]"
    except OSError:
        return name
    return f"{name}-{namespace}" if namespace else name


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_host()}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host; ``True`` whenever unsure."""
    if pid <= 0 or os.name != "posix":  # os.kill(pid, 0) would signal a group / kill on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to someone else
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Delete leftovers of killed runs next to ``path``; never a live process's own.

    A temporary ``.{name}.{host}.{pid}.{random}.{tmp|old}`` is stale when ``host``
    is this host and process ``pid`` is gone, or when it is older than
    :data:`STALE_TEMP_AGE_S`. A stale ``.old`` (the previous result, moved aside
    during a swap) is moved back when ``path`` itself is missing.
    """
    parent = path.parent
    own_dir = re.fullmatch(
        rf"\..+\.{re.escape(_host())}\.{os.getpid()}\.[a-z0-9_]+\.tmp", parent.name
    )
    if own_dir:  # a folder this process is filling: nobody else's temporaries can be in it
        return
    prefix = f".{path.name}."
    pattern = re.compile(
        rf"{re.escape(prefix)}(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[a-z0-9_]+"
        r"\.(?P<kind>tmp|old)"
    )
    try:
        with os.scandir(parent) as scan:
            entries = [e for e in scan if e.name.startswith(prefix)]
    except OSError:
        return
    now = time.time()
    stale_old = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead = match["host"] == _host() and not _pid_alive(int(match["pid"]))
        if not (dead or now - mtime > STALE_TEMP_AGE_S):
            continue
        if match["kind"] == "old":
            stale_old.append((mtime, Path(entry.path)))
        else:
            _remove(Path(entry.path))
    stale_old.sort(reverse=True)
    if stale_old and not (path.exists() or path.is_symlink()):
        with contextlib.suppress(OSError):
            os.rename(stale_old[0][1], path)
            stale_old.pop(0)
    for _, old in stale_old:
        _discard(old)


def _discard(old: Path) -> None:
    """Delete a moved-aside ``.old``, renamed to ``.tmp`` first: a half-deleted one is never put back."""
    trash = old.with_name(old.name[: -len(".old")] + ".tmp")
    try:
        os.rename(old, trash)
    except OSError:
        trash = old
    _remove(trash)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# writing


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


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


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


# ---------------------------------------------------------------------------
# reading and checking


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG/JPEG image as a numpy array, keeping its dtype, and check it.

    TIFFs are read with :class:`tifffile.TiffFile` (first series). Singleton axes
    are dropped. A channel-first image (tifffile axes ``CYX`` or ``SYX``, or an
    unlabelled ``(C, H, W)`` with ``C`` in 2..4 and ``H, W`` at least four times
    ``C``) is moved to channels-last ``(H, W, C)``. A z-stack, time series or any
    other stack of planes (axes with ``Z``, ``T`` or another non-channel axis, an
    unlabelled leading axis of 5 or more, several same-shaped series) is refused.
    PNG/JPEG are read as stored, so grey+alpha and RGBA stay ``(H, W, 2)`` /
    ``(H, W, 4)``.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` with ``C <= 4``, the file's dtype (bool kept).

    Raises
    ------
    CellbenchIOError
        The file is missing, unreadable, a stack of planes, or fails
        :func:`check_image`; the message names the file and the fix.
    """
    path = Path(path)
    return check_image(_read_array(path, labels=False), path)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an instance label image and check it with :func:`check_labels`.

    A TIFF label file with more than one plane is refused with a message about
    label files (never about images).

    Parameters
    ----------
    path : str or os.PathLike
        The label file.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 (or int64 for more than 2**31 - 1 instances), 0 = background.

    Raises
    ------
    CellbenchIOError
        The file is missing, unreadable, or not a valid label image; the message
        names the file and the fix.
    """
    path = Path(path)
    return check_labels(_read_array(path, labels=True), path)


def check_image(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Check that a loaded image can be segmented; errors name ``path`` and the fix.

    Parameters
    ----------
    array : numpy.ndarray
        The image as loaded.
    path : str or os.PathLike
        The file it came from (only used in messages).

    Returns
    -------
    numpy.ndarray
        ``array`` unchanged.

    Raises
    ------
    CellbenchIOError
        The dtype is not numeric (bool is accepted), a float image holds NaN,
        infinity or values beyond +-1e38 (32-bit float range), the image is empty,
        or its shape is not ``(H, W)`` or
        ``(H, W, C)`` with ``C <= 4``.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise CellbenchIOError(
            f"{path}: image pixels have data type {array.dtype}, which is not a number type. "
            "Save the image with integer (e.g. uint8/uint16) or float pixels."
        )
    if array.ndim not in (2, 3):
        raise CellbenchIOError(
            f"{path}: image has shape {array.shape}; cellbench expects a 2-D image of shape "
            f"(H, W) or (H, W, C) with at most {_MAX_CHANNELS} channels. Save it as a single "
            "2-D greyscale or colour image."
        )
    if array.ndim == 3 and array.shape[2] > _MAX_CHANNELS:
        raise CellbenchIOError(
            f"{path}: image has {array.shape[2]} channels (shape {array.shape}); cellbench "
            f"expects at most {_MAX_CHANNELS} (grey, grey+alpha, RGB or RGBA). Keep the "
            "channels to segment on (e.g. image[..., :3]) and save again."
        )
    if array.size == 0:
        raise CellbenchIOError(
            f"{path}: image is empty (shape {array.shape}). Replace it with the complete image."
        )
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if array.ndim == 3:
            finite = finite.all(axis=2)
        bad = finite.size - int(np.count_nonzero(finite))
        if bad:
            raise CellbenchIOError(
                f"{path}: image has non-finite values (NaN or infinity) in {bad} of "
                f"{finite.size} pixels. Replace non-finite pixels (e.g. with numpy.nan_to_num) "
                "and save again."
            )
        peak = max(float(array.max()), -float(array.min()))
        if peak > _MAX_FLOAT:
            raise CellbenchIOError(
                f"{path}: image has pixel values up to {peak:.3g} in magnitude; cellbench "
                "computes in 32-bit floats, so pixel values must lie between -1e38 and 1e38 "
                "(beyond, they become infinity). Rescale the image "
                "(e.g. divide it by its maximum) and save again."
            )
    return array


def check_labels(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Check a loaded label image and return it as int32/int64; errors name ``path`` and the fix.

    Parameters
    ----------
    array : numpy.ndarray
        The label image as loaded: integer, bool, or float holding whole numbers.
    path : str or os.PathLike
        The file it came from (only used in messages).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, or int64 when the largest label is ``>= 2**31``.

    Raises
    ------
    CellbenchIOError
        Not 2-D, not a number type, non-finite or non-integer values, negative
        values, or labels too large for int64.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise CellbenchIOError(
            f"{path}: a label image must be a 2-D array (H, W) with 0 = background and "
            f"1..N = instances, got shape {array.shape}. {_LABEL_FIX}."
        )
    kind = array.dtype.kind
    if kind not in "biuf":
        raise CellbenchIOError(
            f"{path}: label image has data type {array.dtype}; labels must be whole numbers "
            f"(0 = background, 1..N = instances). {_LABEL_FIX}."
        )
    if kind == "f":
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise CellbenchIOError(
                f"{path}: label image has non-finite values (NaN or infinity) in "
                f"{_pixels(bad)}; labels must be whole numbers (0 = background, 1..N = "
                f"instances). Set those pixels to 0 (background). {_LABEL_FIX}."
            )
        fractional = array != np.floor(array)
        bad = int(np.count_nonzero(fractional))
        if bad:
            example = array[fractional].flat[0]
            raise CellbenchIOError(
                f"{path}: label image has non-integer values ({_pixels(bad)}, e.g. {example}); "
                "labels must be whole numbers (0 = background, 1..N = instances), so this "
                f"looks like a probability or intensity image. {_LABEL_FIX}."
            )
    if array.size and kind in "if" and array.min() < 0:
        bad = int(np.count_nonzero(array < 0))
        raise CellbenchIOError(
            f"{path}: label image has {_pixels(bad)} with negative values (minimum "
            f"{array.min()}); labels must be 0 (background) or positive instance ids. "
            "Set them to 0 or renumber the instances from 1, and save again."
        )
    top = array.max(initial=0)
    if top > np.iinfo(np.int64).max:
        raise CellbenchIOError(
            f"{path}: label ids up to {top} do not fit in 64-bit integers. Renumber the "
            "instances 1..N (e.g. skimage.segmentation.relabel_sequential) and save again."
        )
    return array.astype(np.int64 if top >= 2**31 else np.int32, copy=False)


def _pixels(n: int) -> str:
    return f"{n} pixel" if n == 1 else f"{n} pixels"


def _read_array(path: Path, *, labels: bool) -> np.ndarray:
    """Load ``path`` (TIFF via tifffile, else skimage) as an array, refusing stacks of planes."""
    what = "a label image" if labels else "an image"
    if not path.is_file():
        raise CellbenchIOError(f"{path}: no such file. Re-run the stage that writes it.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_tiff(path, labels=labels)
        import skimage.io

        return skimage.io.imread(path)
    except CellbenchIOError:
        raise
    except Exception as exc:  # corrupted or unsupported file: name it
        raise CellbenchIOError(
            f"{path}: cannot be read as {what} ({type(exc).__name__}: {exc}). "
            "Check that the file is complete, or delete it and re-run the stage that wrote it."
        ) from exc


def _read_tiff(path: Path, *, labels: bool) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes = tuple(series.shape), series.axes
        n_series = sum(1 for s in tif.series if tuple(s.shape) == shape and s.dtype == series.dtype)
        layout, planes = tiff_layout(shape, axes)
        if n_series > 1:
            layout, planes = "stack", planes * n_series
        if layout == "stack" or (labels and layout == "first" and "S" not in axes):
            layout_text = (
                f"{n_series} series of shape {shape}"
                if n_series > 1
                else f"tifffile axes {axes!r}, shape {shape}"
            )
            if labels:
                raise CellbenchIOError(
                    f"{path}: this label file is a multi-page TIFF of {planes} planes "
                    f"({layout_text}); a label image must be one 2-D plane (0 = background, "
                    "1..N = instances) the size of its image. Save the plane that belongs "
                    "to the image as a single-page uint16/uint32 TIFF."
                )
            raise CellbenchIOError(
                f"{path}: this is a multi-page TIFF of {planes} planes ({layout_text}); "
                f"{_STACK_FIX}."
            )
        array = series.asarray()
    array = array.reshape(tuple(n for a, n in zip(axes, shape, strict=True) if n != 1 or a in "YX"))
    if layout == "first":
        array = np.ascontiguousarray(np.moveaxis(array, 0, -1))
    return array


def tiff_layout(shape: tuple[int, ...], axes: str) -> tuple[str, int]:
    """Classify a TIFF series as ``plain``, channel-``first`` or a ``stack``, and count its planes.

    Singleton axes other than ``Y``/``X`` are ignored. ``S``/``C`` name channels;
    ``Q``/``I`` (unknown) are judged by shape; any other extra axis (``Z``, ``T``,
    ...) makes a stack.
    """
    kept = [(a, n) for a, n in zip(axes, shape, strict=True) if n != 1 or a in "YX"]
    planes = math.prod(n for a, n in kept if a not in "YXS")
    if len(kept) <= 2:
        return "plain", 1
    if len(kept) > 3:
        return "stack", planes
    (a0, n0), (a1, n1), (a2, n2) = kept
    extra = next(a for a in (a0, a1, a2) if a not in "YX")
    if extra in "SC":
        return ("first", n0) if a0 in "SC" else ("plain", 1)
    if extra not in "QI":
        return "stack", planes
    if n2 <= _MAX_CHANNELS and n2 < min(n0, n1):  # (H, W, C), e.g. tifffile's own 2-channel
        return "plain", 1
    if 2 <= n0 <= _MAX_CHANNELS and min(n1, n2) >= 4 * n0:  # unlabelled (C, H, W)
        return "first", n0
    return "stack", n0


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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
