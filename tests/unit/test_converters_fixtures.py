"""Converters for sources without real files in ../shared/data, against exact-format fixtures.

Each test writes a small dataset in the source's *original* on-disk format (CSV columns,
RLE convention, COCO JSON shape, folder names, file encodings), converts it, and checks
the labels against the truth the fixture was built from (decoded independently here).
Also covers the RLE codec and the common overlap rule.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from cellbench.config import DatasetConfig
from cellbench.datasets import bbbc, get_dataset, rle
from cellbench.datasets.base import (
    LOCAL_MARKER,
    ConvertedWriter,
    convert_dataset,
    masks_to_labels,
    read_index,
)
from cellbench.io import CellbenchIOError, read_image, read_labels
from PIL import Image
from rle_reference import decode_loop, smallest_claimant_owner
from scipy import ndimage as ndi

# --------------------------------------------------------------------------------------
# helpers (independent of the code under test)
# --------------------------------------------------------------------------------------


def _encode_runs(mask: np.ndarray, order: str) -> str:
    """Test-local Kaggle RLE encoder written as a plain loop (1-indexed)."""
    flat = list(mask.ravel(order=order))
    runs, i = [], 0
    while i < len(flat):
        if flat[i]:
            j = i
            while j < len(flat) and flat[j]:
                j += 1
            runs.append(f"{i + 1} {j - i}")
            i = j
        else:
            i += 1
    return " ".join(runs)


def _expected_labels(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Pixel sets of the instances after the documented rule, computed pixel by pixel."""
    owner = smallest_claimant_owner(masks)
    return [owner == i for i in range(len(masks)) if (owner == i).any()]


def _assert_partition(labels: np.ndarray, expected: list[np.ndarray]) -> None:
    """Labels hold exactly the expected instances (ids may differ)."""
    assert int(labels.max()) == len(expected) == len(np.unique(labels[labels > 0]))
    covered = np.zeros(labels.shape, dtype=bool)
    for inst in expected:
        values = np.unique(labels[inst])
        assert values.size == 1 and values[0] > 0, "an expected instance is split or missing"
        assert np.array_equal(labels == values[0], inst), "instance pixels differ"
        covered |= inst
    assert not labels[~covered].any(), "pixels labelled outside every expected instance"


def _cfg(kind: str, **options) -> DatasetConfig:
    return DatasetConfig(name=f"my_{kind}", kind=kind, source="local", path="x", options=options)


def _convert(source, raw: Path, out: Path) -> pd.DataFrame:
    writer = ConvertedWriter(out)
    source.convert(raw, writer)
    writer.finish()
    return read_index(out).set_index("id")


def _rect(shape, r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


# --------------------------------------------------------------------------------------
# RLE codec and the overlap rule
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["F", "C"])
def test_rle_edge_cases_roundtrip(order):
    shape = (5, 7)
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random(shape) < 0.4
        text = rle.rle_encode(mask, order=order)
        assert text == _encode_runs(mask, order)
        assert np.array_equal(rle.rle_decode(text, shape, order=order), mask)
    full = np.ones(shape, dtype=bool)
    assert rle.rle_encode(full, order=order) == "1 35"  # first pixel to last pixel
    assert rle.rle_decode("35 1", shape, order=order).sum() == 1
    assert rle.rle_decode("", shape, order=order).sum() == 0
    assert rle.rle_decode(float("nan"), shape, order=order).sum() == 0
    assert rle.rle_decode("3 0 4 2", shape, order=order).sum() == 2  # zero-length run


def test_rle_orders_differ_and_match_loop_decoder():
    shape = (4, 6)
    text = "5 4 12 3"  # crosses a column (F) / row (C) boundary
    for order in ("F", "C"):
        assert np.array_equal(
            rle.rle_decode(text, shape, order=order), decode_loop(text, shape, order)
        )
    assert not np.array_equal(
        rle.rle_decode(text, shape, order="F"), rle.rle_decode(text, shape, order="C")
    )


@pytest.mark.parametrize("bad", ["1", "0 3", "5 -1", "20 10", "a b"])
def test_rle_rejects_malformed(bad):
    with pytest.raises(rle.RLEError):
        rle.rle_decode(bad, (4, 6))


