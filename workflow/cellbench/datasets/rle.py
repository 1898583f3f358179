"""Run-length encoding of binary masks, as used by Kaggle and COCO.

Kaggle RLE (DSB 2018 ``stage1_solution.csv``, Sartorius ``train.csv``) is a string of
space-separated ``start length`` pairs. ``start`` is **1-indexed**. The pixel order is
a property of each competition, not of the format:

- DSB 2018: **column-major** (Fortran order, running down the columns first):
  ``order="F"``. Checked on the real solution file (see ``shared/data/README.md``).
- Sartorius 2021: **row-major** (C order): its ``train.csv`` runs are decoded with
  ``mask.reshape((height, width))`` by the competition's own notebooks.

COCO uncompressed RLE (``{"counts": [...], "size": [h, w]}``) alternates background
and foreground run lengths, starting with background, in column-major order;
compressed COCO RLE stores the same counts as a string (:func:`coco_rle_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "RLEError",
    "coco_rle_counts",
    "coco_rle_decode",
    "rle_decode",
    "rle_decode_indices",
    "rle_encode",
]


class RLEError(ValueError):
    """A run-length string is malformed or does not fit the image."""


def _check_order(order: str) -> str:
    if order not in ("F", "C"):
        raise ValueError(f"order must be 'F' (column-major) or 'C' (row-major), got {order!r}")
    return order


def _parse_pairs(rle: str | float | None) -> tuple[np.ndarray, np.ndarray]:
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tokens = str(rle).split()
    if len(tokens) % 2:
        raise RLEError(f"RLE has an odd number of values ({len(tokens)}): {str(rle)[:60]!r}")
    try:
        values = np.asarray(tokens, dtype=np.int64)
    except ValueError as exc:
        raise RLEError(f"RLE holds a value that is not an integer: {str(rle)[:60]!r}") from exc
    return values[0::2], values[1::2]


def rle_decode_indices(
    rle: str | float | None, shape: Sequence[int], *, order: str = "F"
) -> np.ndarray:
    """Decode a Kaggle RLE string into sorted flat **row-major** pixel indices.

    Parameters
    ----------
    rle : ``"start length start length ..."``, 1-indexed; an empty string, ``None`` or
        NaN (an empty CSV cell) decodes to no pixel.
    shape : ``(height, width)`` of the image.
    order : ``"F"`` when the runs go down columns (DSB 2018), ``"C"`` when they go
        along rows (Sartorius).

    Returns
    -------
    numpy.ndarray
        Unique int64 indices into ``mask.ravel()`` of an ``(H, W)`` C-ordered array.

    Raises
    ------
    RLEError
        Odd number of values, a start below 1, a negative length, or a run past the end.
    """
    _check_order(order)
    h, w = int(shape[0]), int(shape[1])
    starts, lengths = _parse_pairs(rle)
    if starts.size == 0:
        return np.zeros(0, np.int64)
    if (starts < 1).any():
        raise RLEError("RLE start positions are 1-indexed; found a start below 1")
    if (lengths < 0).any():
        raise RLEError("RLE has a negative run length")
    ends = starts - 1 + lengths
    if (ends > h * w).any():
        raise RLEError(f"RLE run ends at pixel {int(ends.max())}, past the image ({h}x{w}={h * w})")
    keep = lengths > 0
    starts, lengths = starts[keep] - 1, lengths[keep]
    if starts.size == 0:
        return np.zeros(0, np.int64)
    # Expand runs without a Python loop: positions = start + 0..length-1 for each run.
    total = int(lengths.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.repeat(starts, lengths) + offsets
    if order == "F":
        rows, cols = positions % h, positions // h
        positions = rows * w + cols
    return np.unique(positions)


def rle_decode(rle: str | float | None, shape: Sequence[int], *, order: str = "F") -> np.ndarray:
    """Decode a Kaggle RLE string into a boolean ``(H, W)`` mask.

    See :func:`rle_decode_indices` for the parameters.
    """
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros(h * w, dtype=bool)
    mask[rle_decode_indices(rle, (h, w), order=order)] = True
    return mask.reshape(h, w)


def rle_encode(mask: np.ndarray, *, order: str = "F") -> str:
    """Encode a boolean ``(H, W)`` mask as a Kaggle RLE string (1-indexed).

    Parameters
    ----------
    mask : anything non-zero is foreground.
    order : ``"F"`` (column-major, DSB 2018) or ``"C"`` (row-major, Sartorius).

    Returns
    -------
    str
        ``"start length ..."``; ``""`` for an empty mask.
    """
    _check_order(order)
    flat = np.asarray(mask).astype(bool).ravel(order=order)
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends, strict=True))


def coco_rle_counts(counts: str | Sequence[int]) -> list[int]:
    """Return the run lengths of a COCO RLE, decoding the compressed string form.

    The compressed form (pycocotools ``rleToString``) stores each count, as a
    difference to the count two places earlier from the third count on, in
    6-bit chunks offset by 48, with bit 5 marking that more chunks follow and the
    last chunk's bit 4 carrying the sign.
    """
    if not isinstance(counts, str | bytes):
        return [int(c) for c in counts]
    data = counts.encode() if isinstance(counts, str) else counts
    out: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise RLEError("compressed COCO RLE ends in the middle of a count")
            chunk = data[pos] - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            pos += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(out) > 2:
            value += out[-2]
        out.append(value)
    return out


def coco_rle_decode(rle: dict, shape: Sequence[int] | None = None) -> np.ndarray:
    """Decode a COCO RLE dict (``counts`` list or compressed string) into a bool mask.

    Parameters
    ----------
    rle : ``{"counts": ..., "size": [height, width]}``.
    shape : expected ``(H, W)``; checked against ``size`` when given.
    """
    h, w = (int(v) for v in rle["size"])
    if shape is not None and (h, w) != (int(shape[0]), int(shape[1])):
        raise RLEError(f"COCO RLE size {(h, w)} differs from the image {tuple(shape)}")
    counts = coco_rle_counts(rle["counts"])
    if sum(counts) != h * w:
        raise RLEError(f"COCO RLE covers {sum(counts)} pixels, the image has {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")
