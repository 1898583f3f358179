"""Property-based tests (hypothesis) of the converter building blocks.

- Kaggle run-length encoding (:mod:`cellbench.datasets.rle`): encode/decode round trips
  in both pixel orders, empty and full masks, against a loop decoder written here.
- :func:`~cellbench.datasets.base.masks_to_labels` on random overlapping masks: valid
  labels, the smallest-claimant rule (pixel by pixel, computed here), the contested count.
- The folder converter on random label images written to disk: the ids come back as
  instances, ``n_instances`` is right, nothing overlaps.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tifffile
from cellbench.config import DatasetConfig
from cellbench.datasets import get_dataset, rle
from cellbench.datasets.base import ConvertedWriter, masks_to_labels
from cellbench.io import read_labels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rle_reference import decode_loop, smallest_claimant_owner
from scipy import ndimage as ndi

ORDERS = st.sampled_from(["F", "C"])
SHAPES = st.tuples(st.integers(1, 12), st.integers(1, 12))
FAST = settings(max_examples=80, deadline=None)


def _bool_masks(shape):
    return arrays(bool, shape, elements=st.booleans())


@st.composite
def mask_and_order(draw):
    shape = draw(SHAPES)
    kind = draw(st.sampled_from(["random", "empty", "full"]))
    if kind == "empty":
        mask = np.zeros(shape, dtype=bool)
    elif kind == "full":
        mask = np.ones(shape, dtype=bool)
    else:
        mask = draw(_bool_masks(shape))
    return mask, draw(ORDERS)


@st.composite
def canonical_rle(draw):
    """A canonical Kaggle RLE: 1-indexed, increasing, runs separated by at least one pixel."""
    h, w = draw(SHAPES)
    n = h * w
    runs, pos = [], 0  # pos = 0-based index of the next free pixel
    for _ in range(draw(st.integers(0, 8))):
        gap = draw(st.integers(0 if not runs else 1, 6))
        start = pos + gap
        if start >= n:
            break
        length = draw(st.integers(1, n - start))
        runs.append((start + 1, length))
        pos = start + length
    text = " ".join(f"{s} {length}" for s, length in runs)
    return text, (h, w), draw(ORDERS)


# --------------------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------------------


@FAST
@given(mask_and_order())
def test_rle_decode_of_encode_is_identity(case):
    mask, order = case
    text = rle.rle_encode(mask, order=order)
    assert np.array_equal(rle.rle_decode(text, mask.shape, order=order), mask)
    assert np.array_equal(decode_loop(text, mask.shape, order), mask)
    idx = rle.rle_decode_indices(text, mask.shape, order=order)
    assert np.array_equal(idx, np.flatnonzero(mask))  # row-major indices whatever the order
    if not mask.any():
        assert text == ""
    if mask.all():
        assert text == f"1 {mask.size}"


@FAST
@given(canonical_rle())
def test_rle_encode_of_decode_is_identity(case):
    text, shape, order = case
    mask = rle.rle_decode(text, shape, order=order)
    assert np.array_equal(mask, decode_loop(text, shape, order))
    assert rle.rle_encode(mask, order=order) == text


@FAST
@given(mask_and_order())
def test_rle_orders_are_transposes(case):
    """Column-major RLE of a mask is the row-major RLE of its transpose."""
    mask, order = case
    other = "C" if order == "F" else "F"
    assert rle.rle_encode(mask, order=order) == rle.rle_encode(mask.T, order=other)


# --------------------------------------------------------------------------------------
# masks_to_labels: the overlap rule
# --------------------------------------------------------------------------------------


@st.composite
def overlapping_masks(draw):
    h, w = draw(st.tuples(st.integers(1, 10), st.integers(1, 10)))
    n = draw(st.integers(0, 6))
    masks = []
    for _ in range(n):
        if draw(st.booleans()):  # a rectangle (overlaps are likely)
            r0, r1 = sorted(draw(st.tuples(st.integers(0, h), st.integers(0, h))))
            c0, c1 = sorted(draw(st.tuples(st.integers(0, w), st.integers(0, w))))
            m = np.zeros((h, w), dtype=bool)
            m[r0:r1, c0:c1] = True
        else:
            m = draw(_bool_masks((h, w)))
        masks.append(m)
    if masks and draw(st.booleans()):
        masks.append(masks[draw(st.integers(0, len(masks) - 1))].copy())  # an exact duplicate
    return masks, (h, w)


def _rule_reference(masks, shape):
    """Pixel by pixel: the claimant with the fewest pixels wins, ties to the first one."""
    h, w = shape
    owner = smallest_claimant_owner(masks) if masks else np.full((h, w), -1)
    survivors = sorted(set(owner[owner >= 0].tolist()))
    expected = np.zeros((h, w), np.int64)
    for rank, i in enumerate(survivors, start=1):  # numbered 1..N in input order
        expected[owner == i] = rank
    contested = int((np.sum(masks, axis=0) > 1).sum()) if masks else 0
    return expected, contested


@settings(max_examples=150, deadline=None)
@given(overlapping_masks())
def test_masks_to_labels_smallest_claimant_rule(case):
    masks, shape = case
    labels, contested = masks_to_labels(masks, shape)
    assert labels.shape == shape and labels.dtype == np.int32
    present = np.unique(labels[labels > 0])
    assert np.array_equal(present, np.arange(1, present.size + 1))  # 1..N, no gaps
    union = np.any(masks, axis=0) if masks else np.zeros(shape, bool)
    assert np.array_equal(labels > 0, union)  # every claimed pixel, nothing else
    expected, expected_contested = _rule_reference(masks, shape)
    assert np.array_equal(labels, expected)
    assert contested == expected_contested
    for value in present:  # each instance lies inside one of the source masks
        assert any(m[labels == value].all() for m in masks)
    flat, flat_contested = masks_to_labels([np.flatnonzero(m) for m in masks], shape)
    assert np.array_equal(flat, labels) and flat_contested == contested


# --------------------------------------------------------------------------------------
# The folder converter on label images written to disk
# --------------------------------------------------------------------------------------


@st.composite
def label_images(draw):
    h, w = draw(st.tuples(st.integers(2, 14), st.integers(2, 14)))
    top = draw(st.sampled_from([1, 3, 7, 300, 65535]))  # uint16 ids, sparse or dense
    values = draw(st.lists(st.integers(1, top), min_size=1, max_size=5, unique=True))
    labels = draw(arrays(np.uint16, (h, w), elements=st.sampled_from([0, *values])))
    return labels


def _convert_folder(labels: np.ndarray, layout: str):
    cfg = DatasetConfig(name="mine", kind="folder", source="local", path="x")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mine"
        image = np.arange(labels.size, dtype=np.uint16).reshape(labels.shape)
        if layout == "images_labels":
            (root / "images").mkdir(parents=True)
            (root / "labels").mkdir()
            tifffile.imwrite(root / "images" / "f1.tif", image)
            tifffile.imwrite(root / "labels" / "f1.tif", labels)
        else:
            root.mkdir()
            tifffile.imwrite(root / "f1_img.tif", image)
            tifffile.imwrite(root / "f1_masks.tif", labels)
        writer = ConvertedWriter(Path(tmp) / "out")
        get_dataset(cfg).convert(root, writer)
        index = writer.finish()
        return index.iloc[0], read_labels(Path(tmp) / "out" / "labels" / "f1.tif")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_images(), st.sampled_from(["images_labels", "cellpose"]))
def test_folder_converter_keeps_ids_as_instances(labels, layout):
    row, got = _convert_folder(labels, layout)
    assert got.shape == labels.shape and row["height"] == labels.shape[0]
    ids = np.unique(labels[labels > 0])
    assert np.array_equal(got > 0, labels > 0)  # background kept, nothing added
    if ids.size == 1:
        # a mask with one foreground value is binary: its 8-connected pieces are the cells
        expected, n = ndi.label(labels > 0, structure=np.ones((3, 3)))
    else:
        expected, n = labels.astype(np.int64), ids.size
    assert row["n_instances"] == n == len(np.unique(got[got > 0]))
    assert got.max() == n  # numbered 1..N
    # one-to-one: every source instance is exactly one converted instance
    fg = expected > 0
    pairs = np.unique(np.stack([expected[fg], got[fg]]), axis=1) if fg.any() else np.zeros((2, 0))
    assert pairs.shape[1] == n
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == n
    # no overlap: the instance areas add up to the foreground
    assert sum(int((got == v).sum()) for v in range(1, n + 1)) == int(fg.sum())