def _coco_compress(counts: list[int]) -> str:
    """Test-local COCO compressed-RLE encoder (pycocotools rleToString algorithm)."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((x == 0 and not ch & 0x10) or (x == -1 and ch & 0x10))
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def test_coco_rle_compressed_and_list_forms():
    mask = np.zeros((6, 5), dtype=bool)
    mask[1:4, 2:5] = True
    mask[5, 0] = True
    flat = mask.ravel(order="F")
    counts, current, run = [], False, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    assert np.array_equal(rle.coco_rle_decode({"counts": counts, "size": [6, 5]}), mask)
    packed = _coco_compress(counts)
    assert rle.coco_rle_counts(packed) == counts
    assert np.array_equal(rle.coco_rle_decode({"counts": packed, "size": [6, 5]}), mask)


def test_masks_to_labels_rule():
    shape = (8, 9)
    big = _rect(shape, 0, 6, 0, 6)  # 36 px
    small = _rect(shape, 4, 8, 4, 8)  # 16 px, overlaps big on 4 px
    inside = _rect(shape, 1, 3, 1, 3)  # 4 px inside big
    twin_a = _rect(shape, 6, 8, 0, 2)  # 4 px
    twin_b = twin_a.copy()  # identical: the first one wins, the second vanishes
    empty = np.zeros(shape, dtype=bool)
    masks = [big, small, inside, twin_a, twin_b, empty]
    labels, contested = masks_to_labels(masks)
    assert contested == 4 + 4 + 4
    _assert_partition(labels, _expected_labels(masks[:5]))
    assert labels[5, 5] == labels[7, 7]  # overlap went to the smaller cell
    assert labels[1, 1] != labels[0, 0]  # the cell inside survives
    # same result from flat indices
    flat_labels, flat_contested = masks_to_labels([np.flatnonzero(m) for m in masks], shape)
    assert flat_contested == contested and np.array_equal(flat_labels, labels)


# --------------------------------------------------------------------------------------
# Sartorius: train.csv (row-major RLE, overlaps) + train/<id>.png
# --------------------------------------------------------------------------------------

SARTORIUS_COLUMNS = [
    "id",
    "annotation",
    "width",
    "height",
    "cell_type",
    "plate_time",
    "sample_date",
    "sample_id",
    "elapsed_timedelta",
]


def _sartorius_fixture(raw: Path) -> dict[str, list[np.ndarray]]:
    h, w = 12, 17
    rng = np.random.default_rng(1)
    wrap = np.zeros((h, w), dtype=bool)
    wrap.ravel()[[0, 1, 15, 16, 17, 18]] = True  # first pixel + a run wrapping a row end
    last = np.zeros((h, w), dtype=bool)
    last.ravel()[-3:] = True  # run ending on the last pixel
    cells = {
        "0030fd0e6378": [
            _rect((h, w), 1, 5, 2, 10),  # 32 px
            _rect((h, w), 3, 8, 7, 13),  # 30 px, overlaps the first on 6 px
            _rect((h, w), 1, 3, 3, 5),  # 4 px inside the first
            wrap,
            last,
        ],
        "0140b3c8f445": [_rect((h, w), 0, 4, 0, 4), _rect((h, w), 6, 11, 6, 16)],
        "01ae5a43a2ab": [_rect((h, w), 2, 9, 2, 9), _rect((h, w), 2, 9, 2, 9)],  # duplicates
    }
    meta = {
        "0030fd0e6378": ("shsy5y", "shsy5y[diff]_E10-4_Vessel-714_Ph_3"),
        "0140b3c8f445": ("astro", "astro[hippo]_F8-3_Vessel-361_Ph_2"),
        "01ae5a43a2ab": ("shsy5y", "shsy5y[diff]_E10-4_Vessel-714_Ph_3"),
    }
    rows = []
    (raw / "train").mkdir(parents=True)
    for image_id, masks in cells.items():
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(
            raw / "train" / f"{image_id}.png"
        )
        cell_type, sample = meta[image_id]
        for m in masks:
            rows.append(
                [
                    image_id,
                    _encode_runs(m, "C"),
                    w,
                    h,
                    cell_type,
                    "11h30m00s",
                    "2019-06-16",
                    sample,
                    "0 days 11:30:00",
                ]
            )
    pd.DataFrame(rows, columns=SARTORIUS_COLUMNS).to_csv(raw / "train.csv", index=False)
    (raw / "sample_submission.csv").write_text("id,predicted\n7ae19de7bc2a,\n")
    return cells


def test_sartorius_csv_with_overlaps(tmp_path):
    raw = tmp_path / "raw"
    cells = _sartorius_fixture(raw)
    index = _convert(get_dataset(_cfg("sartorius")), raw, tmp_path / "out")
    assert list(index.index) == sorted(cells)
    for image_id, masks in cells.items():
        labels = read_labels(tmp_path / "out" / "labels" / f"{image_id}.tif")
        expected = _expected_labels(masks)
        _assert_partition(labels, expected)
        assert index.loc[image_id, "n_instances"] == len(expected)
        cover = np.sum(masks, axis=0)
        assert index.loc[image_id, "contested_pixels"] == int((cover > 1).sum())
        image = read_image(tmp_path / "out" / "images" / f"{image_id}.tif")
        assert image.dtype == np.uint8 and image.shape == (12, 17)
    assert index.loc["0030fd0e6378", "contested_pixels"] == 6 + 4
    assert index.loc["01ae5a43a2ab", "n_instances"] == 1  # exact duplicate collapses
    assert index.loc["0030fd0e6378", "cell_type"] == "shsy5y"
    # a Sartorius sample is the group: two images of one sample share it
    assert index.loc["0030fd0e6378", "group"] == index.loc["01ae5a43a2ab", "group"]
    meta = pd.read_csv(tmp_path / "out" / "source_metadata.csv").set_index("id")
    assert meta.loc["0140b3c8f445", "elapsed_timedelta"] == "0 days 11:30:00"


def test_sartorius_column_major_option_changes_decoding(tmp_path):
    raw = tmp_path / "raw"
    _sartorius_fixture(raw)
    index = _convert(
        get_dataset(_cfg("sartorius", rle_order="column", cell_types=["astro"])),
        raw,
        tmp_path / "out",
    )
    assert list(index.index) == ["0140b3c8f445"]
    labels = read_labels(tmp_path / "out" / "labels" / "0140b3c8f445.tif")
    expected = _expected_labels([_rect((12, 17), 0, 4, 0, 4), _rect((12, 17), 6, 11, 6, 16)])
    with pytest.raises(AssertionError):
        _assert_partition(labels, expected)


def test_unknown_option_is_refused(tmp_path):
    raw = tmp_path / "raw"
    _sartorius_fixture(raw)
    with pytest.raises(
        ValueError,
        match=r"unknown key 'rle_ordr' \(did you mean 'rle_order'\?\); allowed keys: cell_types, rle_order",
    ):
        _convert(get_dataset(_cfg("sartorius", rle_ordr="row")), raw, tmp_path / "out")


# --------------------------------------------------------------------------------------
# LIVECell: COCO JSON (annotations as a dict, polygons, overlaps) + images/...
# --------------------------------------------------------------------------------------


def _poly_rect(r0, r1, c0, c1) -> list[float]:
    """COCO polygon tracing the outer edges of pixels rows r0..r1-1, cols c0..c1-1."""
    return [float(c0), float(r0), float(c1), float(r0), float(c1), float(r1), float(c0), float(r1)]


def test_livecell_coco(tmp_path):
    raw = tmp_path / "raw"
    h, w = 10, 14
    shape = (h, w)
    names = {
        "train": ["A172_Phase_A7_1_00d04h00m_1.tif", "A172_Phase_A7_1_00d00h00m_1.tif"],
        "val": ["BV2_Phase_B3_2_01d00h00m_3.tif"],
        "test": ["A172_Phase_C7_1_00d00h00m_2.tif"],
    }
    truth: dict[str, list[np.ndarray]] = {}
    ann_id = 1
    rng = np.random.default_rng(2)
    for subset, files in names.items():
        folder_name = "livecell_test_images" if subset == "test" else "livecell_train_val_images"
        images, annotations = [], {}
        for k, name in enumerate(files):
            image_id = 100 * (list(names).index(subset) + 1) + k
            cell_type = name.split("_")[0]
            target = raw / "images" / folder_name / cell_type / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(target, rng.integers(0, 255, shape, dtype=np.uint8))
            images.append({"id": image_id, "file_name": name, "width": w, "height": h})
            a, b = _rect(shape, 1, 6, 1, 8), _rect(shape, 4, 9, 6, 12)  # 35 and 30 px, overlap 4
            crowd = _rect(shape, 0, 10, 0, 14)
            truth[name] = [a, b]
            for mask, seg, iscrowd in (
                (a, [_poly_rect(1, 6, 1, 8)], 0),
                (b, [_poly_rect(4, 9, 6, 12)], 0),
                (crowd, [_poly_rect(0, 10, 0, 14)], 1),
            ):
                annotations[str(ann_id)] = {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": seg,
                    "area": float(mask.sum()),
                    "bbox": [0, 0, 1, 1],
                    "iscrowd": iscrowd,
                }
                ann_id += 1
        if subset == "val":  # an RLE-encoded annotation, compressed form
            extra = _rect(shape, 7, 10, 0, 3)
            flat = extra.ravel(order="F")
            counts, cur, run = [], False, 0
            for v in flat:
                if v != cur:
                    counts.append(run)
                    cur, run = v, 0
                run += 1
            counts.append(run)
            annotations[str(ann_id)] = {
                "id": ann_id,
                "image_id": images[0]["id"],
                "category_id": 1,
                "segmentation": {"counts": _coco_compress(counts), "size": [h, w]},
                "iscrowd": 0,
            }
            truth[files[0]].append(extra)
            ann_id += 1
        coco = {
            "info": {},
            "licenses": [],
            "categories": [{"id": 1, "name": "cell"}],
            "images": images,
            "annotations": annotations,
        }
        (raw / f"livecell_coco_{subset}.json").write_text(json.dumps(coco))
    index = _convert(get_dataset(_cfg("livecell")), raw, tmp_path / "out")
    assert len(index) == 4
    for name, masks in truth.items():
        image_id = Path(name).stem
        labels = read_labels(tmp_path / "out" / "labels" / f"{image_id}.tif")
        _assert_partition(labels, _expected_labels(masks))
        assert index.loc[image_id, "contested_pixels"] == int((np.sum(masks, 0) > 1).sum())
    a0, a4 = "A172_Phase_A7_1_00d00h00m_1", "A172_Phase_A7_1_00d04h00m_1"
    assert index.loc[a0, "frame"] == 0 and index.loc[a4, "frame"] == 1
    assert index.loc[a0, "sequence"] == index.loc[a4, "sequence"] == "A172_A7_1_1"
    assert index.loc[a0, "group"] == "A172_A7"
    assert index.loc["BV2_Phase_B3_2_01d00h00m_3", "cell_type"] == "BV2"
    assert index.loc["A172_Phase_C7_1_00d00h00m_2", "official_split"] == "test"
    assert index.loc[a0, "official_split"] == ""
    # subset / cell type filters
    only = _convert(
        get_dataset(_cfg("livecell", subsets=["test"], cell_types=["A172"])),
        raw,
        tmp_path / "o2",
    )
    assert list(only.index) == ["A172_Phase_C7_1_00d00h00m_2"]


# --------------------------------------------------------------------------------------
# BBBC007: BBBC007_v1_images/<sample>/<field>d.tif + outlines (white strokes on black)
# --------------------------------------------------------------------------------------


def _outline_drawing(shape, boxes) -> tuple[np.ndarray, list[np.ndarray]]:
    """Strokes: 1-px rectangle outlines; touching boxes share a stroke. Returns interiors."""
    strokes = np.zeros(shape, dtype=bool)
    interiors = []
    for r0, r1, c0, c1 in boxes:  # inclusive stroke coordinates
        strokes[r0, c0 : c1 + 1] = strokes[r1, c0 : c1 + 1] = True
        strokes[r0 : r1 + 1, c0] = strokes[r0 : r1 + 1, c1] = True
        interiors.append(_rect(shape, r0 + 1, r1, c0 + 1, c1))
    return strokes, interiors


def test_bbbc007_outlines(tmp_path):
    raw = tmp_path / "raw"
    shape = (40, 50)
    nuc_boxes = [(2, 12, 2, 14), (2, 12, 14, 26), (20, 30, 5, 15)]  # first two share a stroke
    cell_boxes = [(1, 18, 1, 30), (19, 38, 3, 25)]
    nuc, nuc_in = _outline_drawing(shape, nuc_boxes)
    cell, cell_in = _outline_drawing(shape, cell_boxes)
    nuc[35:38, 40:43] = True  # a closed 1-px gap where strokes cross: not a cell
    nuc[36, 41] = False
    rng = np.random.default_rng(3)
    for top, arrays in (
        (
            "BBBC007_v1_images",
            (rng.integers(0, 255, shape, np.uint8), rng.integers(0, 255, shape, np.uint8)),
        ),
        ("BBBC007_v1_outlines", (nuc.astype(np.uint8) * 255, cell.astype(np.uint8) * 255)),
    ):
        (raw / top / "A9").mkdir(parents=True)
        tifffile.imwrite(raw / top / "A9" / "A9 p10d.tif", arrays[0])
        tifffile.imwrite(raw / top / "A9" / "A9 p10f.tif", arrays[1])
    index = _convert(
        get_dataset(_cfg("bbbc007", outline_pixels="background", drop_gaps=True)),
        raw,
        tmp_path / "n",
    )
    (image_id,) = index.index
    assert image_id == "A9_A9_p10d" and index.loc[image_id, "group"] == "A9"
    _assert_partition(read_labels(tmp_path / "n" / "labels" / f"{image_id}.tif"), nuc_in)
    index = _convert(get_dataset(_cfg("bbbc007", target="cells")), raw, tmp_path / "c")
    (image_id,) = index.index
    labels = read_labels(tmp_path / "c" / "labels" / f"{image_id}.tif")
    assert labels.max() == 2
    for inner, box in zip(cell_in, cell_boxes, strict=True):  # interior + own stroke pixels
        value = labels[inner][0]
        assert (labels[inner] == value).all()
        r0, r1, c0, c1 = box
        assert labels[r0 + 1, c0] == value  # a stroke pixel next to the interior
    image = read_image(tmp_path / "c" / "images" / f"{image_id}.tif")
    assert np.array_equal(image, tifffile.imread(raw / "BBBC007_v1_images" / "A9" / "A9 p10f.tif"))


def test_outline_mask_handles_inverted_reading():
    strokes, interiors = _outline_drawing((20, 20), [(2, 10, 2, 10)])
    normal = bbbc.outlines_to_labels(
        strokes, min_area=30, outline_pixels="background", drop_gaps=True
    )
    inverted = bbbc.outlines_to_labels(  # PIL-style MinIsWhite
        ~strokes, min_area=30, outline_pixels="background", drop_gaps=True
    )
    assert np.array_equal(normal, inverted)
    _assert_partition(normal, interiors)


# --------------------------------------------------------------------------------------
# BBBC018: Cellomics DIB images + outline PNGs
# --------------------------------------------------------------------------------------


def _write_cellomics_dib(path: Path, image: np.ndarray) -> None:
    """Cellomics DIB as described by Bio-Formats: 52-byte header, top row first."""
    h, w = image.shape
    header = struct.pack("<iiihhiiiiii", 40, w, h, 1, 16, 0, image.size * 2, 0, 0, 0, 0)
    header = header.ljust(52, b"\0")
    path.write_bytes(header + image.astype("<u2").tobytes())


def test_bbbc018_dib_and_outlines(tmp_path):
    raw = tmp_path / "raw"
    shape = (24, 30)
    (raw / "BBBC018_v1_images").mkdir(parents=True)
    (raw / "BBBC018_v1_outlines").mkdir(parents=True)
    rng = np.random.default_rng(4)
    channels = {c: rng.integers(0, 4096, shape, dtype=np.uint16) for c in ("DNA", "actin", "pH3")}
    for c, arr in channels.items():
        _write_cellomics_dib(raw / "BBBC018_v1_images" / f"00733-{c}.DIB", arr)
        _write_cellomics_dib(raw / "BBBC018_v1_images" / f"10779-{c}.DIB", arr)  # no outlines
    nuc, nuc_in = _outline_drawing(shape, [(1, 8, 1, 9), (12, 20, 15, 27)])
    Image.fromarray(nuc.astype(np.uint8) * 255).save(
        raw / "BBBC018_v1_outlines" / "00733-nuclei.png"
    )
    index = _convert(
        get_dataset(_cfg("bbbc018", outline_pixels="background", drop_gaps=True)),
        raw,
        tmp_path / "o",
    )
    assert list(index.index) == ["00733-nuclei"]
    image = read_image(tmp_path / "o" / "images" / "00733-nuclei.tif")
    assert image.dtype == np.uint16 and np.array_equal(image, channels["DNA"])  # not flipped
    _assert_partition(read_labels(tmp_path / "o" / "labels" / "00733-nuclei.tif"), nuc_in)
    index = _convert(get_dataset(_cfg("bbbc018", all_channels=True)), raw, tmp_path / "a")
    stacked = read_image(tmp_path / "a" / "images" / "00733-nuclei.tif")
    assert stacked.shape == (*shape, 3) and np.array_equal(stacked[..., 2], channels["pH3"])


# --------------------------------------------------------------------------------------
# BBBC041: malaria/images + training.json / test.json (bounding boxes only)
# --------------------------------------------------------------------------------------


def _bbbc041_entry(name, shape, boxes):
    return {
        "image": {
            "checksum": "x",
            "pathname": f"/images/{name}",
            "shape": {"r": shape[0], "c": shape[1], "channels": 3},
        },
        "objects": [
            {
                "bounding_box": {"minimum": {"r": r0, "c": c0}, "maximum": {"r": r1, "c": c1}},
                "category": cat,
            }
            for (r0, c0, r1, c1, cat) in boxes
        ],
    }


def test_bbbc041_boxes_only(tmp_path):
    raw = tmp_path / "raw" / "malaria"
    (raw / "images").mkdir(parents=True)
    shape = (20, 30)
    rng = np.random.default_rng(5)
    for name in ("a1.png", "b2.png"):
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(
            raw / "images" / name
        )
    train = [
        _bbbc041_entry("a1.png", shape, [(1, 1, 8, 9, "red blood cell"), (5, 5, 12, 14, "ring")])
    ]
    test = [_bbbc041_entry("b2.png", shape, [(0, 0, 5, 5, "red blood cell")])]
    (raw / "training.json").write_text(json.dumps(train))
    (raw / "test.json").write_text(json.dumps(test))
    out = tmp_path / "out"
    index = _convert(get_dataset(_cfg("bbbc041")), raw.parent, out)
    assert set(index["annotation"]) == {"none"} and set(index["n_instances"]) == {0}
    assert index.loc["b2", "official_split"] == "test" and index.loc["a1", "official_split"] == ""
    assert (
        index.loc["a1", "cell_type"] == "infected" and index.loc["b2", "cell_type"] == "uninfected"
    )
    assert not list((out / "labels").iterdir())
    boxes = pd.read_csv(out / "boxes.csv")
    assert len(boxes) == 3 and set(boxes["category"]) == {"red blood cell", "ring"}
    notes = json.loads((out / "dataset_notes.json").read_text())
    assert notes["mask_metrics_apply"] is False and "do not apply" in notes["note"]
    index = _convert(get_dataset(_cfg("bbbc041", boxes_as_masks=True)), raw.parent, tmp_path / "m")
    labels = read_labels(tmp_path / "m" / "labels" / "a1.tif")
    masks = [_rect(shape, 1, 8, 1, 9), _rect(shape, 5, 12, 5, 14)]
    _assert_partition(labels, _expected_labels(masks))
    assert index.loc["a1", "annotation"] == "partial"


# --------------------------------------------------------------------------------------
# folder: the user's own data
# --------------------------------------------------------------------------------------


def test_folder_cellpose_layout(tmp_path):
    raw = tmp_path / "mydata"
    shape = (16, 18)
    rng = np.random.default_rng(6)
    inst = np.zeros(shape, np.uint16)
    inst[1:5, 1:6], inst[8:14, 3:9], inst[2:6, 10:16] = 3, 7, 12
    binary = np.zeros(shape, np.uint8)
    binary[0:4, 0:4] = binary[10:15, 10:16] = 255
    for split, idx, mask, ext in (
        ("train", "000", inst, ".png"),
        ("train", "001", binary, ".tif"),
        ("test", "002", inst, ".tif"),
    ):
        (raw / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(
            raw / split / f"{idx}_img.png"
        )
        if ext == ".png":
            Image.fromarray(mask).save(raw / split / f"{idx}_masks.png")
        else:
            tifffile.imwrite(raw / split / f"{idx}_masks.tif", mask)
    (raw / "train" / "003_img.png").write_bytes(
        (raw / "train" / "000_img.png").read_bytes()
    )  # no mask
    index = _convert(get_dataset(_cfg("folder", cell_type="HeLa")), raw, tmp_path / "out")
    assert sorted(index.index) == ["test_002", "train_000", "train_001"]
    assert index.loc["train_000", "n_instances"] == 3 and index.loc["train_001", "n_instances"] == 2
    assert (
        index.loc["test_002", "official_split"] == "test"
        and index.loc["train_000", "official_split"] == ""
    )
    assert set(index["cell_type"]) == {"HeLa"}
    _assert_partition(
        read_labels(tmp_path / "out" / "labels" / "train_000.tif"),
        [inst == 3, inst == 7, inst == 12],
    )
    img = read_image(tmp_path / "out" / "images" / "train_000.tif")
    assert img.shape == (*shape, 3) and img.dtype == np.uint8


def test_folder_images_labels_layout(tmp_path):
    raw = tmp_path / "mydata"
    (raw / "images").mkdir(parents=True)
    (raw / "labels").mkdir()
    shape = (12, 12)
    img16 = np.arange(144, dtype=np.uint16).reshape(shape)
    tifffile.imwrite(raw / "images" / "plate1_a.tif", img16)
    tifffile.imwrite(raw / "images" / "plate1_b.tif", img16)
    tifffile.imwrite(raw / "images" / "plate2_a.tif", img16)
    ids = np.zeros(shape, np.uint16)
    ids[0:5, 0:5], ids[6:12, 6:12] = 1, 2
    tifffile.imwrite(raw / "labels" / "plate1_a.tif", ids)
    tifffile.imwrite(raw / "labels" / "plate1_b_masks.tif", ids)
    colour = np.zeros((*shape, 3), np.uint8)
    colour[0:5, 0:5] = (255, 0, 0)
    colour[0:5, 6:12] = (0, 255, 0)
    colour[6:12, 0:5] = (255, 0, 0)  # same colour, not touching: a separate cell
    Image.fromarray(colour).save(raw / "labels" / "plate2_a.png")
    index = _convert(
        get_dataset(
            _cfg(
                "folder", layout="images_labels", group_regex=r"^(plate\d+)_", annotation="partial"
            )
        ),
        raw,
        tmp_path / "out",
    )
    assert sorted(index.index) == ["plate1_a", "plate1_b", "plate2_a"]
    assert index.loc["plate1_a", "group"] == index.loc["plate1_b", "group"] == "plate1"
    assert index.loc["plate2_a", "n_instances"] == 3
    assert set(index["annotation"]) == {"partial"}
    assert read_image(tmp_path / "out" / "images" / "plate1_a.tif").dtype == np.uint16


def test_folder_without_pairs_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="_img.png next to"):
        _convert(get_dataset(_cfg("folder")), tmp_path / "empty", tmp_path / "out")


# --------------------------------------------------------------------------------------
# The convert stage with `source: local`: read from `path:`, with or without the pointer
# --------------------------------------------------------------------------------------


def _images_labels_folder(root: Path, names=("a", "b")) -> np.ndarray:
    """A tiny images/ + labels/ folder; returns the label image used for every name."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    ids = np.zeros((10, 12), np.uint16)
    ids[1:4, 1:4], ids[5:9, 6:11] = 4, 9
    for name in names:
        tifffile.imwrite(root / "images" / f"{name}.tif", np.full((10, 12), 7, np.uint8))
        tifffile.imwrite(root / "labels" / f"{name}.tif", ids)
    return ids


