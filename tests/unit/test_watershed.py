import numpy as np
from cellbench.datasets.options import SyntheticOptions
from cellbench.metrics import score_image
from cellbench.postprocess import clean_labels, distance_watershed, seeded_watershed
from cellbench.synthetic import generate_image


def test_clean_labels_fills_holes_drops_small_renumbers() -> None:
    lab = np.zeros((20, 20), int)
    lab[2:9, 2:9] = 5
    lab[5, 5] = 0  # hole
    lab[15, 15] = 9  # 1-pixel speck
    out = clean_labels(lab, min_size=4)
    assert out.dtype == np.int32 and out.max() == 1
    assert out[5, 5] == 1 and out[15, 15] == 0


def test_distance_watershed_splits_touching_disks() -> None:
    yy, xx = np.mgrid[:60, :90]
    truth = np.zeros((60, 90), int)
    truth[(yy - 30) ** 2 + (xx - 28) ** 2 < 15**2] = 1
    truth[((yy - 30) ** 2 + (xx - 55) ** 2 < 14**2) & (truth == 0)] = 2
    pred = distance_watershed(truth > 0, min_distance=8, min_size=15)
    assert pred.max() == 2
    assert score_image(truth, pred).matching(0.5).ap == 1.0
    assert distance_watershed(np.zeros((5, 5), bool), min_distance=5, min_size=15).max() == 0


def test_seeded_watershed_recovers_labels_from_ideal_maps() -> None:
    from cellbench.models.unet import labels_to_classes

    _, truth = generate_image(0, "fluorescent", SyntheticOptions(height=128, width=128))
    classes = labels_to_classes(truth, 2)
    interior, foreground = (classes == 1).astype(float), (classes > 0).astype(float)
    pred = seeded_watershed(
        interior, foreground, seed_threshold=0.5, mask_threshold=0.5, min_size=1, split_h=0.0
    )
    assert score_image(truth, pred).matching(0.5).ap > 0.97


def test_seeded_watershed_splits_pinched_seeds_by_shape() -> None:
    yy, xx = np.mgrid[:60, :90]
    truth = np.zeros((60, 90), int)
    truth[(yy - 30) ** 2 + (xx - 28) ** 2 < 15**2] = 1
    truth[((yy - 30) ** 2 + (xx - 55) ** 2 < 14**2) & (truth == 0)] = 2
    interior = (truth > 0).astype(float)  # the network missed the shared boundary
    common = {"seed_threshold": 0.5, "mask_threshold": 0.5, "min_size": 15}
    merged = seeded_watershed(interior, interior, split_h=0.0, **common)
    split = seeded_watershed(interior, interior, split_h=1.0, **common)
    assert merged.max() == 1 and split.max() == 2
    assert score_image(truth, split).matching(0.5).ap == 1.0
