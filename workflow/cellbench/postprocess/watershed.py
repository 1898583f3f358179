"""Watershed post-processing for the ``classical``, ``unet`` and ``lstm_unet`` families.

Label convention: every function returns ``(H, W)`` int32 labels, 0 = background,
instances numbered 1..N consecutively.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed

__all__ = ["clean_labels", "close_and_open", "distance_watershed", "seeded_watershed"]


def clean_labels(labels: np.ndarray, min_size: int = 0, fill_holes: bool = True) -> np.ndarray:
    """Fill holes inside instances, drop instances smaller than ``min_size`` px, renumber 1..N.

    Parameters
    ----------
    labels : ``(H, W)`` integer labels, 0 = background.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, consecutive ids.
    """
    labels = np.asarray(labels).astype(np.int32, copy=True)
    if fill_holes and labels.any():
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            crop = labels[sl]
            filled = ndi.binary_fill_holes(crop == i)
            crop[filled & (crop == 0)] = i
    if min_size > 0 and labels.any():
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels[small[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def distance_watershed(
    foreground: np.ndarray, *, min_distance: int, min_size: int, distance_sigma: float = 1.0
) -> np.ndarray:
    """Split a binary foreground into instances: distance-transform peaks seed a watershed.

    Parameters
    ----------
    foreground : ``(H, W)`` bool mask of cell pixels.
    min_distance : minimum distance in px between two seeds (about the smallest cell radius).
    min_size : instances smaller than this (px) are removed.
    distance_sigma : Gaussian sigma applied to the distance map before peak finding.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels.
    """
    foreground = ndi.binary_fill_holes(np.asarray(foreground, bool))
    if not foreground.any():
        return np.zeros(foreground.shape, np.int32)
    dist = ndi.distance_transform_edt(foreground)
    if distance_sigma > 0:
        dist = ndi.gaussian_filter(dist, distance_sigma)
    components, _ = ndi.label(foreground)
    peaks = peak_local_max(
        dist, min_distance=max(1, int(min_distance)), labels=components, exclude_border=False
    )
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (tiny or flat) still become one instance each
    missing = np.setdiff1d(np.unique(components[foreground]), np.unique(components[markers > 0]))
    for k, comp in enumerate(missing, start=len(peaks) + 1):
        markers[components == comp] = k
    labels = watershed(-dist, markers, mask=foreground)
    return clean_labels(labels, min_size=min_size, fill_holes=False)


def seeded_watershed(
    interior: np.ndarray,
    foreground: np.ndarray,
    *,
    seed_threshold: float,
    mask_threshold: float,
    min_size: int,
    split_h: float,
    min_seed_size: int = 4,
) -> np.ndarray:
    """Instances from interior / foreground probabilities (3-class U-Net output).

    Seeds are the connected components of ``interior > seed_threshold``. With
    ``split_h > 0``, a component that is pinched (two touching cells whose
    boundary the network only partly found) is split further: its seeds are the
    h-maxima (height ``split_h`` px) of its smoothed distance transform. Each
    seed grows by watershed on the inverted interior probability, inside the mask
    ``foreground > mask_threshold``. Foreground regions without a seed become
    one instance each.

    Parameters
    ----------
    interior : ``(H, W)`` probability of cell interior (not boundary), in [0, 1].
    foreground : ``(H, W)`` probability of any cell pixel (interior + boundary), in [0, 1].
    seed_threshold, mask_threshold : probability cut-offs, tuned on validation data.
    min_size : instances smaller than this (px) are removed.
    min_seed_size : seeds smaller than this (px) are ignored as noise.
    split_h : minimum depth (px of distance) of the neck between two seeds of one
        interior component; 0 turns shape-based splitting off.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels.
    """
    mask = np.asarray(foreground) > mask_threshold
    core = (np.asarray(interior) > seed_threshold) & mask
    seeds, n_seeds = ndi.label(core)
    if n_seeds and min_seed_size > 1:
        seeds = clean_labels(seeds, min_size=min_seed_size, fill_holes=False)
        core = seeds > 0
    if n_seeds and split_h > 0:
        seeds = _split_by_shape(core, seeds, split_h)
    unseeded, _ = ndi.label(mask & ~ndi.binary_dilation(seeds > 0, iterations=1))
    if unseeded.any():  # regions the seeds do not reach get their own seed
        lone = np.setdiff1d(np.unique(unseeded), [0])
        touched = np.unique(unseeded[ndi.binary_dilation(seeds > 0, iterations=3) & (unseeded > 0)])
        lone = np.setdiff1d(lone, touched)
        if lone.size:
            offset = int(seeds.max())
            lookup = np.zeros(int(unseeded.max()) + 1, np.int32)
            lookup[lone] = offset + np.arange(1, lone.size + 1)
            extra = lookup[unseeded]
            seeds = np.where(extra > 0, extra, seeds)
    if not seeds.any():
        return np.zeros(mask.shape, np.int32)
    labels = watershed(-np.asarray(interior, np.float32), seeds, mask=mask)
    return clean_labels(labels, min_size=min_size)


def close_and_open(labels: np.ndarray, *, closing_radius: int, area_opening: int) -> np.ndarray:
    """Close every instance with a disk, then drop small pieces of instances; renumber 1..N.

    The post-processing of the ConvLSTM U-Net source project (``closing_radius`` and
    ``area_opening`` options of the ``unet`` / ``lstm_unet`` families), applied after
    the seeded watershed:

    1. closing: each instance is closed (dilation then erosion) with a disk of radius
       ``closing_radius`` px on its own, which fills gaps and notches narrower than
       the disk. An instance gains only background pixels, and a background pixel
       that two or more instances would gain stays background, so instances never
       grow into each other and never merge; no pixel is taken from an instance.
    2. area opening: every connected piece (8-connectivity) of an instance smaller
       than ``area_opening`` px is removed, e.g. a speck split off an instance or a
       whole instance that small.

    Parameters
    ----------
    labels : ``(H, W)`` integer labels, 0 = background.
    closing_radius : disk radius in px; 0 skips the closing.
    area_opening : minimum piece size in px; 0 skips the area opening.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, instances numbered 1..N consecutively.
    """
    from skimage.measure import label as label_pieces
    from skimage.morphology import disk

    labels = np.asarray(labels).astype(np.int32, copy=True)
    if closing_radius < 0 or area_opening < 0:
        raise ValueError(
            f"closing_radius and area_opening must be >= 0, got {closing_radius}, {area_opening}"
        )
    if closing_radius > 0 and labels.any():
        r = int(closing_radius)
        footprint = disk(r)
        claims = np.zeros(labels.shape, np.int32)  # the instance gaining a pixel, -1 contested
        h, w = labels.shape
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            # the object's box grown by r + 1 px, so the dilation has room and the
            # erosion does not eat the object from the crop's edge
            y0, y1 = max(0, sl[0].start - r - 1), min(h, sl[0].stop + r + 1)
            x0, x1 = max(0, sl[1].start - r - 1), min(w, sl[1].stop + r + 1)
            own = labels[y0:y1, x0:x1] == i
            # pad by r + 1 again: pixels outside the image count as background
            padded = np.pad(own, r + 1)
            closed = ndi.binary_closing(padded, structure=footprint)[r + 1 : -r - 1, r + 1 : -r - 1]
            gained = closed & (labels[y0:y1, x0:x1] == 0)
            box = claims[y0:y1, x0:x1]
            box[gained & (box == 0)] = i
            box[gained & (box != 0) & (box != i)] = -1
        take = claims > 0
        labels[take] = claims[take]
    if area_opening > 0 and labels.any():
        pieces = label_pieces(labels, background=0, connectivity=2)
        small = np.bincount(pieces.ravel()) < area_opening
        small[0] = False
        labels[small[pieces]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def _split_by_shape(core: np.ndarray, components: np.ndarray, h: float) -> np.ndarray:
    """Seeds = h-maxima of the smoothed distance transform of ``core``.

    Components of ``core`` that hold no h-maximum keep one seed (themselves).
    """
    from skimage.morphology import h_maxima

    dist = ndi.gaussian_filter(ndi.distance_transform_edt(core), 1.0)
    seeds, n = ndi.label(h_maxima(dist, h) & core)
    missing = np.setdiff1d(np.unique(components[core]), np.unique(components[seeds > 0]))
    if missing.size:
        lookup = np.zeros(int(components.max()) + 1, np.int32)
        lookup[missing] = n + np.arange(1, missing.size + 1)
        extra = lookup[components]
        seeds = np.where(extra > 0, extra, seeds)
    return seeds.astype(np.int32)
