"""The cost the report shows: predict / postprocess write timings and peak memory."""

import json
from pathlib import Path

import pandas as pd
import pytest
from cellbench.config import ModelConfig
from cellbench.predict import (
    RESOURCES_JSON,
    TIMINGS_CSV,
    peak_memory,
    postprocess_dir,
    predict_dir,
)
from cellbench.train import train_model
from tiny_networks import write_tiny_dataset


@pytest.fixture(scope="module")
def classical(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cost")
    write_tiny_dataset(
        root / "converted",
        root / "split.csv",
        splits=("train", "val", "test", "test"),
        height=48,
        width=64,
        n_cells=(3, 5),
        radius=(5, 7),
    )
    cfg = ModelConfig("classical", "classical", {"threshold_scale": [1.0], "min_distance": [4]})
    train_model(
        cfg,
        "tiny",
        root / "converted",
        root / "split.csv",
        root / "model",
        seed=0,
        device="cpu",
        progress=False,
    )
    return root / "model", root / "converted", root / "split.csv"


def test_predict_and_postprocess_record_seconds_and_memory(classical, tmp_path) -> None:
    model, converted, split = classical
    assert predict_dir(model, converted, split, tmp_path / "pred", device="cpu") == 2
    assert postprocess_dir(model, tmp_path / "pred", tmp_path / "masks") == 2
    for folder in ("pred", "masks"):
        timings = pd.read_csv(tmp_path / folder / TIMINGS_CSV, dtype={"id": str})
        assert list(timings.columns) == ["id", "height", "width", "seconds"]
        assert timings["id"].tolist() == ["img2", "img3"]
        assert (timings[["height", "width"]].to_numpy() == [48, 64]).all()
        assert (timings["seconds"] >= 0).all()
        resources = json.loads((tmp_path / folder / RESOURCES_JSON).read_text())
        assert resources["device"] == "cpu" and resources["peak_rss_bytes"] > 10_000_000
        assert resources["cuda_max_memory_allocated_bytes"] is None
    # the masks folder still holds exactly one label image per test image
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.tif")) == ["img2.tif", "img3.tif"]


def test_peak_memory_off_the_gpu() -> None:
    out = peak_memory("cpu")
    assert out["device"] == "cpu" and out["cuda_max_memory_allocated_bytes"] is None
    assert out["peak_rss_bytes"] is None or out["peak_rss_bytes"] > 1_000_000
