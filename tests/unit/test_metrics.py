"""Unit and property tests of cellbench.metrics (hand-made cases, no peers needed)."""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from cellbench import metrics
from cellbench.metrics import DEFAULT_THRESHOLDS, ImageScore, match, score_image, summarize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linear_sum_assignment

RATIOS = ("precision", "recall", "f1", "ap")
ALL_T = sorted({*DEFAULT_THRESHOLDS, 0.25, 0.75})


# --------------------------------------------------------------------------- helpers


def dense_reference(y_true, y_pred, threshold):
    """Brute-force matching on the dense IoU matrix: max #pairs, then max IoU sum."""
    ids_t = np.unique(y_true[y_true > 0])
    ids_p = np.unique(y_pred[y_pred > 0])
    if ids_t.size == 0 or ids_p.size == 0:
        return 0, 0.0
    inter = np.array([[np.sum((y_true == a) & (y_pred == b)) for b in ids_p] for a in ids_t])
    area_t = np.array([np.sum(y_true == a) for a in ids_t])
    area_p = np.array([np.sum(y_pred == b) for b in ids_p])
    iou = inter / (area_t[:, None] + area_p[None, :] - inter)
    ok = iou >= threshold
    n_min = min(iou.shape)
    costs = np.where(ok, -(1.0 + iou / (2 * n_min)), 0.0)
    r, c = linear_sum_assignment(costs)
    hit = ok[r, c]
    return int(hit.sum()), float(iou[r, c][hit].sum())


def dense_aji(y_true, y_pred):
    """Kumar et al. AJI as in HoVer-Net's get_fast_aji (argmax IoU, reuse allowed)."""
    ids_t = np.unique(y_true[y_true > 0])
    ids_p = np.unique(y_pred[y_pred > 0])
    if ids_t.size == 0 and ids_p.size == 0:
        return 1.0
    inter_sum = union_sum = 0
    used = set()
    for a in ids_t:
        g = y_true == a
        best, best_iou = None, 0.0
        for b in ids_p:
            s = y_pred == b
            i = np.sum(g & s)
            if i and i / np.sum(g | s) > best_iou:
                best, best_iou = b, i / np.sum(g | s)
        if best is None:
            union_sum += g.sum()
        else:
            s = y_pred == best
            inter_sum += np.sum(g & s)
            union_sum += np.sum(g | s)
            used.add(best)
    for b in ids_p:
        if b not in used:
            union_sum += np.sum(y_pred == b)
    return inter_sum / union_sum


