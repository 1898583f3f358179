"""Resumable training: a run stopped mid-training resumes from its checkpoint, bit for bit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from cellbench.checkpoint import CheckpointStore, default_checkpoint_dir
from cellbench.config import ModelConfig
from cellbench.train import train_model
from tiny_networks import TINY_NETWORK, write_tiny_dataset

TINY_UNET = {
    **TINY_NETWORK,
    "epochs": 4,
    "seed_threshold": [0.5],
    "mask_threshold": [0.5],
    "split_h": [1.0],
    # every random source in play: crops at random scales, gamma, albumentations
    "scale_jitter": 0.3,
    "gamma_jitter": 0.2,
}
CELLBENCH = Path(sys.executable).parent / "cellbench"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_dataset(
        root / "converted", root / "split.csv", splits=("train", "train", "train", "val", "test")
    )
    return root / "converted", root / "split.csv"


@pytest.fixture
def torch_threads():
    """One torch thread, as the CLI sets it (--threads): the results are reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Stop(KeyboardInterrupt):
    """Raised by the test after the checkpoint of a given epoch is written."""


def _stop_after(monkeypatch, epoch: int) -> None:
    save = CheckpointStore.save

    def save_then_stop(self, state):
        path = save(self, state)
        if state["epoch"] == epoch:
            raise Stop
        return path

    monkeypatch.setattr(CheckpointStore, "save", save_then_stop)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "weights.pt", weights_only=True)["state_dict"]


def _assert_same_model(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, first {different[0]}"
    ha, hb = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (a, b))
    pd.testing.assert_frame_equal(ha, hb)
    assert (a / "thresholds.json").read_text() == (b / "thresholds.json").read_text()


def test_default_checkpoint_dir_is_outside_the_model_folder() -> None:
    assert default_checkpoint_dir(Path("results/models/d/m")) == Path("results/checkpoints/d/m")
    assert default_checkpoint_dir(Path("/x/results/models/d/m")) == Path(
        "/x/results/checkpoints/d/m"
    )
    assert default_checkpoint_dir(Path("/tmp/my_model")) == Path("/tmp/my_model.checkpoint")


@pytest.mark.parametrize("select_by", ["val_loss", "val_mean_ap"])
def test_resumed_training_is_bit_identical(
    tiny_dataset, tmp_path: Path, monkeypatch, caplog, torch_threads, select_by: str
) -> None:
    converted, split = tiny_dataset
    options = {**TINY_UNET, "select_by": select_by, "select_every": 1}
    cfg = ModelConfig("unet", "unet", options)
    kwargs = {"seed": 7, "device": "cpu", "progress": False}
    # (1) uninterrupted, with checkpoints
    train_model(
        cfg, "tiny", converted, split, tmp_path / "a", checkpoint_dir=tmp_path / "ca", **kwargs
    )
    assert not (tmp_path / "ca").exists()  # removed once the model folder is written
    # (2) stopped after epoch 2's checkpoint: no model folder, the checkpoint stays
    ckpt = tmp_path / "cb"
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(Stop):
            train_model(
                cfg, "tiny", converted, split, tmp_path / "b", checkpoint_dir=ckpt, **kwargs
            )
    assert not (tmp_path / "b").exists()
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]  # no temporaries
    assert torch.load(ckpt / "last.pt", weights_only=True)["epoch"] == 2
    # started again: resumes at epoch 3 and ends where the uninterrupted run did
    with caplog.at_level(logging.INFO, logger="cellbench.train"):
        config = train_model(
            cfg, "tiny", converted, split, tmp_path / "b", checkpoint_dir=ckpt, **kwargs
        )
    assert "resuming from epoch 3/4" in caplog.text
    assert "epoch 1/4 " not in caplog.text and "epoch 3/4 " in caplog.text
    # the projected time left is on every epoch's line but the last
    epoch_lines = [line for line in caplog.text.splitlines() if "crops/s" in line]
    assert [" left" in line for line in epoch_lines] == [True, False], epoch_lines
    assert config["epochs_run"] == 4
    _assert_same_model(tmp_path / "a", tmp_path / "b")
    assert not ckpt.exists()
    # without checkpoints (the library default), the same weights too
    train_model(cfg, "tiny", converted, split, tmp_path / "c", **kwargs)
    _assert_same_model(tmp_path / "a", tmp_path / "c")


def test_changed_params_start_afresh_with_a_warning(
    tiny_dataset, tmp_path: Path, monkeypatch, caplog, torch_threads
) -> None:
    converted, split = tiny_dataset
    cfg = ModelConfig("unet", "unet", {**TINY_UNET, "epochs": 3})
    ckpt = tmp_path / "ckpt"
    kwargs = {"seed": 7, "device": "cpu", "progress": False, "checkpoint_dir": ckpt}
    with monkeypatch.context() as m:
        _stop_after(m, 1)
        with pytest.raises(Stop):
            train_model(cfg, "tiny", converted, split, tmp_path / "m", **kwargs)
    assert (ckpt / "last.pt").is_file()
    changed = ModelConfig("unet", "unet", {**TINY_UNET, "epochs": 3, "learning_rate": 0.001})
    with caplog.at_level(logging.INFO, logger="cellbench"):
        train_model(changed, "tiny", converted, split, tmp_path / "m", **kwargs)
    assert "not resumed: the model's params.yaml entry or the seed changed" in caplog.text
    assert "resuming" not in caplog.text and "epoch 1/3 " in caplog.text
    train_model(changed, "tiny", converted, split, tmp_path / "fresh", seed=7, device="cpu")
    _assert_same_model(tmp_path / "m", tmp_path / "fresh")

    # another dataset content (a changed split) and --no-resume also start afresh
    with monkeypatch.context() as m:
        _stop_after(m, 1)
        with pytest.raises(Stop):
            train_model(cfg, "tiny", converted, split, tmp_path / "n", **kwargs)
    other_split = tmp_path / "split.csv"
    rows = pd.read_csv(split)
    rows.loc[rows["id"] == "img3", "split"] = "train"
    rows.to_csv(other_split, index=False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cellbench"), monkeypatch.context() as m:
        _stop_after(m, 1)
        with pytest.raises(Stop):
            train_model(cfg, "tiny", converted, other_split, tmp_path / "n", **kwargs)
    assert "the training / validation images, labels or split changed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cellbench"):
        train_model(cfg, "tiny", converted, split, tmp_path / "n", resume=False, **kwargs)
    assert "not resumed (--no-resume)" in caplog.text and "resuming" not in caplog.text


