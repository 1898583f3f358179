"""Exports on small synthetic label images: outlines, ROIs, GeoJSON, measurements,
Kaggle run-length rows, CTC file plans, the export stage's refusals, best-model choice.

The label images cover the shapes that break naive exporters: touching objects,
objects on the image border, a 1-pixel object, a label with a hole (and another
label inside it), a label in two pieces, pixels meeting only at a corner, an empty
image and non-consecutive label ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from cellbench.cli import main
from cellbench.datasets.rle import rle_decode
from cellbench.export.bioimageio import best_model, model_channels, rank_models
from cellbench.export.ctc import plan_ctc
from cellbench.export.formats import (
    GEOMETRY_COLUMNS,
    KAGGLE_FORMATS,
    fill_roi,
    kaggle_rows,
    labels_to_geojson,
    labels_to_rois,
    measure,
)
from cellbench.export.outlines import fill_polygons, label_outlines, signed_area
from cellbench.export.writers import export_masks
from cellbench.io import CellbenchIOError
from cellbench.transforms import to_model_input
from matplotlib.path import Path as MplPath


def tricky_labels() -> np.ndarray:
    """(24, 30) labels with every awkward shape; ids are not consecutive."""
    y = np.zeros((24, 30), np.int32)
    y[0:4, 0:5] = 3  # corner of the image
    y[0:4, 5:9] = 4  # touches 3
    y[6:15, 2:11] = 7  # ring: a hole ...
    y[8:13, 4:9] = 0
    y[10, 6] = 7  # ... with an island of the same label inside it
    y[9, 5] = 11  # ... and another label inside the hole
    y[23, 0] = 12  # 1 pixel in the bottom-left corner
    y[2:5, 14:18] = 20  # two pieces of one label
    y[7:9, 20:23] = 20
    y[16, 16] = 31  # pixels meeting only at corners (a diagonal)
    y[17, 17] = 31
    y[18, 16] = 31
    y[15:24, 24:30] = 40  # bottom-right border
    y[18:21, 26:28] = 41  # inside 40, touching nothing else
    return y


def _fill_labels(outlines, shape) -> np.ndarray:
    out = np.zeros(shape, np.int64)
    for label, polygons in outlines.items():
        mask = fill_polygons([r for p in polygons for r in p.rings()], shape)
        assert not out[mask].any(), f"label {label} overlaps another"
        out[mask] = label
    return out


# --------------------------------------------------------------------------- outlines


def test_outlines_fill_back_exactly_and_rings_are_simple() -> None:
    y = tricky_labels()
    outlines = label_outlines(y)
    assert sorted(outlines) == sorted(set(np.unique(y)) - {0})
    np.testing.assert_array_equal(_fill_labels(outlines, y.shape), y)
    for label, polygons in outlines.items():
        assert sum(p.area for p in polygons) == np.count_nonzero(y == label)
        for polygon in polygons:
            assert signed_area(polygon.shell) > 0
            assert all(signed_area(h) < 0 for h in polygon.holes)
            for ring in polygon.rings():  # simple: no corner visited twice
                assert len({tuple(v) for v in ring.tolist()}) == len(ring)
    assert len(outlines[7]) == 2 and len(outlines[7][0].holes) == 1  # ring + island
    assert len(outlines[20]) == 2 and len(outlines[31]) == 3
    assert len(outlines[40]) == 1 and len(outlines[40][0].holes) == 1
    assert outlines[12][0].shell.tolist() == [[0, 23], [1, 23], [1, 24], [0, 24]]


def test_outlines_random_labels_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        shape = tuple(int(s) for s in rng.integers(1, 14, size=2))
        y = rng.integers(0, 5, size=shape) * rng.integers(1, 3)
        np.testing.assert_array_equal(_fill_labels(label_outlines(y), shape), y)


def test_outlines_of_empty_image_and_bad_input() -> None:
    assert label_outlines(np.zeros((5, 5), np.uint16)) == {}
    with pytest.raises(ValueError, match="2-D integer"):
        label_outlines(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        label_outlines(-np.ones((2, 2), np.int32))


# --------------------------------------------------------------------------- ImageJ ROIs


def test_roi_zip_reads_back_and_fills_to_the_same_masks(tmp_path: Path) -> None:
    import roifile

    y = tricky_labels()
    rois = labels_to_rois(y)
    roifile.roiwrite(tmp_path / "rois.zip", rois, mode="w")
    back = roifile.roiread(tmp_path / "rois.zip")
    ids = [3, 4, 7, 11, 12, 20, 31, 40, 41]
    assert [r.name for r in back] == [f"{i:05d}" for i in ids]
    filled = np.zeros_like(y)
    for roi in back:
        mask = fill_roi(roi, y.shape)
        assert not filled[mask].any()
        filled[mask] = int(roi.name)
    np.testing.assert_array_equal(filled, y)  # 100 % pixel agreement
    kinds = {int(r.name): (r.roitype, r.composite) for r in back}
    assert kinds[3] == (roifile.ROI_TYPE.TRACED, False)  # one piece: a traced polygon
    assert kinds[7][1] and kinds[20][1] and kinds[40][1]  # holes / pieces: composite
    assert labels_to_rois(np.zeros((3, 3), np.int32)) == []


def test_roi_names_widen_for_large_ids() -> None:
    y = np.zeros((4, 4), np.int64)
    y[1, 1] = 123456
    assert [r.name for r in labels_to_rois(y)] == ["123456"]


# --------------------------------------------------------------------------- GeoJSON


def _rasterise_geometry(geometry: dict, shape) -> np.ndarray:
    """Even-odd fill at pixel centres with matplotlib (independent of cellbench's filler)."""
    polygons = (
        [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    )
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    parity = np.zeros(centres.shape[0], np.int64)
    for rings in polygons:
        for ring in rings:
            parity += MplPath(np.asarray(ring, float)).contains_points(centres)
    return (parity % 2).astype(bool).reshape(shape)


def test_geojson_is_valid_qupath_feature_collection() -> None:
    y = tricky_labels()
    table = measure(y, image_id="img")
    collection = json.loads(json.dumps(labels_to_geojson(y, image_id="img", measurements=table)))
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert [f["properties"]["label"] for f in features] == sorted(set(np.unique(y)) - {0})
    filled = np.zeros_like(y)
    for feature in features:
        props = feature["properties"]
        assert feature["type"] == "Feature" and props["objectType"] == "detection"
        assert props["name"] == f"{props['label']:05d}" and props["image_id"] == "img"
        assert props["measurements"]["area"] == np.count_nonzero(y == props["label"])
        geometry = feature["geometry"]
        polygons = (
            [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        )
        for rings in polygons:
            for k, ring in enumerate(rings):  # RFC 7946: closed, >= 4 positions, right-hand rule
                assert ring[0] == ring[-1] and len(ring) >= 4
                assert (signed_area(np.asarray(ring)) > 0) == (k == 0)
        mask = _rasterise_geometry(geometry, y.shape)
        assert not filled[mask].any()
        filled[mask] = props["label"]
    np.testing.assert_array_equal(filled, y)
    types = {f["properties"]["label"]: f["geometry"]["type"] for f in features}
    assert types[20] == "MultiPolygon" and types[40] == "Polygon"
    assert labels_to_geojson(np.zeros((3, 3), np.int32))["features"] == []


def test_geojson_is_valid_for_shapely() -> None:
    shapely = pytest.importorskip("shapely.geometry", reason="shapely is optional here")
    y = tricky_labels()
    for feature in labels_to_geojson(y)["features"]:
        geometry = shapely.shape(feature["geometry"])
        assert geometry.is_valid
        assert geometry.area == np.count_nonzero(y == feature["properties"]["label"])


# --------------------------------------------------------------------------- measurements


def test_measurements_per_object_and_channel() -> None:
    y = tricky_labels()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4000, size=(*y.shape, 2)).astype(np.uint16)
    table = measure(y, image, image_id="a")
    assert list(table.columns) == [*GEOMETRY_COLUMNS, "mean_intensity_c0", "mean_intensity_c1"]
    assert list(table["label"]) == sorted(set(np.unique(y)) - {0})
    row = table.set_index("label").loc[7]
    rr, cc = np.nonzero(y == 7)
    assert row["area"] == rr.size and row["image_id"] == "a"
    assert row["centroid_y"] == pytest.approx(rr.mean()) and row["centroid_x"] == pytest.approx(
        cc.mean()
    )
    assert (row["bbox_min_y"], row["bbox_min_x"], row["bbox_max_y"], row["bbox_max_x"]) == (
        6,
        2,
        15,
        11,
    )
    assert row["mean_intensity_c1"] == pytest.approx(image[..., 1][y == 7].mean())
    grey = measure(y, image[..., 0])
    assert "mean_intensity_c0" in grey and "mean_intensity_c1" not in grey
    empty = measure(np.zeros((4, 4), np.int32), np.zeros((4, 4)))
    assert len(empty) == 0 and "mean_intensity_c0" in empty
    with pytest.raises(ValueError, match="does not match"):
        measure(y, np.zeros((3, 3)))


# --------------------------------------------------------------------------- Kaggle


@pytest.mark.parametrize("name", sorted(KAGGLE_FORMATS))
def test_kaggle_rows_decode_back_to_the_labels(name: str) -> None:
    fmt = KAGGLE_FORMATS[name]
    y = tricky_labels()
    rows = kaggle_rows(y, "img", fmt)
    assert len(rows) == len(set(np.unique(y)) - {0})
    decoded = np.zeros_like(y)
    for k, row in enumerate(rows, start=1):
        assert list(row) == fmt.columns and row[fmt.id_column] == "img"
        values = np.asarray(row[fmt.rle_column].split(), np.int64)
        starts, lengths = values[0::2], values[1::2]
        assert (np.diff(starts) > lengths[:-1]).all()  # ascending, runs never touch
        mask = rle_decode(row[fmt.rle_column], y.shape, order=fmt.order)
        assert not decoded[mask].any()
        decoded[mask] = k
    # the same partition (ids are renumbered in label order)
    ids = sorted(set(np.unique(y)) - {0})
    np.testing.assert_array_equal(decoded, np.searchsorted([0, *ids], y))


def test_kaggle_orders_and_empty_image() -> None:
    y = np.zeros((3, 4), np.int32)
    y[0, 1:3] = 5  # a horizontal run: one run row-major, two column-major
    assert kaggle_rows(y, "a", KAGGLE_FORMATS["kaggle-sartorius"]) == [
        {"id": "a", "predicted": "2 2"}
    ]
    assert kaggle_rows(y, "a", KAGGLE_FORMATS["kaggle-dsb2018"]) == [
        {"ImageId": "a", "EncodedPixels": "4 1 7 1"}
    ]
    assert kaggle_rows(np.zeros((3, 4), np.int32), "e", KAGGLE_FORMATS["kaggle-dsb2018"]) == [
        {"ImageId": "e", "EncodedPixels": ""}
    ]


# --------------------------------------------------------------------------- CTC plan


def _index(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "height", "width", "cell_type", "sequence", "frame"])


def test_ctc_plan_names_nests_and_gaps() -> None:
    index = _index(
        [
            ("a_t000", 8, 9, "Fluo-X", "01", 0),
            ("a_t002", 8, 9, "Fluo-X", "01", 2),
            ("a_t003", 8, 9, "Fluo-X", "01", 3),
            ("b_t1200", 5, 5, "Fluo-X", "02", 1200),
            ("c_t001", 4, 4, "", "01", 1),
        ]
    )
    plan = plan_ctc(index, ["a_t000", "a_t003", "b_t1200", "c_t001"])
    paths = {f.path.as_posix(): f.image_id for f in plan.frames}
    assert paths == {
        "01_RES/mask001.tif": "c_t001",
        "Fluo-X/01_RES/mask000.tif": "a_t000",
        "Fluo-X/01_RES/mask003.tif": "a_t003",
        "Fluo-X/02_RES/mask1200.tif": "b_t1200",
    }
    assert plan.missing["Fluo-X/01_RES"] == [1, 2]
    assert plan.missing["01_RES"] == [0]
    filled = plan_ctc(index, ["a_t000", "a_t003"], fill_gaps=True)
    empty = [f for f in filled.frames if f.image_id is None]
    assert [f.path.name for f in empty] == ["mask001.tif", "mask002.tif"]
    assert empty[0].shape == (8, 9)


def test_ctc_plan_refuses_images_outside_sequences() -> None:
    index = _index([("x", 8, 8, "", "", -1), ("y", 8, 8, "c", "01", 0), ("z", 8, 8, "c", "01", 0)])
    with pytest.raises(CellbenchIOError, match="not frames of a time-lapse sequence"):
        plan_ctc(index, ["x"])
    with pytest.raises(CellbenchIOError, match="no row in index.csv"):
        plan_ctc(index, ["nope"])
    with pytest.raises(CellbenchIOError, match="same frame"):
        plan_ctc(index, ["y", "z"])


# --------------------------------------------------------------------------- the export stage


@pytest.fixture
def masks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "masks"
    folder.mkdir()
    tifffile.imwrite(folder / "img1.tif", tricky_labels().astype(np.uint16))
    tifffile.imwrite(folder / "img2_masks.tif", np.zeros((24, 30), np.uint16))  # segment's name
    (folder / "diameters.csv").write_text("id,factor\n")  # not a mask: ignored
    return folder


def test_export_stage_writes_atomically_and_never_overwrites(masks_dir: Path, tmp_path) -> None:
    out = tmp_path / "out" / "roi"
    result = export_masks(masks_dir, "roi", out)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "img1.zip"]
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["objects_per_image"] == {"img1": 9, "img2": 0}
    assert manifest["images_without_objects"] == ["img2"]
    assert result.n_objects == 9 and "without objects" in result.summary()
    with pytest.raises(CellbenchIOError, match="exists and is not empty"):
        export_masks(masks_dir, "labels", out)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "img1.zip"]  # untouched
    (tmp_path / "file").write_text("x")
    with pytest.raises(CellbenchIOError, match="not a folder"):
        export_masks(masks_dir, "labels", tmp_path / "file")
    assert not list((tmp_path / "out").glob(".*"))  # no temporaries left behind