def disk_labels(shape=(40, 40), centers=((10, 10), (10, 28), (28, 18)), radius=6):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    y = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, start=1):
        y[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return y


labels = arrays(
    np.int32,
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    elements=st.integers(0, 5),
)


@st.composite
def label_pair(draw):
    """Two same-shaped label images made of random (possibly overlapping) rectangles."""
    h, w = draw(st.integers(4, 24)), draw(st.integers(4, 24))
    out = []
    for _ in range(2):
        y = np.zeros((h, w), np.int32)
        for k in range(1, draw(st.integers(0, 6)) + 1):
            r0, c0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            r1, c1 = draw(st.integers(r0 + 1, h)), draw(st.integers(c0 + 1, w))
            y[r0:r1, c0:c1] = k
        out.append(y)
    return out[0], out[1]


# --------------------------------------------------------------------------- API shape


@pytest.mark.parametrize(
    ("inter", "expected"),
    [(49, 0.0), (50, 0.1), (72, 0.5), (75, 0.6), (94, 0.9), (95, 1.0), (100, 1.0)],
)
def test_default_thresholds(inter, expected):
    assert DEFAULT_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    # they are what scoring uses by default, compared exactly: one object of 100 px and a
    # prediction covering `inter` of them (IoU = inter / 100) is a match at every default
    # threshold <= IoU, so the mean AP is the fraction of those thresholds
    yt = np.ones((1, 100), np.int32)
    yp = np.zeros_like(yt)
    yp[0, :inter] = 7
    score = score_image(yt, yp)
    assert [m.threshold for m in score.matchings] == ALL_T  # + the extra 0.25 and 0.75
    tps = [score.matching(t).tp for t in DEFAULT_THRESHOLDS]
    assert tps == [int(inter / 100 >= t) for t in DEFAULT_THRESHOLDS]
    assert score.mean_ap == pytest.approx(expected, abs=1e-12)
    assert match(yt, yp).tp == int(inter >= 50)  # match's default threshold is 0.5


PER_THRESHOLD = ("tp", "fp", "fn", "precision", "recall", "f1", "ap", "iou_sum")
IMAGE_KEYS = (
    "mean_ap", "pq", "sq", "aji", "pixel_iou", "dice", "seg",
    "aji_intersection", "aji_union", "fg_true", "fg_pred", "fg_intersection", "seg_sum",
)  # fmt: skip


def _same_values(row: dict, expected: dict) -> None:
    """Same keys in the same order, same types, same values (NaN equal to NaN)."""
    assert list(row) == list(expected)
    for key, value in expected.items():
        assert type(row[key]) is type(value), key
        assert row[key] == value or (math.isnan(value) and math.isnan(row[key])), key


def _one_dropped():
    """Three disks of 113 px; the prediction misses disk 1 and is otherwise perfect."""
    yt = disk_labels()
    yp = np.where(yt == 1, 0, yt)
    assert [int((yt == i).sum()) for i in (1, 2, 3)] == [113, 113, 113]
    return yt, yp


def test_row_is_the_flat_per_image_format():
    yt, yp = _one_dropped()
    score = score_image(yt, yp, thresholds=(0.5, 0.9), extra_thresholds=(0.25,))
    assert isinstance(score, ImageScore)
    at_each = {"tp": 2, "fp": 0, "fn": 1, "precision": 1.0, "recall": 2 / 3}
    at_each |= {"f1": 0.8, "ap": 2 / 3, "iou_sum": 2.0}
    expected = {"n_true": 3, "n_pred": 2}
    for tag in ("0.25", "0.50", "0.90"):
        expected |= {f"{name}@{tag}": value for name, value in at_each.items()}
    expected |= {
        "mean_ap": 2 / 3,
        "pq": 0.8,
        "sq": 1.0,
        "aji": 2 / 3,
        "pixel_iou": 2 / 3,
        "dice": 0.8,
        "seg": 2 / 3,
        "aji_intersection": 226,
        "aji_union": 339,
        "fg_true": 339,
        "fg_pred": 226,
        "fg_intersection": 226,
        "seg_sum": 2.0,
    }
    _same_values(score.row(), expected)
    assert list(expected) == [
        "n_true", "n_pred",
        "tp@0.25", "fp@0.25", "fn@0.25", "precision@0.25", "recall@0.25", "f1@0.25",
        "ap@0.25", "iou_sum@0.25",
        "tp@0.50", "fp@0.50", "fn@0.50", "precision@0.50", "recall@0.50", "f1@0.50",
        "ap@0.50", "iou_sum@0.50",
        "tp@0.90", "fp@0.90", "fn@0.90", "precision@0.90", "recall@0.90", "f1@0.90",
        "ap@0.90", "iou_sum@0.90",
        *IMAGE_KEYS,
    ]  # fmt: skip
    # the scalar fields are the row's image-level values
    assert {key: getattr(score, key) for key in IMAGE_KEYS} == {k: expected[k] for k in IMAGE_KEYS}


def test_row_with_default_thresholds_and_both_empty():
    z = np.zeros((8, 8), np.uint16)
    tags = ("0.25", "0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90")
    tags += ("0.95",)
    expected: dict = {"n_true": 0, "n_pred": 0}
    for tag in tags:
        expected |= {f"tp@{tag}": 0, f"fp@{tag}": 0, f"fn@{tag}": 0}
        expected |= {f"{name}@{tag}": 1.0 for name in ("precision", "recall", "f1", "ap")}
        expected[f"iou_sum@{tag}"] = 0.0
    expected |= dict.fromkeys(("mean_ap", "pq", "sq", "aji", "pixel_iou", "dice"), 1.0)
    expected |= {"seg": math.nan, "aji_intersection": 0, "aji_union": 0, "fg_true": 0}
    expected |= {"fg_pred": 0, "fg_intersection": 0, "seg_sum": 0.0}
    _same_values(score_image(z, z).row(), expected)


def test_row_partial_annotation_is_nan_except_seg():
    yt, yp = _one_dropped()
    score = score_image(
        yp, yt, thresholds=(0.5, 0.9), extra_thresholds=(0.25,), annotation="partial"
    )
    expected: dict = {"n_true": 2, "n_pred": 3}
    for tag in ("0.25", "0.50", "0.90"):
        expected |= {f"{name}@{tag}": math.nan for name in PER_THRESHOLD}
    expected |= dict.fromkeys(IMAGE_KEYS, math.nan)
    expected |= {"seg": 1.0, "seg_sum": 2.0}
    _same_values(score.row(), expected)
    assert score.matchings == ()
    assert score.annotation == "partial" and score.thresholds == (0.5, 0.9)
    for key in IMAGE_KEYS:
        if key not in ("seg", "seg_sum"):
            assert math.isnan(getattr(score, key)), key
    with pytest.raises(ValueError, match="partial"):
        score.matching(0.5)


def test_matchings_one_per_threshold_sorted():
    yt, yp = _one_dropped()
    score = score_image(yt, yp, thresholds=(0.9, 0.5, 0.9), extra_thresholds=(0.25, 0.5))
    assert [m.threshold for m in score.matchings] == [0.25, 0.5, 0.9]
    assert score.thresholds == (0.9, 0.5, 0.9)
    assert score.matching(0.5) is score.matchings[1]
    assert score.matching(0.50000001) is score.matchings[1]  # compared at 2 decimals
    with pytest.raises(ValueError, match=r"0\.75.*0\.25, 0\.50, 0\.90"):
        score.matching(0.75)
    with pytest.raises(dataclasses.FrozenInstanceError):
        score.mean_ap = 0.0  # type: ignore[misc]
    assert not hasattr(score, "__getitem__")  # one shape: attributes, or .row()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_pair(), st.sampled_from([(), (0.25,), (0.1, 0.3, 0.45), (0.75, 0.97)]))
def test_matching_agrees_with_match(pair, extra):
    yt, yp = pair
    score = score_image(yt, yp, extra_thresholds=extra)
    every = sorted({*DEFAULT_THRESHOLDS, *extra})
    assert [m.threshold for m in score.matchings] == every
    for t in every:
        got, ref = score.matching(t), match(yt, yp, t)
        for f in dataclasses.fields(ref):
            a, b = getattr(got, f.name), getattr(ref, f.name)
            if isinstance(b, np.ndarray):
                assert a.dtype == b.dtype and np.array_equal(a, b), (t, f.name)
            else:
                assert type(a) is type(b) and a == b, (t, f.name)
    # image-level scores at IoU 0.5 come from the same matching
    half = match(yt, yp, 0.5)
    assert (score.pq, score.sq) == (half.pq, half.mean_matched_iou)
    assert score.mean_ap == np.mean([score.matching(t).ap for t in DEFAULT_THRESHOLDS])


def test_pq_without_threshold_half():
    yt, yp = _one_dropped()
    score = score_image(yt, yp, thresholds=(0.9,), extra_thresholds=())
    assert [m.threshold for m in score.matchings] == [0.9]
    assert (score.pq, score.sq) == (0.8, 1.0)  # at 0.5 all the same


def test_mean_ap_uses_only_thresholds():
    yt, yp = _one_dropped()  # ap = 2/3 at every threshold
    score = score_image(yt, yp, thresholds=(0.5, 0.9), extra_thresholds=(0.25,))
    assert score.mean_ap == pytest.approx(2 / 3)
    assert [m.threshold for m in score.matchings] == [0.25, 0.5, 0.9]
    assert "ap@0.25" in score.row() and "ap@0.75" not in score.row()


# --------------------------------------------------------------------------- conventions


def test_both_empty_is_perfect():
    z = np.zeros((8, 8), np.uint16)
    score = score_image(z, z)
    assert [m.threshold for m in score.matchings] == ALL_T
    for m in score.matchings:
        assert (m.tp, m.fp, m.fn) == (0, 0, 0)
        for name in RATIOS:
            assert getattr(m, name) == 1.0
    for key in ("mean_ap", "pq", "sq", "aji", "pixel_iou", "dice"):
        assert getattr(score, key) == 1.0
    assert math.isnan(score.seg)


def test_empty_ground_truth():
    z = np.zeros((20, 20), np.int32)
    yp = disk_labels((20, 20), ((10, 10),), 4)
    score = score_image(z, yp)
    m = score.matching(0.5)
    assert (m.tp, m.fp, m.fn) == (0, 1, 0)
    assert (m.precision, m.recall, m.f1, m.ap) == (0.0, 0.0, 0.0, 0.0)
    assert (score.mean_ap, score.pq, score.sq) == (0.0, 0.0, 0.0)
    assert score.aji == 0.0 and score.pixel_iou == 0.0 and score.dice == 0.0
    assert math.isnan(score.seg)


def test_empty_prediction():
    yt = disk_labels()
    score = score_image(yt, np.zeros_like(yt))
    m = score.matching(0.5)
    assert (m.tp, m.fp, m.fn) == (0, 0, 3)
    assert (m.precision, m.recall) == (0.0, 0.0)
    for key in ("mean_ap", "pq", "aji", "dice", "seg"):
        assert getattr(score, key) == 0.0


@pytest.mark.parametrize(
    ("inter", "area", "threshold"), [(11, 20, 0.55), (3, 5, 0.6), (7, 10, 0.7)]
)
def test_iou_exactly_at_threshold_matches(inter, area, threshold):
    yt = np.zeros((1, area), np.int32)
    yt[:] = 1
    yp = np.zeros_like(yt)
    yp[0, :inter] = 4  # IoU = inter / area exactly
    assert match(yt, yp, threshold).tp == 1
    assert match(yt, yp, threshold + 0.01).tp == 0
    score = score_image(yt, yp)
    assert score.matching(threshold).tp == 1
    assert score.matching(threshold + 0.05).tp == 0


def test_gaps_in_ids_change_nothing():
    yt = disk_labels()
    yp = np.roll(yt, 2, axis=1)
    gappy_t = np.choose(yt, [0, 7, 300, 65_000]).astype(np.int64)
    gappy_p = np.choose(yp, [0, 2**31 - 1, 5, 40]).astype(np.int64)
    assert score_image(gappy_t, gappy_p).row() == score_image(yt, yp).row()


def test_huge_ids_in_both_images():
    yt = disk_labels().astype(np.uint64)
    yp = np.roll(yt, 1, axis=0)
    big_t = np.where(yt > 0, yt + np.uint64(2**40), 0).astype(np.uint64)
    big_p = np.where(yp > 0, yp + np.uint64(2**41), 0).astype(np.uint64)
    assert score_image(big_t, big_p).row() == score_image(yt, yp).row()
    assert set(match(big_t, big_p).matched_true) == {2**40 + 1, 2**40 + 2, 2**40 + 3}


@pytest.mark.parametrize(
    ("base_true", "base_pred"),
    [(0, 0), (2**8, 2**20), (2**30, 2**31 - 8), (2**40, 2**41)],
    ids=["bincount", "packed-sort", "argsort", "compacted"],
)
def test_id_magnitudes_take_every_route(base_true, base_pred):
    yt = disk_labels((60, 60), ((15, 15), (15, 40), (40, 28)), 9)
    yp = np.roll(yt, 3, axis=1)
    big_t = np.where(yt > 0, yt.astype(np.int64) + base_true, 0)
    big_p = np.where(yp > 0, yp.astype(np.int64) + base_pred, 0)
    assert score_image(big_t, big_p).row() == score_image(yt, yp).row()


def test_bool_and_unsigned_inputs():
    y = disk_labels((20, 20), ((10, 10),), 5)
    assert score_image(y > 0, y.astype(np.uint8)).mean_ap == 1.0


def test_invalid_inputs():
    y = disk_labels()
    with pytest.raises(TypeError, match="integer label image"):
        score_image(y.astype(float), y)
    with pytest.raises(ValueError, match="negative"):
        score_image(-y, y)
    with pytest.raises(ValueError, match="different shapes"):
        score_image(y, y[:-1])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        match(y, y, 0.0)
    with pytest.raises(ValueError, match="annotation"):
        score_image(y, y, annotation="none")
    with pytest.raises(ValueError, match="collide"):
        score_image(y, y, thresholds=(0.5, 0.501))


def test_split_object_at_exactly_half():
    # A 2x4 object split into two 2x2 halves: IoU exactly 0.5 with both halves.
    yt = np.ones((2, 4), np.int32)
    yp = np.array([[1, 1, 2, 2], [1, 1, 2, 2]], np.int32)
    m = match(yt, yp, 0.5)
    assert (m.tp, m.fp, m.fn, m.iou_sum) == (1, 1, 0, 0.5)
    assert match(yt, yp, 0.55).tp == 0


def test_low_threshold_needs_assignment_not_greedy():
    # true A overlaps P1 (IoU .45) and P2 (.3); true B overlaps only P1 (.3).
    # Greedy-by-IoU would give A-P1 and leave B unmatched; the optimum is 2 pairs.
    yt = np.zeros((1, 40), np.int32)
    yp = np.zeros_like(yt)
    yt[0, 0:20] = 1  # A
    yt[0, 20:30] = 2  # B
    yp[0, 8:30] = 1  # P1: 12 px of A, 10 px of B
    yp[0, 0:6] = 2  # P2: 6 px of A
    ref_tp, ref_sum = dense_reference(yt, yp, 0.25)
    m = match(yt, yp, 0.25)
    assert m.tp == ref_tp == 2
    assert m.iou_sum == pytest.approx(ref_sum)
    assert sorted(zip(m.matched_true, m.matched_pred, strict=True)) == [(1, 2), (2, 1)]


def test_ctc_seg_needs_more_than_half():
    yt = np.ones((1, 10), np.int32)
    yp = np.zeros_like(yt)
    yp[0, :5] = 3  # exactly half: not a match
    assert metrics.ctc_seg(yt, yp) == 0.0
    yp[0, :6] = 3
    assert metrics.ctc_seg(yt, yp) == pytest.approx(0.6)
    # false positives are ignored
    yp2 = np.zeros((1, 20), np.int32)
    yp2[0, :10] = 1
    yp2[0, 12:] = 2
    yt2 = np.zeros_like(yp2)
    yt2[0, :10] = 5
    assert metrics.ctc_seg(yt2, yp2) == 1.0


def test_partial_annotation_only_seg():
    yt = disk_labels()
    yt[yt == 3] = 0  # unlabelled cell
    yp = disk_labels()
    score = score_image(yt, yp, annotation="partial")
    assert score.seg == 1.0 and score.n_true == 2 and score.n_pred == 3
    assert score.matchings == ()
    for key, value in score.row().items():
        if key not in ("seg", "seg_sum", "n_true", "n_pred"):
            assert math.isnan(value), key


def test_aji_hand_example():
    # One true object split in two predictions plus a false positive.
    yt = np.zeros((1, 12), np.int32)
    yt[0, 0:8] = 1
    yp = np.zeros_like(yt)
    yp[0, 0:5] = 1  # IoU 5/8
    yp[0, 5:8] = 2  # IoU 3/8
    yp[0, 10:12] = 3  # false positive
    # C = 5, U = 8 + |P2| + |P3| = 8 + 3 + 2
    assert metrics.aggregated_jaccard_index(yt, yp) == pytest.approx(5 / 13)
    assert score_image(yt, yp).aji == pytest.approx(dense_aji(yt, yp))


# --------------------------------------------------------------------------- oracle checks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_pair())
def test_matches_dense_reference(pair):
    yt, yp = pair
    score = score_image(yt, yp)
    for t in ALL_T:
        ref_tp, ref_sum = dense_reference(yt, yp, t)
        for m in (score.matching(t), match(yt, yp, t)):
            assert m.tp == ref_tp
            assert m.iou_sum == pytest.approx(ref_sum, abs=1e-12)
    assert score.aji == pytest.approx(dense_aji(yt, yp), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labels, labels)
def test_fragmented_labels_against_reference(a, b):
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    yt, yp = a[:h, :w], b[:h, :w]
    score = score_image(yt, yp)
    for t in ALL_T:
        assert score.matching(t).tp == dense_reference(yt, yp, t)[0]
    fg_t, fg_p = yt > 0, yp > 0
    union = np.sum(fg_t | fg_p)
    if union:
        assert score.pixel_iou == pytest.approx(np.sum(fg_t & fg_p) / union)
        assert score.dice == pytest.approx(2 * np.sum(fg_t & fg_p) / (fg_t.sum() + fg_p.sum()))


# --------------------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(label_pair())
def test_perfect_prediction_scores_one(pair):
    y = pair[0]
    score = score_image(y, y)
    for key in ("mean_ap", "pq", "sq", "aji", "pixel_iou", "dice"):
        assert getattr(score, key) == 1.0
    for m in score.matchings:
        for name in RATIOS:
            assert getattr(m, name) == 1.0
    if score.n_true:
        assert score.seg == 1.0


@settings(max_examples=100, deadline=None)
@given(
    label_pair(),
    st.randoms(use_true_random=False),
    st.sampled_from([1_000, 2**16, 2**31 - 1, 2**40]),
    st.sampled_from([1_000, 2**31 - 1, 2**40]),
)
def test_invariant_to_label_permutation(pair, rnd, top_true, top_pred):
    # id ranges from small to huge exercise every aggregation route of overlap_table
    yt, yp = pair
    perm_t = np.array([0, *rnd.sample(range(1, top_true), 10)], np.int64)
    perm_p = np.array([0, *rnd.sample(range(1, top_pred), 10)], np.int64)
    row = score_image(yt, yp).row()
    permuted = score_image(perm_t[yt], perm_p[yp]).row()
    assert permuted.keys() == row.keys()
    # AJI pairs each true object with its best-IoU prediction, ties to the smaller
    # predicted id (Kumar et al.'s reference): under an exact tie it depends on the ids
    keys = [k for k in row if not (k.startswith("aji") and _aji_has_tie(yt, yp))]
    for key in keys:
        assert permuted[key] == pytest.approx(row[key], abs=1e-12, nan_ok=True), key


def _aji_has_tie(yt: np.ndarray, yp: np.ndarray) -> bool:
    """Whether some true object has two predictions with exactly the same best IoU."""
    table = metrics.overlap_table(yt, yp)
    for t in np.unique(table.pair_true):
        sel = table.pair_true == t
        inter = table.intersection[sel]
        union = table.true_area[t] + table.pred_area[table.pair_pred[sel]] - inter
        best = max(Fraction(int(i), int(u)) for i, u in zip(inter, union, strict=True))
        if sum(Fraction(int(i), int(u)) == best for i, u in zip(inter, union, strict=True)) > 1:
            return True
    return False


def test_aji_ties_go_to_the_smaller_predicted_id():
    # true object 1 (14 px) overlaps prediction 2 by 6 of its 34 px and prediction 3 by
    # 2 of its 2 px: both IoU exactly 1/7 (the case Hypothesis found)
    yt = np.zeros((8, 7), np.int32)
    yt[5:8, 2:7] = 1
    yt[6, 6] = 0
    yp = np.zeros((8, 7), np.int32)
    yp[1:7, 0:6] = 2
    yp[5:7, 2] = 3
    assert _aji_has_tie(yt, yp)
    # smaller id 2 chosen: (6) / (14 + 34 - 6 + 2 unused) ; swapped ids: 3 -> 2 chosen
    assert score_image(yt, yp).aji == pytest.approx(6 / 44)
    swapped = np.where(yp == 2, 3, np.where(yp == 3, 2, 0))
    assert score_image(yt, swapped).aji == pytest.approx(2 / (14 + 34))


@settings(max_examples=100, deadline=None)
@given(label_pair())
def test_counts_are_consistent(pair):
    yt, yp = pair
    score = score_image(yt, yp)
    n_true = len(np.unique(yt[yt > 0]))
    n_pred = len(np.unique(yp[yp > 0]))
    assert (score.n_true, score.n_pred) == (n_true, n_pred)
    previous = math.inf
    for m in score.matchings:
        tp, fp, fn = m.tp, m.fp, m.fn
        assert (m.n_true, m.n_pred) == (n_true, n_pred)
        assert tp + fn == n_true and tp + fp == n_pred and min(tp, fp, fn) >= 0
        assert tp <= previous  # monotone in the threshold
        previous = tp
        for name in RATIOS:
            assert 0.0 <= getattr(m, name) <= 1.0
    for key in ("pq", "sq", "aji", "pixel_iou", "dice"):
        assert 0.0 <= getattr(score, key) <= 1.0
    assert score.pq == pytest.approx(score.sq * score.matching(0.5).f1)


@settings(max_examples=50, deadline=None)
@given(label_pair())
def test_swapping_images_swaps_fp_and_fn(pair):
    yt, yp = pair
    a, b = score_image(yt, yp), score_image(yp, yt)
    for ma, mb in zip(a.matchings, b.matchings, strict=True):
        assert (ma.tp, ma.fp) == (mb.tp, mb.fn)
        assert ma.f1 == pytest.approx(mb.f1)


# --------------------------------------------------------------------------- summarize


def _frame():
    yt = disk_labels()
    rows = [
        {"id": "a", "cell_type": "hela", **score_image(yt, yt).row()},
        {"id": "b", "cell_type": "hela", **score_image(yt, np.where(yt == 1, 0, yt)).row()},
        {"id": "c", "cell_type": "msc", **score_image(np.zeros_like(yt), yt).row()},
        {"id": "d", "cell_type": "msc", **score_image(yt, yt, annotation="partial").row()},
    ]
    return pd.DataFrame(rows)


def test_summarize_pooled_and_means():
    df = _frame()
    s = summarize(df)
    json.dumps(s, allow_nan=False)  # strictly JSON-serialisable
    assert s["n_images"] == 4 and s["thresholds"] == list(DEFAULT_THRESHOLDS)
    pooled = s["pooled"]
    # pooled over a, b, c (d is partial): TP 3+2+0, FP 0+0+3, FN 0+1+0
    assert (pooled["tp@0.50"], pooled["fp@0.50"], pooled["fn@0.50"]) == (5, 3, 1)
    assert pooled["ap@0.50"] == pytest.approx(5 / 9)
    assert pooled["mean_ap"] == pytest.approx(5 / 9)
    assert s["per_image_mean"]["mean_ap"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # seg pooled over every reference object: a (3 x 1), b (2 x 1 + 0), d (3 x 1)
    assert pooled["seg"] == pytest.approx(8 / 9)
    assert s["per_image_mean"]["seg"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert set(s["per_cell_type"]) == {"hela", "msc"}
    assert s["per_cell_type"]["hela"]["n_images"] == 2
    assert s["per_cell_type"]["hela"]["per_image_mean"]["mean_ap"] == pytest.approx(5 / 6)


def test_summarize_pooled_aji_is_ratio_of_sums():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        yt = disk_labels(radius=int(rng.integers(3, 7)))
        yp = np.roll(yt, int(rng.integers(0, 3)), axis=0)
        rows.append({"id": str(i), **score_image(yt, yp).row()})
    df = pd.DataFrame(rows)
    s = summarize(df, group_by=None)
    assert "per_cell_type" not in s
    expect = df["aji_intersection"].sum() / df["aji_union"].sum()
    assert s["pooled"]["aji"] == pytest.approx(expect)


def test_summarize_only_partial_images_pools_seg_only():
    yt = disk_labels()
    df = pd.DataFrame(
        [{"id": "a", **score_image(yt, np.roll(yt, 1, axis=0), annotation="partial").row()}]
    )
    s = summarize(df)
    json.dumps(s, allow_nan=False)
    assert s["pooled"]["n_images_fully_annotated"] == 0
    assert s["pooled"]["mean_ap"] is None and s["pooled"]["tp@0.50"] is None
    assert s["pooled"]["seg"] == pytest.approx(df["seg"].iloc[0])
    assert s["per_image_mean"]["mean_ap"] is None
