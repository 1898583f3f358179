"""Converters on the real data subsets in ../shared/data, against independently decoded truth.

Every expected instance set here is decoded with code written for the test (PIL /
tifffile reading, a loop RLE decoder following the data README, ``scipy.ndimage``
labelling, PIL polygon rasterisation), not with the converter's own helpers. Skipped
with a clear reason when the shared data are not on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from cellbench.config import DatasetConfig
from cellbench.datasets import get_dataset
from cellbench.datasets.base import (
    LOCAL_MARKER,
    ConvertedWriter,
    convert_dataset,
    raw_root,
    read_index,
)
from cellbench.io import CellbenchIOError, atomic_dir, read_image, read_labels
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

pytestmark = pytest.mark.shared_data

CTC_NAMES = (
    "DIC-C2DH-HeLa",
    "Fluo-N2DL-HeLa",
    "PhC-C2DL-PSC",
    "Fluo-N2DH-GOWT1",
    "Fluo-C2DL-MSC",
    "Fluo-N2DH-SIM+",
)
CTC_WITH_ST = ("DIC-C2DH-HeLa", "Fluo-N2DL-HeLa", "PhC-C2DL-PSC")


def _cfg(kind: str, **options) -> DatasetConfig:
    return DatasetConfig(name=f"my_{kind}", kind=kind, source="local", path="x", options=options)


def _convert(source, raw: Path, out: Path) -> pd.DataFrame:
    """What the convert stage does: atomic folder, writer, finish."""
    with atomic_dir(out) as tmp:
        writer = ConvertedWriter(tmp)
        source.convert(raw, writer)
        writer.finish()
    return read_index(out).set_index("id")


def _same_partition(got: np.ndarray, expected: np.ndarray) -> None:
    """Same foreground and a one-to-one correspondence of instance ids."""
    got, expected = np.asarray(got, np.int64), np.asarray(expected, np.int64)
    assert got.shape == expected.shape
    fg = expected > 0
    assert np.array_equal(got > 0, fg), "foreground differs"
    pairs = np.unique(np.stack([expected[fg], got[fg]]), axis=1)
    n_exp, n_got = len(np.unique(expected[fg])), len(np.unique(got[fg]))
    assert pairs.shape[1] == n_exp == n_got, "instances are split or merged"


def _stack(masks: list[np.ndarray], shape) -> np.ndarray:
    out = np.zeros(shape, np.int64)
    for i, m in enumerate(masks, 1):
        assert not out[m].any(), "truth instances overlap (not expected in this subset)"
        out[m] = i
    return out


# --------------------------------------------------------------------------------------
# DSB 2018
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dsb(shared_data, tmp_path_factory):
    """DSB converted as the pipeline does with ``source: local`` (marker -> raw_root)."""
    data = tmp_path_factory.mktemp("dsb")
    raw_dir = data / "raw" / "dsb2018"
    raw_dir.mkdir(parents=True)
    (raw_dir / LOCAL_MARKER).write_text(json.dumps({"path": str(shared_data / "dsb2018")}))
    cfg = DatasetConfig(
        name="dsb2018", kind="dsb2018", source="local", path=str(shared_data / "dsb2018")
    )
    out = data / "converted" / "dsb2018"
    return out, _convert(get_dataset(cfg), raw_root(raw_dir), out)


def test_dsb2018_train_matches_mask_pngs(shared_data, dsb):
    out, index = dsb
    train = sorted((shared_data / "dsb2018" / "stage1_train").iterdir())
    assert len(train) == 30
    total = 0
    for folder in train:
        masks = [np.array(Image.open(p)) > 0 for p in sorted((folder / "masks").glob("*.png"))]
        expected = _stack(masks, masks[0].shape)
        got = read_labels(out / "labels" / f"{folder.name}.tif")
        _same_partition(got, expected)
        row = index.loc[folder.name]
        assert row["n_instances"] == len(masks) and row["official_split"] == ""
        assert row["contested_pixels"] == 0 and row["group"] == folder.name
        original = np.array(Image.open(folder / "images" / f"{folder.name}.png"))
        assert original.shape[2] == 4
        assert np.array_equal(read_image(out / "images" / f"{folder.name}.tif"), original[..., :3])
        total += len(masks)
    assert total == 1933


def _readme_rle_decode(text: str, h: int, w: int) -> np.ndarray:
    """The decoding in shared/data/README.md: 1-indexed, column-major."""
    m = np.zeros(h * w, dtype=bool)
    values = [int(v) for v in text.split()]
    for s, length in zip(values[0::2], values[1::2], strict=True):
        m[s - 1 : s - 1 + length] = True
    return m.reshape((h, w), order="F")


def test_dsb2018_stage1_test_matches_solution(shared_data, dsb):
    out, index = dsb
    solution = pd.read_csv(shared_data / "dsb2018" / "stage1_solution.csv")
    assert len(solution) == 1019
    test_rows = index[index["official_split"] == "test"]
    assert len(test_rows) == 14 and test_rows["n_instances"].sum() == 1019
    for image_id, rows in solution.groupby("ImageId"):
        h, w = int(rows["Height"].iloc[0]), int(rows["Width"].iloc[0])
        masks = [_readme_rle_decode(t, h, w) for t in rows["EncodedPixels"]]
        _same_partition(read_labels(out / "labels" / f"{image_id}.tif"), _stack(masks, (h, w)))
        assert index.loc[image_id, "n_instances"] == len(masks)
    assert set(index["cell_type"]) <= {"fluorescence", "brightfield", "stained"}
    assert "stained" in set(index["cell_type"])


def test_dsb2018_image_types_and_threads_give_the_same_files(
    shared_data, dsb, tmp_path, monkeypatch
):
    """The fluorescent subset keeps exactly those rows; one thread writes what the pool writes."""
    from cellbench.datasets import dsb2018

    out, index = dsb
    monkeypatch.setattr(dsb2018, "WORKERS", 1)
    cfg = _cfg("dsb2018", image_types=["fluorescence"])
    fluo = _convert(get_dataset(cfg), shared_data / "dsb2018", tmp_path / "fluo")
    expected = index[index["cell_type"] == "fluorescence"]
    assert 0 < len(fluo) < len(index)
    assert sorted(fluo.index) == sorted(expected.index)
    assert set(fluo["official_split"]) == {"", "test"}  # train and official test both filtered
    for image_id in fluo.index:
        for folder in ("images", "labels"):
            a = tifffile.imread(tmp_path / "fluo" / folder / f"{image_id}.tif")
            b = tifffile.imread(out / folder / f"{image_id}.tif")
            assert np.array_equal(a, b), (folder, image_id)
    with pytest.raises(ValueError, match="image_types"):
        get_dataset(_cfg("dsb2018", image_types=["phase"]))


def test_dsb2018_unreadable_mask_names_the_file(shared_data, tmp_path):
    folder = sorted((shared_data / "dsb2018" / "stage1_train").iterdir())[0]
    raw = tmp_path / "raw" / "stage1_train" / folder.name
    (raw / "masks").mkdir(parents=True)
    (raw / "images").mkdir()
    shutil.copy(folder / "images" / f"{folder.name}.png", raw / "images")
    (raw / "masks" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    with pytest.raises(CellbenchIOError, match="broken.png: cannot read this mask PNG"):
        _convert(get_dataset(_cfg("dsb2018", include_test=False)), tmp_path / "raw", tmp_path / "o")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------
# BBBC039 and BBBC009
# --------------------------------------------------------------------------------------


def test_bbbc039_graph_colouring_decoded(shared_data, tmp_path):
    out = tmp_path / "bbbc039"
    index = _convert(get_dataset(_cfg("bbbc039")), shared_data / "bbbc039", out)
    assert len(index) == 16 and index["n_instances"].sum() == 2165
    for mask_path in sorted((shared_data / "bbbc039" / "masks").glob("*.png")):
        colours = np.array(Image.open(mask_path))[..., 0]
        expected = np.zeros(colours.shape, np.int64)
        for value in np.unique(colours[colours > 0]):
            comp, n = ndi.label(colours == value, structure=np.ones((3, 3)))
            expected[comp > 0] = comp[comp > 0] + expected.max()
        _same_partition(read_labels(out / "labels" / f"{mask_path.stem}.tif"), expected)
        image = read_image(out / "images" / f"{mask_path.stem}.tif")
        assert image.dtype == np.uint16 and image.shape == (520, 696)
        assert index.loc[mask_path.stem, "group"] == mask_path.stem.split("_")[1]


def _bbbc009_interiors(outline: np.ndarray, min_area: int = 30) -> np.ndarray:
    enclosed = ndi.binary_fill_holes(outline) & ~outline
    comp, n = ndi.label(enclosed)  # 4-connectivity (default cross structure)
    sizes = ndi.sum(np.ones_like(comp), comp, index=np.arange(1, n + 1))
    small = np.flatnonzero(sizes < min_area) + 1
    comp[np.isin(comp, small)] = 0
    return comp


def test_bbbc009_outlines_filled(shared_data, tmp_path):
    raw = shared_data / "bbbc009"
    inner = _convert(get_dataset(_cfg("bbbc009", outline_pixels="background")), raw, tmp_path / "a")
    full = _convert(get_dataset(_cfg("bbbc009")), raw, tmp_path / "b")
    expected_counts = {"6hr-001-DIC": 31, "6hr-002-DIC": 48, "48hr-001-DIC": 45}
    for stem, count in expected_counts.items():
        outline = tifffile.imread(raw / "outlines" / f"{stem}.tif")  # MinIsWhite: True = stroke
        assert outline.dtype == bool and outline.mean() < 0.05
        expected = _bbbc009_interiors(outline)
        _same_partition(read_labels(tmp_path / "a" / "labels" / f"{stem}.tif"), expected)
        assert inner.loc[stem, "n_instances"] == full.loc[stem, "n_instances"] == count
        grown = read_labels(tmp_path / "b" / "labels" / f"{stem}.tif")
        assert (grown[expected > 0] > 0).all() and (grown > 0).sum() > (expected > 0).sum()
        assert not grown[~ndi.binary_fill_holes(outline)].any()


def test_bbbc009_gap_rule_keeps_every_cell(shared_data, tmp_path):
    """The gap rule on the real outlines: nothing changes at the default min_area (the
    gaps between touching cells here are all under 30 px); with min_area 10 the two
    slivers walled in by touching cells in 6hr-001 are dropped, and no cell is lost."""
    raw = shared_data / "bbbc009"
    low = _convert(
        get_dataset(_cfg("bbbc009", min_area=10, outline_pixels="background")), raw, tmp_path / "a"
    )
    expected_low = {"6hr-001-DIC": 33, "6hr-002-DIC": 48, "48hr-001-DIC": 45}
    for stem, count in expected_low.items():
        outline = tifffile.imread(raw / "outlines" / f"{stem}.tif")
        cells = _bbbc009_interiors(outline)  # min_area 30: the cells (checked by eye)
        candidates = _bbbc009_interiors(outline, min_area=10)
        got = read_labels(tmp_path / "a" / "labels" / f"{stem}.tif")
        assert low.loc[stem, "n_instances"] == count == got.max()
        for value in np.unique(cells[cells > 0]):  # every cell kept whole, alone
            inst = got[cells == value]
            assert inst.min() > 0 and len(np.unique(inst)) == 1
            assert (got == inst[0]).sum() == (cells == value).sum()
        values = np.unique(candidates[candidates > 0])
        dropped = [v for v in values if not got[candidates == v].any()]
        assert len(dropped) == len(values) - count
        sizes = sorted(int((candidates == v).sum()) for v in dropped)
        assert sizes == ([15, 24] if stem == "6hr-001-DIC" else [])


# --------------------------------------------------------------------------------------
# Cell Tracking Challenge
# --------------------------------------------------------------------------------------


def _check_ctc(root: Path, name: str, truth: str, out: Path, index: pd.DataFrame) -> None:
    seg_dir = root / name / f"01_{truth}" / "SEG"
    seg_files = sorted(seg_dir.glob("man_seg*.tif"))
    assert len(index) == len(seg_files) > 0
    for seg in seg_files:
        frame = int(re.match(r"man_seg(\d+)\.tif", seg.name).group(1))
        image_id = f"{name}_01_t{frame:03d}"
        expected = tifffile.imread(seg)
        got = read_labels(out / "labels" / f"{image_id}.tif")
        _same_partition(got, expected)
        original = tifffile.imread(root / name / "01" / f"t{frame:03d}.tif")
        converted = read_image(out / "images" / f"{image_id}.tif")
        assert converted.dtype == original.dtype and np.array_equal(converted, original)
        row = index.loc[image_id]
        assert row["frame"] == frame and row["sequence"] == "01"
        assert row["group"] == f"{name}/01" and row["cell_type"] == name
        assert row["n_instances"] == len(np.unique(expected[expected > 0]))
        assert row["official_split"] == ""


@pytest.mark.parametrize("name", CTC_NAMES)
def test_ctc_gold_truth(shared_data, tmp_path, name):
    out = tmp_path / "gt"
    index = _convert(get_dataset(_cfg("ctc", name=name)), shared_data / "ctc", out)
    _check_ctc(shared_data / "ctc", name, "GT", out, index)
    assert set(index["annotation"]) == {"full" if name == "Fluo-N2DH-SIM+" else "partial"}


@pytest.mark.parametrize("name", CTC_WITH_ST)
def test_ctc_silver_truth(shared_data, tmp_path, name):
    out = tmp_path / "st"
    source = get_dataset(_cfg("ctc", name=name, truth="ST"))
    index = _convert(source, shared_data / "ctc", out)
    _check_ctc(shared_data / "ctc", name, "ST", out, index)
    assert set(index["annotation"]) == {"full"}


def test_ctc_missing_silver_truth_says_so(shared_data, tmp_path):
    source = get_dataset(_cfg("ctc", name="Fluo-N2DH-GOWT1", truth="ST"))
    with pytest.raises(FileNotFoundError, match="set 'truth: GT'"):
        _convert(source, shared_data / "ctc", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_ctc_held_out_sequence(shared_data, tmp_path):
    """Two sequences (02 linked to the real 01): 02 is the official test, order kept."""
    real = shared_data / "ctc" / "DIC-C2DH-HeLa"
    root = tmp_path / "raw" / "DIC-C2DH-HeLa"
    root.mkdir(parents=True)
    for seq in ("01", "02"):
        os.symlink(real / "01", root / seq)
        os.symlink(real / "01_GT", root / f"{seq}_GT")
    index = _convert(
        get_dataset(_cfg("ctc", name="DIC-C2DH-HeLa")),
        tmp_path / "raw",
        tmp_path / "o",
    )
    assert len(index) == 12
    assert set(index[index["sequence"] == "02"]["official_split"]) == {"test"}
    assert set(index[index["sequence"] == "01"]["official_split"]) == {""}
    assert index["group"].nunique() == 2
    ordered = index[index["sequence"] == "01"].sort_values("frame")
    assert list(ordered["frame"]) == [2, 5, 21, 31, 33, 34]
    explicit = _convert(
        get_dataset(_cfg("ctc", name="DIC-C2DH-HeLa", test_sequence="01")),
        tmp_path / "raw",
        tmp_path / "p",
    )
    assert set(explicit[explicit["sequence"] == "01"]["official_split"]) == {"test"}


def test_ctc_frame_blocks_make_one_sequence_splittable(shared_data, tmp_path):
    """Only sequence 01: time blocks of frames become the split groups, in frame order."""
    from cellbench.config import SplitOptions
    from cellbench.split import make_split

    one_group = _convert(
        get_dataset(_cfg("ctc", name="DIC-C2DH-HeLa")),
        shared_data / "ctc",
        tmp_path / "a",
    )
    with pytest.raises(ValueError, match="no test images"):  # one group: said loudly
        make_split(one_group.reset_index(), SplitOptions(), 42)
    index = _convert(
        get_dataset(_cfg("ctc", name="DIC-C2DH-HeLa", frame_blocks=3)),
        shared_data / "ctc",
        tmp_path / "b",
    )
    ordered = index.sort_values("frame")
    assert list(ordered["frame"]) == [2, 5, 21, 31, 33, 34]
    assert list(ordered["group"]) == [f"DIC-C2DH-HeLa/01/b{k}" for k in (0, 0, 1, 1, 2, 2)]
    split = make_split(index.reset_index(), SplitOptions(), 42)
    assert set(split["split"]) == {"train", "val", "test"}
    assert split.groupby("group")["split"].nunique().max() == 1
    more_blocks_than_frames = _convert(
        get_dataset(_cfg("ctc", name="PhC-C2DL-PSC", frame_blocks=5)),
        shared_data / "ctc",
        tmp_path / "c",
    )
    assert more_blocks_than_frames["group"].nunique() == len(more_blocks_than_frames) == 2
    with pytest.raises(
        ValueError, match=r"options.frame_blocks: 0: Input should be greater than or equal to 1"
    ):
        _convert(
            get_dataset(_cfg("ctc", name="DIC-C2DH-HeLa", frame_blocks=0)),
            shared_data / "ctc",
            tmp_path / "d",
        )


# --------------------------------------------------------------------------------------
# MoNuSeg
# --------------------------------------------------------------------------------------


def _xml_polygons(xml_path: Path) -> list[list[tuple[float, float]]]:
    text = xml_path.read_text()
    return [
        [(float(x), float(y)) for x, y in re.findall(r'X="([^"]+)"\s+Y="([^"]+)"', block)]
        for block in re.findall(r"<Vertices>(.*?)</Vertices>", text, flags=re.S)
    ]


def _pil_mask(polygons, shape) -> np.ndarray:
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for pts in polygons:
        draw.polygon(pts, fill=1, outline=1)
    return np.array(canvas)


def test_monuseg_polygons(shared_data, tmp_path):
    raw = shared_data / "monuseg"
    out = tmp_path / "monuseg"
    index = _convert(get_dataset(_cfg("monuseg")), raw, out)
    expected_counts = {
        "TCGA-A6-6782-01A-01-BS1": (441, "colon"),
        "TCGA-AC-A2FO-01A-01-TS1": (521, "breast"),
        "TCGA-GL-6846-01A-01-BS1": (355, "kidney"),
    }
    for stem, (count, organ) in expected_counts.items():
        image = tifffile.imread(raw / "MoNuSegTestData" / f"{stem}.tif")
        polygons = _xml_polygons(raw / "MoNuSegTestData" / f"{stem}.xml")
        assert len(polygons) == count
        labels = read_labels(out / "labels" / f"{stem}.tif")
        assert index.loc[stem, "n_instances"] == count == labels.max()
        union = _pil_mask(polygons, image.shape[:2])
        fg = labels > 0
        assert (fg & union).sum() / (fg | union).sum() > 0.85
        # the pixels of each region (a sample of 40) are mostly one distinct instance
        majority = [
            np.bincount(labels[_pil_mask([p], image.shape[:2])]).argmax() for p in polygons[:40]
        ]
        assert len(set(majority)) == len(majority) and 0 not in majority
        assert index.loc[stem, "official_split"] == "test" and index.loc[stem, "cell_type"] == organ
        assert np.array_equal(read_image(out / "images" / f"{stem}.tif"), image)


# --------------------------------------------------------------------------------------
# The convert stage with `source: local` (LOCAL_MARKER -> raw_root); DSB above does too
# --------------------------------------------------------------------------------------


def test_local_ctc_through_raw_root(shared_data, tmp_path):
    raw_dir = tmp_path / "data" / "raw" / "ctc_sim"
    raw_dir.mkdir(parents=True)
    (raw_dir / LOCAL_MARKER).write_text(json.dumps({"path": str(shared_data / "ctc")}))
    cfg = DatasetConfig(
        name="ctc_sim",
        kind="ctc",
        source="local",
        path=str(shared_data / "ctc"),
        options={"name": "Fluo-N2DH-SIM+"},
    )
    out = tmp_path / "data" / "converted" / "ctc_sim"
    index = _convert(get_dataset(cfg), raw_root(raw_dir), out)
    assert len(index) == 10 and (out / "index.csv").is_file()
    for image_id, row in index.iterrows():
        labels = read_labels(out / "labels" / f"{image_id}.tif")
        assert labels.max() == row["n_instances"] and labels.shape == (row["height"], row["width"])


def test_local_ctc_with_only_sequence_02_without_download(shared_data, tmp_path):
    """`source: local` + `path:`, convert without the download stage, only sequence 02."""
    real = shared_data / "ctc" / "DIC-C2DH-HeLa"
    data = tmp_path / "mine" / "DIC-C2DH-HeLa"
    data.mkdir(parents=True)
    os.symlink(real / "01", data / "02")
    os.symlink(real / "01_GT", data / "02_GT")
    cfg = DatasetConfig(
        name="hela",
        kind="ctc",
        source="local",
        path=str(tmp_path / "mine"),
        options={"name": "DIC-C2DH-HeLa"},
    )
    raw_dir = tmp_path / "data" / "raw" / "hela"  # no pointer: download never ran
    index = convert_dataset(get_dataset(cfg), raw_dir, tmp_path / "data" / "converted" / "hela")
    assert len(index) == 6 and set(index["sequence"]) == {"02"}
    assert list(index.sort_values("frame")["frame"]) == [2, 5, 21, 31, 33, 34]
    assert set(index["group"]) == {"DIC-C2DH-HeLa/02"}


def test_ctc_train_on_silver_score_on_gold_with_context_frames(shared_data, tmp_path):
    """truth GT + train_truth ST: labels/ is gold (scored), train_labels/ silver (trained on);
    frames with only silver truth are unannotated but trainable; the rest are context."""
    from cellbench.config import SplitOptions
    from cellbench.datasets.base import train_label_ids
    from cellbench.split import make_split

    name = "Fluo-N2DL-HeLa"
    root = shared_data / "ctc" / name
    out = tmp_path / "both"
    source = get_dataset(
        _cfg("ctc", name=name, truth="GT", train_truth="ST", context_frames=True, frame_blocks=3)
    )
    index = _convert(source, shared_data / "ctc", out)
    frames = sorted(root.joinpath("01").glob("t*.tif"))
    gold = sorted(root.joinpath("01_GT", "SEG").glob("man_seg*.tif"))
    silver = sorted(root.joinpath("01_ST", "SEG").glob("man_seg*.tif"))
    assert len(index) == len(frames)  # every frame: gold, silver-only or context
    assert (index["annotation"] != "none").sum() == len(gold)
    trained = train_label_ids(out)
    assert len(trained) == len(silver)
    for seg in silver:
        frame = int(re.match(r"man_seg(\d+)\.tif", seg.name).group(1))
        image_id = f"{name}_01_t{frame:03d}"
        _same_partition(read_labels(out / "train_labels" / f"{image_id}.tif"), tifffile.imread(seg))
    for seg in gold:
        frame = int(re.match(r"man_seg(\d+)\.tif", seg.name).group(1))
        image_id = f"{name}_01_t{frame:03d}"
        _same_partition(read_labels(out / "labels" / f"{image_id}.tif"), tifffile.imread(seg))
    assert index["frame"].is_monotonic_increasing and set(index["sequence"]) == {"01"}
    split = make_split(index.reset_index(), SplitOptions(), 0, trained)
    kept = set(split["id"])
    assert kept == set(index.index[index["annotation"] != "none"]) | trained
