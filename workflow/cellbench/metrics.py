"""Instance-segmentation scores: matching, AP at IoU thresholds, PQ, AJI, CTC SEG.

Pure functions: label images in, numbers out; no file paths (DESIGN.md section 5).

Label images
------------
``y_true`` and ``y_pred`` are integer (or boolean) arrays of the same shape, usually
``(H, W)`` but any number of dimensions works. ``0`` is background; every other value is
one instance. Ids need not be consecutive (gaps such as ``{0, 3, 17}`` are fine) and the
two images need not share ids. Negative values and floating-point arrays are rejected.
An instance is the set of pixels carrying its id, connected or not.

How matching works
------------------
The only dense passes are over the pixels: the image pair is run-length encoded in raster
order and the runs are aggregated into a sparse table of overlapping ``(true, pred)``
pairs with their intersection; areas come from the same table. IoU is computed for
overlapping pairs only, as ``intersection / (area_true + area_pred - intersection)`` in
float64. Matching is one-to-one:

* A pair is a *candidate* at threshold ``t`` when ``IoU >= t``.
* For ``t > 0.5`` a true object can have at most one candidate and so can a predicted
  one (IoU > 0.5 means the pair shares more than half of each object, and two disjoint
  objects cannot both hold more than half of the same object), so the candidates *are*
  the matching, and no assignment problem is solved.
* For ``t <= 0.5`` candidates can conflict. Then the matching has the largest possible
  number of pairs and, among those, the largest sum of IoU (a sparse minimum-weight
  bipartite matching on the candidate pairs only). This gives the same TP as
  ``stardist.matching`` and ``cellpose.metrics``, which solve a dense assignment with
  the same primary objective.

Everything is O(pixels + overlapping pairs); no ``n_true x n_pred`` matrix is built.

Scores per threshold ``t`` (``TP + FN = n_true`` and ``TP + FP = n_pred`` always hold):
precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)``, F1 ``2TP/(2TP+FP+FN)`` and
``ap = TP/(TP+FP+FN)``, the "average precision" of the Data Science Bowl 2018 and of the
Sartorius 2021 Kaggle competitions (StarDist calls it *accuracy*). ``mean_ap`` is its mean
over the thresholds 0.50, 0.55, ..., 0.95.

Other scores:

* ``pq``: panoptic quality at IoU 0.5, ``sum(matched IoU) / (TP + FP/2 + FN/2)``;
  ``sq``: mean IoU of the matched pairs at 0.5 (PQ = SQ x F1).
* ``aji``: Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017): every true object is
  paired with the predicted object of highest IoU (ties: the smaller predicted id; a
  predicted object may serve several true objects); ``aji = sum |G n S| / (sum |G u S|
  + area of true objects without any overlap + area of predicted objects never
  chosen)``. As in the reference implementations, an exact IoU tie makes AJI depend on
  the predicted ids (rare outside tiny objects); every other score is id-independent.
* ``pixel_iou``, ``dice``: foreground (``label > 0``) IoU and Dice, instances ignored.
* ``seg``: Cell Tracking Challenge SEG. A reference object is matched by the predicted
  object covering *more than* half of its pixels (``2 |R n S| > |R|``, at most one such
  object exists); its score is the IoU of that pair, else 0; SEG is the mean over
  reference objects. False positives are ignored, so SEG is meaningful on partial
  (sparse) ground truth.

Edge-case conventions
---------------------
* **Both images empty** (no true and no predicted object): a perfect answer. Every
  ratio (precision, recall, F1, ap, mean_ap, pq, sq, aji, pixel_iou, dice) is 1.0 and
  all counts are 0. ``seg`` is NaN (a mean over zero reference objects).
  StarDist reports 0 here and Cellpose NaN.
* **Empty ground truth, objects predicted**: TP = FN = 0, FP = n_pred; every ratio is 0
  (a 0/0 such as recall is taken as 0, as StarDist's ``_safe_divide`` does);
  ``seg`` is NaN (no reference objects; false positives do not count in SEG).
* **Empty prediction, objects in the ground truth**: TP = FP = 0, FN = n_true; every
  ratio is 0 (precision 0/0 taken as 0); ``seg`` is 0.
* **Any other 0/0** (e.g. ``sq`` when TP = 0): 0, as in StarDist.
* **IoU exactly at a threshold** counts as a match (``IoU >= t``), as in StarDist and
  Cellpose. IoU is a float64 ratio of integers and the thresholds are the float64
  values of their two-decimal literals, so an IoU that equals the threshold as a
  fraction (11/20 at 0.55) compares equal. Thresholds are rounded to 2 decimals
  (``np.linspace(0.5, 0.95, 10)`` gives 0.6000000000000001, which would reject an IoU
  of exactly 3/5). Thresholds must lie in (0, 1].
* **Gaps in ids** change nothing: objects are the distinct non-zero values present.
* **Partial annotation** (``annotation="partial"``, e.g. CTC gold truth, where only
  some cells are labelled): every score that punishes unlabelled cells, i.e. all
  except ``seg``, is NaN, and so are the counts they are built from.

Result shapes
-------------
* :func:`match` (and :func:`match_table`) returns a :class:`Matching`: the result at one
  threshold (counts, ratios, matched ids and their IoU).
* :func:`score_image` (and :func:`score_table`) returns an :class:`ImageScore`: the
  image-level scores (``mean_ap``, ``pq``, ``sq``, ``aji``, ``pixel_iou``, ``dice``,
  ``seg``), the raw sums that make pooling exact, and one :class:`Matching` per
  threshold in ``matchings``, each identical to what :func:`match` returns
  (``score.matching(0.5).ap``). ``ImageScore.row()`` flattens it into one dict
  (``tp@0.50``, ``ap@0.50``, ..., ``mean_ap``, ...): a row of ``per_image.csv``.
* :func:`summarize` takes a DataFrame of such rows (plus ``id`` and ``cell_type``) and
  returns a JSON-ready dict. Two aggregates are given and labelled: the mean over
  images of each per-image score (NaN-skipping), and the *pooled* scores computed from
  counts summed over all images (pooled AJI = summed intersections / summed unions,
  pooled SEG = mean over all reference objects of the dataset, as the CTC computes it).

Agreement with peers (``tests/integration/test_metrics_peers.py``)
------------------------------------------------------------------
* ``stardist.matching.matching`` / ``matching_dataset``: identical TP/FP/FN, matched
  pairs, precision, recall, F1 and ``accuracy`` (= ``ap``). StarDist computes IoU in
  float32, so its ``mean_matched_score``, ``mean_true_score`` and ``panoptic_quality``
  differ from ours by float32 rounding (< 1e-7 observed). Both images empty: StarDist 0,
  here 1. Below IoU 0.5, when several matchings have the same (maximum) number of
  pairs, StarDist's tie-break also weighs below-threshold pairs; here only the matched
  pairs' IoU sum counts, so ``iou_sum``/PQ at such thresholds could differ; TP cannot.
* ``cellpose.metrics.average_precision``: identical TP/FP/FN; its ``ap`` is float32.
  Both images empty: Cellpose NaN, here 1. (Cellpose's own ``aggregated_jaccard_index``
  is a different quantity: Hungarian matches at 0.5 over the foreground union; ``aji``
  here is Kumar's definition.)
* ``py-ctcmetrics`` SEG: identical per image and per sequence. With no reference object
  it reports 0; here ``seg`` is NaN (and such images add nothing to the pooled SEG).
* Panoptic quality (Kirillov et al. 2019) matches at IoU *strictly* above 0.5; here, as
  in StarDist, at ``>= 0.5``, which differs only for pairs with IoU exactly 1/2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

__all__ = [
    "ANNOTATIONS",
    "DEFAULT_EXTRA_THRESHOLDS",
    "DEFAULT_THRESHOLDS",
    "ImageScore",
    "Matching",
    "OverlapTable",
    "aggregated_jaccard_index",
    "ctc_seg",
    "match",
    "match_table",
    "overlap_table",
    "score_image",
    "score_table",
    "summarize",
    "threshold_tag",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""IoU thresholds 0.50, 0.55, ..., 0.95 over which ``mean_ap`` is averaged."""

