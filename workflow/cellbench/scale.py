"""Object-size normalisation: rescale images so objects have a standard diameter.

Cellpose rescales every image so that cells are about 30 px across before the
network sees it; networks trained at one size then cover datasets that mix
magnifications (DSB 2018: nuclei from about 10 to over 60 px). Here:

- the *diameter* of a label image is the median over its objects of the
  equivalent diameter ``sqrt(4 * area / pi)`` (px);
- a family with ``diameter > 0`` rescales each training image by
  ``diameter / median_diameter(labels)`` (images bilinear, labels nearest);
- at inference the diameter of an unlabelled image is estimated by the network
  itself (:func:`estimate_scale`): predict and post-process at a trial scale,
  measure the objects found, rescale, and repeat until the scale settles;
  the maps are resized back to the original pixel grid before post-processing.

Pure functions: arrays in, arrays out. Shapes: images and maps ``(C, H, W)``
float32, labels ``(H, W)`` integer (0 = background).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_FACTOR",
    "MIN_FACTOR",
    "ObjectStats",
    "START_CONFIRM",
    "START_MARGIN",
    "ScaleEstimate",
    "closest_start",
    "estimate_scale",
    "median_diameter",
    "object_stats",
    "rescale_image",
    "rescale_labels",
    "resize_maps",
    "scale_factor",
]

#: rescaling is clipped to this range (a bad estimate must not blow up memory or time)
MIN_FACTOR, MAX_FACTOR = 0.125, 8.0
#: the smallest side a rescaled image may have (px)
MIN_SIDE = 32


@dataclass(frozen=True)
class ObjectStats:
    """Object counts and sizes of one or more label images (pooled).

    Attributes
    ----------
    n_objects : objects over all images.
    objects_per_megapixel : ``n_objects`` per million pixels (None without pixels).
    median_area : median object area in px (None without objects).
    """

    n_objects: int
    objects_per_megapixel: float | None
    median_area: float | None


def object_stats(label_images: list[np.ndarray]) -> ObjectStats:
    """Pooled :class:`ObjectStats` of ``(H, W)`` label images (0 = background)."""
    counts = [
        np.bincount(np.asarray(x).ravel().astype(np.int64, copy=False))[1:] for x in label_images
    ]
    areas = np.concatenate([c[c > 0] for c in counts]) if counts else np.zeros(0)
    pixels = sum(np.asarray(x).size for x in label_images)
    return ObjectStats(
        n_objects=int(areas.size),
        objects_per_megapixel=float(areas.size / pixels * 1e6) if pixels else None,
        median_area=float(np.median(areas)) if areas.size else None,
    )


def median_diameter(labels: np.ndarray) -> float | None:
    """Median equivalent diameter (px) of the objects of ``(H, W)`` labels; None without objects."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    if not areas.size:
        return None
    return float(np.median(np.sqrt(4.0 * areas / math.pi)))


def scale_factor(standard: float, diameter: float | None, shape: tuple[int, int]) -> float:
    """The factor that brings objects of ``diameter`` px to ``standard`` px, clipped.

    1.0 when there is nothing to go by (``diameter`` None or 0, or ``standard`` 0).
    Clipped to [MIN_FACTOR, MAX_FACTOR] and so that no side drops below MIN_SIDE px.
    """
    if not standard or not diameter:
        return 1.0
    return _clipped(standard / diameter, shape)


def _clipped(factor: float, shape: tuple[int, ...]) -> float:
    factor = float(np.clip(factor, MIN_FACTOR, MAX_FACTOR))
    return max(factor, MIN_SIDE / max(1, min(shape)))


def _size(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """``(C, H, W)`` float image -> ``(C, round(H*f), round(W*f))``, bilinear (area when shrinking)."""
    import cv2

    if factor == 1.0:
        return image
    h, w = _size(image.shape[1:], factor)
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(p, (w, h), interpolation=interp) for p in image]).astype(
        np.float32, copy=False
    )


