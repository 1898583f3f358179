"""`cellbench segment` is scale-robust on real images: 0.5x and 2x within 0.06 of 1x.

A U-Net is trained with size normalisation (``diameter: 30``) on the real BBBC039
64-field subset (38 train images); its size model estimates the diameter of every
image, so the 16 held-out test images segmented at half and at twice their size must
score (mean AP against the truth resized with nearest neighbour) like the same images
at their own size, and the estimated diameters must follow the scale.

The bound is on the mean of the paired per-image differences over the 15 test fields that
hold nuclei (an empty field scores 0 or 1 and depends on the contrast floor, not on
scale). With the 3 test images of the 16-field subset this test flaked (0.607 at 0.5x
against 0.688 at 1x on one clean clone, within 0.05 in CI): a mean over 3 images moves
by more than the bound from one training to the next. ``CELLBENCH_TEST_SEED`` reruns the test with another
seed (split, initialisation and augmentation), which is how the spread over seeds behind
``TOLERANCE`` was measured.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from cellbench.io import read_image, read_labels
from cellbench.metrics import score_image
from workflow_helpers import BIN, run

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SCALES = (1.0, 0.5, 2.0)
# measured 0.5x - 1x: -0.034 (seed 42), -0.041 (seed 7); 2x - 1x: -0.017, -0.019
# (BENCHMARKS.md section 13): 0.06 leaves about 4 seed standard deviations of margin
TOLERANCE = 0.06
SEED = int(os.environ.get("CELLBENCH_TEST_SEED", "42"))


def _resize(array: np.ndarray, factor: float, nearest: bool) -> np.ndarray:
    h, w = array.shape[:2]
    size = (round(w * factor), round(h * factor))
    if nearest:
        return cv2.resize(
            array.astype(np.float32), size, interpolation=cv2.INTER_NEAREST_EXACT
        ).astype(np.int32)
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(array, size, interpolation=interp)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, shared_data: Path) -> Path:
    """A project folder with BBBC039 (64 fields) converted, split and a sized U-Net trained."""
    root = tmp_path_factory.mktemp("scale_real")
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    unet = dict(params["models"]["unet"])
    # the committed U-Net recipe with size normalisation, shortened to fit a CI run
    unet.update(diameter=30.0, size_estimate="regression", epochs=12, samples_per_epoch=96)
    params["models"] = {"unet_sized": unet}
    params["run"] = {"datasets": ["bbbc039"], "models": ["unet_sized"]}
    params["seed"] = SEED
    params["datasets"] = {
        "bbbc039": {
            "kind": "bbbc039",
            "source": "local",
            "path": str(shared_data / "bbbc039-64"),
            "split": {"val_fraction": 0.15, "test_fraction": 0.25},
        }
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cellbench = str(BIN / "cellbench")
    common = ["--params", "params.yaml", "--dataset", "bbbc039"]
    run([cellbench, "download", *common, "--out", "raw"], root)
    run([cellbench, "convert", *common, "--raw", "raw", "--out", "converted"], root)
    run([cellbench, "split", *common, "--converted", "converted", "--out", "split.csv"], root)
    run(
        [cellbench, "train", *common, "--model", "unet_sized", "--converted", "converted"]
        + ["--split", "split.csv", "--out", "model", "--threads", "2"],
        root,
        timeout=1800,
    )
    return root


def test_segment_at_half_and_double_size_scores_like_the_original(trained: Path) -> None:
    split = pd.read_csv(trained / "split.csv", dtype={"id": str})
    ids = list(split.loc[split["split"] == "test", "id"])
    assert len(ids) >= 12
    for factor in SCALES:
        folder = trained / f"images_{factor}"
        folder.mkdir()
        for image_id in ids:
            image = np.asarray(read_image(trained / "converted" / "images" / f"{image_id}.tif"))
            tifffile.imwrite(folder / f"{image_id}.tif", _resize(image, factor, nearest=False))
    rows, diameters, empty = [], {}, set()
    for factor in SCALES:
        proc = run(
            [str(BIN / "cellbench"), "segment", "--model-dir", "model", "--threads", "2"]
            + ["--out", f"masks_{factor}", f"images_{factor}"],
            trained,
        )
        found = re.findall(r"object diameter ([0-9.]+) px \(estimated", proc.stderr)
        assert len(found) == len(ids), proc.stderr[-2000:]  # estimated, not given
        diameters[factor] = np.array([float(d) for d in found])
        for image_id in ids:
            truth = np.asarray(read_labels(trained / "converted" / "labels" / f"{image_id}.tif"))
            if not truth.any():
                empty.add(image_id)
            truth = _resize(truth, factor, nearest=True)
            masks = tifffile.imread(trained / f"masks_{factor}" / f"{image_id}_masks.tif")
            assert masks.shape == truth.shape
            rows.append({"id": image_id, "factor": factor, "ap": score_image(truth, masks).mean_ap})
    table = pd.DataFrame(rows).pivot(index="id", columns="factor", values="ap")
    # Fields without nuclei score 0 or 1 (any object, or none) and so move a mean over 16
    # images by 0.0625 on their own; whether resampled noise stays under the model's
    # contrast floor is not a question of scale robustness (BENCHMARKS.md section 14).
    table = table.drop(index=sorted(empty))
    assert len(table) >= 12
    scores = table.mean()
    print(f"seed {SEED}: mean AP by scale {scores.round(4).to_dict()}")
    assert scores[1.0] > 0.5, "the model must segment the originals well for the test to mean much"
    for factor in (0.5, 2.0):
        paired = table[factor] - table[1.0]
        print(
            f"seed {SEED}: {factor}x - 1x per image: mean {paired.mean():+.4f} sd {paired.std():.4f}"
        )
        assert abs(paired.mean()) <= TOLERANCE, scores.to_dict()
        ratio = np.median(diameters[factor] / diameters[1.0])
        assert ratio == pytest.approx(factor, rel=0.25), (factor, diameters)
