"""Network inference on one image: padding, whole-image or tiled prediction.

Pure (arrays in, arrays out); used by training (validation maps for threshold
tuning) and by the predict / segment stages. Optional test-time augmentation
(TTA) averages the maps predicted for the 8 flips / 90-degree rotations of the
image, each mapped back to the original orientation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from cellbench.models.base import ModelFamily
from cellbench.scale import ScaleEstimate, estimate_scale, rescale_image, resize_maps, scale_factor
from cellbench.sizemodel import SizeModel

__all__ = [
    "DIHEDRAL",
    "apply_dihedral",
    "invert_dihedral",
    "pad_to_multiple",
    "predict_image",
    "predict_maps",
]

#: The 8 symmetries of the square as ``(transpose, flip_rows, flip_columns)``,
#: applied in that order (the convention of :func:`cellbench.train.random_dihedral`);
#: the first is the identity. Transposed ones swap ``H`` and ``W``.
DIHEDRAL: tuple[tuple[bool, bool, bool], ...] = tuple(itertools.product((False, True), repeat=3))


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad ``(C, H, W)`` at the bottom/right to a multiple of ``multiple``.

    Returns the padded array and the original ``(H, W)``.
    """
    _, h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode=mode), (h, w)


def _transpose(array: np.ndarray, vector_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Swap the spatial axes of ``(C, H, W)`` and the components of every vector pair."""
    out = array.transpose(0, 2, 1)
    if vector_pairs:
        out = out.copy()
        for dy, dx in vector_pairs:
            out[[dy, dx]] = out[[dx, dy]]
    return out


def _flip(array: np.ndarray, axis: int, vector_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Flip ``(C, H, W)`` along ``axis`` (1 rows, 2 columns), negating that vector component."""
    out = np.flip(array, axis=axis)
    if vector_pairs:
        out = out.copy()
        for pair in vector_pairs:
            out[pair[axis - 1]] *= -1
    return out


def _check_pairs(array: np.ndarray, vector_pairs: Sequence[tuple[int, int]]) -> None:
    n = array.shape[0]
    if any(not 0 <= c < n for pair in vector_pairs for c in pair):
        raise ValueError(f"vector pairs {tuple(vector_pairs)} do not index {n} channels")


def apply_dihedral(
    array: np.ndarray,
    transform: tuple[bool, bool, bool],
    vector_pairs: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """Apply one of the :data:`DIHEDRAL` transforms to a ``(C, H, W)`` array.

    Parameters
    ----------
    array : numpy.ndarray
        ``(C, H, W)``.
    transform : tuple of bool
        ``(transpose, flip_rows, flip_columns)``, one entry of :data:`DIHEDRAL`.
    vector_pairs : sequence of (int, int)
        ``(dy, dx)`` channel pairs that are vector fields: their components are
        swapped (transpose) and negated (flips) so the vectors turn with the image.

    Returns
    -------
    numpy.ndarray
        ``(C, W, H)`` when ``transpose`` is set, else ``(C, H, W)``; possibly a view.
    """
    _check_pairs(array, vector_pairs)
    transpose, flip_rows, flip_cols = transform
    out = _transpose(array, vector_pairs) if transpose else array
    out = _flip(out, 1, vector_pairs) if flip_rows else out
    return _flip(out, 2, vector_pairs) if flip_cols else out


def invert_dihedral(
    array: np.ndarray,
    transform: tuple[bool, bool, bool],
    vector_pairs: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """Undo :func:`apply_dihedral` (same ``transform`` and ``vector_pairs``).

    Parameters
    ----------
    array : numpy.ndarray
        ``(C, H', W')`` in the transformed orientation.
    transform : tuple of bool
        ``(transpose, flip_rows, flip_columns)`` that produced the orientation.
    vector_pairs : sequence of (int, int)
        ``(dy, dx)`` channel pairs that are vector fields.

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` in the original orientation; possibly a view.
    """
    _check_pairs(array, vector_pairs)
    transpose, flip_rows, flip_cols = transform
    out = _flip(array, 2, vector_pairs) if flip_cols else array
    out = _flip(out, 1, vector_pairs) if flip_rows else out
    return _transpose(out, vector_pairs) if transpose else out


def _own_ranges(starts: list[int], tile: int, total: int) -> list[tuple[int, int]]:
    """Per tile start, the part of the axis that tile owns: cut at the middle of each overlap.

    Every position belongs to exactly one tile, at least ``overlap / 2`` px inside it
    (except at the image border), where the tile's border no longer reaches.
    """
    cuts = [0] + [(starts[i] + tile + starts[i + 1]) // 2 for i in range(len(starts) - 1)]
    return list(zip(cuts, [*cuts[1:], total], strict=True))


def predict_maps(
    family: ModelFamily,
    net,
    image: np.ndarray,
    device=None,
    tile_size: int = 1024,
    overlap: int = 64,
    progress: Callable[[int, int], None] | None = None,
    *,
    tta: bool,
) -> np.ndarray:
    """Maps ``(M, H, W)`` float32 for one normalised image ``(C, H, W)``.

    Families without a network compute their maps directly; networks run on
    the whole (padded) image when it fits in ``tile_size``, else tile by tile.

    Parameters
    ----------
    family : ModelFamily
        The model family (activation, or ``image_to_maps`` without a network).
    net : torch.nn.Module or None
        The network (``None`` for families without one).
    image : numpy.ndarray
        Normalised float32 ``(C, H, W)``.
    device : torch.device or str, optional
        Where ``net`` lives.
    tile_size : int
        Images larger than this (either side) are predicted tile by tile.
    overlap : int
        Overlap of neighbouring tiles; each pixel is taken from the tile whose border is
        farthest (cut at the middle of the overlap), so tile borders leave no seams.
    progress : callable, optional
        Called as ``progress(done, total)`` after every tile; whole-image
        prediction (and families without a network) count as one tile, so it
        is called once with ``(1, 1)``. With ``tta`` the total is 8 x tiles.
    tta : bool
        Test-time augmentation: run the network on the 8 :data:`DIHEDRAL`
        transforms of ``image`` (each through the same whole-image / tiled
        path), map every result back to the original orientation (the map
        channels in ``family.vector_pairs`` turned as vectors) and average
        them. About 8 times slower. Ignored by families without a network.

    Returns
    -------
    numpy.ndarray
        float32 ``(M, H, W)``.
    """
    if not family.trainable:
        maps = family.image_to_maps(image)
        if progress is not None:
            progress(1, 1)
        return maps
    import torch

    net.eval()
    with torch.no_grad():
        if not tta:
            return _predict_network(family, net, image, device, tile_size, overlap, progress)
        n = len(DIHEDRAL)
        acc = None
        for k, transform in enumerate(DIHEDRAL):
            report = _offset_progress(progress, k, n)
            view = np.ascontiguousarray(apply_dihedral(image, transform))
            maps = _predict_network(family, net, view, device, tile_size, overlap, report)
            maps = invert_dihedral(maps, transform, family.vector_pairs)
            acc = maps.astype(np.float32) if acc is None else acc + maps
        return acc / np.float32(n)


def _offset_progress(
    progress: Callable[[int, int], None] | None, k: int, n: int
) -> Callable[[int, int], None] | None:
    """Report pass ``k`` of ``n`` equal passes as ``progress(k * total + done, n * total)``.

    Every dihedral transform has the same number of tiles (a transpose swaps
    the tile rows and columns), so the overall total is ``n`` x tiles.
    """
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(k * total + done, n * total)

    return report


def _predict_network(
    family: ModelFamily,
    net,
    image: np.ndarray,
    device,
    tile_size: int,
    overlap: int,
    progress: Callable[[int, int], None] | None,
) -> np.ndarray:
    """One pass of ``net`` (in eval mode, under ``no_grad``) over ``(C, H, W)`` -> ``(M, H, W)``."""
    import torch

    _, h, w = image.shape
    if (h <= tile_size and w <= tile_size) or not family.blendable_maps:
        x, _ = pad_to_multiple(image, 32)
        out = family.activate(net(torch.from_numpy(x[None]).to(device)))
        maps = out[0, :, :h, :w].float().cpu().numpy()
        if progress is not None:
            progress(1, 1)
        return maps
    padded, _ = pad_to_multiple(image, 32)
    ph, pw = padded.shape[1:]
    # a side shorter than a tile is predicted whole (as the whole-image path pads it)
    th, tw = min(tile_size, ph), min(tile_size, pw)
    ys = sorted({*range(0, ph - th, th - overlap), ph - th})
    xs = sorted({*range(0, pw - tw, tw - overlap), pw - tw})
    rows, cols = _own_ranges(ys, th, ph), _own_ranges(xs, tw, pw)
    acc = None
    total, done = len(ys) * len(xs), 0
    for y, (y0, y1) in zip(ys, rows, strict=True):
        for x, (x0, x1) in zip(xs, cols, strict=True):
            crop = padded[None, :, y : y + th, x : x + tw]
            res = family.activate(net(torch.from_numpy(np.ascontiguousarray(crop)).to(device)))
            res = res[0].float().cpu().numpy()
            if acc is None:
                acc = np.zeros((res.shape[0], ph, pw), np.float32)
            acc[:, y0:y1, x0:x1] = res[:, y0 - y : y1 - y, x0 - x : x1 - x]
            done += 1
            if progress is not None:
                progress(done, total)
    return acc[:, :h, :w]


def predict_image(
    family: ModelFamily,
    net,
    image: np.ndarray,
    device=None,
    *,
    image_diameter: float | None = None,
    size_model: SizeModel | None = None,
    tile_size: int = 1024,
    overlap: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, ScaleEstimate]:
    """Maps ``(M, H, W)`` of one normalised image ``(C, H, W)`` on its own pixel grid.

    What the predict, segment and tuning steps call. For a network family with the
    ``diameter`` option (> 0) the image is rescaled so its objects measure that many
    pixels: by ``image_diameter`` (px, this image) when given, else estimated. With
    ``size_estimate: regression`` and a ``size_model`` (:mod:`cellbench.sizemodel`) its
    estimate is the first scale, refined by up to ``diameter_passes - 1`` segmented
    passes (``diameter_starts``: the first of them tries several multiples of the
    estimate and refines the one whose objects measure closest to ``diameter``);
    otherwise (or without a size model) the network's own estimate from the original
    size (:func:`cellbench.scale.estimate_scale`). Each measuring pass is post-processed
    with the family's first candidate setting, in the predict, segment and tuning steps
    alike: the tuned setting is chosen on maps estimated this way, and a measure needs
    well-formed objects more than all of them (flow's first candidate drops masks that
    disagree with the flows; measuring with a tuned setting that drops none cost 0.02
    mean AP on DSB 2018, BENCHMARKS.md section 16). The maps are resized back to
    ``(H, W)``. The family's ``tta`` option turns on test-time
    augmentation.

    Returns
    -------
    maps : ``(M, H, W)`` float32.
    estimate : the factor used and the diameter it implies (None without rescaling).
    """
    options = family.options
    standard = float(getattr(options, "diameter", 0.0) or 0.0)
    tta = bool(getattr(options, "tta", False))

    def run(x: np.ndarray) -> np.ndarray:
        return predict_maps(family, net, x, device, tile_size, overlap, progress=progress, tta=tta)

    shape = image.shape[1:]
    if not family.trainable or not standard:
        return run(image), ScaleEstimate(1.0, image_diameter, 1, given=image_diameter is not None)
    if image_diameter:
        factor = scale_factor(standard, image_diameter, shape)
        maps = run(rescale_image(image, factor))
        return resize_maps(maps, shape, family.categorical_maps), ScaleEstimate(
            factor, image_diameter, 1, given=True
        )
    setting = family.threshold_grid()[0]
    passes, start, regressed = int(options.diameter_passes), 1.0, None
    if size_model is not None and getattr(options, "size_estimate", "") == "regression":
        regressed = size_model.estimate(image)
        start = scale_factor(standard, regressed, shape)
        passes -= 1  # 0: the regression alone (estimate_scale then predicts once at start)
    maps, estimate = estimate_scale(
        image,
        standard,
        run,
        lambda m: family.postprocess(m, setting),
        max_passes=passes,
        start=start,
        starts=options.diameter_starts,
    )
    if regressed is not None:
        estimate = replace(
            estimate,
            diameter=estimate.diameter if estimate.diameter is not None else regressed,
            regressed=regressed,
        )
    return resize_maps(maps, shape, family.categorical_maps), estimate
