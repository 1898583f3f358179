"""A reference Kaggle run-length decoder for tests: a plain loop, one pixel at a time."""

from __future__ import annotations

import numpy as np


def decode_loop(rle_text: str, shape: tuple[int, int], order: str) -> np.ndarray:
    """``(H, W)`` bool mask of a Kaggle RLE (1-indexed starts; ``order`` C = rows, F = columns)."""
    h, w = shape
    flat = np.zeros(h * w, dtype=bool)
    values = [int(v) for v in rle_text.split()]
    for start, length in zip(values[0::2], values[1::2], strict=True):
        for p in range(start - 1, start - 1 + length):
            flat[p] = True
    return flat.reshape((h, w), order=order)
