"""Plain-loop references for converter tests: Kaggle RLE decoding and the overlap rule."""

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


def smallest_claimant_owner(masks: list[np.ndarray]) -> np.ndarray:
    """``(H, W)`` index of the mask owning each pixel (-1 = none), pixel by pixel.

    The documented overlap rule: the claimant with the fewest pixels wins, ties to the
    first one.
    """
    h, w = masks[0].shape
    areas = [int(m.sum()) for m in masks]
    owner = np.full((h, w), -1)
    for r in range(h):
        for c in range(w):
            claims = [i for i, m in enumerate(masks) if m[r, c]]
            if claims:
                owner[r, c] = min(claims, key=lambda i: (areas[i], i))
    return owner
