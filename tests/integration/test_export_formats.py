"""``cellbench export``: every mask format read back with the tools' own readers.

- ImageJ ROI zips are read with ``roifile`` and filled by the pixel-centre rule
  (ImageJ's): the pixel agreement with the original labels is measured and must be
  100 % (outlines follow pixel edges), on synthetic clusters of touching cells and on
  real nuclei (DSB 2018, BBBC039).
- GeoJSON files are parsed with ``json`` and rasterised with matplotlib.
- Kaggle submissions are decoded with cellbench's decoder (the one the DSB 2018
  converter checked against the official solution file).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import roifile
import tifffile
from cellbench.cli import main
from cellbench.datasets.options import SyntheticOptions
from cellbench.datasets.rle import rle_decode
from cellbench.export.formats import fill_roi
from cellbench.synthetic import generate_image
from matplotlib.path import Path as MplPath
from PIL import Image
from skimage.measure import label as cc_label


def _write(folder: Path, labels: dict[str, np.ndarray], images: dict[str, np.ndarray]):
    (folder / "masks").mkdir(parents=True)
    (folder / "images").mkdir()
    for image_id, y in labels.items():
        tifffile.imwrite(folder / "masks" / f"{image_id}.tif", y.astype(np.uint16))
        tifffile.imwrite(folder / "images" / f"{image_id}.tif", images[image_id])
    return folder / "masks", folder / "images"


def _export(masks: Path, fmt: str, out: Path, images: Path | None = None) -> None:
    args = ["export", "--masks", str(masks), "--format", fmt, "--out", str(out)]
    assert main(args + (["--images", str(images)] if images else [])) == 0


def roi_pixel_agreement(masks: Path, tmp: Path) -> tuple[float, int]:
    """Export ROIs, read them back with roifile, fill them; fraction of equal pixels."""
    _export(masks, "roi", tmp)
    equal = total = n_rois = 0
    for path in sorted(masks.glob("*.tif")):
        y = tifffile.imread(path).astype(np.int64)
        filled = np.zeros_like(y)
        zip_path = tmp / f"{path.stem}.zip"
        rois = roifile.roiread(zip_path) if zip_path.exists() else []
        for roi in rois if isinstance(rois, list) else [rois]:
            filled[fill_roi(roi, y.shape)] = int(roi.name)
            n_rois += 1
        equal += int(np.count_nonzero(filled == y))
        total += y.size
    return equal / total, n_rois


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("export")
    spec = SyntheticOptions(height=160, width=192, n_cells=(25, 40), radius=(6, 14))
    labels, images = {}, {}
    for k, look in enumerate(["fluorescent", "phase", "fluorescent"]):
        images[f"img{k}"], labels[f"img{k}"] = generate_image(k, look, spec)
    labels["empty"] = np.zeros((160, 192), np.int32)
    images["empty"] = np.zeros((160, 192), np.uint8)
    masks, image_dir = _write(root, labels, images)
    return masks, image_dir, labels


def test_roi_zips_fill_back_to_the_labels(synthetic, tmp_path: Path) -> None:
    masks, _, labels = synthetic
    agreement, n_rois = roi_pixel_agreement(masks, tmp_path / "roi")
    assert n_rois == sum(len(np.unique(y)) - 1 for y in labels.values())
    assert agreement == 1.0
    assert not (tmp_path / "roi" / "empty.zip").exists()


def test_geojson_rasterises_to_the_labels(synthetic, tmp_path: Path) -> None:
    masks, images, labels = synthetic
    _export(masks, "geojson", tmp_path / "geo", images)
    y = labels["img1"]
    collection = json.loads((tmp_path / "geo" / "img1.geojson").read_text())
    rows, cols = np.mgrid[: y.shape[0], : y.shape[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    filled = np.zeros(y.size, np.int64)
    for feature in collection["features"]:
        geometry = feature["geometry"]
        polygons = (
            [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        )
        parity = np.zeros(y.size, np.int64)
        for rings in polygons:
            for ring in rings:
                parity += MplPath(np.asarray(ring, float)).contains_points(centres)
        filled[parity % 2 == 1] = feature["properties"]["label"]
        assert "mean_intensity_c0" in feature["properties"]["measurements"]
    np.testing.assert_array_equal(filled.reshape(y.shape), y)
    empty = json.loads((tmp_path / "geo" / "empty.geojson").read_text())
    assert empty == {"type": "FeatureCollection", "features": []}


@pytest.mark.parametrize(("fmt", "order"), [("kaggle-dsb2018", "F"), ("kaggle-sartorius", "C")])
def test_kaggle_submission_decodes_to_the_labels(synthetic, tmp_path: Path, fmt, order) -> None:
    masks, _, labels = synthetic
    _export(masks, fmt, tmp_path / fmt)
    table = pd.read_csv(tmp_path / fmt / "submission.csv", keep_default_na=False)
    id_column, rle_column = table.columns
    assert sorted(set(table[id_column])) == sorted(labels)
    for image_id, y in labels.items():
        rows = table[table[id_column] == image_id]
        decoded = np.zeros_like(y)
        for k, rle in enumerate(rows[rle_column], start=1):
            mask = rle_decode(rle, y.shape, order=order)
            assert not decoded[mask].any()  # objects never overlap
            decoded[mask] = k
        ids = np.unique(y[y > 0])
        np.testing.assert_array_equal(decoded, np.searchsorted(np.r_[0, ids], y))
    assert list(table.loc[table[id_column] == "empty", rle_column]) == [""]


def test_measurements_table(synthetic, tmp_path: Path) -> None:
    masks, images, labels = synthetic
    _export(masks, "measurements", tmp_path / "m", images)
    table = pd.read_csv(tmp_path / "m" / "measurements.csv")
    assert len(table) == sum(len(np.unique(y)) - 1 for y in labels.values())
    one = table[(table["image_id"] == "img0")].set_index("label")
    y = labels["img0"]
    image = tifffile.imread(images / "img0.tif")
    label = int(one.index[0])
    assert one.at[label, "area"] == np.count_nonzero(y == label)
    assert one.at[label, "mean_intensity_c0"] == pytest.approx(image[y == label].mean())


# --------------------------------------------------------------------------- real nuclei


def _dsb_labels(root: Path, n: int) -> dict[str, np.ndarray]:
    out = {}
    for folder in sorted((root / "dsb2018" / "stage1_train").iterdir())[:n]:
        y = None
        for k, path in enumerate(sorted((folder / "masks").glob("*.png")), start=1):
            mask = np.asarray(Image.open(path)) > 0
            y = np.zeros(mask.shape, np.int32) if y is None else y
            y[mask] = k
        out[folder.name[:12]] = y
    return out


@pytest.mark.shared_data
def test_roi_pixel_agreement_on_real_nuclei(shared_data: Path, tmp_path: Path) -> None:
    labels = _dsb_labels(shared_data, 30)
    for path in sorted((shared_data / "bbbc039" / "masks").glob("*.png"))[:4]:
        labels[path.stem[:16]] = cc_label(np.asarray(Image.open(path))[..., 0])
    images = {k: np.zeros(y.shape, np.uint8) for k, y in labels.items()}
    masks, _ = _write(tmp_path / "in", labels, images)
    agreement, n_rois = roi_pixel_agreement(masks, tmp_path / "roi")
    assert n_rois == sum(len(np.unique(y)) - 1 for y in labels.values()) > 2400  # 1933 DSB
    assert agreement == 1.0