def rescale_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """``(H, W)`` labels -> ``(round(H*f), round(W*f))``, nearest neighbour (ids kept)."""
    import cv2

    if factor == 1.0:
        return labels
    h, w = _size(labels.shape, factor)
    out = cv2.resize(labels.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.astype(labels.dtype)


def resize_maps(
    maps: np.ndarray, shape: tuple[int, int], nearest: tuple[int, ...] = ()
) -> np.ndarray:
    """``(M, h, w)`` maps -> ``(M, H, W)`` on the original grid, bilinear.

    Vector-field maps (flows) keep their values: the flow family's maps are unit
    directions, which do not change with the image's scale. Channels listed in
    ``nearest`` (instance ids, per-instance scores) are resized with nearest neighbour
    (centre-aligned, as :func:`rescale_labels`).
    """
    import cv2

    if maps.shape[1:] == tuple(shape):
        return maps
    h, w = shape
    return np.stack(
        [
            cv2.resize(
                m,
                (w, h),
                interpolation=cv2.INTER_NEAREST_EXACT if i in nearest else cv2.INTER_LINEAR,
            )
            for i, m in enumerate(maps.astype(np.float32))
        ]
    )


@dataclass(frozen=True)
class ScaleEstimate:
    """The scale an image was predicted at.

    Attributes
    ----------
    factor : the rescaling applied to the image (1 = original size).
    diameter : the object diameter (px, original grid) the factor corresponds to;
        None when no object was found at any trial scale.
    passes : network passes made (estimation passes plus the final one, when needed).
    given : True when the diameter was given (``--diameter``), not estimated.
    regressed : the size model's first estimate (px, original grid), when one was used.
    """

    factor: float
    diameter: float | None
    passes: int
    given: bool = False
    regressed: float | None = None


#: another start replaces the first only when its objects measure this much closer to the
#: standard size (in |log(found / standard)|): near ties keep the first estimate
START_MARGIN = 0.1
#: ... and only when the pass that refines it measures its objects within this ratio of the
#: start's measure (a network that takes texture for objects of its own training size
#: finds them at every scale, so their size on the original grid moves with the scale)
START_CONFIRM = 1.25


def closest_start(
    found: Sequence[float | None], standard: float, margin: float = START_MARGIN
) -> int | None:
    """Index of the start whose objects measured closest to ``standard`` px at their scale.

    Parameters
    ----------
    found : per start, the median diameter (px) of the objects found at that start's
        scale (None: nothing found); the first is the reference estimate.
    standard : the diameter the network was trained at (px).
    margin : another start is chosen over the first only when its
        ``|log(found / standard)|`` is smaller by more than this (the first wins near
        ties; it is also kept when it found nothing and no other start did).

    Returns
    -------
    The index, or None when no start found anything.
    """
    miss = [abs(math.log(f / standard)) if f else math.inf for f in found]
    if all(m == math.inf for m in miss):
        return None
    best = min(range(len(miss)), key=miss.__getitem__)
    return best if miss[0] - miss[best] > margin else 0


def estimate_scale(
    image: np.ndarray,
    standard: float,
    predict: Callable[[np.ndarray], np.ndarray],
    segment: Callable[[np.ndarray], np.ndarray],
    *,
    max_passes: int = 3,
    tolerance: float = 0.1,
    start: float = 1.0,
    starts: Sequence[float] = (1.0,),
) -> tuple[np.ndarray, ScaleEstimate]:
    """Find the factor that brings the image's objects to ``standard`` px, with the network.

    Parameters
    ----------
    image : ``(C, H, W)`` normalised input.
    standard : the diameter the network was trained at (px).
    predict : ``(C, h, w)`` input -> ``(M, h, w)`` maps at that size.
    segment : ``(M, h, w)`` maps -> ``(h, w)`` labels (the family's post-processing).
    max_passes : measuring passes at most (each measures the objects it finds); 0
        predicts once at ``start`` without measuring.
    tolerance : stop when the next factor is within this relative change.
    start : the factor of the first pass (1 = the original size; a size model's
        estimate gives a better start).
    starts : multiples of the diameter that ``start`` implies, each tried by the first
        pass (factor ``start / k``, clipped as :func:`scale_factor` clips); the one whose
        objects measure closest to ``standard`` px at their own scale
        (:func:`closest_start`) is refined, when the refining pass confirms it (its
        objects measure, on the original grid, within ``START_CONFIRM`` of the start's);
        otherwise the first start is. ``(1.0,)``: ``start`` alone.

    Returns
    -------
    maps : ``(M, h, w)`` the maps at the final factor (the caller resizes them back).
    estimate : the factor and the diameter it implies on the original grid.

    Notes
    -----
    Pass 1 runs at ``start`` (at each of ``starts``). Each pass measures the median
    diameter of the objects found (px at that pass's size) and moves the factor so they
    would measure ``standard``; the loop stops when the factor settles. A pass that
    finds nothing keeps the previous factor.

    Several starts catch objects far larger (or smaller) than a first estimate says: a
    network shown nuclei at 2-3x its training size cuts them into pieces of about its
    training size, so measuring from there confirms the wrong scale, while the start
    that shows them near ``standard`` px measures them near ``standard`` px. The
    confirming pass guards the other way round: in texture (brightfield), a network
    finds "objects" of about its training size at every scale, so a start that looks
    right measures a different size once the image is rescaled to it.
    ``passes`` counts every network pass, each start's included.
    """
    shape = image.shape[1:]
    made = 0

    def measure(factor: float) -> tuple[np.ndarray, float | None]:
        nonlocal made
        made += 1
        maps = predict(rescale_image(image, factor))
        return maps, median_diameter(segment(maps))

    def settle(factor: float, maps: np.ndarray, found: float | None, first: int):
        # passes first..max_passes measure and move the factor; ``found`` is pass first's
        diameter = None
        for passes in range(first, max_passes + 1):
            if passes > first:
                maps, found = measure(factor)
            if found is None:
                return maps, ScaleEstimate(factor, diameter, made)
            diameter = found / factor
            new = scale_factor(standard, diameter, shape)
            if abs(new / factor - 1.0) <= tolerance:
                return maps, ScaleEstimate(factor, diameter, made)
            factor = new
        return predict(rescale_image(image, factor)), ScaleEstimate(factor, diameter, made + 1)

    if max_passes < 1:
        return predict(rescale_image(image, start)), ScaleEstimate(start, None, 1)
    trials = []
    for k in starts:
        factor = start if k == 1 else _clipped(start / k, shape)
        trials.append((factor, *measure(factor)))
    chosen = closest_start([t[2] for t in trials], standard)
    if chosen:
        # another start must be confirmed by the pass that refines it
        factor, _, found = trials[chosen]
        diameter = found / factor
        refined = scale_factor(standard, diameter, shape)
        maps, again = measure(refined)
        if again is not None and abs(math.log(again / refined / diameter)) <= math.log(
            START_CONFIRM
        ):
            if max_passes == 1:
                return maps, ScaleEstimate(refined, diameter, made)
            return settle(refined, maps, again, 2)
    return settle(*trials[0], 1)  # also when no start found anything