DEFAULT_EXTRA_THRESHOLDS: tuple[float, ...] = (0.25, 0.75)
"""Thresholds reported in addition (not part of ``mean_ap``)."""

ANNOTATIONS: tuple[str, ...] = ("full", "partial")
"""Accepted values of ``annotation``: dense ground truth, or sparse (only SEG is scored)."""

# The pair table is aggregated with bincount while the id space has at most this many
# bins per run (plus a constant), and by sorting the runs otherwise: O(runs) either way.
_DENSE_BINS_PER_RUN = 8
_DENSE_BINS_MIN = 1 << 16


def threshold_tag(threshold: float) -> str:
    """Column suffix of a threshold: ``0.5 -> "0.50"``."""
    return f"{threshold:.2f}"


# --------------------------------------------------------------------------- overlap table


@dataclass(frozen=True, eq=False)
class OverlapTable:
    """Sparse contingency table of two label images.

    Objects are indexed ``0..n_true-1`` and ``0..n_pred-1`` in increasing order of their
    ids. Pairs are the ``(true, pred)`` combinations that share at least one pixel,
    sorted by true index, then predicted index.

    Attributes
    ----------
    true_ids, pred_ids : ndarray of int64, shape (n_true,), (n_pred,)
        Original label values of the objects.
    true_area, pred_area : ndarray of int64, shape (n_true,), (n_pred,)
        Pixel counts of the objects.
    pair_true, pair_pred : ndarray of intp, shape (k,)
        Object indices of each overlapping pair.
    intersection : ndarray of int64, shape (k,)
        Shared pixel count of each pair (> 0).
    iou : ndarray of float64, shape (k,)
        Intersection over union of each pair.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_area: np.ndarray
    pred_area: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray = field(repr=False)

    @property
    def n_true(self) -> int:
        return int(self.true_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)


def _flat_labels(y: Any, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype == np.bool_:
        y = y.view(np.uint8)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer label image (0 = background), got dtype {y.dtype}; "
            "convert with skimage.measure.label or .astype(np.int32) if the values are ids"
        )
    flat = y.ravel()
    if np.issubdtype(flat.dtype, np.signedinteger) and flat.size and flat.min() < 0:
        raise ValueError(f"{name} has negative values; label ids must be >= 0")
    return flat


def _aggregate(keys: np.ndarray, weights: np.ndarray, n_bins: int):
    """Sum ``weights`` per distinct key; return (sorted distinct keys, sums)."""
    if n_bins <= _DENSE_BINS_PER_RUN * keys.size + _DENSE_BINS_MIN:
        sums = np.bincount(keys.astype(np.intp), weights=weights, minlength=n_bins)
        present = np.flatnonzero(sums)
        return present.astype(np.uint64), sums[present].astype(np.int64)
    weight_bits = int(weights.max()).bit_length()
    if (n_bins - 1).bit_length() + weight_bits <= 64:
        # pack (key, weight) into one uint64: a plain sort (SIMD) is several times
        # faster than an argsort followed by gathers
        packed = (keys << np.uint64(weight_bits)) | weights.astype(np.uint64)
        packed.sort()
        keys = packed >> np.uint64(weight_bits)
        weights = packed & np.uint64((1 << weight_bits) - 1)
    else:
        order = np.argsort(keys, kind="stable")
        keys, weights = keys[order], weights[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.add.reduceat(weights.astype(np.int64), starts)


def overlap_table(y_true: np.ndarray, y_pred: np.ndarray) -> OverlapTable:
    """Build the sparse overlap table of two label images.

    Parameters
    ----------
    y_true, y_pred : ndarray of int or bool, same shape (e.g. (H, W))
        Label images, 0 = background, any non-negative ids (gaps allowed).

    Returns
    -------
    OverlapTable
    """
    t = _flat_labels(y_true, "y_true")
    p = _flat_labels(y_pred, "y_pred")
    if np.shape(y_true) != np.shape(y_pred):
        raise ValueError(
            f"y_true {np.shape(y_true)} and y_pred {np.shape(y_pred)} have different shapes"
        )
    n = t.size
    empty = np.zeros(0, np.int64)
    if n == 0:
        return OverlapTable(empty, empty, empty, empty, empty, empty, empty, empty.astype(float))
    # Run-length encode the pair image in raster order: runs are ~ rows x objects, far
    # fewer than pixels, and everything after this works on runs.
    change = t[1:] != t[:-1]
    change |= p[1:] != p[:-1]
    starts = np.flatnonzero(change)
    starts += 1
    starts = np.concatenate(([0], starts))
    lengths = np.diff(starts, append=n)
    rt = t[starts].astype(np.uint64)
    rp = p[starts].astype(np.uint64)
    fg = (rt | rp) != 0
    rt, rp, lengths = rt[fg], rp[fg], lengths[fg]
    if rt.size == 0:
        return OverlapTable(empty, empty, empty, empty, empty, empty, empty, empty.astype(float))
    t_ids = p_ids = None
    if (int(rt.max()) + 1) * (int(rp.max()) + 1) >= 2**62:  # ids too large to pack
        t_ids, rt = np.unique(rt, return_inverse=True)
        p_ids, rp = np.unique(rp, return_inverse=True)
        rt, rp = rt.astype(np.uint64), rp.astype(np.uint64)
    width = int(rp.max()) + 1
    n_bins = (int(rt.max()) + 1) * width
    keys = rt * np.uint64(width) + rp
    keys, counts = _aggregate(keys, lengths, n_bins)
    kt = (keys // np.uint64(width)).astype(np.int64)
    kp = (keys % np.uint64(width)).astype(np.int64)
    if t_ids is not None:
        kt, kp = t_ids[kt].astype(np.int64), p_ids[kp].astype(np.int64)

    # Objects and their areas (pairs include the background row/column).
    true_ids, t_inv = np.unique(kt, return_inverse=True)
    true_area = np.bincount(t_inv, weights=counts).astype(np.int64)
    pred_ids, p_inv = np.unique(kp, return_inverse=True)
    pred_area = np.bincount(p_inv, weights=counts).astype(np.int64)
    if true_ids.size and true_ids[0] == 0:
        true_ids, true_area, t_inv = true_ids[1:], true_area[1:], t_inv - 1
    if pred_ids.size and pred_ids[0] == 0:
        pred_ids, pred_area, p_inv = pred_ids[1:], pred_area[1:], p_inv - 1
    both = (kt != 0) & (kp != 0)
    pair_true = t_inv[both]
    pair_pred = p_inv[both]
    inter = counts[both]
    iou = inter / (true_area[pair_true] + pred_area[pair_pred] - inter)
    return OverlapTable(
        true_ids.astype(np.int64),
        pred_ids.astype(np.int64),
        true_area,
        pred_area,
        pair_true,
        pair_pred,
        inter,
        iou,
    )


# --------------------------------------------------------------------------- matching


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {threshold}")
    return threshold


def _has_duplicates(values: np.ndarray, size: int) -> bool:
    return values.size > 1 and int(np.bincount(values, minlength=size).max()) > 1


def _matched_pairs(table: OverlapTable, threshold: float) -> np.ndarray:
    """Indices (into the pair arrays) of the one-to-one matching at ``threshold``."""
    cand = np.flatnonzero(table.iou >= threshold)
    if threshold > 0.5 or cand.size < 2:
        return cand
    pt, pp = table.pair_true[cand], table.pair_pred[cand]
    if not (_has_duplicates(pt, table.n_true) or _has_duplicates(pp, table.n_pred)):
        return cand
    # Conflicts: maximum-cardinality matching, ties broken by the largest IoU sum, as a
    # sparse min-cost perfect matching on an augmented graph: left = true + one dummy
    # per pred, right = pred + one dummy per true; every node may pair with its own
    # dummy, and dummies pair with each other along the candidate edges, so any
    # matching extends to a perfect one at the same cost.
    rows_u, r = np.unique(pt, return_inverse=True)
    cols_u, c = np.unique(pp, return_inverse=True)
    n_r, n_c, n_e = rows_u.size, cols_u.size, cand.size
    size = n_r + n_c
    base = 3.0  # every edge gets a positive cost (explicit zeros would be dropped)
    gain = 1.0 + table.iou[cand] / (2.0 * min(n_r, n_c))  # one more pair beats any IoU sum
    rows = np.concatenate((r, np.arange(n_r), n_r + np.arange(n_c), n_r + c))
    cols = np.concatenate((c, n_c + np.arange(n_r), np.arange(n_c), n_c + r))
    data = np.concatenate((base - gain, np.full(size + n_e, base)))
    graph = csr_matrix((data, (rows, cols)), shape=(size, size))
    left, right = min_weight_full_bipartite_matching(graph)
    real = (left < n_r) & (right < n_c)
    edge_key = r.astype(np.int64) * n_c + c
    order = np.argsort(edge_key)
    found = np.searchsorted(edge_key[order], left[real].astype(np.int64) * n_c + right[real])
    return np.sort(cand[order[found]])


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


@dataclass(frozen=True, eq=False)
class Matching:
    """One-to-one matching of two label images at one IoU threshold.

    Attributes
    ----------
    threshold : float
    n_true, n_pred, tp, fp, fn : int
        ``tp + fn == n_true`` and ``tp + fp == n_pred``.
    precision, recall, f1, ap : float
        ``ap = tp / (tp + fp + fn)`` (StarDist's *accuracy*). Conventions for empty
        images are in the module docstring.
    iou_sum : float
        Sum of the IoU of the matched pairs.
    mean_matched_iou : float
        ``iou_sum / tp`` (StarDist ``mean_matched_score``; SQ).
    mean_true_iou : float
        ``iou_sum / n_true`` (StarDist ``mean_true_score``).
    pq : float
        Panoptic quality ``iou_sum / (tp + fp/2 + fn/2)``.
    matched_true, matched_pred : ndarray of int64, shape (tp,)
        Label ids of the matched pairs (original ids, not indices).
    matched_iou : ndarray of float64, shape (tp,)
    """

    threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float
    iou_sum: float
    mean_matched_iou: float
    mean_true_iou: float
    pq: float
    matched_true: np.ndarray = field(repr=False)
    matched_pred: np.ndarray = field(repr=False)
    matched_iou: np.ndarray = field(repr=False)


def _ratios(tp: int, fp: int, fn: int, iou_sum: float) -> dict[str, float]:
    if tp + fp + fn == 0:  # both images empty: a perfect answer
        return dict(precision=1.0, recall=1.0, f1=1.0, ap=1.0, sq=1.0, pq=1.0)
    return dict(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        ap=_ratio(tp, tp + fp + fn),
        sq=_ratio(iou_sum, tp),
        pq=_ratio(iou_sum, tp + fp / 2 + fn / 2),
    )


def _descending_cumsum(iou: np.ndarray) -> np.ndarray:
    """``out[k - 1]`` = sum of the ``k`` largest values, added one by one from the largest."""
    return np.cumsum(np.sort(iou)[::-1])


def _matching(
    table: OverlapTable, threshold: float, idx: np.ndarray, iou_sum: float | None = None
) -> Matching:
    """The :class:`Matching` made of the pairs ``idx`` (indices into the pair arrays).

    ``iou_sum`` is the matched IoU summed in a fixed order, so that every code path gives
    the same float: above 0.5 (where the matching is every pair with IoU >= t) from the
    largest IoU down, which lets :func:`score_table` take all thresholds from one
    cumulative sum (passed in as ``iou_sum``); at or below 0.5 in pair order.
    """
    tp = int(idx.size)
    fp, fn = table.n_pred - tp, table.n_true - tp
    iou = table.iou[idx]
    if iou_sum is None:
        iou_sum = float(_descending_cumsum(iou)[-1] if threshold > 0.5 and tp else iou.sum())
    r = _ratios(tp, fp, fn, iou_sum)
    empty = table.n_true + table.n_pred == 0
    return Matching(
        threshold=threshold,
        n_true=table.n_true,
        n_pred=table.n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=r["precision"],
        recall=r["recall"],
        f1=r["f1"],
        ap=r["ap"],
        iou_sum=iou_sum,
        mean_matched_iou=r["sq"],
        mean_true_iou=1.0 if empty else _ratio(iou_sum, table.n_true),
        pq=r["pq"],
        matched_true=table.true_ids[table.pair_true[idx]],
        matched_pred=table.pred_ids[table.pair_pred[idx]],
        matched_iou=iou,
    )


def match_table(table: OverlapTable, threshold: float = 0.5) -> Matching:
    """:func:`match` on a precomputed :class:`OverlapTable`."""
    threshold = _check_threshold(threshold)
    return _matching(table, threshold, _matched_pairs(table, threshold))


def match(y_true: np.ndarray, y_pred: np.ndarray, threshold: float = 0.5) -> Matching:
    """Match predicted to true instances one-to-one at an IoU threshold.

    Parameters
    ----------
    y_true, y_pred : ndarray of int, same shape (e.g. (H, W))
        Label images, 0 = background; ids need not be consecutive.
    threshold : float in (0, 1]
        A pair can match when ``IoU >= threshold``.

    Returns
    -------
    Matching
        Every count and ratio, plus the matched ids.
    """
    return match_table(overlap_table(y_true, y_pred), threshold)


# --------------------------------------------------------------------------- single scores


def _aji_counts(table: OverlapTable) -> tuple[int, int]:
    """(sum of intersections, sum of unions) of the Aggregated Jaccard Index."""
    k = table.pair_true.size
    if k == 0:
        return 0, int(table.true_area.sum() + table.pred_area.sum())
    pt, pp, iou = table.pair_true, table.pair_pred, table.iou
    group_start = np.flatnonzero(np.concatenate(([True], pt[1:] != pt[:-1])))
    group = np.repeat(np.arange(group_start.size), np.diff(group_start, append=k))
    is_best = iou == np.maximum.reduceat(iou, group_start)[group]
    best = np.flatnonzero(is_best)
    # pairs are sorted by pred within a true object: the first best has the smaller id
    best = best[np.concatenate(([True], group[best][1:] != group[best][:-1]))]
    inter = table.intersection[best]
    union = table.true_area[pt[best]] + table.pred_area[pp[best]] - inter
    used = np.zeros(table.n_pred, bool)
    used[pp[best]] = True
    paired = np.zeros(table.n_true, bool)
    paired[pt[best]] = True
    total_union = union.sum() + table.true_area[~paired].sum() + table.pred_area[~used].sum()
    return int(inter.sum()), int(total_union)


def _seg_sum(table: OverlapTable) -> float:
    """Sum over reference objects of the CTC SEG Jaccard (0 when unmatched)."""
    hit = 2 * table.intersection > table.true_area[table.pair_true]
    return float(table.iou[hit].sum())


def aggregated_jaccard_index(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017) of two label images; 1.0 if both empty."""
    inter, union = _aji_counts(overlap_table(y_true, y_pred))
    return inter / union if union else 1.0


def ctc_seg(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Cell Tracking Challenge SEG of one image; NaN when ``y_true`` has no object."""
    table = overlap_table(y_true, y_pred)
    return _seg_sum(table) / table.n_true if table.n_true else math.nan


# --------------------------------------------------------------------------- per image


def _all_thresholds(thresholds: Iterable[float], extra: Iterable[float]) -> list[float]:
    values = sorted({_check_threshold(t) for t in (*thresholds, *extra)})
    tags = [threshold_tag(t) for t in values]
    if len(set(tags)) != len(tags):
        raise ValueError(f"thresholds {values} collide when rounded to 2 decimals")
    return values


_ROW_COUNTS = ("tp", "fp", "fn", "precision", "recall", "f1", "ap", "iou_sum")
"""Per-threshold columns of :meth:`ImageScore.row`, in order (suffixed ``@0.50`` etc.)."""


@dataclass(frozen=True, eq=False)
class ImageScore:
    """Every score of one predicted label image against its ground truth.

    Returned by :func:`score_image` and :func:`score_table`. Per-threshold results are
    :class:`Matching` objects in ``matchings`` (look one up with :meth:`matching`); the
    scalar fields are the image-level scores. :meth:`row` flattens everything into the
    one-row dict of ``per_image.csv``, the input of :func:`summarize`. Instances compare
    by identity (``eq=False``: they hold arrays and NaNs); compare ``row()`` instead.

    Attributes
    ----------
    n_true, n_pred : int
        Number of true and predicted objects (always computed, also for partial
        annotation).
    annotation : {"full", "partial"}
        How the ground truth was annotated. For ``"partial"`` every score except
        ``seg`` / ``seg_sum`` is NaN and ``matchings`` is empty.
    thresholds : tuple of float
        IoU thresholds averaged into ``mean_ap``, in the order given.
    extra_thresholds : tuple of float
        Further thresholds reported in ``matchings`` (and :meth:`row`) but not averaged.
    matchings : tuple of Matching
        One per threshold of ``sorted(set(thresholds) | set(extra_thresholds))``, in that
        order, identical to :func:`match` at that threshold; ``()`` for partial
        annotation.
    mean_ap : float
        Mean over ``thresholds`` of ``Matching.ap`` (``TP / (TP + FP + FN)``).
    pq, sq : float
        Panoptic and segmentation quality at IoU 0.5 (``pq = sq * f1``), whether or not
        0.5 is among the thresholds.
    aji : float
        Aggregated Jaccard Index, ``aji_intersection / aji_union``.
    pixel_iou, dice : float
        Foreground IoU and Dice, instances ignored.
    seg : float
        Cell Tracking Challenge SEG, ``seg_sum / n_true``; NaN when ``n_true == 0``.
    aji_intersection, aji_union : int (NaN for partial annotation)
        Summed intersections and unions of the AJI pairing.
    fg_true, fg_pred, fg_intersection : int (NaN for partial annotation)
        Foreground pixel counts of ``y_true``, ``y_pred`` and of both.
    seg_sum : float
        Sum over reference objects of their SEG Jaccard (0 when unmatched).

    Notes
    -----
    The raw sums make dataset-level pooling exact (:func:`summarize`). Both images empty
    gives 1.0 for every ratio and NaN for ``seg``; any other 0/0 is 0. All conventions
    are in the module docstring.
    """

    n_true: int
    n_pred: int
    annotation: str
    thresholds: tuple[float, ...]
    extra_thresholds: tuple[float, ...]
    matchings: tuple[Matching, ...] = field(repr=False)
    mean_ap: float
    pq: float
    sq: float
    aji: float
    pixel_iou: float
    dice: float
    seg: float
    aji_intersection: int | float
    aji_union: int | float
    fg_true: int | float
    fg_pred: int | float
    fg_intersection: int | float
    seg_sum: float

    def matching(self, threshold: float) -> Matching:
        """The :class:`Matching` at ``threshold`` (compared at 2 decimals: 0.5 == 0.50).

        Raises
        ------
        ValueError
            When ``threshold`` is not one of the scored thresholds, or the annotation is
            partial (no matching is computed then).
        """
        tag = threshold_tag(float(threshold))
        for m in self.matchings:
            if threshold_tag(m.threshold) == tag:
                return m
        if self.annotation == "partial":
            raise ValueError(
                f"no matching at IoU {tag}: the ground truth is partially annotated, so "
                "only seg is scored (matchings is empty)"
            )
        available = ", ".join(threshold_tag(m.threshold) for m in self.matchings)
        raise ValueError(
            f"no matching at IoU {tag}; scored thresholds: {available}. Pass it in "
            "thresholds or extra_thresholds to score_image."
        )

    def row(self) -> dict[str, float | int]:
        """The flat per-image row (one ``per_image.csv`` row, the input of :func:`summarize`).

        Keys, in order: ``n_true``, ``n_pred``; for every threshold tag (``"0.50"`` etc.)
        of ``sorted(set(thresholds) | set(extra_thresholds))``: ``tp@``, ``fp@``,
        ``fn@``, ``precision@``, ``recall@``, ``f1@``, ``ap@``, ``iou_sum@``; then
        ``mean_ap``, ``pq``, ``sq``, ``aji``, ``pixel_iou``, ``dice``, ``seg``,
        ``aji_intersection``, ``aji_union``, ``fg_true``, ``fg_pred``,
        ``fg_intersection``, ``seg_sum``. Partial annotation: all NaN except ``n_true``,
        ``n_pred``, ``seg`` and ``seg_sum``.
        """
        row: dict[str, float | int] = {"n_true": self.n_true, "n_pred": self.n_pred}
        if self.annotation == "partial":
            nan = math.nan
            for t in _all_thresholds(self.thresholds, self.extra_thresholds):
                tag = threshold_tag(t)
                for name in _ROW_COUNTS:
                    row[f"{name}@{tag}"] = nan
        else:
            for m in self.matchings:
                tag = threshold_tag(m.threshold)
                row[f"tp@{tag}"], row[f"fp@{tag}"], row[f"fn@{tag}"] = m.tp, m.fp, m.fn
                row[f"precision@{tag}"], row[f"recall@{tag}"] = m.precision, m.recall
                row[f"f1@{tag}"], row[f"ap@{tag}"] = m.f1, m.ap
                row[f"iou_sum@{tag}"] = m.iou_sum
        row.update(
            mean_ap=self.mean_ap,
            pq=self.pq,
            sq=self.sq,
            aji=self.aji,
            pixel_iou=self.pixel_iou,
            dice=self.dice,
            seg=self.seg,
            aji_intersection=self.aji_intersection,
            aji_union=self.aji_union,
            fg_true=self.fg_true,
            fg_pred=self.fg_pred,
            fg_intersection=self.fg_intersection,
            seg_sum=self.seg_sum,
        )
        return row


def _matchings(table: OverlapTable, thresholds: Sequence[float]) -> tuple[Matching, ...]:
    """:func:`match_table` at each (checked) threshold, sharing the work above 0.5."""
    # Above 0.5 the matching is the pairs with IoU >= t (see _matched_pairs): filter the
    # pairs above 0.5 once, then each threshold scans only those, in the same order.
    strong = np.flatnonzero(table.iou > 0.5)
    strong_iou = table.iou[strong]
    top_sums = np.concatenate(([0.0], _descending_cumsum(strong_iou)))
    out = []
    for t in thresholds:
        if t > 0.5:
            idx = strong[strong_iou >= t]
            out.append(_matching(table, t, idx, float(top_sums[idx.size])))
        else:
            out.append(_matching(table, t, _matched_pairs(table, t)))
    return tuple(out)


def score_table(
    table: OverlapTable,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    extra_thresholds: Sequence[float] = DEFAULT_EXTRA_THRESHOLDS,
    annotation: str = "full",
) -> ImageScore:
    """:func:`score_image` on a precomputed :class:`OverlapTable`."""
    if annotation not in ANNOTATIONS:
        raise ValueError(
            f"annotation must be one of {ANNOTATIONS}, got {annotation!r} (images without "
            "ground truth, annotation='none', cannot be scored)"
        )
    thresholds = tuple(_check_threshold(t) for t in thresholds)
    if not thresholds:
        raise ValueError("at least one IoU threshold is needed for mean_ap")
    extra = tuple(_check_threshold(t) for t in extra_thresholds)
    every = _all_thresholds(thresholds, extra)
    n_true, n_pred = table.n_true, table.n_pred
    seg_sum = _seg_sum(table)
    seg = seg_sum / n_true if n_true else math.nan
    if annotation == "partial":
        nan = math.nan
        return ImageScore(
            n_true=n_true,
            n_pred=n_pred,
            annotation=annotation,
            thresholds=thresholds,
            extra_thresholds=extra,
            matchings=(),
            mean_ap=nan,
            pq=nan,
            sq=nan,
            aji=nan,
            pixel_iou=nan,
            dice=nan,
            seg=seg,
            aji_intersection=nan,
            aji_union=nan,
            fg_true=nan,
            fg_pred=nan,
            fg_intersection=nan,
            seg_sum=seg_sum,
        )

    matchings = _matchings(table, every)
    by_threshold = dict(zip(every, matchings, strict=True))
    half = by_threshold.get(0.5) or match_table(table, 0.5)
    aji_inter, aji_union = _aji_counts(table)
    fg_true, fg_pred = int(table.true_area.sum()), int(table.pred_area.sum())
    fg_inter = int(table.intersection.sum())
    empty = fg_true + fg_pred == 0
    return ImageScore(
        n_true=n_true,
        n_pred=n_pred,
        annotation=annotation,
        thresholds=thresholds,
        extra_thresholds=extra,
        matchings=matchings,
        mean_ap=float(np.mean([by_threshold[t].ap for t in thresholds])),
        pq=half.pq,
        sq=half.mean_matched_iou,
        aji=1.0 if empty else aji_inter / aji_union,
        pixel_iou=1.0 if empty else fg_inter / (fg_true + fg_pred - fg_inter),
        dice=1.0 if empty else 2 * fg_inter / (fg_true + fg_pred),
        seg=seg,
        aji_intersection=aji_inter,
        aji_union=aji_union,
        fg_true=fg_true,
        fg_pred=fg_pred,
        fg_intersection=fg_inter,
        seg_sum=seg_sum,
    )


def score_image(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    extra_thresholds: Sequence[float] = DEFAULT_EXTRA_THRESHOLDS,
    annotation: str = "full",
) -> ImageScore:
    """Score one predicted label image against its ground truth.

    Parameters
    ----------
    y_true, y_pred : ndarray of int, same shape (e.g. (H, W))
        Label images, 0 = background; ids need not be consecutive.
    thresholds : sequence of float in (0, 1]
        IoU thresholds averaged into ``mean_ap`` (default 0.50:0.05:0.95).
    extra_thresholds : sequence of float in (0, 1]
        Further thresholds matched but not averaged (default 0.25, 0.75).
    annotation : {"full", "partial"}
        ``"partial"`` for sparse ground truth: only ``seg``, ``seg_sum``, ``n_true`` and
        ``n_pred`` are computed, everything else is NaN and ``matchings`` is empty.

    Returns
    -------
    ImageScore
        ``mean_ap`` (over ``thresholds`` only), ``pq``, ``sq``, ``aji``, ``pixel_iou``,
        ``dice``, ``seg`` and the raw sums that make pooling exact; one
        :class:`Matching` per threshold of ``sorted(set(thresholds) |
        set(extra_thresholds))`` (``.matching(0.5).ap``); ``.row()`` is the flat dict
        of ``per_image.csv``.
    """
    return score_table(overlap_table(y_true, y_pred), thresholds, extra_thresholds, annotation)


# --------------------------------------------------------------------------- per dataset


def _json_number(value: Any) -> Any:
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


def _tags_in(columns: Iterable[str]) -> list[str]:
    tags = {c.split("@", 1)[1] for c in columns if c.startswith("tp@")}
    return sorted(tags, key=float)


def _pooled(df: pd.DataFrame, thresholds: Sequence[float]) -> dict[str, Any]:
    """Scores from counts summed over images (count-based ones: fully annotated only)."""
    nan = math.nan
    tags = _tags_in(df.columns)
    full = df[df[f"tp@{tags[0]}"].notna()] if tags else df.iloc[:0]
    n_true, n_pred = int(full["n_true"].sum()), int(full["n_pred"].sum())
    out: dict[str, Any] = {
        "n_images_fully_annotated": int(len(full)),
        "n_true": int(df["n_true"].sum()),
        "n_pred": int(df["n_pred"].sum()),
    }
    aps: dict[str, float] = {}
    for tag in tags:
        if len(full):
            tp = int(full[f"tp@{tag}"].sum())
            fp, fn = n_pred - tp, n_true - tp
            r = _ratios(tp, fp, fn, float(full[f"iou_sum@{tag}"].sum()))
        else:  # nothing to pool
            tp = fp = fn = nan
            r = dict.fromkeys(("precision", "recall", "f1", "ap", "pq", "sq"), nan)
        out[f"tp@{tag}"], out[f"fp@{tag}"], out[f"fn@{tag}"] = tp, fp, fn
        for name in ("precision", "recall", "f1", "ap", "pq", "sq"):
            out[f"{name}@{tag}"] = r[name]
        aps[tag] = r["ap"]
    wanted = [threshold_tag(t) for t in thresholds]
    have_all = all(tag in aps for tag in wanted)
    out["mean_ap"] = float(np.mean([aps[tag] for tag in wanted])) if have_all else nan
    out["pq"], out["sq"] = out.get("pq@0.50", nan), out.get("sq@0.50", nan)
    out["aji"] = out["pixel_iou"] = out["dice"] = nan
    if len(full) and "aji_union" in full:
        union = float(full["aji_union"].sum())
        out["aji"] = float(full["aji_intersection"].sum()) / union if union else 1.0
    if len(full) and "fg_intersection" in full:
        inter = float(full["fg_intersection"].sum())
        total = float(full["fg_true"].sum() + full["fg_pred"].sum())
        out["pixel_iou"] = inter / (total - inter) if total else 1.0
        out["dice"] = 2 * inter / total if total else 1.0
    n_ref = int(df["n_true"].sum())
    has_seg = "seg_sum" in df and n_ref
    out["seg"] = float(df["seg_sum"].sum()) / n_ref if has_seg else nan
    return {k: _json_number(v) for k, v in out.items()}


def _per_image_mean(df: pd.DataFrame) -> dict[str, Any]:
    numeric = df.drop(columns=["id", "cell_type", "annotation"], errors="ignore")
    numeric = numeric.select_dtypes(include="number")
    return {k: _json_number(v) for k, v in numeric.mean(skipna=True).items()}


def summarize(
    per_image: pd.DataFrame,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    group_by: str | None = "cell_type",
) -> dict[str, Any]:
    """Aggregate per-image rows over a dataset.

    Parameters
    ----------
    per_image : DataFrame
        One row per image: the :meth:`ImageScore.row` columns plus ``id`` and optionally
        ``cell_type`` (or whatever ``group_by`` names).
    thresholds : sequence of float
        Thresholds whose pooled ``ap`` is averaged into the pooled ``mean_ap``.
    group_by : str or None
        Column to break results down by (skipped when absent or None).

    Returns
    -------
    dict (JSON-serialisable; NaN becomes None)
        ``n_images``, ``thresholds``, ``averaging`` (what each block means),
        ``per_image_mean`` (every numeric column averaged over images, NaN skipped),
        ``pooled`` (scores from counts summed over the fully annotated images, their
        number in ``n_images_fully_annotated``;
        ``seg`` over all images), and ``per_<group_by>``: ``{value: {n_images,
        per_image_mean, pooled}}``.
    """
    thresholds = [_check_threshold(t) for t in thresholds]
    summary: dict[str, Any] = {
        "n_images": int(len(per_image)),
        "thresholds": thresholds,
        "averaging": {
            "per_image_mean": "each score computed per image, then averaged over images "
            "(images where it is undefined, NaN, are skipped)",
            "pooled": "TP/FP/FN, matched IoU, AJI intersections/unions and foreground "
            "pixels summed over all fully annotated images, then the ratio taken once; "
            "seg = mean over every reference object of the dataset (as the CTC does)",
        },
        "per_image_mean": _per_image_mean(per_image) if len(per_image) else {},
        "pooled": _pooled(per_image, thresholds) if len(per_image) else {},
    }
    if group_by and group_by in per_image.columns:
        groups: dict[str, Any] = {}
        for value, sub in per_image.groupby(group_by, dropna=False, sort=True):
            key = "unknown" if pd.isna(value) else str(value)
            groups[key] = {
                "n_images": int(len(sub)),
                "per_image_mean": _per_image_mean(sub),
                "pooled": _pooled(sub, thresholds),
            }
        summary[f"per_{group_by}"] = groups
    return summary
