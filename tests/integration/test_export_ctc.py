"""``cellbench export --format ctc``: result folders that py-ctcmetrics accepts.

py-ctcmetrics (the Python port of the Cell Tracking Challenge measures, test-only)
reads our ``{sequence}_RES`` folder against a ground-truth ``{sequence}_GT`` folder:
a perfect prediction must score SEG 1.0, on a toy sequence built here and on the real
Fluo-N2DH-SIM+ sequence converted by cellbench's CTC converter.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from cellbench.cli import main
from cellbench.datasets.options import SyntheticOptions
from cellbench.synthetic import generate_image
from skimage.segmentation import find_boundaries


@pytest.fixture(scope="module")
def ctc_eval():
    pytest.importorskip(
        "ctc_metrics", reason="py-ctcmetrics is a test-only peer (pip install py-ctcmetrics)"
    )
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    def seg(res: Path, gt: Path) -> float:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
            return evaluate_sequence(str(res), str(gt), ["SEG"], threads=1)["SEG"]

    return seg


def _toy_sequence(root: Path, n_frames: int = 4):
    """Masks + index.csv of one 'Fluo-Toy' sequence, and its CTC ground-truth folder."""
    spec = SyntheticOptions(height=96, width=112, n_cells=(6, 10), radius=(6, 10))
    masks = root / "masks"
    gt = root / "gt" / "Fluo-Toy" / "01_GT"
    for sub in ("SEG", "TRA"):
        (gt / sub).mkdir(parents=True)
    masks.mkdir()
    rows = []
    for t in range(n_frames):
        _, y = generate_image(t, "fluorescent", spec)
        tifffile.imwrite(masks / f"toy_01_t{t:03d}.tif", y.astype(np.uint16))
        tifffile.imwrite(gt / "SEG" / f"man_seg{t:03d}.tif", y.astype(np.uint16))
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", y.astype(np.uint16))
        rows.append((f"toy_01_t{t:03d}", 96, 112, "Fluo-Toy", "01", t))
    index = root / "index.csv"
    pd.DataFrame(rows, columns=["id", "height", "width", "cell_type", "sequence", "frame"]).to_csv(
        index, index=False
    )
    return masks, index, gt


def test_perfect_prediction_scores_seg_1(tmp_path: Path, ctc_eval) -> None:
    masks, index, gt = _toy_sequence(tmp_path)
    out = tmp_path / "res"
    args = ["export", "--masks", str(masks), "--format", "ctc", "--out", str(out)]
    assert main([*args, "--index", str(index)]) == 0
    res = out / "Fluo-Toy" / "01_RES"
    assert sorted(p.name for p in res.iterdir()) == [f"mask{t:03d}.tif" for t in range(4)]
    with tifffile.TiffFile(res / "mask002.tif") as tif:
        assert tif.pages[0].dtype == np.uint16
    assert ctc_eval(res, gt) == pytest.approx(1.0)


def test_gaps_are_reported_or_filled(tmp_path: Path, ctc_eval, capsys) -> None:
    masks, index, gt = _toy_sequence(tmp_path)
    # a worse prediction: cell borders removed, and frame 1 not predicted at all
    for path in masks.glob("*.tif"):
        y = tifffile.imread(path)
        y[find_boundaries(y, mode="inner")] = 0
        tifffile.imwrite(path, y)
    (masks / "toy_01_t001.tif").unlink()
    args = ["export", "--masks", str(masks), "--format", "ctc", "--index", str(index)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "frames of Fluo-Toy/01_RES have no mask" in capsys.readouterr().out
    assert not (tmp_path / "a" / "Fluo-Toy" / "01_RES" / "mask001.tif").exists()
    assert main([*args, "--out", str(tmp_path / "b"), "--fill-gaps"]) == 0
    res = tmp_path / "b" / "Fluo-Toy" / "01_RES"
    assert not tifffile.imread(res / "mask001.tif").any()
    seg = ctc_eval(res, gt)
    assert 0.3 < seg < 0.9  # frame 1 scores 0, the eroded cells less than 1


@pytest.mark.shared_data
def test_real_ctc_sequence_through_the_converter(shared_data: Path, tmp_path, ctc_eval) -> None:
    from cellbench.config import DatasetConfig
    from cellbench.datasets import get_dataset
    from cellbench.datasets.base import ConvertedWriter

    name = "Fluo-N2DH-SIM+"
    cfg = DatasetConfig(
        name="ctc_sim", kind="ctc", source="local", path="x", options={"name": name}
    )
    converted = tmp_path / "converted"
    writer = ConvertedWriter(converted)  # what the convert stage does, reading the originals
    get_dataset(cfg).convert(shared_data / "ctc", writer)
    writer.finish()
    # a perfect prediction: the converted labels themselves, as the masks of every frame
    args = ["export", "--masks", str(converted / "labels"), "--format", "ctc"]
    out = tmp_path / "res"
    assert main([*args, "--index", str(converted / "index.csv"), "--out", str(out)]) == 0
    res = out / name / "01_RES"
    assert len(list(res.glob("mask*.tif"))) == 10
    assert ctc_eval(res, shared_data / "ctc" / name / "01_GT") == pytest.approx(1.0)
