"""The size model: scale-space features, the fitted regression, its file, its use at inference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cellbench.errors import ConfigError
from cellbench.scale import estimate_scale, median_diameter, rescale_image, rescale_labels
from cellbench.sizemodel import SIZE_MODEL_FILE, SizeModel, fit_size_model, scale_features
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.measure import label


def blobs(seed: int, radius: float, shape=(256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Randomly placed, non-touching blurred discs: ``(1, H, W)`` image and ``(H, W)`` labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    k = 0
    for _ in range(400):
        r = radius * rng.uniform(0.85, 1.15)
        y, x = rng.uniform(r, shape[0] - r), rng.uniform(r, shape[1] - r)
        rr, cc = disk((y, x), r + 2, shape=shape)
        if labels[rr, cc].any():
            continue
        k += 1
        labels[disk((y, x), r, shape=shape)] = k
    image = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0)
    image += rng.normal(0, 0.05, shape).astype(np.float32)
    return image[None], labels


def test_features_ignore_brightness_contrast_and_polarity() -> None:
    image, _ = blobs(0, 8)
    base = scale_features(image)
    assert base.shape == (2 * 24 + 1,)
    np.testing.assert_allclose(scale_features(3.0 * image + 7.0), base, atol=1e-9)
    np.testing.assert_allclose(scale_features(-image), base, atol=1e-9)
    # more channels are averaged
    np.testing.assert_allclose(scale_features(np.concatenate([image, image])), base, atol=1e-9)


def test_the_energy_centroid_moves_with_the_object_size() -> None:
    centroids = [scale_features(blobs(1, r)[0])[-1] for r in (4, 8, 16)]
    assert centroids[0] < centroids[1] < centroids[2]
    # twice the size moves it towards larger scales by a good part of log(2)
    assert 0.3 * math.log(2) < centroids[2] - centroids[1] < 1.5 * math.log(2)


@pytest.fixture(scope="module")
def fitted() -> SizeModel:
    data = [blobs(seed, radius) for seed, radius in enumerate((5, 7, 9, 12, 15, 6, 10, 13))]
    return fit_size_model([i for i, _ in data], [lab for _, lab in data], 30.0, seed=0)


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_fitted_model_estimates_unseen_images_at_any_scale(fitted: SizeModel, factor) -> None:
    assert fitted.n_images == 8 and fitted.n_samples == 64 and fitted.cv_log_error < 0.25
    for seed, radius in ((100, 6), (101, 11)):
        image, labels = blobs(seed, radius)
        truth = median_diameter(rescale_labels(labels, factor))
        estimate = fitted.estimate(rescale_image(image, factor))
        assert estimate == pytest.approx(truth, rel=0.25), (radius, factor, estimate, truth)


def test_fitting_is_seeded_and_needs_two_labelled_images(fitted: SizeModel) -> None:
    data = [blobs(seed, radius) for seed, radius in enumerate((5, 7, 9))]
    images, labels = [i for i, _ in data], [lab for _, lab in data]
    assert fit_size_model(images, labels, 30.0, seed=4) == fit_size_model(
        images, labels, 30.0, seed=4
    )
    empty = np.zeros((64, 64), np.int32)
    with pytest.raises(ValueError, match="at least 2 labelled images"):
        fit_size_model(images[:2], [labels[0], empty], 30.0, seed=0)


def test_size_model_file_round_trip_and_bad_content(fitted: SizeModel) -> None:
    data = json.loads(json.dumps(fitted.to_dict()))
    assert SizeModel.from_dict(data) == fitted
    for broken in (
        {k: v for k, v in data.items() if k != "coef"},
        {**data, "coef": data["coef"][:-1]},
        {**data, "intercept": float("nan")},
        {**data, "sigmas": [1.0, 2.0]},
    ):
        with pytest.raises(ValueError):
            SizeModel.from_dict(broken)
    with pytest.raises(ValueError, match="features have shape"):
        fitted.diameter(np.zeros(3))


def test_a_broken_size_model_file_is_named(tmp_path) -> None:
    from cellbench.modelfolder import load_size_model

    assert load_size_model(tmp_path) is None
    (tmp_path / SIZE_MODEL_FILE).write_text('{"standard": 30}')
    with pytest.raises(ConfigError, match=r"size_model\.json.*re-run the train stage"):
        load_size_model(tmp_path)


def test_estimate_starting_at_the_right_scale_needs_one_pass() -> None:
    image, labels = blobs(7, 10)
    calls = []

    def predict(x: np.ndarray) -> np.ndarray:  # an ideal "network": the maps are the image
        calls.append(x.shape)
        return x

    def segment(maps: np.ndarray) -> np.ndarray:
        return label(maps[0] > 0.5)

    start = 30.0 / median_diameter(labels)
    _, estimate = estimate_scale(image, 30.0, predict, segment, max_passes=3, start=start)
    assert estimate.passes == 1 and len(calls) == 1
    assert estimate.factor == pytest.approx(start)
    assert estimate.diameter == pytest.approx(median_diameter(labels), rel=0.1)