def test_damaged_checkpoint_is_ignored(tmp_path: Path, caplog) -> None:
    store = CheckpointStore(tmp_path / "c", {"format": 1})
    store.directory.mkdir()
    store.path.write_bytes(b"not a checkpoint")
    assert store.load() is None
    assert "cannot be read" in caplog.text
    store.save({"epoch": 1})
    assert store.load()["epoch"] == 1
    assert CheckpointStore(store.directory, {"format": 2}).load() is None
    assert "format 1, now 2" in caplog.text
    store.clear()
    assert not store.directory.exists()


def test_checkpoint_inside_the_model_folder_is_refused(tiny_dataset, tmp_path: Path) -> None:
    converted, split = tiny_dataset
    cfg = ModelConfig("unet", "unet", dict(TINY_UNET))
    with pytest.raises(ValueError, match="inside the model folder"):
        train_model(
            cfg, "tiny", converted, split, tmp_path / "m", seed=1, checkpoint_dir=tmp_path / "m/c"
        )


# --------------------------------------------------------------------------- the CLI, killed
def _cli_project(tmp_path: Path, repo_root: Path, tiny_dataset) -> tuple[Path, list[str]]:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["models"]["unet"].update({**TINY_UNET, "epochs": 6, "samples_per_epoch": 8})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    converted, split = tiny_dataset
    args = [
        "train",
        "--params",
        "params.yaml",
        "--dataset",
        "synthetic",
        "--model",
        "unet",
        "--converted",
        str(converted),
        "--split",
        str(split),
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    return tmp_path, args


def _cellbench(cwd: Path, args: list[str], out: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CELLBENCH), *args, "--out", out],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow  # three `cellbench train` processes, about 30 s
def test_cli_sigterm_mid_training_resumes_on_rerun(
    tmp_path: Path, repo_root: Path, tiny_dataset
) -> None:
    cwd, args = _cli_project(tmp_path, repo_root, tiny_dataset)
    out = "results/models/synthetic/unet"
    ckpt = cwd / "results/checkpoints/synthetic/unet"
    proc = subprocess.Popen(
        [str(CELLBENCH), *args, "--out", out],
        cwd=cwd,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 300
    try:
        for line in proc.stderr:  # one INFO line per epoch, after that epoch's checkpoint
            lines.append(line)
            if line.startswith("cellbench: INFO: epoch 2/6"):
                os.kill(proc.pid, signal.SIGTERM)
                break
            assert time.monotonic() < deadline, "".join(lines)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert "stopped by SIGTERM" in log
    # nothing that looks like a finished model, and no temporaries
    assert not (cwd / "results/models").exists()
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]
    stopped_at = torch.load(ckpt / "last.pt", weights_only=True)["epoch"]
    assert 2 <= stopped_at < 6

    again = _cellbench(cwd, args, out)
    assert again.returncode == 0, again.stderr
    assert f"resuming from epoch {stopped_at + 1}/6" in again.stderr
    assert "epoch 1/6 " not in again.stderr
    assert not ckpt.exists()
    whole = _cellbench(cwd, args, "whole")  # no interruption; checkpoint at whole.checkpoint
    assert whole.returncode == 0, whole.stderr
    assert "resuming" not in whole.stderr and not (cwd / "whole.checkpoint").exists()
    _assert_same_model(cwd / out, cwd / "whole")


def test_validation_loss_every_n_epochs_leaves_the_model_unchanged(
    tiny_dataset, tmp_path: Path, torch_threads
) -> None:
    """With ``select_by: val_mean_ap`` the validation loss is only logged: computing it less
    often (``val_every``, what the real-data recipes do to save time) keeps the same weights.
    """
    converted, split = tiny_dataset
    options = {**TINY_UNET, "select_by": "val_mean_ap", "select_every": 2}
    kwargs = {"seed": 7, "device": "cpu", "progress": False}
    for name, every in (("each", 1), ("fourth", 4)):
        cfg = ModelConfig("unet", "unet", {**options, "val_every": every})
        train_model(cfg, "tiny", converted, split, tmp_path / name, **kwargs)
    wa, wb = _weights(tmp_path / "each"), _weights(tmp_path / "fourth")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha, hb = (pd.read_csv(tmp_path / d / "history.csv") for d in ("each", "fourth"))
    pd.testing.assert_series_equal(ha["train_loss"], hb["train_loss"])
    pd.testing.assert_series_equal(ha["val_mean_ap"], hb["val_mean_ap"])
    assert ha["val_loss"].notna().all()
    assert hb["val_loss"].isna().tolist() == [True, True, True, False]
    assert hb["val_loss"].iloc[-1] == ha["val_loss"].iloc[-1]
