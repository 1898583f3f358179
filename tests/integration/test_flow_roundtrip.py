"""Round trip on real annotations: labels -> flows -> flow tracking recovers the labels.

Reads the original files in ``../shared/data`` (DSB 2018 masks, BBBC039 masks, CTC
GT / ST segmentations). Two settings of the post-processing:

- **defaults** (Cellpose's rules: flow-error QC 0.4, masks of at least 15 px, a seed
  needs more than 10 converged pixels), scored against the ground-truth objects of at
  least 15 px, since smaller ones are dropped by design;
- **size filters off** (``min_size=0``, ``min_seed_count=2``), scored against every
  ground-truth object: BBBC039 and DSB 2018 annotate objects of 3 to 14 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cellbench.metrics import ImageScore, score_image
from cellbench.postprocess.flows import flows_to_labels
from cellbench.targets import labels_to_flows

pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("one_torch_thread")]

MIN_SIZE = 15


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def dsb_labels(root: Path, every: int = 3) -> list[np.ndarray]:
    out = []
    for d in sorted((root / "dsb2018" / "stage1_train").iterdir())[::every]:
        labels = None
        for k, f in enumerate(sorted((d / "masks").glob("*.png")), start=1):
            mask = _png(f) > 0
            labels = np.zeros(mask.shape, np.int32) if labels is None else labels
            labels[mask] = k
        out.append(labels)
    return out


def bbbc039_labels(root: Path, n: int = 6) -> list[np.ndarray]:
    from skimage.measure import label

    files = sorted((root / "bbbc039" / "masks").glob("*.png"))[:n]
    return [label(_png(f)[..., 0]).astype(np.int32) for f in files]


def ctc_labels(root: Path) -> list[np.ndarray]:
    import tifffile

    out = []
    for ds in sorted((root / "ctc").iterdir()):  # the last GT frame of all six datasets
        files = sorted((ds / "01_GT" / "SEG").glob("*.tif"))
        if files:
            out.append(tifffile.imread(files[-1]).astype(np.int32))
    st = sorted((root / "ctc" / "PhC-C2DL-PSC" / "01_ST" / "SEG").glob("*.tif"))
    if st:  # plus one dense silver-truth frame (~180 touching cells)
        out.append(tifffile.imread(st[0]).astype(np.int32))
    return out


LOADERS = {"dsb2018": dsb_labels, "bbbc039": bbbc039_labels, "ctc": ctc_labels}


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def pooled_ap50(scores: list[ImageScore]) -> float:
    at_half = [s.matching(0.5) for s in scores]
    tp = sum(m.tp for m in at_half)
    return tp / (tp + sum(m.fp + m.fn for m in at_half))


@pytest.fixture(scope="module")
def real_labels(shared_data) -> dict[str, list[np.ndarray]]:
    return {name: load(shared_data) for name, load in LOADERS.items()}


@pytest.mark.parametrize("dataset", list(LOADERS))
def test_round_trip_recovers_real_labels(real_labels, dataset):
    defaults, unfiltered = [], []
    for labels in real_labels[dataset]:
        maps = labels_to_flows(labels)
        ours = flows_to_labels(maps[:2], maps[2])
        defaults.append(score_image(drop_small(labels, MIN_SIZE), ours, extra_thresholds=()))
        ours = flows_to_labels(maps[:2], maps[2], min_size=0, min_seed_count=2)
        unfiltered.append(score_image(labels, ours, extra_thresholds=()))
    n_objects = sum(s.n_true for s in unfiltered)
    assert n_objects > 50, f"too few {dataset} objects read ({n_objects})"
    assert pooled_ap50(defaults) >= 0.99
    assert pooled_ap50(unfiltered) >= 0.99


def test_field_agrees_with_cellpose(real_labels):
    """Our steady-state field ~ Cellpose's diffusion field on compact nuclei."""
    dynamics = pytest.importorskip("cellpose.dynamics", reason="cellpose is a test-only extra")
    from skimage.segmentation import relabel_sequential

    for labels in (real_labels["dsb2018"][1], real_labels["bbbc039"][0]):
        labels = relabel_sequential(labels)[0]
        ours = labels_to_flows(labels)[:2]
        theirs = dynamics.masks_to_flows_gpu(labels, device=None)[0]
        fg = labels > 0
        cosine = (ours * theirs).sum(axis=0)[fg]
        assert cosine.mean() > 0.99


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # inside cellpose
def test_same_masks_as_cellpose_on_the_same_flows(real_labels):
    dynamics = pytest.importorskip("cellpose.dynamics", reason="cellpose is a test-only extra")
    import torch

    labels = real_labels["bbbc039"][1]
    maps = labels_to_flows(labels)
    ours = flows_to_labels(maps[:2], maps[2], flow_threshold=None)
    theirs = dynamics.compute_masks(
        maps[:2] * 5.0,
        np.where(maps[2] > 0, 6.0, -6.0),
        flow_threshold=0.0,
        min_size=MIN_SIZE,
        device=torch.device("cpu"),
    )
    assert score_image(theirs.astype(np.int32), ours, extra_thresholds=()).matching(0.5).ap >= 0.99