def _local_cfg(path: Path, name: str = "mine", **options) -> DatasetConfig:
    return DatasetConfig(name=name, kind="folder", source="local", path=str(path), options=options)


def test_local_dataset_is_read_from_path_without_download(tmp_path):
    """`cellbench convert` before (or without) `download`: the originals come from path:."""
    data = tmp_path / "my data"
    _images_labels_folder(data)
    raw = tmp_path / "data" / "raw" / "mine"  # never created: download did not run
    out = tmp_path / "data" / "converted" / "mine"
    index = convert_dataset(get_dataset(_local_cfg(data)), raw, out)
    assert sorted(index["id"]) == ["a", "b"] and list(index["n_instances"]) == [2, 2]
    assert (out / "labels" / "a.tif").is_file() and not raw.exists()
    # a pointer that agrees (download ran) changes nothing
    raw.mkdir(parents=True)
    (raw / LOCAL_MARKER).write_text(json.dumps({"path": str(data), "kind": "folder"}))
    assert len(convert_dataset(get_dataset(_local_cfg(data)), raw, out)) == 2


def test_local_dataset_pointer_elsewhere_or_missing_path_says_so(tmp_path):
    data, other = tmp_path / "new", tmp_path / "old"
    _images_labels_folder(data)
    _images_labels_folder(other)
    raw = tmp_path / "raw" / "mine"
    raw.mkdir(parents=True)
    (raw / LOCAL_MARKER).write_text(json.dumps({"path": str(other), "kind": "folder"}))
    with pytest.raises(ValueError) as err:
        convert_dataset(get_dataset(_local_cfg(data)), raw, tmp_path / "out")
    msg = str(err.value)
    assert str(other) in msg and str(data) in msg and "datasets.mine.path" in msg
    assert "delete" in msg and not (tmp_path / "out").exists()
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        convert_dataset(get_dataset(_local_cfg(missing)), tmp_path / "raw2", tmp_path / "out")
    msg = str(err.value)
    assert "datasets.mine.path" in msg and str(missing) in msg and "is not a folder" in msg


