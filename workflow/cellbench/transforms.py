"""Image transforms shared by every model: channel handling and intensity normalisation.

Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalize_percentile", "to_model_input", "to_planes"]


def normalize_percentile(
    image: np.ndarray, low: float = 1.0, high: float = 99.8, eps: float = 1e-6
) -> np.ndarray:
    """Scale so the ``low``/``high`` percentiles map to 0/1 (values may fall outside).

    Parameters
    ----------
    image : ``(H, W)`` or ``(C, H, W)``; with channels, each is normalised on its own.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        return np.stack([normalize_percentile(c, low, high, eps) for c in image])
    lo, hi = np.percentile(image, [low, high]) if image.size else (0.0, 1.0)
    return ((image - lo) / max(hi - lo, eps)).astype(np.float32)


def to_planes(image: np.ndarray, channels: int = 1) -> np.ndarray:
    """Any stored image -> float32 ``(channels, H, W)`` planes, not normalised.

    ``(H, W)`` greyscale is repeated to ``channels``; ``(H, W, C)`` colour drops an
    alpha channel (2 or 4 channels), then becomes greyscale (unweighted channel mean)
    when ``channels == 1``, or is cut / repeated to ``channels`` otherwise.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        planes = image[None].astype(np.float32)
    elif image.ndim == 3:
        planes = np.moveaxis(image, -1, 0).astype(np.float32)
        if planes.shape[0] in (2, 4):  # grey+alpha, RGBA: drop the alpha channel
            planes = planes[:-1]
    else:
        raise ValueError(f"expected (H, W) or (H, W, C) image, got shape {image.shape}")
    if channels == 1 and planes.shape[0] > 1:
        return planes.mean(axis=0, keepdims=True)
    if planes.shape[0] < channels:
        return np.concatenate([planes] * channels)[:channels]
    return planes[:channels]


def to_model_input(image: np.ndarray, channels: int = 1) -> np.ndarray:
    """Any stored image -> normalised float32 ``(channels, H, W)`` network input.

    The planes of :func:`to_planes`, each percentile-normalised on its own.
    """
    return normalize_percentile(to_planes(image, channels))
