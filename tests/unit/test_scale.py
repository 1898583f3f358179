"""Object-size normalisation: diameters, rescaling, and the network's own size estimate."""

from __future__ import annotations

import numpy as np
import pytest
from cellbench.scale import (
    MAX_FACTOR,
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