def test_downloadable_dataset_without_raw_folder_says_run_download(tmp_path):
    cfg = DatasetConfig(name="b39", kind="bbbc039")
    with pytest.raises(FileNotFoundError, match=r"Run the download stage first.*--dataset b39"):
        convert_dataset(get_dataset(cfg), tmp_path / "raw" / "b39", tmp_path / "out")


# --------------------------------------------------------------------------------------
# CTC: a dataset with only sequence 02; what was looked for and found
# --------------------------------------------------------------------------------------


def _ctc_sequence(root: Path, seq: str, frames=(0, 1, 2), truth="GT") -> None:
    """CTC layout: <root>/<seq>/tNNN.tif and <root>/<seq>_<truth>/SEG/man_segNNN.tif."""
    (root / seq).mkdir(parents=True)
    (root / f"{seq}_{truth}" / "SEG").mkdir(parents=True)
    for f in frames:
        tifffile.imwrite(root / seq / f"t{f:03d}.tif", np.full((8, 9), f, np.uint16))
        seg = np.zeros((8, 9), np.uint16)
        seg[1:3, 1:3], seg[5:7, 4:8] = 17, 3
        tifffile.imwrite(root / f"{seq}_{truth}" / "SEG" / f"man_seg{f:03d}.tif", seg)


