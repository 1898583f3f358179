"""The ``embedding`` family: losses, maps, both clusterings, and a tiny training round trip."""

from pathlib import Path

import numpy as np
import pytest
import torch
from cellbench.config import ModelConfig
from cellbench.metrics import score_image
from cellbench.models import get_family
from cellbench.models.embedding import (
    contrastive_loss,
    discriminative_loss,
    sample_pixels,
)
from cellbench.postprocess.clustering import (
    agglomerative_labels,
    erode_labels,
    fast_labels,
    normalize_embedding,
)
from scipy import ndimage as ndi
from tiny_networks import TINY_NETWORK, write_tiny_dataset

# many small torch ops: on a busy shared CPU, OpenMP threads waiting for each other
# make them many times slower than one thread (see conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIM = 6
LOSSES = {
    "uniform": {"loss": "contrastive", "sampling": "uniform", "sample_pixels": 256},
    "windowed": {"loss": "contrastive", "sampling": "windowed", "window_size": 24},
    "discriminative": {"loss": "discriminative"},
}


def family(**options):
    return get_family(ModelConfig("emb", "embedding", {"embedding_dim": DIM, **options}))


# --------------------------------------------------------------------------- helpers


def touching_cells(rng: np.random.Generator, size: int = 96, n: int = 14, spacing: float = 18.0):
    """Voronoi cells around random points at least ``spacing`` apart, clipped to discs."""
    points: list[np.ndarray] = []
    while len(points) < n:
        p = rng.uniform(4, size - 4, 2)
        if all(np.hypot(*(p - q)) > spacing for q in points):
            points.append(p)
    seeds = np.zeros((size, size), np.int32)
    for i, (y, x) in enumerate(np.asarray(points, int), start=1):
        seeds[y, x] = i
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    labels[dist > 0.75 * spacing] = 0
    return labels