def test_export_stage_kaggle_labels_and_measurements(masks_dir: Path, tmp_path: Path) -> None:
    export_masks(masks_dir, "kaggle-dsb2018", tmp_path / "k")
    submission = pd.read_csv(tmp_path / "k" / "submission.csv", keep_default_na=False)
    assert list(submission.columns) == ["ImageId", "EncodedPixels"]
    assert (submission["ImageId"] == "img2").sum() == 1  # empty image: one empty row
    assert submission.loc[submission["ImageId"] == "img2", "EncodedPixels"].item() == ""
    export_masks(masks_dir, "labels", tmp_path / "l")
    with tifffile.TiffFile(tmp_path / "l" / "img1.tif") as tif:
        assert tif.is_imagej and tif.pages[0].dtype == np.uint16
        np.testing.assert_array_equal(tif.asarray(), tricky_labels())
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "img1.tif", np.full((24, 30), 7, np.uint8))
    tifffile.imwrite(images / "img2.tif", np.zeros((24, 30), np.uint8))
    export_masks(masks_dir, "measurements", tmp_path / "m", images=images)
    table = pd.read_csv(tmp_path / "m" / "measurements.csv")
    assert len(table) == 9 and (table["mean_intensity_c0"] == 7).all()
    tifffile.imwrite(images / "img1.tif", np.zeros((5, 5), np.uint8))
    with pytest.raises(CellbenchIOError, match="its mask is"):
        export_masks(masks_dir, "geojson", tmp_path / "g", images=images)