def test_ctc_with_only_sequence_02_converts(tmp_path):
    data = tmp_path / "ctc"
    _ctc_sequence(data / "Fluo-N2DH-SIM+", "02")
    cfg = DatasetConfig(
        name="sim", kind="ctc", source="local", path=str(data), options={"name": "Fluo-N2DH-SIM+"}
    )
    index = convert_dataset(get_dataset(cfg), tmp_path / "raw" / "sim", tmp_path / "out")
    assert list(index["id"]) == [f"Fluo-N2DH-SIM+_02_t{f:03d}" for f in range(3)]
    assert set(index["sequence"]) == {"02"} and list(index["frame"]) == [0, 1, 2]
    assert set(index["n_instances"]) == {2} and set(index["official_split"]) == {""}
    # the same when path: is the dataset folder itself
    cfg = DatasetConfig(
        name="sim",
        kind="ctc",
        source="local",
        path=str(data / "Fluo-N2DH-SIM+"),
        options={"name": "Fluo-N2DH-SIM+", "frame_blocks": 3},
    )
    index = convert_dataset(get_dataset(cfg), tmp_path / "raw" / "sim", tmp_path / "out")
    assert index["group"].nunique() == 3


def test_ctc_not_found_describes_what_was_looked_for_and_found(tmp_path):
    data = tmp_path / "ctc"
    _ctc_sequence(data / "Fluo-N2DH-GOWT1", "02")
    source = get_dataset(_cfg("ctc", name="DIC-C2DH-HeLa"))
    with pytest.raises(FileNotFoundError) as err:
        _convert(source, data, tmp_path / "out")
    msg = str(err.value)
    assert "01/t000.tif" not in msg
    assert str(data / "DIC-C2DH-HeLa") in msg and "two-digit" in msg
    assert "found in" in msg and "Fluo-N2DH-GOWT1/" in msg
    assert "Fluo-N2DH-GOWT1/ holds sequence folders 02" in msg
    assert "datasets.my_ctc.options.name" in msg
    # sequence folders without the chosen truth: the sequences present are named
    (data / "Fluo-N2DH-GOWT1" / "02_GT").rename(data / "Fluo-N2DH-GOWT1" / "02_ST")
    with pytest.raises(FileNotFoundError) as err:
        _convert(get_dataset(_cfg("ctc", name="Fluo-N2DH-GOWT1")), data, tmp_path / "out")
    msg = str(err.value)
    assert "found sequence folders: 02" in msg and "02_GT/SEG/man_segNNN.tif" in msg
    assert "set 'truth: ST'" in msg


