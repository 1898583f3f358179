"""``precision: auto``: bf16 only where the training device computes it natively; ``channels_last: auto``."""

import json
import logging
from pathlib import Path

import pytest
from cellbench.checkpoint import CheckpointStore, training_fingerprint
from cellbench.config import ModelConfig
from cellbench.device import native_bf16, resolve_channels_last, resolve_precision
from cellbench.models import get_family
from cellbench.train import train_model
from tiny_networks import TINY_NETWORK, write_tiny_dataset

TINY_UNET = {**TINY_NETWORK, "seed_threshold": [0.5], "mask_threshold": [0.5]}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_dataset(root / "converted", root / "split.csv", splits=("train", "train", "val"))
    return root / "converted", root / "split.csv"


@pytest.mark.parametrize(
    ("option", "native", "expected"),
    [
        ("fp32", True, "fp32"),
        ("fp32", False, "fp32"),
        ("auto", True, "bf16"),
        ("auto", False, "fp32"),
        ("bf16", True, "bf16"),
        ("bf16", False, "bf16"),  # as asked, with a warning
    ],
)
def test_resolve_precision(option, native, expected, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cellbench"):
        assert resolve_precision(option, "cpu", native=native) == expected
    warned = "no native bf16" in caplog.text
    assert warned == (option == "bf16" and not native)
    if warned:  # the warning names the settings that fix it
        assert "precision to auto" in caplog.text and "fp32" in caplog.text


def test_resolve_precision_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="'fp32', 'bf16' or 'auto'"):
        resolve_precision("fp16", "cpu")


def test_native_bf16_asks_the_device() -> None:
    import torch

    assert native_bf16("meta") is False
    assert native_bf16(torch.device("cpu")) is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")


def test_the_option_accepts_auto_and_nothing_else() -> None:
    assert (
        get_family(ModelConfig("u", "unet", {**TINY_UNET, "precision": "auto"})).options.precision
        == "auto"
    )
    with pytest.raises(Exception, match="precision"):
        get_family(ModelConfig("u", "unet", {**TINY_UNET, "precision": "fp16"}))


def test_resolve_channels_last() -> None:
    assert resolve_channels_last("auto", "bf16") is True
    assert resolve_channels_last("auto", "fp32") is False
    assert resolve_channels_last(True, "fp32") is True
    assert resolve_channels_last(False, "bf16") is False
    with pytest.raises(ValueError, match="true, false or 'auto'"):
        resolve_channels_last("yes", "bf16")


@pytest.mark.parametrize("native", [False, True])
def test_auto_trains_as_the_precision_it_resolves_to(
    tiny_dataset, tmp_path: Path, monkeypatch, native: bool
) -> None:
    """auto gives bit-identical weights to the explicit settings it picks; config.json says which."""
    import torch

    monkeypatch.setattr("cellbench.device.native_bf16", lambda device: native)
    converted, split = tiny_dataset
    chosen = "bf16" if native else "fp32"
    for name, precision, nhwc in (("auto", "auto", "auto"), ("explicit", chosen, native)):
        options = {**TINY_UNET, "precision": precision, "channels_last": nhwc}
        cfg = ModelConfig("unet", "unet", options)
        train_model(
            cfg, "t", converted, split, tmp_path / name, seed=4, device="cpu", progress=False
        )
    weights = [
        torch.load(tmp_path / name / "weights.pt", weights_only=True)["state_dict"]
        for name in ("auto", "explicit")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = "fp32" if native else "bf16"
    cfg = ModelConfig("unet", "unet", {**TINY_UNET, "precision": other})
    train_model(
        cfg, "t", converted, split, tmp_path / "other", seed=4, device="cpu", progress=False
    )
    changed = torch.load(tmp_path / "other" / "weights.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(weights[0][k], changed[k]) for k in changed)  # the test can fail
    record = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert record["options"]["precision"] == "auto" and record["precision"] == chosen
    assert record["options"]["channels_last"] == "auto" and record["channels_last"] is native


def test_classical_records_no_precision(tiny_dataset, tmp_path: Path) -> None:
    converted, split = tiny_dataset
    cfg = ModelConfig("classical", "classical", {})
    train_model(cfg, "t", converted, split, tmp_path / "c", seed=0, device="cpu", progress=False)
    record = json.loads((tmp_path / "c" / "config.json").read_text())
    assert record["precision"] is None and record["channels_last"] is None


def test_a_checkpoint_of_another_precision_is_not_resumed(tmp_path: Path, caplog) -> None:
    bf16 = training_fingerprint("p", "d", "x", "bf16")
    store = CheckpointStore(tmp_path / "c", bf16)
    store.save({"epoch": 3})
    assert store.load()["epoch"] == 3
    assert (
        CheckpointStore(store.directory, training_fingerprint("p", "d", "x", "fp32")).load() is None
    )
    assert "training arithmetic" in caplog.text and "'bf16', now 'fp32'" in caplog.text