def test_export_cli_errors_exit_2(masks_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", "--masks", str(masks_dir), "--format", "ctc", "--out", "x"]) == 2
    assert "needs the dataset's index.csv" in capsys.readouterr().err
    missing = tmp_path / "none"
    assert main(["export", "--masks", str(missing), "--format", "roi", "--out", "x"]) == 2
    assert f"{missing}: no such folder" in capsys.readouterr().err
    out = tmp_path / "geo"
    assert (
        main(["export", "--masks", str(masks_dir), "--format", "geojson", "--out", str(out)]) == 0
    )
    assert "geojson: 2 images, 9 objects" in capsys.readouterr().out


# --------------------------------------------------------------------------- best model


def _scores(root: Path, dataset: str, model: str, family: str, **summary) -> None:
    folder = root / "scores" / dataset / model
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    model_dir = root / "models" / dataset / model
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"family": family}))


def test_best_model_by_mean_ap_then_seg(tmp_path: Path) -> None:
    _scores(tmp_path, "d", "classical", "classical", per_image_mean={"mean_ap": 0.9})
    _scores(tmp_path, "d", "unet", "unet", per_image_mean={"mean_ap": 0.7})
    _scores(tmp_path, "d", "flow", "flow", per_image_mean={"mean_ap": 0.7})
    assert best_model(tmp_path, "d", ["classical", "unet", "flow"]).model == "classical"
    ranked = rank_models(tmp_path, "d", ["classical", "unet", "flow"], network_only=True)
    assert [r.model for r in ranked] == ["unet", "flow"]  # a tie keeps the given order
    assert ranked[0].metric == "mean_ap" and ranked[0].model_dir == tmp_path / "models/d/unet"
    # partial annotation: no AP, so CTC SEG decides
    _scores(tmp_path, "c", "unet", "unet", per_image_mean={"mean_ap": None}, pooled={"seg": 0.6})
    _scores(tmp_path, "c", "flow", "flow", per_image_mean={"seg": 0.8}, pooled={"seg": 0.7})
    best = best_model(tmp_path, "c", ["unet", "flow"])
    assert (best.model, best.metric, best.score) == ("flow", "seg", 0.7)
    with pytest.raises(CellbenchIOError, match="summary.json: missing"):
        best_model(tmp_path, "d", ["maskrcnn"])
    from cellbench.errors import ConfigError

    with pytest.raises(ConfigError, match="no model with a trained network"):
        best_model(tmp_path, "d", ["classical"], network_only=True)