def test_ctc_label_file_without_frame_is_named_and_counted(tmp_path, caplog):
    root = tmp_path / "ctc" / "Fluo-N2DH-SIM+"
    _ctc_sequence(root, "01")
    (root / "01" / "t002.tif").unlink()
    caplog.set_level(logging.WARNING)
    writer = ConvertedWriter(tmp_path / "out")
    get_dataset(_cfg("ctc", name="Fluo-N2DH-SIM+")).convert(tmp_path / "ctc", writer)
    index = writer.finish()
    assert len(index) == 2 and index.attrs["skipped_files"] == 1
    assert "man_seg002.tif" in caplog.text and "no frame t002.tif" in caplog.text


# --------------------------------------------------------------------------------------
# Outlines: a gap enclosed by touching outlined cells is not a cell
# --------------------------------------------------------------------------------------


def _circle_drawing(shape, centres, radius):
    """1-px circle outlines (each cell its own closed stroke); returns strokes, interiors."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    strokes = np.zeros(shape, dtype=bool)
    interiors = []
    for cy, cx in centres:
        d = np.hypot(yy - cy, xx - cx)
        strokes |= np.abs(d - radius) <= 0.75
        interiors.append(d < radius - 0.75)
    return strokes, interiors


def _three_touching(radius=25):
    """Three outlined cells, pairwise touching, enclosing a curved-triangle gap."""
    r = radius
    centres = [(r + 5, r + 5), (r + 5, 3 * r + 5), (r + 5 + r * np.sqrt(3), 2 * r + 5)]
    strokes, interiors = _circle_drawing((4 * r + 10, 4 * r + 10), centres, r)
    enclosed = ndi.binary_fill_holes(strokes) & ~strokes
    gap = enclosed & ~np.any(interiors, axis=0)
    return strokes, interiors, gap


@pytest.mark.parametrize("radius", [20, 25, 40])
def test_gap_enclosed_by_three_touching_cells_is_dropped(radius):
    strokes, interiors, gap = _three_touching(radius)
    pieces, n = ndi.label(gap)  # pixel strokes may cut off 1-px specks at the tangents
    sizes = ndi.sum(gap, pieces, range(1, n + 1))
    main = pieces == 1 + int(np.argmax(sizes))
    assert main.sum() >= 30  # a real gap, not below min_area
    labels = bbbc.outlines_to_labels(
        strokes, min_area=30, outline_pixels="background", drop_gaps=True
    )
    _assert_partition(labels, interiors)
    assert not labels[gap].any()
    # without the rule the gap is a fourth "cell": the test can fail
    before = bbbc.outlines_to_labels(
        strokes, min_area=30, outline_pixels="background", drop_gaps=False
    )
    assert before.max() == 4 and (before[main] > 0).all()
    # outline_pixels: assign gives strokes to the cells, never fills the gap
    grown = bbbc.outlines_to_labels(strokes, min_area=30, outline_pixels="assign", drop_gaps=True)
    assert grown.max() == 3 and not grown[gap].any()
    for inner in interiors:
        assert len(np.unique(grown[inner])) == 1


def test_cell_surrounded_by_touching_cells_is_kept():
    """Seven cells in a hexagon: the middle one is walled in but convex, so it stays."""
    r = 22
    angles = np.arange(6) * np.pi / 3
    centres = [(80, 80)] + [(80 + 2 * r * np.sin(a), 80 + 2 * r * np.cos(a)) for a in angles]
    strokes, interiors = _circle_drawing((160, 160), centres, r)
    gaps = ndi.binary_fill_holes(strokes) & ~strokes & ~np.any(interiors, axis=0)
    gap_ids, n_gaps = ndi.label(gaps)
    assert n_gaps == 6 and min(ndi.sum(gaps, gap_ids, range(1, 7))) > 30
    labels = bbbc.outlines_to_labels(
        strokes, min_area=30, outline_pixels="background", drop_gaps=True
    )
    _assert_partition(labels, interiors)


def test_bbbc009_converter_drops_the_gap(tmp_path):
    """BBBC009 layout (MinIsWhite outline TIFF), default options."""
    strokes, interiors, gap = _three_touching()
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "outlines").mkdir()
    image = np.random.default_rng(9).integers(0, 255, strokes.shape, dtype=np.uint8)
    tifffile.imwrite(raw / "images" / "6hr-009-DIC.tif", image)
    tifffile.imwrite(raw / "outlines" / "6hr-009-DIC.tif", strokes, photometric="miniswhite")
    assert tifffile.imread(raw / "outlines" / "6hr-009-DIC.tif").sum() == strokes.sum()
    index = _convert(get_dataset(_cfg("bbbc009")), raw, tmp_path / "out")
    assert index.loc["6hr-009-DIC", "n_instances"] == 3
    labels = read_labels(tmp_path / "out" / "labels" / "6hr-009-DIC.tif")
    assert not labels[gap].any()


# --------------------------------------------------------------------------------------
# Errors name the file and the fix; files left out are named and counted
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_writer_refuses_non_finite_pixels_naming_the_file(tmp_path, bad):
    writer = ConvertedWriter(tmp_path / "out")
    image = np.ones((6, 7), np.float32)
    image[2, 3] = bad
    labels = np.zeros((6, 7), np.int32)
    with pytest.raises(CellbenchIOError) as err:
        writer.add("img_1", image, labels, origin=tmp_path / "raw" / "img 1.tif")
    msg = str(err.value)
    assert "image img_1" in msg and "raw/img 1.tif" in msg and "1 of 42" in msg
    assert "not finite" in msg and "Replace them" in msg
    assert not (tmp_path / "out" / "images" / "img_1.tif").exists() and not writer.rows
    colour = np.ones((6, 7, 3), np.float64)
    colour[0, 0, 1] = bad
    with pytest.raises(CellbenchIOError, match="image img_2:"):  # no origin known
        writer.add("img_2", colour, labels)
    writer.add("img_3", np.ones((6, 7), np.float32), labels)  # finite floats are fine
    assert len(writer.finish()) == 1


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.full((6, 7), 1.5), "float64 values, not integers"),
        (np.full((6, 7), np.nan), "NaN or infinite"),
        (np.full((6, 7), -2, np.int16), "negative values"),
        (np.ones((6, 7), bool), "yes/no mask"),
        (np.ones((6, 8), np.int32), "differs from the image's (6, 7)"),
    ],
)
def test_writer_label_errors_name_the_label_file_and_fix(tmp_path, labels, expected):
    writer = ConvertedWriter(tmp_path / "out")
    with pytest.raises(CellbenchIOError) as err:
        writer.add(
            "x", np.zeros((6, 7), np.uint8), labels, origin="a.tif", label_origin="masks/a.png"
        )
    msg = str(err.value)
    assert "labels of image x (from masks/a.png)" in msg and expected in msg
    assert "integer" in msg or "belongs to this image" in msg


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (np.array([[0.0, 1.5], [2.0, 2.0]], np.float32), "non-integer values"),
        (np.array([[0, -1], [2, 2]], np.int16), "negative values"),
    ],
)
def test_folder_mask_problems_name_the_file_and_fix(tmp_path, mask, expected):
    raw = tmp_path / "mine"
    (raw / "images").mkdir(parents=True)
    (raw / "labels").mkdir()
    tifffile.imwrite(raw / "images" / "cellA.tif", np.zeros((2, 2), np.uint8))
    tifffile.imwrite(raw / "labels" / "cellA.tif", mask)
    with pytest.raises(CellbenchIOError) as err:
        _convert(get_dataset(_cfg("folder")), raw, tmp_path / "out")
    msg = str(err.value)
    assert str(raw / "labels" / "cellA.tif") in msg and expected in msg
    assert "Save it as a single-channel integer image" in msg


def test_folder_unpaired_files_are_named_and_counted(tmp_path, caplog):
    raw = tmp_path / "mine"
    _images_labels_folder(raw, names=("a", "b"))
    tifffile.imwrite(raw / "labels" / "orphan.tif", np.ones((10, 12), np.uint16))
    tifffile.imwrite(raw / "images" / "lonely.tif", np.ones((10, 12), np.uint8))
    caplog.set_level(logging.WARNING)
    writer = ConvertedWriter(tmp_path / "out")
    get_dataset(_cfg("folder")).convert(raw, writer)
    index = writer.finish()
    assert sorted(index["id"]) == ["a", "b"] and index.attrs["skipped_files"] == 2
    assert sorted(Path(p).name for p, _ in writer.skipped) == ["lonely.tif", "orphan.tif"]
    assert str(raw / "labels" / "orphan.tif") in caplog.text
    assert "label file with no image of the same name" in caplog.text
    assert "2 source file(s) skipped" in caplog.text
    # Cellpose layout: a mask without its image
    cp = tmp_path / "cp"
    cp.mkdir()
    tifffile.imwrite(cp / "x_img.tif", np.ones((5, 5), np.uint8))
    tifffile.imwrite(cp / "x_masks.tif", np.eye(5, dtype=np.uint16))
    tifffile.imwrite(cp / "y_masks.tif", np.eye(5, dtype=np.uint16))
    caplog.clear()
    writer = ConvertedWriter(tmp_path / "out2")
    get_dataset(_cfg("folder")).convert(cp, writer)
    assert len(writer.finish()) == 1 and [Path(p).name for p, _ in writer.skipped] == [
        "y_masks.tif"
    ]
    assert "y_masks.tif: mask with no image y_img.* next to it; skipped" in caplog.text


def test_bbbc039_mask_without_image_is_named(tmp_path, caplog):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    tifffile.imwrite(raw / "images" / "IXMtest_A01_s1_w1X.tif", np.ones((6, 6), np.uint16))
    mask = np.zeros((6, 6, 4), np.uint8)
    mask[..., 3], mask[1:3, 1:3, 0] = 255, 1
    for stem in ("IXMtest_A01_s1_w1X", "IXMtest_B02_s1_w1Y"):
        Image.fromarray(mask).save(raw / "masks" / f"{stem}.png")
    caplog.set_level(logging.WARNING)
    writer = ConvertedWriter(tmp_path / "out")
    get_dataset(_cfg("bbbc039")).convert(raw, writer)
    assert len(writer.finish()) == 1 and len(writer.skipped) == 1
    assert "IXMtest_B02_s1_w1Y.png: mask with no image" in caplog.text


def test_sartorius_bad_rle_names_the_file_line_and_fix(tmp_path):
    raw = tmp_path / "raw"
    _sartorius_fixture(raw)
    table = pd.read_csv(raw / "train.csv", dtype=str)
    table.loc[3, "annotation"] = "5 3 7"  # odd number of values
    table.to_csv(raw / "train.csv", index=False)
    with pytest.raises(CellbenchIOError) as err:
        _convert(get_dataset(_cfg("sartorius")), raw, tmp_path / "out")
    msg = str(err.value)
    assert str(raw / "train.csv") in msg and "line 5" in msg and "odd number" in msg
    assert "original train.csv" in msg
