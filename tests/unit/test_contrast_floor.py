"""The empty-field guard: noise estimate, contrast, the floor learned in training and used
by every inference path (predict stage, ``cellbench segment``, model folders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cellbench.config import ModelConfig
from cellbench.errors import ConfigError
from cellbench.modelfolder import load_model
from cellbench.train import train_model, training_contrast
from cellbench.transforms import (
    MAX_CONTRAST_FLOOR,
    contrast,
    contrast_floor,
    noise_sigma,
    normalize_percentile,
    to_model_input,
)
from skimage.draw import disk
from tiny_networks import TINY_NETWORK, write_tiny_dataset


def _noise(sigma: float = 5.0, seed: int = 0, shape=(256, 320)) -> np.ndarray:
    return 130.0 + np.random.default_rng(seed).normal(0.0, sigma, shape)


def _nuclei(sigma: float = 5.0, seed: int = 0) -> np.ndarray:
    image = _noise(sigma, seed)
    for k, (r, c) in enumerate([(60, 60), (60, 200), (180, 120), (190, 260)]):
        rr, cc = disk((r, c), 14, shape=image.shape)
        image[rr, cc] += 400.0 + 50 * k
    return image


def test_noise_sigma_measures_the_noise_not_the_content() -> None:
    for sigma in (2.0, 5.0, 20.0):
        assert noise_sigma(_noise(sigma)) == pytest.approx(sigma, rel=0.05)
        # bright nuclei and a smooth illumination ramp barely change the estimate
        ramp = np.linspace(0, 300, 320)[None, :]
        assert noise_sigma(_nuclei(sigma) + ramp) == pytest.approx(sigma, rel=0.08)
    assert noise_sigma(np.full((10, 10), 7.0)) == 0.0
    assert noise_sigma(np.zeros((10, 1))) == 0.0  # one column: no horizontal neighbours


def test_noise_sigma_strides_rows_of_large_planes() -> None:
    big = _noise(4.0, shape=(2048, 1024))  # 2 M pixels: every 2nd row is used
    assert noise_sigma(big) == pytest.approx(4.0, rel=0.05)


def test_contrast_separates_an_empty_field_from_one_with_nuclei() -> None:
    empty, full = contrast(_noise()), contrast(_nuclei())
    assert 4.0 < empty < 9.0  # percentile range of Gaussian noise: about 5.2 sigma
    assert full > 50.0
    assert contrast(np.full((8, 8), 3.0)) == 0.0
    flat_with_object = np.zeros((64, 64))
    flat_with_object[20:40, 20:40] = 1.0  # no noise at all
    assert contrast(flat_with_object) == float("inf")


def test_contrast_floor_fraction_quantile_and_infinite_values() -> None:
    values = [30.0] * 98 + [8.0, float("inf")]
    floor = contrast_floor(values, 0.5)
    assert floor == pytest.approx(0.5 * np.percentile([30.0] * 98 + [8.0], 2.0))
    assert 12.0 < floor <= 15.0  # one empty training field does not switch it off
    # bright training fields: the floor stops at MAX_CONTRAST_FLOOR, so faint real fields
    # (30 sigma and up) are never dimmed
    assert contrast_floor([150.0] * 50, 0.5) == MAX_CONTRAST_FLOOR == 20.0
    assert contrast_floor([150.0] * 50, 0.5, cap=100.0) == 75.0
    assert contrast_floor(values, 0.0) == 0.0
    assert contrast_floor([float("inf")] * 3, 0.5) == 0.0
    assert contrast_floor([], 0.5) == 0.0


def test_floor_dims_an_empty_field_and_leaves_images_with_nuclei_alone() -> None:
    empty, full = _noise(), _nuclei()
    np.testing.assert_array_equal(
        normalize_percentile(full), normalize_percentile(full, min_contrast=0)
    )
    np.testing.assert_array_equal(
        normalize_percentile(full, min_contrast=40.0), normalize_percentile(full)
    )
    plain = normalize_percentile(empty)
    floored = normalize_percentile(empty, min_contrast=40.0)
    assert np.percentile(plain, 99.8) == pytest.approx(1.0)  # noise stretched to the range
    # with the floor the same noise spans 1 / (40 sigma) per grey level: about 0.13
    assert np.percentile(floored, 99.8) == pytest.approx(contrast(empty) / 40.0, rel=1e-4)
    assert np.percentile(floored, 99.8) < 0.2
    assert floored.dtype == np.float32
    # channels are floored one by one
    rgb = to_model_input(np.stack([empty, full, empty], axis=-1), 3, 40.0)
    np.testing.assert_allclose(rgb[0], floored, rtol=1e-6)
    np.testing.assert_allclose(rgb[1], normalize_percentile(full), rtol=1e-6)


def _tiny(tmp_path: Path) -> tuple[Path, Path]:
    write_tiny_dataset(tmp_path / "converted", tmp_path / "split.csv", height=64, width=64)
    return tmp_path / "converted", tmp_path / "split.csv"


def test_training_contrast_record(tmp_path: Path) -> None:
    import pandas as pd

    converted, split_csv = _tiny(tmp_path)
    split = pd.read_csv(split_csv, dtype={"id": str}, keep_default_na=False)
    record = training_contrast(converted, split, 1, 0.5)
    assert record["n_planes"] == (split["split"] == "train").sum()
    expected = min(0.5 * record["train_contrast_p2"], MAX_CONTRAST_FLOOR)
    assert record["min_contrast"] == pytest.approx(expected, abs=2e-3)
    assert record["min_contrast"] > 0
    off = training_contrast(converted, split, 1, 0.0)
    assert off["min_contrast"] == 0.0 and off["n_planes"] == 0


def test_trained_folder_records_the_floor_and_inference_uses_it(
    tmp_path: Path, monkeypatch, one_torch_thread
) -> None:
    converted, split_csv = _tiny(tmp_path)
    options = {**TINY_NETWORK, "epochs": 1}
    out = tmp_path / "model"
    config = train_model(
        ModelConfig("unet", "unet", options),
        "tiny",
        converted,
        split_csv,
        out,
        seed=0,
        device="cpu",
    )
    floor = config["normalisation"]["min_contrast"]
    assert floor > 0
    model = load_model(out, "cpu")
    assert model.min_contrast == floor

    # cellbench segment normalises with the folder's floor
    import cellbench.segment as segment

    seen = []

    def capture(family, net, x, device, **kw):
        seen.append(x)
        raise RuntimeError("captured")

    monkeypatch.setattr(segment, "predict_image", capture)
    with pytest.raises(RuntimeError, match="captured"):
        segment.segment_array(model, _noise(shape=(64, 64)).astype(np.float32))
    np.testing.assert_array_equal(seen[0], to_model_input(_noise(shape=(64, 64)), 1, floor))

    # off: the plain percentile normalisation, and older folders without the record load
    cfg = json.loads((out / "config.json").read_text())
    old = tmp_path / "old"
    shutil.copytree(out, old)
    cfg.pop("normalisation")
    (old / "config.json").write_text(json.dumps(cfg))
    assert load_model(old, "cpu").min_contrast == 0.0


@pytest.mark.parametrize("bad", [-1.0, "high", None, True, float("nan")])
def test_a_damaged_floor_is_refused_naming_the_file(tmp_path: Path, bad, one_torch_thread) -> None:
    converted, split_csv = _tiny(tmp_path)
    out = tmp_path / "model"
    cfg = ModelConfig("classical", "classical", {"threshold_scale": [1.0], "min_distance": [4]})
    train_model(cfg, "tiny", converted, split_csv, out, seed=0, device="cpu")
    config = json.loads((out / "config.json").read_text())
    assert config["normalisation"]["min_contrast"] == 0.0  # no network: no floor
    config["normalisation"]["min_contrast"] = bad
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"config.json: normalisation.min_contrast"):
        load_model(out, "cpu")


def test_bioimageio_documentation_states_the_floor_it_cannot_carry() -> None:
    from cellbench.export.bioimageio import _documentation, _PackageFacts

    def doc(normalisation):
        config = {"family": "flow", "dataset": "d", "train_diameters": {"median": 20.0}}
        if normalisation is not None:
            config["normalisation"] = normalisation
        facts = _PackageFacts(
            "m", config, {"selected": {}}, {"encoder_depth": 4}, ["intensity"], ["a"], 16
        )
        return _documentation(facts, licence_note="", image_id="x", scores=None, diameter=0.0)

    assert "beyond 20 times its noise standard deviation" in doc({"min_contrast": 20.0})
    assert "`scale_range` has no such floor" in doc({"min_contrast": 20.0})
    assert "contrast floor" not in doc({"min_contrast": 0.0})
    assert "contrast floor" not in doc(None)  # a folder from before the floor
