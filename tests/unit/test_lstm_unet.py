"""``lstm_unet``: ConvLSTM cell, network, closing / area opening, tiled inference, round trip."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cellbench.config import ModelConfig
from cellbench.datasets.options import SyntheticOptions
from cellbench.inference import predict_maps
from cellbench.models import get_family
from cellbench.models.lstm_unet import ConvLSTMCell, ConvLSTMUNet, LSTMUNet
from cellbench.postprocess.watershed import close_and_open, seeded_watershed
from cellbench.synthetic import generate_image
from cellbench.transforms import to_model_input
from skimage.segmentation import relabel_sequential

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_LSTM = {
    "encoder_channels": [8, 16, 32],
    "frames": 3,
    "epochs": 2,
    "batch_size": 2,
    "patch_size": 64,
    "samples_per_epoch": 4,
}


def moving_sequence(
    n_frames: int, height: int, width: int, *, step: int = 3, seed: int = 0, cells=(6, 10)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames ``(image uint16, labels int32)`` of cells drifting ``step`` px left per frame.

    One synthetic image wider than a frame, seen through a window that moves right.
    """
    spec = SyntheticOptions(
        height=height, width=width + step * (n_frames - 1), n_cells=cells, radius=(7, 12)
    )
    image, labels = generate_image(seed, "fluorescent", spec)
    out = []
    for k in range(n_frames):
        cols = slice(k * step, k * step + width)
        out.append((image[:, cols], relabel_sequential(labels[:, cols])[0].astype(np.int32)))
    return out


def window(frames: list[np.ndarray], last: int, t: int) -> np.ndarray:
    """Network input ``(t * C, H, W)`` of the window ending at frame ``last``, oldest first."""
    return np.concatenate(frames[last - t + 1 : last + 1], axis=0)


# -- ConvLSTM cell ----------------------------------------------------------------------


def test_convlstm_cell_state_shapes_and_zero_start() -> None:
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 5)
    x = torch.randn(3, 2, 16, 24)
    h, c = cell(x)
    assert h.shape == c.shape == (3, 5, 16, 24)
    zeros = torch.zeros(3, 5, 16, 24)
    h0, c0 = cell(x, (zeros, zeros))
    assert torch.equal(h, h0) and torch.equal(c, c0)  # no state = zero state
    h2, c2 = cell(x, (h, c))
    assert h2.shape == c2.shape == (3, 5, 16, 24) and not torch.equal(h2, h)
    assert cell.run(torch.randn(3, 4, 2, 16, 24)).shape == (3, 4, 5, 16, 24)
    # forget-gate bias starts at 1 (gate order i, f, o, g)
    assert torch.equal(cell.conv.bias[5:10], torch.ones(5))
    assert torch.equal(cell.conv.bias[:5], torch.zeros(5))
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(1, 4, kernel_size=2)


def test_convlstm_hidden_state_remembers_earlier_steps() -> None:
    torch.manual_seed(0)
    cell = ConvLSTMCell(1, 4)
    steps = torch.randn(2, 3, 1, 12, 12)
    changed = steps.clone()
    changed[:, 0] += 1.0  # only the first step differs
    with torch.no_grad():
        last, last_changed = cell.run(steps)[:, -1], cell.run(changed)[:, -1]
    assert (last - last_changed).abs().max() > 1e-4
    # the network's last-frame logits depend on the first frame too
    net = ConvLSTMUNet(1, 3, (8, 16, 32), seed=0).eval()
    x = torch.randn(1, 3, 32, 32)
    x_changed = x.clone()
    x_changed[:, 0] += 1.0
    with torch.no_grad():
        assert (net(x) - net(x_changed)).abs().max() > 1e-5


