"""A model folder is validated as a whole when loaded; every fault names the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cellbench.config import ModelConfig
from cellbench.errors import ConfigError
from cellbench.modelfolder import load_model
from cellbench.models import get_family

TINY = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 8]}
SELECTED = {"seed_threshold": 0.5, "mask_threshold": 0.5, "split_h": 1.0}


def make_folder(root: Path, options: dict = TINY, weights_options: dict | None = None) -> Path:
    """A unet model folder as the train stage writes it (untrained weights)."""
    family = get_family(ModelConfig("unet", "unet", options))
    folder = root / "unet"
    folder.mkdir(parents=True)
    config = {"model": "unet", "family": "unet", "options": family.options.resolved()}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "thresholds.json").write_text(json.dumps({"selected": SELECTED}))
    net_family = get_family(ModelConfig("unet", "unet", weights_options or options))
    torch.manual_seed(0)
    state = {"state_dict": net_family.build_network().state_dict(), "family": "unet"}
    torch.save(state, folder / "weights.pt")
    return folder


def test_a_complete_folder_loads(tmp_path: Path) -> None:
    model = load_model(make_folder(tmp_path), "cpu")
    assert model.thresholds.resolved() == SELECTED
    assert model.family.options.decoder_channels == (8, 8, 8)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda f: (f / "config.json").unlink(),
            r"not a cellbench model folder \(config.json missing",
        ),
        (lambda f: (f / "config.json").write_text("{"), r"config.json: not valid JSON"),
        (
            lambda f: (f / "config.json").write_text(json.dumps({"family": "unet"})),
            r"config.json: no 'options' entry",
        ),
        (
            lambda f: (f / "thresholds.json").write_text(json.dumps({})),
            r"thresholds.json: no 'selected' setting",
        ),
        (
            lambda f: (f / "thresholds.json").write_text(json.dumps({"selected": {}})),
            r"thresholds.json is invalid:\n  - selected.seed_threshold: required",
        ),
        (
            lambda f: (f / "thresholds.json").write_text(
                '{"selected": {"seed_threshold": NaN, "mask_threshold": 0.5, "split_h": 1}}'
            ),
            r"selected.seed_threshold: nan: Input should be a finite number",
        ),
        (
            lambda f: (f / "thresholds.json").write_text(
                json.dumps({"selected": {**SELECTED, "mask_threshold": 3}})
            ),
            r"selected.mask_threshold: 3: Input should be less than or equal to 1",
        ),
        (lambda f: (f / "weights.pt").unlink(), r"weights.pt: missing. Re-run the train stage"),
        (
            lambda f: (f / "weights.pt").write_bytes(b"not a torch file"),
            r"weights.pt: cannot be read as network weights .* damaged",
        ),
    ],
)
def test_faults_name_the_file_and_the_fix(tmp_path: Path, damage, message) -> None:
    folder = make_folder(tmp_path)
    damage(folder)
    with pytest.raises(ConfigError, match=message):
        load_model(folder, "cpu")


def test_weights_of_another_network_are_refused_with_a_message(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, weights_options={**TINY, "decoder_channels": [16, 8, 8]})
    with pytest.raises(ConfigError) as err:
        load_model(folder, "cpu")
    text = str(err.value)
    assert "weights.pt: the weights do not fit the network config.json describes" in text
    assert "decoder_channels (8, 8, 8)" in text and "re-run the train stage" in text


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder. --model-dir takes a folder"):
        load_model(tmp_path / "nope", "cpu")
    (tmp_path / "img.tif").write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file, not a model folder"):
        load_model(tmp_path / "img.tif", "cpu")
    with pytest.raises(ConfigError, match=r"it holds: img.tif"):
        load_model(tmp_path, "cpu")


def test_diverging_training_names_model_epoch_and_fix(tmp_path: Path, monkeypatch) -> None:
    from cellbench import train

    family = get_family(
        ModelConfig("unet", "unet", {**TINY, "epochs": 1, "patch_size": 32, "samples_per_epoch": 2})
    )
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 1
    sample = train.Sample("a", rng.random((1, 40, 40)).astype(np.float32), labels)
    monkeypatch.setattr(family, "loss", lambda logits, target: logits.sum() * float("nan"))
    with pytest.raises(
        train.TrainingDiverged,
        match=r"training d/unet: the loss became nan at epoch 1, batch 1.*lower learning_rate \(now 0.003\)",
    ):
        train.fit_network(
            family, [sample], [], seed=0, device="cpu", progress=False, label="d/unet"
        )


def test_constant_and_empty_images_warn(tmp_path: Path, caplog) -> None:
    from cellbench.train import Sample, label_stats, warn_uninformative

    labels = np.zeros((10, 10), np.int32)
    constant = Sample("flat", np.zeros((1, 10, 10), np.float32), labels.copy())
    labels[2:5, 2:5] = 1
    labels[6:9, 6:8] = 2
    fine = Sample("ok", np.random.default_rng(0).random((1, 10, 10)).astype(np.float32), labels)
    with caplog.at_level("WARNING"):
        messages = warn_uninformative(tmp_path, [constant, fine])
    assert len(messages) == 2
    assert "images/flat.tif: the image is constant" in messages[0]
    assert "labels/flat.tif: no annotated object" in messages[1]
    assert messages[0] in caplog.text
    stats = label_stats([constant, fine])
    assert stats == {"objects_per_megapixel": 2 / 200 * 1e6, "median_area": 7.5}
