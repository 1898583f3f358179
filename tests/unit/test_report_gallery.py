"""Gallery pictures: TP / FP / FN outlines in three distinct colours."""

import base64
import io

import numpy as np
import pytest
from cellbench.report.gallery import (
    CLASSES,
    COLOURS,
    choose_crop,
    classify_outlines,
    hex_rgb,
    overlay_rgb,
    png_data_uri,
)

CODE = {name: k + 1 for k, name in enumerate(CLASSES)}


def _square(labels: np.ndarray, label: int, y: int, x: int, size: int = 10) -> None:
    labels[y : y + size, x : x + size] = label


@pytest.fixture()
def pair() -> tuple[np.ndarray, np.ndarray]:
    """Truth: objects 1 (matched), 2 (missed). Prediction: 7 (= object 1), 9 (spurious)."""
    truth = np.zeros((40, 60), np.uint16)
    pred = np.zeros_like(truth)
    _square(truth, 1, 5, 5)
    _square(pred, 7, 5, 5)  # TP (IoU 1)
    _square(truth, 2, 25, 5)  # FN: nothing predicted there
    _square(pred, 9, 5, 40)  # FP: nothing true there
    return truth, pred


def test_three_colours_are_distinct() -> None:
    rgb = [np.array(hex_rgb(COLOURS[c][0]), float) for c in ("tp", "fp", "fn")]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(rgb[i] - rgb[j]).sum() > 150
    # also distinct in lightness (readable without colour vision, and on grey images)
    lum = sorted(0.299 * r + 0.587 * g + 0.114 * b for r, g, b in rgb)
    assert min(np.diff(lum)) > 25


def test_known_pair_gets_the_three_colours_where_expected(pair) -> None:
    truth, pred = pair
    classes, counts = classify_outlines(truth, pred)
    assert (counts.tp, counts.fp, counts.fn, counts.unscored) == (1, 1, 1, 0)
    # the outline (inner boundary) of each object carries its class, the inside none
    assert classes[5, 5] == CODE["tp"] and classes[10, 10] == 0
    assert classes[25, 5] == CODE["fn"] and classes[30, 10] == 0
    assert classes[5, 40] == CODE["fp"] and classes[10, 45] == 0
    assert classes[0, 0] == 0 and classes[20, 30] == 0
    image = np.zeros(truth.shape, np.float32)
    image[::2] = 1.0  # any image underneath
    rgb = overlay_rgb(image, classes)
    assert tuple(rgb[5, 5]) == hex_rgb(COLOURS["tp"][0])
    assert tuple(rgb[5, 40]) == hex_rgb(COLOURS["fp"][0])
    assert tuple(rgb[25, 5]) == hex_rgb(COLOURS["fn"][0])
    # every outline pixel has exactly one of the three colours
    outline = classes > 0
    colours = {tuple(c) for c in rgb[outline]}
    assert colours == {hex_rgb(COLOURS[c][0]) for c in ("tp", "fp", "fn")}


def test_poor_match_is_both_false_positive_and_false_negative() -> None:
    truth = np.zeros((30, 30), np.uint16)
    pred = np.zeros_like(truth)
    _square(truth, 1, 5, 5)
    _square(pred, 1, 9, 9)  # IoU 36/164 < 0.5
    classes, counts = classify_outlines(truth, pred)
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 1)
    assert classes[5, 5] == CODE["fn"] and classes[18, 18] == CODE["fp"]


def test_partial_ground_truth_does_not_call_unmatched_predictions_false(pair) -> None:
    truth, pred = pair
    classes, counts = classify_outlines(truth, pred, partial=True)
    assert (counts.tp, counts.fp, counts.fn, counts.unscored) == (1, 0, 1, 1)
    assert classes[5, 40] == CODE["unscored"]


def test_png_keeps_exact_colours_and_decodes(pair) -> None:
    from PIL import Image

    truth, pred = pair
    classes, _ = classify_outlines(truth, pred)
    rng = np.random.default_rng(0)
    for image in (rng.random(truth.shape), rng.integers(0, 255, (*truth.shape, 3), np.uint8)):
        uri = png_data_uri(image, classes)
        assert uri.startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert png.mode == "P" and png.size == (60, 40)
        rgb = np.asarray(png.convert("RGB"))
        assert tuple(rgb[5, 5]) == hex_rgb(COLOURS["tp"][0])
        assert tuple(rgb[25, 5]) == hex_rgb(COLOURS["fn"][0])


def test_crop_picks_the_densest_window_deterministically() -> None:
    truth = np.zeros((900, 700), np.int32)
    truth[600:650, 100:150] = 1
    crop = choose_crop(truth, 256)
    assert (crop.height, crop.width) == (256, 256)
    sub = truth[crop.slices]
    assert sub.sum() == 50 * 50  # the whole object inside
    assert choose_crop(truth, 256) == crop
    small = choose_crop(np.zeros((50, 80), np.int32), 256)
    assert (small.y0, small.x0, small.height, small.width) == (0, 0, 50, 80)
