"""Image transforms shared by every model: channel handling and intensity normalisation.

Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "contrast",
    "contrast_floor",
    "noise_sigma",
    "normalize_percentile",
    "to_model_input",
    "to_planes",
]

#: percentiles mapped to 0 and 1 by :func:`normalize_percentile`
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.8
#: percentile (0-100) of the training planes' contrasts that the floor is a fraction of
FLOOR_QUANTILE = 2.0
#: the highest contrast floor (noise sigma): pure noise measures 5-8, so 20 silences an empty
#: field, while a model trained on bright fields never dims faint real ones (30 sigma and up)
MAX_CONTRAST_FLOOR = 20.0
#: pixel differences used at most by :func:`noise_sigma` (rows are strided beyond it)
_NOISE_SAMPLE = 1_000_000


def noise_sigma(plane: np.ndarray) -> float:
    """Robust standard deviation of one plane's pixel noise.

    The median absolute deviation of horizontal neighbour differences, times 1.4826 / sqrt(2):
    smooth structure (objects, illumination) barely changes neighbouring pixels, so this
    measures the noise, not the content. Rows are strided to use about a million differences.

    Parameters
    ----------
    plane : ``(H, W)`` array.

    Returns
    -------
    float
        0.0 for noise-free (or constant, or narrower than 2 px) planes.
    """
    plane = np.asarray(plane, dtype=np.float32)
    if plane.ndim != 2 or plane.shape[1] < 2:
        return 0.0
    step = max(1, int(plane.size // _NOISE_SAMPLE))
    diff = np.diff(plane[::step], axis=1).ravel()
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return mad * 1.4826 / np.sqrt(2.0)


def contrast(
    plane: np.ndarray, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE
) -> float:
    """Percentile range of one ``(H, W)`` plane in units of its noise (:func:`noise_sigma`).

    Pure noise gives about 5-8; a field with nuclei gives tens to hundreds. ``inf`` for a
    noise-free plane with a range, 0.0 for a constant one.
    """
    plane = np.asarray(plane, dtype=np.float32)
    if not plane.size:
        return 0.0
    lo, hi = np.percentile(plane, [low, high])
    sigma = noise_sigma(plane)
    if hi - lo <= 0:
        return 0.0
    return float((hi - lo) / sigma) if sigma > 0 else float("inf")


def contrast_floor(
    contrasts, fraction: float, quantile: float = FLOOR_QUANTILE, cap: float = MAX_CONTRAST_FLOOR
) -> float:
    """The contrast floor of a model: ``fraction`` of its training planes' low contrast.

    Parameters
    ----------
    contrasts : iterable of float
        :func:`contrast` of every training plane (``inf`` entries are ignored).
    fraction : float
        0 turns the floor off.
    quantile : float
        Percentile (0-100) of the finite contrasts taken as "low", so one empty training
        field does not switch the floor off.
    cap : float
        The floor never exceeds this (:data:`MAX_CONTRAST_FLOOR`).

    Returns
    -------
    float
        In noise standard deviations; 0.0 when off or when no plane has a finite contrast.
    """
    finite = np.asarray([c for c in contrasts if np.isfinite(c)], dtype=float)
    if fraction <= 0 or not finite.size:
        return 0.0
    return float(min(fraction * np.percentile(finite, quantile), cap))


def normalize_percentile(
    image: np.ndarray,
    low: float = LOW_PERCENTILE,
    high: float = HIGH_PERCENTILE,
    eps: float = 1e-6,
    min_contrast: float = 0.0,
) -> np.ndarray:
    """Scale so the ``low``/``high`` percentiles map to 0/1 (values may fall outside).

    Parameters
    ----------
    image : ``(H, W)`` or ``(C, H, W)``; with channels, each is normalised on its own.
    min_contrast : float
        Contrast floor in noise standard deviations (:func:`noise_sigma`): a plane whose
        percentile range is smaller is divided by ``min_contrast * sigma`` instead, so the
        noise of an empty field is not stretched to the full range (0: off, the plain
        percentile normalisation).

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        return np.stack([normalize_percentile(c, low, high, eps, min_contrast) for c in image])
    lo, hi = np.percentile(image, [low, high]) if image.size else (0.0, 1.0)
    scale = max(hi - lo, eps)
    if min_contrast > 0:
        scale = max(scale, min_contrast * noise_sigma(image))
    return ((image - lo) / scale).astype(np.float32)


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


def to_model_input(image: np.ndarray, channels: int = 1, min_contrast: float = 0.0) -> np.ndarray:
    """Any stored image -> normalised float32 ``(channels, H, W)`` network input.

    The planes of :func:`to_planes`, each percentile-normalised on its own, with the
    model's contrast floor ``min_contrast`` (see :func:`normalize_percentile`).
    """
    return normalize_percentile(to_planes(image, channels), min_contrast=min_contrast)