# -- network -----------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "channels"), [(1, 1), (3, 1), (2, 2)])
def test_network_output_shape_for_frame_windows(batch: int, channels: int) -> None:
    family = get_family(ModelConfig("l", "lstm_unet", {**TINY_LSTM, "in_channels": channels}))
    assert isinstance(family, LSTMUNet) and family.frames == 3
    torch.manual_seed(0)
    net = family.build_network().eval()
    assert net.cells[0].in_channels == channels and net.frames == 3
    x = torch.randn(batch, 3 * channels, 64, 96)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (batch, 3, 64, 96) and out.dtype == torch.float32
    with torch.no_grad():  # any multiple of 2 ** (levels - 1) = 4
        assert net(torch.randn(1, 3 * channels, 36, 44)).shape == (1, 3, 36, 44)
    with pytest.raises(ValueError, match="input channels"):
        net(torch.randn(1, 3 * channels + 1, 64, 64))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 3 * channels, 62, 64))


def test_network_initialisation_is_seeded() -> None:
    a = ConvLSTMUNet(1, 3, (8, 16, 32), seed=7).state_dict()
    b = ConvLSTMUNet(1, 3, (8, 16, 32), seed=7).state_dict()
    c = ConvLSTMUNet(1, 3, (8, 16, 32), seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    family = get_family(ModelConfig("l", "lstm_unet", dict(TINY_LSTM)))
    torch.manual_seed(3)
    d = family.build_network().state_dict()
    torch.manual_seed(3)
    e = family.build_network().state_dict()
    assert all(torch.equal(d[k], e[k]) for k in d)


def test_loss_decreases_on_a_tiny_batch() -> None:
    family = get_family(ModelConfig("l", "lstm_unet", dict(TINY_LSTM)))
    seq = moving_sequence(4, 64, 64)
    frames = [to_model_input(img) for img, _ in seq]
    x = torch.from_numpy(np.stack([window(frames, 2, 3), window(frames, 3, 3)]))
    y = torch.from_numpy(np.stack([family.make_target(seq[k][1]) for k in (2, 3)]))
    torch.manual_seed(0)
    net = family.build_network().train()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(8):
        loss = family.training_loss(net, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses


# -- closing / area opening --------------------------------------------------------------


def test_closing_fills_a_slit_and_area_opening_drops_a_speck() -> None:
    lab = np.zeros((40, 40), np.int32)
    lab[5:20, 5:20] = 7
    lab[5:12, 12] = 0  # a 1-px slit cut into the instance from its top edge
    lab[30:33, 30:33] = 9  # a second, separate instance of 9 px
    lab[25, 5] = 7  # a 1-px piece of instance 7, detached from its body
    out = close_and_open(lab, closing_radius=2, area_opening=5)
    assert out.dtype == np.int32
    assert set(np.unique(out)) == {0, 1, 2}  # renumbered 1..N
    body = out[10, 8]
    # slit closed (its mouth on the outline stays: a disk outside the object still covers it)
    assert (out[6:12, 12] == body).all()
    assert out[25, 5] == 0  # detached speck removed
    assert (out[30:33, 30:33] > 0).all() and out[31, 31] != body
    # the closing only adds pixels: everything labelled before keeps its instance
    kept = (lab > 0) & (out > 0)
    assert len(set(zip(lab[kept], out[kept], strict=True))) == 2
    # area opening removes a whole instance smaller than the limit, too
    assert close_and_open(lab, closing_radius=0, area_opening=10).max() == 1
    # both off: only renumbered
    np.testing.assert_array_equal(
        close_and_open(lab, closing_radius=0, area_opening=0), relabel_sequential(lab)[0]
    )


def test_closing_never_merges_or_grows_into_touching_instances() -> None:
    lab = np.zeros((40, 40), np.int32)
    lab[5:25, 5:25] = 3  # a C-shape open to the right ...
    lab[10:20, 15:25] = 0
    lab[11:19, 16:25] = 4  # ... holding a second instance, 1 px of background around it
    lab[26:36, 5:15] = 5  # a square touching the C from below
    lab[26:36, 15:25] = 6  # and another square touching that one
    out = close_and_open(lab, closing_radius=4, area_opening=4)
    assert out.max() == 4
    for old in (3, 4, 5, 6):  # each instance keeps all its pixels under one new id ...
        ids = np.unique(out[lab == old])
        assert ids.size == 1 and ids[0] > 0
    pairs = {int(lab[out == new][lab[out == new] > 0][0]) for new in range(1, 5)}
    assert pairs == {3, 4, 5, 6}  # ... and no id holds pixels of two old instances
    grown = (out > 0) & (lab == 0)
    assert grown.any()  # the C's inner corners were closed, from background only
    np.testing.assert_array_equal(out[lab > 0] > 0, True)


def test_unet_postprocess_unchanged_without_closing_and_applies_it_when_set() -> None:
    rng = np.random.default_rng(0)
    _, truth = generate_image(1, "fluorescent", SyntheticOptions(height=96, width=96))
    from cellbench.models.unet import labels_to_classes

    classes = labels_to_classes(truth, 2)
    onehot = np.stack([classes == k for k in range(3)]).astype(np.float32)
    maps = np.clip(onehot + rng.normal(0, 0.15, onehot.shape), 0, None).astype(np.float32)
    maps /= maps.sum(axis=0, keepdims=True)
    plain = get_family(ModelConfig("u", "unet", {}))
    setting = plain.threshold_grid()[0]
    expected = seeded_watershed(
        maps[1],
        1.0 - maps[0],
        seed_threshold=setting.seed_threshold,
        mask_threshold=setting.mask_threshold,
        min_size=plain.options.min_size,
        split_h=setting.split_h,
    )
    got = plain.postprocess(maps, setting)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    closed = get_family(ModelConfig("u", "unet", {"closing_radius": 2, "area_opening": 30}))
    np.testing.assert_array_equal(
        closed.postprocess(maps, setting),
        close_and_open(expected, closing_radius=2, area_opening=30),
    )
    lstm = get_family(ModelConfig("l", "lstm_unet", {"closing_radius": 2, "area_opening": 30}))
    np.testing.assert_array_equal(
        lstm.postprocess(maps, setting), closed.postprocess(maps, setting)
    )


# -- tiled vs whole-frame inference ------------------------------------------------------


def _best_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For every instance of ``a``, the IoU with the instance of ``b`` that covers it most."""
    out = []
    for i in range(1, int(a.max()) + 1):
        mine = a == i
        j = int(np.bincount(b[mine]).argmax())
        theirs = b == j
        out.append(0.0 if j == 0 else (mine & theirs).sum() / (mine | theirs).sum())
    return np.array(out)


@pytest.fixture(scope="module")
def trained_tiny() -> tuple[LSTMUNet, object, list[np.ndarray], list[np.ndarray]]:
    """A tiny lstm_unet trained for a few seconds on a drifting 160 x 400 px sequence."""
    family = get_family(ModelConfig("l", "lstm_unet", dict(TINY_LSTM)))
    seq = moving_sequence(10, 160, 400, seed=5, cells=(40, 55))
    frames = [to_model_input(img) for img, _ in seq]
    labels = [lab for _, lab in seq]
    targets = [family.make_target(lab) for lab in labels]
    torch.manual_seed(0)
    net = family.build_network()
    opt = torch.optim.AdamW(net.parameters(), lr=0.005)
    rng = np.random.default_rng(0)
    net.train()
    for _ in range(80):
        xs, ys = [], []
        for _ in range(4):
            k = int(rng.integers(2, len(frames) - 1))  # the last frame is never trained on
            y0, x0 = int(rng.integers(0, 160 - 64 + 1)), int(rng.integers(0, 400 - 64 + 1))
            xs.append(window(frames, k, 3)[:, y0 : y0 + 64, x0 : x0 + 64])
            ys.append(targets[k][:, y0 : y0 + 64, x0 : x0 + 64])
        loss = family.training_loss(
            net, torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return family, net.eval(), frames, labels


def test_tiled_inference_leaves_no_seams(trained_tiny) -> None:
    """Tiles of 160 px, overlap 64 (the default), on a 160 x 400 frame (2.5 tiles wide).

    The frame is as high as one tile, so the tiles differ from the whole frame only at
    their left / right borders (a frame lower than a tile would be edge-padded to a
    full tile by the tiled path, which changes the predictions near its bottom border).
    The tile columns start at 0, 96, 192, 256, so tile borders cross the frame at
    x = 96, 160, 192, 256, 352.

    Tiles are cut at the middle of their overlap (inference.py), 32 px inside each
    tile, beyond the reach of a tile border for this network: the maps agree to float
    rounding and the labels are the same instances (ids may be numbered in another
    order). Measured: map difference 3e-7 at overlap 64 (1e-2 at 32).
    """
    family, net, frames, labels = trained_tiny
    x = window(frames, len(frames) - 1, 3)
    assert x.shape == (3, 160, 400)
    setting = family.threshold_grid()[0]
    whole = predict_maps(family, net, x, "cpu", tile_size=1024, tta=False)
    tiled = predict_maps(family, net, x, "cpu", tile_size=160, overlap=64, tta=False)
    assert whole.shape == tiled.shape == (3, 160, 400)
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)
    gap = np.abs(whole - tiled).max()
    assert gap < 1e-4
    by_whole, by_tiles = family.postprocess(whole, setting), family.postprocess(tiled, setting)
    # the network learned something: instances, several of them crossing a tile border
    assert by_whole.max() >= 20
    borders = [96, 160, 192, 256, 352]
    crossing = {
        int(i)
        for b in borders
        for i in np.intersect1d(by_whole[:, b - 3], by_whole[:, b + 2])
        if i > 0
    }
    assert len(crossing) >= 5
    # the same instances: equal counts, every one matched with IoU 1 both ways
    assert by_tiles.max() == by_whole.max()
    assert _best_iou(by_whole, by_tiles).min() == 1.0
    assert _best_iou(by_tiles, by_whole).min() == 1.0
    assert ((by_whole > 0) == (by_tiles > 0)).all()
    # control: tiles that do not overlap (the hard seam at x = 160) differ far more
    seamed = predict_maps(family, net, x, "cpu", tile_size=160, overlap=0, tta=False)
    assert np.abs(whole - seamed).max() > 3 * gap


# -- round trip ----------------------------------------------------------------------------


def test_train_predict_postprocess_round_trip_on_a_time_lapse(tmp_path: Path) -> None:
    import tifffile
    from cellbench.datasets.base import ConvertedWriter
    from cellbench.io import read_labels
    from cellbench.predict import postprocess_dir, predict_dir
    from cellbench.train import train_model

    converted, split_csv = tmp_path / "converted", tmp_path / "split.csv"
    writer = ConvertedWriter(converted)
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    rows = []
    for k, ((image, labels), split) in enumerate(
        zip(moving_sequence(8, 80, 96), splits, strict=True)
    ):
        writer.add(f"t{k:02d}", image, labels, cell_type="nuc", sequence="01", frame=k)
        rows.append({"id": f"t{k:02d}", "split": split, "group": "01", "cell_type": "nuc"})
    writer.finish()
    pd.DataFrame(rows).to_csv(split_csv, index=False)

    cfg = ModelConfig("lstm", "lstm_unet", dict(TINY_LSTM))
    out = tmp_path / "model"
    config = train_model(
        cfg, "seq", converted, split_csv, out, seed=1, device="cpu", progress=False
    )
    assert config["epochs_run"] == 2 and config["n_train_images"] == 4
    assert config["options"]["frames"] == 3
    assert list(config["options"]["encoder_channels"]) == [8, 16, 32]
    assert predict_dir(out, converted, split_csv, tmp_path / "pred", device="cpu") == 2
    for k in (6, 7):
        maps = tifffile.imread(tmp_path / "pred" / f"t{k:02d}.tif")
        assert maps.shape == (3, 80, 96) and maps.dtype == np.float32
        np.testing.assert_allclose(maps.sum(axis=0), 1.0, atol=1e-4)
    assert postprocess_dir(out, tmp_path / "pred", tmp_path / "masks") == 2
    for k in (6, 7):
        masks = read_labels(tmp_path / "masks" / f"t{k:02d}.tif")
        assert masks.shape == (80, 96)