def test_model_channels_match_to_model_input() -> None:
    from cellbench.transforms import normalize_percentile

    rng = np.random.default_rng(2)
    cases = [((20, 24), 1), ((20, 24), 3), ((20, 24, 3), 1), ((20, 24, 4), 3)]
    cases += [((20, 24, 2), 1), ((20, 24, 3), 2)]
    for shape, channels in cases:
        image = rng.integers(0, 255, size=shape).astype(np.uint8)
        np.testing.assert_allclose(
            normalize_percentile(model_channels(image, channels)),
            to_model_input(image, channels),
            rtol=1e-6,
        )


def test_best_network_for_bioimageio_skips_families_it_cannot_package(tmp_path) -> None:
    """A better maskrcnn / embedding / lstm_unet model is passed over for the best unet / flow."""
    from cellbench.export.bioimageio import best_model
    from cellbench.io import write_json

    for model, family, score in (
        ("mrcnn", "maskrcnn", 0.9),
        ("emb", "embedding", 0.8),
        ("u", "unet", 0.5),
        ("c", "classical", 0.95),
    ):
        write_json(tmp_path / "models/ds" / model / "config.json", {"family": family})
        write_json(
            tmp_path / "scores/ds" / model / "summary.json",
            {"per_image_mean": {"mean_ap": score}},
        )
    ranked = best_model(tmp_path, "ds", ["mrcnn", "emb", "u", "c"], network_only=True)
    assert ranked.model == "u"
