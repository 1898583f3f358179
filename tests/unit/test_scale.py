"""Object-size normalisation: diameters, rescaling, and the network's own size estimate."""

from __future__ import annotations

import numpy as np
import pytest
from cellbench.scale import (
    MAX_FACTOR,
    START_MARGIN,
    closest_start,
    estimate_scale,
    median_diameter,
    rescale_image,
    rescale_labels,
    resize_maps,
    scale_factor,
)
from skimage.draw import disk
from skimage.measure import label


def discs(shape: tuple[int, int], radius: float, spacing: int) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    k = 0
    for y in range(spacing // 2, shape[0] - spacing // 2, spacing):
        for x in range(spacing // 2, shape[1] - spacing // 2, spacing):
            k += 1
            labels[disk((y, x), radius, shape=shape)] = k
    return labels


def test_median_diameter_of_discs() -> None:
    assert median_diameter(np.zeros((8, 8), int)) is None
    d = median_diameter(discs((200, 200), 10, 40))
    assert d == pytest.approx(20, rel=0.05)


def test_rescaling_keeps_ids_and_sizes() -> None:
    labels = discs((120, 160), 8, 40)
    up = rescale_labels(labels, 2.0)
    assert up.shape == (240, 320) and set(np.unique(up)) == set(np.unique(labels))
    assert median_diameter(up) == pytest.approx(2 * median_diameter(labels), rel=0.05)
    yy, xx = np.mgrid[:120, :160]
    image = np.stack([np.sin(yy / 9.0), np.cos(xx / 7.0)]).astype(np.float32)
    assert rescale_image(image, 0.5).shape == (2, 60, 80)
    maps = resize_maps(rescale_image(image, 2.0), (120, 160))
    assert maps.shape == (2, 120, 160) and np.abs(maps - image).mean() < 0.01


def test_scale_factor_is_clipped() -> None:
    assert scale_factor(30, 15, (256, 256)) == 2.0
    assert scale_factor(30, None, (256, 256)) == 1.0 and scale_factor(0, 15, (256, 256)) == 1.0
    assert scale_factor(30, 0.1, (256, 256)) == MAX_FACTOR
    assert scale_factor(30, 3000, (64, 64)) == 0.5  # never below 32 px a side


@pytest.mark.parametrize("radius", [6, 15])
def test_estimate_converges_to_the_standard_size(radius: int) -> None:
    truth = discs((256, 256), radius, 4 * radius)
    image = (truth > 0).astype(np.float32)[None]

    def predict(x: np.ndarray) -> np.ndarray:  # an ideal "network": the maps are the image
        return x

    def segment(maps: np.ndarray) -> np.ndarray:
        return label(maps[0] > 0.5)

    maps, estimate = estimate_scale(image, 30.0, predict, segment, max_passes=3)
    assert estimate.diameter == pytest.approx(2 * radius, rel=0.1)
    assert estimate.factor == pytest.approx(30 / (2 * radius), rel=0.1)
    assert maps.shape[1] == round(256 * estimate.factor)
    assert median_diameter(segment(maps)) == pytest.approx(30, rel=0.12)


def test_estimate_without_objects_keeps_the_original_size() -> None:
    image = np.zeros((1, 64, 64), np.float32)
    maps, estimate = estimate_scale(image, 30.0, lambda x: x, lambda m: m[0].astype(int))
    assert estimate.factor == 1.0 and estimate.diameter is None and maps.shape == (1, 64, 64)


@pytest.mark.parametrize("factor", [0.4, 2.5])
def test_rescaled_labels_stay_aligned_with_the_rescaled_image(factor: float) -> None:
    # nearest neighbour must sample pixel centres as the bilinear image resize does
    # (OpenCV's INTER_NEAREST is shifted by a quarter to a half pixel; INTER_NEAREST_EXACT is not)
    from scipy import ndimage as ndi

    truth = discs((200, 200), 12, 50)
    image = (truth > 0).astype(np.float32)[None]
    labels = rescale_labels(truth, factor)
    blurred = rescale_image(image, factor)[0]
    offsets = []
    for k in range(1, truth.max() + 1):
        cy, cx = ndi.center_of_mass(truth == k)
        expected = np.array([(cy + 0.5) * factor - 0.5, (cx + 0.5) * factor - 0.5])
        offsets.append(np.array(ndi.center_of_mass(labels == k)) - expected)
        window = blurred * (labels == k)
        assert np.abs(np.array(ndi.center_of_mass(window)) - expected).max() < 0.35
    offsets = np.array(offsets)
    assert np.abs(offsets).max() < 0.35 and np.abs(offsets.mean(axis=0)).max() < 0.15, offsets


def _cutting_network(limit: float, piece: int):
    """An ideal "network" that, as a real one does, cuts objects far above its size into pieces.

    The maps are the image, but objects measuring more than ``limit`` px at the scale it
    is shown are cut by a grid of lines every ``piece`` px.
    """

    def predict(x: np.ndarray) -> np.ndarray:
        maps = x.copy()
        shown = median_diameter(label(x[0] > 0.5))
        if shown is not None and shown > limit:
            maps[0, ::piece, :] = 0
            maps[0, :, ::piece] = 0
        return maps

    return predict


def _segment(maps: np.ndarray) -> np.ndarray:
    return label(maps[0] > 0.5)


def test_several_starts_find_objects_the_first_estimate_makes_the_network_cut() -> None:
    truth = discs((384, 384), 30, 96)  # 60 px objects
    image = (truth > 0).astype(np.float32)[None]
    predict = _cutting_network(limit=40.0, piece=20)
    start = 30.0 / 20.0  # a first estimate of 20 px: the objects are shown at 90 px
    # one start: the pieces (about 20 px at that scale) confirm a far too small diameter
    _, alone = estimate_scale(image, 30.0, predict, _segment, max_passes=3, start=start)
    assert alone.diameter < 20
    calls = []

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return predict(x)

    maps, estimate = estimate_scale(
        image, 30.0, counted, _segment, max_passes=3, start=start, starts=(1.0, 2.0, 3.0)
    )
    # x3 shows them at 30 px, where they measure 30: that start is kept, and the pass that
    # refines it (one more) measures the same size, which confirms it
    assert estimate.diameter == pytest.approx(60, rel=0.1)
    assert estimate.factor == pytest.approx(0.5, rel=0.05)
    assert estimate.passes == 4 and len(calls) == 4
    assert maps.shape[1] == pytest.approx(192, rel=0.05)
    assert median_diameter(_segment(maps)) == pytest.approx(30, rel=0.1)


def test_several_starts_keep_a_right_first_estimate() -> None:
    truth = discs((256, 256), 15, 64)  # 30 px objects
    image = (truth > 0).astype(np.float32)[None]
    predict = _cutting_network(limit=40.0, piece=20)
    _, estimate = estimate_scale(
        image, 30.0, predict, _segment, max_passes=3, start=1.0, starts=(1.0, 2.0, 3.0)
    )
    assert estimate.factor == 1.0 and estimate.diameter == pytest.approx(30, rel=0.1)


def test_several_starts_without_objects_keep_the_first_start() -> None:
    image = np.zeros((1, 96, 96), np.float32)
    maps, estimate = estimate_scale(
        image, 30.0, lambda x: x, _segment, start=2.0, starts=(1.0, 2.0, 3.0)
    )
    assert estimate.factor == 2.0 and estimate.diameter is None and estimate.passes == 3
    assert maps.shape == (1, 192, 192)


def test_closest_start_keeps_the_first_estimate_on_near_ties() -> None:
    assert closest_start([], 30.0) is None and closest_start([None, None], 30.0) is None
    assert closest_start([40.0, 33.0], 30.0) == 1  # |log| 0.29 against 0.10
    assert closest_start([36.0, 33.0], 30.0) == 0  # 0.18 against 0.10: within the margin
    assert closest_start([12.0, 24.0, 31.0], 30.0) == 2
    assert closest_start([None, 12.0], 30.0) == 1  # the first found nothing
    assert closest_start([36.0, 33.0], 30.0, margin=0.0) == 1
    assert 0 < START_MARGIN < 0.2


def test_a_start_the_refining_pass_does_not_confirm_is_dropped() -> None:
    # "texture": the network finds 14 px objects wherever it looks, except at the 2x
    # start's exact size, where it finds 27 px ones (near the standard of 30)
    shape = (240, 240)
    start = 30.0 / 40.0  # a first estimate of 40 px
    texture_at_2x = round(shape[1] * start / 2)

    def predict(x: np.ndarray) -> np.ndarray:
        radius = 13.5 if x.shape[2] == texture_at_2x else 7.0
        return (discs(x.shape[1:], radius, int(4 * radius)) > 0).astype(np.float32)[None]

    image = np.zeros((1, *shape), np.float32)
    _, alone = estimate_scale(image, 30.0, predict, _segment, max_passes=1, start=start)
    _, estimate = estimate_scale(
        image, 30.0, predict, _segment, max_passes=1, start=start, starts=(1.0, 2.0)
    )
    # 2x measured 27 px (54 on the original grid), but rescaled to that the objects measure
    # 14 px again (31 on the original grid): not confirmed, so the first start is refined
    assert closest_start([14.0, 27.0], 30.0) == 1
    assert estimate.factor == pytest.approx(alone.factor)
    assert estimate.diameter == pytest.approx(alone.diameter)
    assert estimate.passes == alone.passes + 2  # the 2x start and its refining pass