def ideal_maps(labels: np.ndarray, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """Maps a perfect network would give, plus noise: ``(1 + DIM, H, W)``.

    Each instance points along one axis (a colour of its neighbourhood graph, so
    neighbours, including cells a few px apart, differ) plus a small per-instance
    offset; every pixel gets Gaussian noise. Foreground probability 0.9 / 0.1 + noise.
    """
    from skimage.segmentation import expand_labels

    n = int(labels.max())
    near = expand_labels(labels, 3)
    neighbours: dict[int, set[int]] = {i: set() for i in range(1, n + 1)}
    for a, b in ((near[:-1], near[1:]), (near[:, :-1], near[:, 1:])):
        touch = (a != b) & (a > 0) & (b > 0)
        for i, j in zip(a[touch].tolist(), b[touch].tolist(), strict=True):
            neighbours[i].add(j)
            neighbours[j].add(i)
    colour = np.zeros(n + 1, int)
    for i in range(1, n + 1):
        colour[i] = min(set(range(DIM)) - {colour[j] for j in neighbours[i] if j < i})
    vectors = np.eye(DIM, dtype=np.float32)[colour] + rng.normal(0, 0.15, (n + 1, DIM))
    embedding = vectors[labels].transpose(2, 0, 1) + rng.normal(0, noise, (DIM, *labels.shape))
    fg = np.clip(0.1 + 0.8 * (labels > 0) + rng.normal(0, 0.1, labels.shape), 0, 1)
    return np.concatenate([fg[None], embedding]).astype(np.float32)


def square_ids(batch: int = 2, size: int = 48) -> torch.Tensor:
    """``(B, 1, size, size)`` instance ids: a row of touching squares (+ one more in crop 0)."""
    ids = torch.zeros(batch, 1, size, size)
    for k in range(3):
        ids[:, 0, 4:20, 4 + 13 * k : 17 + 13 * k] = k + 1
    ids[0, 0, 26:44, 10:30] = 9
    return ids


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_decreases_on_a_tiny_batch(name: str) -> None:
    fam = family(**LOSSES[name])
    torch.manual_seed(0)
    target = square_ids()
    logits = torch.randn(2, 1 + DIM, 48, 48, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)

    def evaluate() -> float:
        with torch.no_grad():
            return float(fam.loss(logits, target, generator=torch.Generator().manual_seed(1)))

    before = evaluate()
    for _ in range(30):
        opt.zero_grad()
        loss = fam.loss(logits, target)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < 0.5 * before, (before, after)
    # the instances are apart: pixel pairs within a square closer than across two squares
    emb = torch.nn.functional.normalize(logits[0, 1:].detach(), dim=0)
    one, two = emb[:, 4:20, 4:17].flatten(1), emb[:, 4:20, 17:30].flatten(1)
    within, across = float((one.T @ one).mean()), float((one.T @ two).mean())
    assert within > across + 0.3, (within, across)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("instances", [0, 1])
def test_loss_finite_with_fewer_than_two_instances(name: str, instances: int) -> None:
    fam = family(**LOSSES[name])
    target = torch.zeros(2, 1, 32, 32)
    if instances:
        target[:, 0, 5:20, 5:20] = 3
    logits = torch.randn(2, 1 + DIM, 32, 32, requires_grad=True)
    loss = fam.loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # no foreground term and no pair: still a differentiable zero, not NaN
    fam0 = family(**LOSSES[name], foreground_weight=0.0)
    empty = fam0.loss(logits, torch.zeros(2, 1, 32, 32))
    empty.backward()
    assert float(empty.detach()) == 0.0


def test_one_instance_gives_only_the_pull_term() -> None:
    ids = torch.zeros(1, 32, 32, dtype=torch.long)
    ids[0, 4:28, 4:28] = 5
    same = torch.zeros(1, DIM, 32, 32)
    same[:, 0] = 1.0  # every pixel the same direction: nothing to pull, nothing to push
    assert float(discriminative_loss(same, ids, margin=0.5, pull_margin=0.1)) == 0.0
    for sampling in ("uniform", "windowed"):
        loss = contrastive_loss(
            same, ids, sampling=sampling, n_pixels=64, window_size=16, margin=0.5
        )
        assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_sampling_picks_object_pixels_and_windows_on_objects() -> None:
    ids = torch.zeros(3, 40, 50, dtype=torch.long)
    ids[0, 30:38, 40:48] = 1  # one small object in a corner
    ids[1, 5:35, 5:45] = 2  # a large one
    generator = torch.Generator().manual_seed(0)
    uniform = sample_pixels(
        ids, sampling="uniform", n_pixels=32, window_size=8, generator=generator
    )
    assert uniform.shape == (3, 32)
    assert (ids[1].flatten()[uniform[1]] > 0).all()  # enough objects: objects only
    assert int((ids[0].flatten()[uniform[0]] > 0).sum()) == 32  # 64 object px, 32 drawn
    window = sample_pixels(
        ids, sampling="windowed", n_pixels=32, window_size=8, generator=generator
    )
    assert window.shape == (3, 64)
    assert (ids[0].flatten()[window[0]] > 0).any()  # the window found the corner object
    rows, cols = window[0] // 50, window[0] % 50
    assert int(rows.max() - rows.min()) == 7 and int(cols.max() - cols.min()) == 7
    # no object at all: a window anyway (all masked out later), never an error
    assert (ids[2].flatten()[window[2]] == 0).all()


def test_validation_loss_is_repeatable() -> None:
    fam = family(**LOSSES["uniform"], **TINY_NETWORK)
    torch.manual_seed(0)
    net = fam.build_network().eval()
    image = torch.rand(1, 1, 64, 64)
    target = square_ids(1, 64)[:, :, :60, :60]
    with torch.no_grad():
        first = fam.validation_loss(net, image, target, (60, 60))
        torch.rand(5)  # the global generator moves on; the validation sampling does not
        again = fam.validation_loss(net, image, target, (60, 60))
    assert float(first) == float(again)


# --------------------------------------------------------------------------- maps


def test_network_activate_and_map_names() -> None:
    fam = family(**TINY_NETWORK)
    assert fam.map_names == ("foreground", *(f"embedding_{i}" for i in range(DIM)))
    assert len(family(embedding_dim=3).map_names) == 4  # follows the option
    target = fam.make_target(np.array([[0, 3], [3, 7]], np.int32))
    assert target.dtype == np.float32 and target.tolist() == [[[0, 3], [3, 7]]]
    net = fam.build_network().eval()
    with torch.no_grad():
        logits = net(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 1 + DIM, 64, 64)
    maps = fam.activate(logits)
    assert maps.shape == (2, 1 + DIM, 64, 64)
    assert ((maps[:, 0] > 0) & (maps[:, 0] < 1)).all()
    torch.testing.assert_close(maps[:, 1:].norm(dim=1), torch.ones(2, 64, 64))


@pytest.mark.parametrize("clustering", ["fast", "agglomerative"])
def test_postprocess_shapes_and_errors(clustering: str) -> None:
    fam = family(clustering=clustering)
    setting = fam.threshold_grid()[0]
    assert set(setting.resolved()) == {"foreground_threshold", "distance_threshold"}
    assert len(fam.threshold_grid()) == 3 * 4
    rng = np.random.default_rng(0)
    labels = touching_cells(rng, size=64, n=6)
    out = fam.postprocess(ideal_maps(labels, rng)[:, :50, :], setting)
    assert out.shape == (50, 64) and out.dtype == np.int32
    assert set(np.unique(out)) == set(range(int(out.max()) + 1))  # 0 and 1..N
    empty = fam.postprocess(np.zeros((1 + DIM, 20, 30), np.float32), setting)
    assert empty.shape == (20, 30) and empty.dtype == np.int32 and not empty.any()
    with pytest.raises(ValueError, match=r"\(7, H, W\)"):
        fam.postprocess(np.zeros((3, 20, 30), np.float32), setting)


# --------------------------------------------------------------------------- clustering


@pytest.mark.parametrize("clustering", ["fast", "agglomerative"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clustering_recovers_instances_from_ideal_maps(clustering: str, seed: int) -> None:
    fam = family(clustering=clustering)
    rng = np.random.default_rng(seed)
    labels = touching_cells(rng)
    maps = ideal_maps(labels, rng)
    maps[1:] *= rng.uniform(0.5, 2.0, maps.shape[1:])  # not unit length: renormalised
    first = None
    for setting in fam.threshold_grid()[:2]:  # same foreground: agglomerative reuses its tree
        out = fam.postprocess(maps, setting)
        first = out if first is None else first
        assert score_image(labels, out).mean_ap > 0.97
    assert int(first.max()) == int(labels.max())
    if clustering == "agglomerative":
        assert len(fam._trees) == 1  # one linkage for both distance thresholds


def test_fast_clustering_is_not_fooled_by_a_bridge() -> None:
    labels = np.zeros((40, 60), np.int32)
    labels[5:35, 5:30] = 1
    labels[5:35, 30:55] = 2
    a, b = np.eye(4, dtype=np.float32)[:2]
    embedding = np.where(labels[None] == 1, a[:, None, None], b[:, None, None])
    for x in range(22, 38):  # one row where the embedding changes gradually: every step small
        t = (x - 22) / 15
        embedding[:, 20, x] = (1 - t) * a + t * b
    fg = labels > 0
    out = fast_labels(fg, embedding, distance_threshold=0.3, min_size=15)
    assert score_image(labels, out).mean_ap == 1.0
    # a graph of neighbours cut at the threshold, no guard: the bridge joins the cells
    naive = {"reach": 1, "guard": 0, "cut_fraction": 1.0}
    assert fast_labels(fg, embedding, distance_threshold=0.3, min_size=0, **naive).max() == 1


def test_smooth_boundaries_are_found() -> None:
    """A boundary blurred over a few px (tiles, TTA, resizing) still separates cells."""
    rng = np.random.default_rng(3)
    labels = touching_cells(rng)
    maps = ideal_maps(labels, rng, noise=0.05)
    maps[1:] = ndi.gaussian_filter(maps[1:], (0, 1.5, 1.5))
    fg = maps[0] > 0.5
    out = fast_labels(fg, maps[1:], distance_threshold=0.3, min_size=15)
    assert score_image(labels, out).mean_ap > 0.9
    assert int(out.max()) == int(labels.max())


def test_agglomerative_grid_and_erosion() -> None:
    rng = np.random.default_rng(4)
    labels = touching_cells(rng)
    maps = ideal_maps(labels, rng)
    fg = maps[0] > 0.5
    out = agglomerative_labels(
        fg, maps[1:], distance_threshold=0.3, grid=32, erosion_radius=1, min_size=15
    )
    assert out.shape == labels.shape and score_image(labels, out).mean_ap > 0.9
    nearest = agglomerative_labels(
        fg,
        maps[1:],
        distance_threshold=0.3,
        grid=32,
        erosion_radius=1,
        min_size=15,
        assign="nearest",
    )
    assert int(nearest.max()) == int(labels.max())
    # two far-apart objects of one cluster become two instances (connected components)
    two = np.zeros((40, 40), bool)
    two[2:12, 2:12] = two[25:38, 25:38] = True
    same = np.ones((3, 40, 40), np.float32)
    two_labels = agglomerative_labels(
        two, same, distance_threshold=0.3, grid=20, erosion_radius=1, min_size=0
    )
    assert two_labels.max() == 2
    # each label eroded on its own (a cross of radius 1); the image border does not erode
    grid = np.array([[1, 1, 1, 0, 2, 2], [1, 1, 1, 0, 2, 2], [1, 1, 1, 3, 2, 2]])
    expected = [[1, 1, 0, 0, 0, 2], [1, 1, 0, 0, 0, 2], [1, 1, 0, 0, 0, 2]]
    np.testing.assert_array_equal(erode_labels(grid, 1), expected)
    np.testing.assert_array_equal(erode_labels(grid, 0), grid)


def test_agglomerative_refuses_a_grid_too_fine_for_memory(monkeypatch) -> None:
    from cellbench.postprocess import clustering

    monkeypatch.setattr(clustering, "MAX_LINKAGE_CELLS", 100)
    fg = np.ones((40, 40), bool)
    with pytest.raises(ValueError, match="cluster_grid.*clustering: fast"):
        agglomerative_labels(
            fg,
            np.ones((3, 40, 40)),
            distance_threshold=0.3,
            grid=40,
            erosion_radius=1,
            min_size=0,
        )


def test_normalize_embedding_keeps_zero_vectors() -> None:
    e = np.zeros((3, 2, 2), np.float32)
    e[0, 0, 0] = 5.0
    out = normalize_embedding(e)
    assert out[0, 0, 0] == 1.0 and not out[:, 1, 1].any() and np.isfinite(out).all()


# --------------------------------------------------------------------------- round trip


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_embedding")
    splits = ("train", "train", "train", "val", "test", "test")
    write_tiny_dataset(root / "converted", root / "split.csv", splits=splits)
    return root / "converted", root / "split.csv"


def test_train_predict_postprocess_round_trip(tiny_dataset, tmp_path: Path) -> None:
    import tifffile
    from cellbench.io import read_json, read_labels
    from cellbench.modelfolder import load_model
    from cellbench.predict import postprocess_dir, predict_dir
    from cellbench.train import train_model

    converted, split = tiny_dataset
    options = {
        **TINY_NETWORK,
        "embedding_dim": 4,
        "sampling": "windowed",
        "window_size": 16,
        "foreground_threshold": [0.5],
        "distance_threshold": [0.3, 0.5],
    }
    cfg = ModelConfig("embedding", "embedding", options)
    out = tmp_path / "model"
    config = train_model(cfg, "tiny", converted, split, out, seed=3, device="cpu", progress=False)
    assert config["epochs_run"] == 2
    assert config["map_names"] == ["foreground", *(f"embedding_{i}" for i in range(4))]
    tuned = read_json(out / "thresholds.json")
    assert len(tuned["grid"]) == 2
    assert set(tuned["selected"]) == {"foreground_threshold", "distance_threshold"}

    model = load_model(out, "cpu")
    assert model.family.map_names == tuple(config["map_names"])
    assert predict_dir(out, converted, split, tmp_path / "pred", device="cpu") == 2
    maps = tifffile.imread(tmp_path / "pred" / "img4.tif")
    assert maps.shape == (5, 80, 96) and maps.dtype == np.float32
    assert postprocess_dir(out, tmp_path / "pred", tmp_path / "masks") == 2
    labels = read_labels(tmp_path / "masks" / "img4.tif")
    assert labels.shape == (80, 96)
    # the other clustering reads the same saved maps
    agglomerative = family(embedding_dim=4, clustering="agglomerative")
    other = agglomerative.postprocess(maps, agglomerative.threshold_grid()[0])
    assert other.shape == (80, 96) and other.dtype == np.int32
