"""Time windows of frame sequences (cellbench.sequences) and the skip of time models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cellbench.sequences import frame_windows, has_time, load_window_inputs, sequence_lengths


def _index(rows):
    return pd.DataFrame(rows, columns=["id", "sequence", "frame"])


def test_windows_never_cross_sequences_and_repeat_the_first_frame() -> None:
    index = _index(
        [("a0", "01", 0), ("a1", "01", 1), ("a2", "01", 2), ("a3", "01", 3)]
        + [("b0", "02", 0), ("b1", "02", 1)]
        + [("single", "", -1)]
    )
    windows = frame_windows(index, ["a0", "a2", "a3", "b0", "b1", "single"], 3)
    assert windows["a0"] == ["a0", "a0", "a0"]
    assert windows["a2"] == ["a0", "a1", "a2"]
    assert windows["a3"] == ["a1", "a2", "a3"]
    assert windows["b0"] == ["b0", "b0", "b0"]
    assert windows["b1"] == ["b0", "b0", "b1"]  # never a frame of sequence 01
    assert windows["single"] == ["single"] * 3
    for window in windows.values():
        assert len({index.set_index("id").at[i, "sequence"] for i in window}) == 1


def test_windows_follow_frame_order_not_row_order_and_skip_gaps() -> None:
    index = _index([("t9", "01", 9), ("t2", "01", 2), ("t5", "01", 5), ("t7", "01", 7)])
    assert frame_windows(index, ["t9"], 3)["t9"] == ["t5", "t7", "t9"]
    assert frame_windows(index, ["t9"], 1)["t9"] == ["t9"]


def test_windows_only_see_their_own_split_and_unsplit_context() -> None:
    index = _index([(f"f{k}", "01", k) for k in range(6)])
    split = {"f0": "train", "f1": "test", "f2": "train", "f4": "train", "f5": "test"}  # f3: none
    windows = frame_windows(index, ["f4", "f5"], 4, split)
    assert windows["f4"] == ["f0", "f2", "f3", "f4"]  # f1 is a test frame: never shown
    assert windows["f5"] == ["f1", "f1", "f3", "f5"]  # f3 is in no split: usable context
    with pytest.raises(ValueError, match="window length"):
        frame_windows(index, ["f0"], 0)


def test_has_time() -> None:
    assert has_time(_index([("a", "01", 0), ("b", "01", 1)]))
    assert not has_time(_index([("a", "", -1), ("b", "", -1)]))
    assert not has_time(_index([("a", "01", 0), ("b", "02", 0)]))  # one frame per sequence
    assert sequence_lengths(_index([("a", "01", 0), ("b", "01", 3), ("c", "", -1)])) == {"01": 2}
    assert not has_time(pd.DataFrame({"id": ["a"]}))


def _write_sequence(converted: Path, n: int = 4, shape=(40, 48)) -> list[str]:
    from cellbench.datasets.base import ConvertedWriter

    writer = ConvertedWriter(converted)
    ids = []
    for k in range(n):
        image = np.full(shape, 10 * k, np.uint8)
        image[5:15, 5 + 3 * k : 15 + 3 * k] = 200
        labels = np.zeros(shape, np.uint16)
        labels[5:15, 5 + 3 * k : 15 + 3 * k] = 1
        writer.add(f"t{k}", image, labels, cell_type="c", sequence="01", frame=k, group="01")
        ids.append(f"t{k}")
    writer.finish()
    return ids


def test_load_window_inputs_stacks_frames_oldest_first(tmp_path: Path) -> None:
    from cellbench.io import read_image
    from cellbench.transforms import to_model_input

    converted = tmp_path / "conv"
    ids = _write_sequence(converted)
    inputs = load_window_inputs(converted, ["t0", "t3"], 1, 3)
    assert inputs["t3"].shape == (3, 40, 48) and inputs["t3"].dtype == np.float32
    for k, frame in enumerate(["t1", "t2", "t3"]):
        own = to_model_input(read_image(converted / "images" / f"{frame}.tif"), 1)[0]
        np.testing.assert_array_equal(inputs["t3"][k], own)
    np.testing.assert_array_equal(inputs["t0"][0], inputs["t0"][2])
    assert len(ids) == 4


def test_time_model_is_skipped_on_a_dataset_without_time(tmp_path: Path) -> None:
    """lstm_unet on single images: every stage passes a SKIPPED.json on, the report says why."""
    from cellbench.config import ModelConfig, ScoreOptions
    from cellbench.predict import postprocess_dir, predict_dir
    from cellbench.score import score_dir
    from cellbench.skip import SKIPPED_JSON
    from cellbench.train import train_model
    from tiny_networks import write_tiny_dataset

    converted, split_csv = write_tiny_dataset(tmp_path / "conv", tmp_path / "split.csv")
    cfg = ModelConfig(
        name="lstm", family="lstm_unet", options={"encoder_channels": [8, 16], "epochs": 1}
    )
    results = tmp_path / "results"
    models, preds = results / "models/tiny/lstm", results / "predictions/tiny/lstm"
    masks, scores = results / "masks/tiny/lstm", results / "scores/tiny/lstm"
    record = train_model(cfg, "tiny", converted, split_csv, models, seed=0)
    assert "has no time" in record["reason"] and "skipped" in record["reason"]
    assert sorted(p.name for p in models.iterdir()) == [SKIPPED_JSON]
    assert predict_dir(models, converted, split_csv, preds) == 0
    assert postprocess_dir(models, preds, masks) == 0
    summary = score_dir(
        masks, converted, split_csv, scores, dataset="tiny", model="lstm", settings=ScoreOptions()
    )
    assert summary["n_images"] == 0 and "has no time" in summary["skipped"]
    assert json.loads((scores / SKIPPED_JSON).read_text())["model"] == "lstm"
    assert (scores / "per_image.csv").is_file()


def test_foreground_crops_centre_on_objects_and_keep_some_uniform() -> None:
    from cellbench.train import _crop_centre, _random_crop

    labels = np.zeros((200, 200), np.int32)
    labels[150:160, 20:30] = 1
    rng = np.random.default_rng(0)
    centres = [_crop_centre(rng, labels, 0.7) for _ in range(400)]
    on_object = [c for c in centres if c is not None]
    assert 0.6 < len(on_object) / len(centres) < 0.8  # the rest: uniform crops
    assert all(labels[c] for c in on_object)
    image = np.arange(200 * 200, dtype=np.float32).reshape(1, 200, 200)
    x, y = _random_crop(rng, image, labels[None].astype(np.float32), 64, (155, 25))
    assert x.shape == (1, 64, 64) and y[0].sum() == 100  # the whole object is in the crop
    x, y = _random_crop(rng, image, labels[None].astype(np.float32), 64, (199, 199))
    assert x[0, -1, -1] == image[0, 199, 199]  # shifted inside the image at the border
    # probability 0 draws nothing: runs without the option keep their random stream
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    assert _crop_centre(a, labels, 0.0) is None
    assert a.random() == b.random()
    assert _crop_centre(rng, np.zeros((8, 8), np.int32), 1.0) is None  # no object: uniform


def test_frames_of_different_sizes_in_one_window_are_named(tmp_path: Path) -> None:
    from cellbench.datasets.base import ConvertedWriter

    writer = ConvertedWriter(tmp_path / "conv")
    for k, shape in enumerate([(20, 20), (24, 20)]):
        writer.add(
            f"t{k}", np.zeros(shape, np.uint8), np.zeros(shape, np.uint16), sequence="01", frame=k
        )
    writer.finish()
    with pytest.raises(ValueError, match=r"t0.tif: shape \(20, 20\) differs from frame t1"):
        load_window_inputs(tmp_path / "conv", ["t1"], 1, 2)


def test_train_labels_train_and_fill_in_validation(tmp_path: Path) -> None:
    """Silver truth (train_labels/) trains; val uses it only where there is no gold truth."""
    from cellbench.datasets.base import ConvertedWriter
    from cellbench.train import load_split

    writer = ConvertedWriter(tmp_path / "conv")
    gold = np.zeros((20, 20), np.uint16)
    gold[2:6, 2:6] = 1  # partial: one cell of two
    silver = gold.copy()
    silver[10:15, 10:15] = 2
    image = np.zeros((20, 20), np.uint8)
    for k, has_gold in enumerate([True, False, True, False]):
        writer.add(
            f"t{k}",
            image,
            gold if has_gold else None,
            annotation="partial" if has_gold else "none",
            sequence="01",
            frame=k,
            train_labels=silver,
        )
    writer.finish()
    split = pd.DataFrame(
        {"id": ["t0", "t1", "t2", "t3"], "split": ["train", "train", "val", "val"]}
    )
    train = load_split(tmp_path / "conv", split, "train", 1, frames=1)
    assert [s.id for s in train] == ["t0", "t1"]
    assert all(s.labels.max() == 2 and s.annotation == "full" for s in train)
    val = {
        s.id: s for s in load_split(tmp_path / "conv", split, "val", 1, frames=1, full_only=False)
    }
    assert val["t2"].labels.max() == 1 and val["t2"].annotation == "partial"  # gold kept
    assert val["t3"].labels.max() == 2 and val["t3"].annotation == "full"  # silver fills in
