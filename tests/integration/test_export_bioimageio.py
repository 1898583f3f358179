"""``cellbench export-bioimageio``: a tiny trained model as a bioimage.io package.

The package is validated with the format's own tools: ``bioimageio.core``'s model
test loads it, checks the description, reproduces the test output (computed by
cellbench's own normalisation and network) from the test input with every weight
format (TorchScript and PyTorch state dict), and runs inference at three tile sizes
and two batch sizes. ``bioimageio.spec`` then reloads the zip.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cellbench.cli import main
from cellbench.config import ModelConfig
from cellbench.train import train_model
from tiny_networks import TINY_NETWORK, write_tiny_dataset

pytest.importorskip("bioimageio.core", reason="bioimage.io packages need bioimageio.core")

TINY = {**TINY_NETWORK, "epochs": 1, "samples_per_epoch": 2}
FAMILY_OPTIONS = {
    "unet": {"seed_threshold": [0.5], "mask_threshold": [0.5], "split_h": [0.0]},
    "flow": {"cellprob_threshold": [0.5], "flow_threshold": [0.0], "niter": 50},
}


def _train(root: Path, family: str) -> Path:
    cfg = ModelConfig(family, family, {**TINY, **FAMILY_OPTIONS[family]})
    out = root / "results" / "models" / "synthetic" / family
    converted = root / "data" / "converted" / "synthetic"
    split_csv = root / "data" / "splits" / "synthetic.csv"
    train_model(cfg, "synthetic", converted, split_csv, out, seed=1, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A results tree for dataset 'synthetic': converted data, split, scored model folders."""
    root = tmp_path_factory.mktemp("bioimageio")
    converted, split_csv = write_tiny_dataset(
        root / "data" / "converted" / "synthetic",
        root / "data" / "splits" / "synthetic.csv",
        source="synthetic:fluorescent",
    )
    _train(root, "unet")
    classical = root / "results" / "models" / "synthetic" / "classical"
    cfg = ModelConfig("classical", "classical", {"threshold_scale": [1.0], "min_distance": [5]})
    train_model(cfg, "synthetic", converted, split_csv, classical, seed=1, progress=False)
    for model, ap in (("classical", 0.9), ("unet", 0.6)):
        scores = root / "results" / "scores" / "synthetic" / model
        scores.mkdir(parents=True)
        (scores / "summary.json").write_text(json.dumps({"per_image_mean": {"mean_ap": ap}}))
    return root


def _check_package(path: Path, family: str) -> None:
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_5

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    files = ("rdf.yaml", "weights.pt", "weights_torchscript.pt", "cellbench_network.py")
    files += ("test_input.npy", "test_output.npy", "cover.png", "documentation.md")
    assert set(files) <= names
    descr = load_description(path, perform_io_checks=False)
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    assert [str(a.id) for a in descr.inputs[0].axes] == ["batch", "channel", "y", "x"]
    assert descr.inputs[0].preprocessing[-1].id == "ensure_dtype"
    assert any(p.id == "scale_range" for p in descr.inputs[0].preprocessing)
    names = [str(n) for n in descr.outputs[0].axes[1].channel_names]
    expected = {
        "unet": ["background", "interior", "boundary"],
        "flow": ["flow_y", "flow_x", "cellprob"],
    }
    assert names == expected[family]
    assert descr.config.model_extra["cellbench"]["family"] == family
    assert descr.weights.torchscript is not None and descr.weights.pytorch_state_dict is not None


def test_best_model_package_passes_bioimageio_test(project: Path, capsys) -> None:
    out = project / "results" / "bioimageio" / "synthetic.zip"
    code = main(
        [
            "export-bioimageio",
            "--dataset",
            "synthetic",
            "--models",
            "classical,unet",
            "--results",
            str(project / "results"),
            "--converted",
            str(project / "data" / "converted" / "synthetic"),
            "--split",
            str(project / "data" / "splits" / "synthetic.csv"),
            "--out",
            str(out),
            "--author",
            "A. Tester",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # classical scores best but has no network: the best network model is packaged
    assert "best model of synthetic: unet (mean_ap 0.6000)" in captured.out
    assert "bioimage.io test: passed" in captured.out
    for fmt in ("torchscript", "pytorch_state_dict"):
        assert f"passed  Reproduce test outputs from test inputs ({fmt})" in captured.out
        assert f"passed  Run {fmt} inference for inputs with batch_size: 2" in captured.out
    assert "failed" not in captured.out
    _check_package(out, "unet")
    # a second run never replaces the package
    unet = project / "results" / "models" / "synthetic" / "unet"
    again = main(["export-bioimageio", "--model-dir", str(unet), "--out", str(out)])
    assert again == 2 and "exists; a package is never replaced" in capsys.readouterr().err


def test_classical_model_is_refused(project: Path) -> None:
    from cellbench.errors import ConfigError
    from cellbench.export.bioimageio import package_model

    classical = project / "results" / "models" / "synthetic" / "classical"
    with pytest.raises(ConfigError, match="'classical' model has no network to package"):
        package_model(classical, project / "data/converted/synthetic", project / "c.zip")
    assert not (project / "c.zip").exists()


@pytest.mark.slow
def test_flow_package_passes_bioimageio_test(project: Path) -> None:
    from cellbench.export.bioimageio import package_model

    out = project / "flow.zip"
    report = package_model(
        _train(project, "flow"),
        project / "data" / "converted" / "synthetic",
        out,
        split_csv=project / "data" / "splits" / "synthetic.csv",
    )
    assert report.status == "passed", report.summary()
    assert len(report.checks) >= 15
    _check_package(out, "flow")
    test_output = np.load(io.BytesIO(zipfile.ZipFile(out).read("test_output.npy")))
    assert test_output.shape[:2] == (1, 3) and 0 <= test_output[0, 2].min() <= 1
