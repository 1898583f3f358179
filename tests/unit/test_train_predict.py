"""Training loop, augmentation, tuning and inference on tiny synthetic data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cellbench.config import ModelConfig
from cellbench.datasets.base import ConvertedWriter
from cellbench.datasets.options import SyntheticOptions
from cellbench.inference import pad_to_multiple, predict_maps
from cellbench.modelfolder import load_model
from cellbench.models import get_family
from cellbench.predict import postprocess_dir, predict_dir
from cellbench.synthetic import generate_image
from cellbench.train import random_dihedral, train_model
from tiny_networks import TINY_NETWORK, write_tiny_dataset

TINY_UNET = {
    **TINY_NETWORK,
    "seed_threshold": [0.5, 0.7],
    "mask_threshold": [0.5],
}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    splits = ("train", "train", "train", "val", "test", "test")
    write_tiny_dataset(root / "converted", root / "split.csv", splits=splits)
    return root / "converted", root / "split.csv"


def test_dihedral_rotates_vector_fields_consistently() -> None:
    # a radial field pointing away from the centre stays radial under every symmetry
    yy, xx = np.mgrid[-5:6, -5:6].astype(np.float32)
    target = np.stack([yy, xx, np.hypot(yy, xx)])
    image = np.hypot(yy, xx)[None]
    rng = np.random.default_rng(0)
    for _ in range(16):
        img, tgt = random_dihedral(rng, image, target, ((0, 1),))
        np.testing.assert_allclose(tgt[0], yy)
        np.testing.assert_allclose(tgt[1], xx)
        np.testing.assert_allclose(img[0], tgt[2])
    # an asymmetric image + class target move together
    img = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    out_img, out_tgt = random_dihedral(np.random.default_rng(3), img, img.copy())
    np.testing.assert_array_equal(out_img, out_tgt)


def test_pad_to_multiple() -> None:
    x, (h, w) = pad_to_multiple(np.zeros((1, 33, 64), np.float32), 32)
    assert x.shape == (1, 64, 64) and (h, w) == (33, 64)


def test_tiled_prediction_matches_whole_image_closely() -> None:
    import torch

    torch.manual_seed(0)
    family = get_family(ModelConfig("u", "unet", dict(TINY_UNET)))
    net = family.build_network().eval()
    image = np.random.default_rng(0).random((1, 150, 170)).astype(np.float32)
    whole = predict_maps(family, net, image, "cpu", tile_size=1024, tta=False)
    tiled = predict_maps(family, net, image, "cpu", tile_size=96, overlap=32, tta=False)
    assert whole.shape == tiled.shape == (3, 150, 170)
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)  # still probabilities
    assert np.abs(whole - tiled).mean() < 0.1


def test_train_predict_postprocess_round_trip(tiny_dataset, tmp_path: Path) -> None:
    converted, split = tiny_dataset
    cfg = ModelConfig("unet", "unet", dict(TINY_UNET))
    out = tmp_path / "model"
    config = train_model(cfg, "tiny", converted, split, out, seed=3, device="cpu", progress=False)
    assert config["epochs_run"] == 2 and config["n_train_images"] == 3
    # every option of the family, defaults filled in (StarDist-style self-describing folder)
    assert config["options"] == get_family(cfg).options.resolved()
    assert config["options"]["learning_rate"] == 0.003  # a default the entry did not set
    assert {p.name for p in out.iterdir()} == {
        "weights.pt",
        "config.json",
        "thresholds.json",
        "history.csv",
    }
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_mean_ap",
        "lr",
        "seconds",
    ]
    assert history["val_loss"].notna().all()
    # same seed -> same weights (one seed drives init, crops and augmentation)
    again = tmp_path / "again"
    train_model(cfg, "tiny", converted, split, again, seed=3, device="cpu", progress=False)
    import torch

    w1 = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    w2 = torch.load(again / "weights.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)

    model = load_model(out, "cpu")
    assert set(model.thresholds.resolved()) == {"seed_threshold", "mask_threshold", "split_h"}
    assert predict_dir(out, converted, split, tmp_path / "pred", device="cpu") == 2
    assert postprocess_dir(out, tmp_path / "pred", tmp_path / "masks") == 2
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.tif")) == ["img4.tif", "img5.tif"]


def test_classical_tunes_on_val_and_segments(tiny_dataset, tmp_path: Path) -> None:
    from cellbench.io import read_json, read_labels
    from cellbench.metrics import score_image

    converted, split = tiny_dataset
    cfg = ModelConfig(
        "classical", "classical", {"threshold_scale": [1.0, 0.8], "min_distance": [4]}
    )
    train_model(cfg, "tiny", converted, split, tmp_path / "m", seed=0, device="cpu", progress=False)
    tuned = read_json(tmp_path / "m/thresholds.json")
    assert len(tuned["grid"]) == 2 and tuned["n_val_images"] == 1
    assert not (tmp_path / "m/weights.pt").exists()
    predict_dir(tmp_path / "m", converted, split, tmp_path / "p", device="cpu")
    postprocess_dir(tmp_path / "m", tmp_path / "p", tmp_path / "k")
    score = score_image(
        read_labels(converted / "labels/img4.tif"), read_labels(tmp_path / "k/img4.tif")
    )
    assert score.matching(0.5).ap > 0.5


def test_missing_training_images_error(tiny_dataset, tmp_path: Path) -> None:
    converted, split = tiny_dataset
    empty = tmp_path / "split.csv"
    pd.read_csv(split).assign(split="test").to_csv(empty, index=False)
    with pytest.raises(ValueError, match=r"no annotated training images.*use_official_test"):
        train_model(
            ModelConfig("unet", "unet", dict(TINY_UNET)),
            "tiny",
            converted,
            empty,
            tmp_path / "m",
            seed=0,
            device="cpu",
            progress=False,
        )


def test_segment_new_images_with_model_folder(tiny_dataset, tmp_path: Path) -> None:
    from cellbench.cli import main
    from cellbench.io import read_labels

    converted, split = tiny_dataset
    cfg = ModelConfig("classical", "classical", {"threshold_scale": [1.0], "min_distance": [4]})
    train_model(cfg, "tiny", converted, split, tmp_path / "m", seed=0, device="cpu", progress=False)
    image = converted / "images" / "img4.tif"
    code = main(
        ["segment", "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "out"), str(image)]
    )
    assert code == 0
    labels = read_labels(tmp_path / "out" / "img4_masks.tif")
    assert labels.shape == (80, 96) and labels.max() >= 2


def test_tune_thresholds_partial_uses_seg_and_survives_nan() -> None:
    from cellbench.train import tune_thresholds

    options = {"threshold_scale": [1.0, 0.5], "min_distance": [4]}
    family = get_family(ModelConfig("c", "classical", options))
    _, truth = generate_image(
        0, "fluorescent", SyntheticOptions(height=128, width=128, n_cells=(8, 8))
    )
    maps = [family.image_to_maps(((truth > 0) * 1.0)[None].astype(np.float32))]
    tuned = tune_thresholds(family, maps, [truth], metric="seg")
    assert tuned["metric"] == "seg" and len(tuned["grid"]) == 2
    assert tuned["val_score"] > 0.5
    empty = tune_thresholds(family, [], [])
    assert empty["selected"] == family.threshold_grid()[0].resolved()


def test_size_normalised_training_selects_on_val_ap_and_predicts_at_scale(
    tiny_dataset, tmp_path: Path
) -> None:
    from cellbench.io import read_json

    converted, split = tiny_dataset
    options = {**TINY_UNET, "diameter": 30.0, "select_by": "val_mean_ap", "select_every": 1}
    cfg = ModelConfig("unet", "unet", options)
    out = tmp_path / "model"
    config = train_model(cfg, "tiny", converted, split, out, seed=3, device="cpu", progress=False)
    assert config["options"]["diameter"] == 30.0 and config["options"]["select_by"] == "val_mean_ap"
    assert config["train_diameters"]["median"] > 0
    # the size model is fitted with the network, written to the folder and used at inference
    assert (
        config["size_model"]["file"] == "size_model.json" and config["size_model"]["n_images"] >= 2
    )
    assert (out / "size_model.json").is_file()
    history = pd.read_csv(out / "history.csv")
    assert history["val_mean_ap"].notna().all()  # scored every epoch (select_every 1)
    assert predict_dir(out, converted, split, tmp_path / "pred", device="cpu") == 2
    scales = pd.read_csv(tmp_path / "pred" / "diameters.csv", dtype={"id": str})
    assert list(scales["id"]) == ["img4", "img5"] and (scales["factor"] > 0).all()
    assert not scales["given"].any() and scales["regressed_diameter"].notna().all()
    predict_dir(out, converted, split, tmp_path / "given", device="cpu", image_diameter=15.0)
    given = pd.read_csv(tmp_path / "given" / "diameters.csv")
    assert given["given"].all() and given["factor"].tolist() == [2.0, 2.0]
    for p in (tmp_path / "given").glob("*.tif"):
        import tifffile

        assert tifffile.imread(p).shape[1:] == (80, 96)  # back on the original grid
    postprocess_dir(out, tmp_path / "pred", tmp_path / "masks")
    assert (tmp_path / "masks" / "diameters.csv").is_file()
    assert read_json(out / "thresholds.json")["selected"]


def test_scale_jitter_keeps_classes_and_gamma_keeps_range() -> None:
    from cellbench.train import Sample, _scaled_crop, random_gamma

    family = get_family(ModelConfig("u", "unet", dict(TINY_UNET)))
    _, labels = generate_image(0, "fluorescent", SyntheticOptions(height=96, width=96))
    image = np.random.default_rng(1).random((1, 96, 96)).astype(np.float32)
    sample = Sample("a", image, labels, target=family.make_target(labels))
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(20):
        x, y = _scaled_crop(rng, sample, family, 64, 0.5)
        assert x.shape == (1, 64, 64) and y.shape == (1, 64, 64)
        assert set(np.unique(y)) <= {0.0, 1.0, 2.0}  # class indices never blended
    for _ in range(20):
        sizes.add(round(64 / float(np.exp(rng.uniform(-np.log1p(0.5), np.log1p(0.5))))))
    assert min(sizes) < 50 and max(sizes) > 80  # the jitter really varies the scale
    out = random_gamma(np.random.default_rng(0), image, 0.5)
    assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6
    assert np.array_equal(np.argsort(out.ravel()), np.argsort(image.ravel()))  # monotonic
    assert not np.allclose(out, image)


def _train_twice(cfg: ModelConfig, dataset, folder: Path, seed: int) -> tuple[dict, dict]:
    """Train ``cfg`` twice with one seed into ``folder/a`` and ``folder/b``; both weights."""
    import torch

    converted, split = dataset
    for name in ("a", "b"):
        train_model(
            cfg, "t", converted, split, folder / name, seed=seed, device="cpu", progress=False
        )
    return tuple(
        torch.load(folder / name / "weights.pt", weights_only=True)["state_dict"]
        for name in ("a", "b")
    )


def test_training_with_jitter_is_deterministic(tiny_dataset, tmp_path: Path) -> None:
    import torch

    cfg = ModelConfig("unet", "unet", {**TINY_UNET, "scale_jitter": 0.3, "gamma_jitter": 0.2})
    w1, w2 = _train_twice(cfg, tiny_dataset, tmp_path, seed=5)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_in_channels_auto_follows_the_data(tiny_dataset, tmp_path: Path) -> None:
    from cellbench.train import resolve_channels

    converted, _ = tiny_dataset
    family = get_family(ModelConfig("u", "unet", {**TINY_UNET, "in_channels": "auto"}))
    with pytest.raises(ValueError, match="in_channels 'auto' is resolved"):
        family.in_channels  # noqa: B018
    assert resolve_channels(family, converted).in_channels == 1  # grey data
    writer = ConvertedWriter(tmp_path / "colour")
    image, labels = generate_image(0, "fluorescent", SyntheticOptions(height=64, width=64))
    rgba = np.stack([image, image // 2, image // 3, np.full_like(image, 255)], axis=-1)
    writer.add("c0", rgba, labels)
    writer.finish()
    resolved = resolve_channels(family, tmp_path / "colour")
    assert resolved.in_channels == 3 and resolved.options.resolved()["in_channels"] == 3
    assert resolved.build_network()(__import__("torch").zeros(1, 3, 64, 64)).shape[1] == 3


def test_sampling_weights_balance_cell_types() -> None:
    from cellbench.train import Sample, sampling_weights

    def sample(i: int, kind: str, side: int) -> Sample:
        return Sample(
            f"s{i}", np.zeros((1, side, side), np.float32), np.zeros((side, side)), stratum=kind
        )

    # 8 fluorescent images of 100 x 100, 2 stained of 50 x 50 (area 16x smaller in all)
    samples = [sample(i, "fluorescence", 100) for i in range(8)]
    samples += [sample(8 + i, "stained", 50) for i in range(2)]
    by_area = sampling_weights(samples, 0.0)
    assert by_area.sum() == pytest.approx(1.0)
    assert by_area[:8].sum() == pytest.approx(80000 / 85000)  # every pixel equally often
    even = sampling_weights(samples, 1.0)
    assert even[:8].sum() == pytest.approx(0.5) and even[8:].sum() == pytest.approx(0.5)
    sqrt = sampling_weights(samples, 0.5)
    assert sqrt[8:].sum() == pytest.approx(np.sqrt(5000) / (np.sqrt(5000) + np.sqrt(80000)))
    # within a type images are drawn by area
    mixed = [sample(0, "a", 100), sample(1, "a", 50), sample(2, "b", 10)]
    w = sampling_weights(mixed, 1.0)
    assert w[0] / w[1] == pytest.approx(4.0) and w[2] == pytest.approx(0.5)


def test_prefetched_batches_keep_order_and_raise_errors() -> None:
    from cellbench.train import _prefetched

    assert list(_prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise RuntimeError("bad crop")

    got = []
    with pytest.raises(RuntimeError, match="bad crop"):
        for item in _prefetched(failing()):
            got.append(item)
    assert got == [1]
    # a consumer that stops early ends the thread (no hang)
    for item in _prefetched(iter(range(1000)), depth=1):
        if item == 3:
            break


@pytest.mark.parametrize(
    "speed", [{"channels_last": True}, {"precision": "bf16"}, {"balance_cell_types": 0.5}]
)
def test_training_speed_options_train_and_stay_deterministic(
    tiny_dataset, tmp_path: Path, speed: dict
) -> None:
    import json

    import torch

    cfg = ModelConfig("unet", "unet", {**TINY_UNET, **speed})
    w1, w2 = _train_twice(cfg, tiny_dataset, tmp_path, seed=3)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert all(torch.isfinite(v).all() for v in w1.values() if v.is_floating_point())
    options = json.loads((tmp_path / "a/config.json").read_text())["options"]
    assert all(options[k] == v for k, v in speed.items())
    history = pd.read_csv(tmp_path / "a/history.csv")
    assert np.isfinite(history["train_loss"]).all()


def test_bf16_training_loss_is_computed_in_fp32() -> None:
    import torch

    family = get_family(ModelConfig("unet", "unet", {**TINY_UNET, "precision": "bf16"}))
    net = family.build_network()
    target = torch.from_numpy(family.make_target(np.pad(np.ones((8, 8), np.int32), 28))[None])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = family.training_loss(net, torch.rand(1, 1, 64, 64), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
