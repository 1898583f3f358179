"""End-to-end on real data: the Snakefile from download to report on DSB 2018 and a CTC set.

The workflow files are copied into a fresh folder (as in ``test_pipeline.py``) and
params.yaml is rewritten to run ``synthetic`` beside two datasets read in place from
the shared real subsets (``source: local``):

- ``dsb2018``: the 30 stage-1 train images (val taken from them) and the 14 stage-1
  test images scored against the official RLE solution (the official test split);
- ``ctc_dic_hela``: CTC DIC-C2DH-HeLa, gold truth (``annotation = partial``). Only
  sequence 01 is present, so no sequence can be held out: ``frame_blocks: 3`` cuts its
  six annotated frames into three time blocks (split groups), giving train, val and
  test frames. Partial ground truth is scored with the CTC SEG measure only.

Models: classical, unet and flow. Training is tiny (2 epochs of 8 patches): this
checks that every stage works on real files of every shape (RGB(A) PNGs up to
1024x1024 and 603x1272, uint8 TIFF time lapse), not what the models score; the
full-length scores are measured by ``benchmarks/bench_default_run.py`` (BENCHMARKS.md).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from cellbench.report.render import GALLERY_CROP
from PIL import Image
from scipy.optimize import linear_sum_assignment
from workflow_helpers import BIN, copy_workflow, run, tiny_params, write_params

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

CTC_NAME = "DIC-C2DH-HeLa"
DATASETS = ("synthetic", "dsb2018", "ctc_dic_hela")
MODELS = ("classical", "unet", "flow")
LOCAL = {"dsb2018": "dsb2018", "ctc_dic_hela": "ctc"}  # dataset key -> folder in shared data


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, shared_data: Path) -> Path:
    """A project folder with the real-data params.yaml, after ``snakemake results/report.html``."""
    root = copy_workflow(repo_root, tmp_path_factory.mktemp("real_data"))
    params = tiny_params(root / "params.yaml")
    params["run"] = {"datasets": list(DATASETS), "models": list(MODELS)}
    params["datasets"]["dsb2018"] = {
        "kind": "dsb2018",
        "source": "local",
        "path": str(shared_data / "dsb2018"),
    }
    params["datasets"]["ctc_dic_hela"] = {
        "kind": "ctc",
        "source": "local",
        "path": str(shared_data / "ctc"),
        "options": {"name": CTC_NAME, "truth": "GT", "frame_blocks": 3},
    }
    write_params(root, params)
    run([str(BIN / "snakemake"), "--cores", "2", "results/report.html"], root)
    return root


def _summary(project: Path, dataset: str, model: str) -> dict:
    path = project / "results/scores" / dataset / model / "summary.json"
    assert path.is_file(), path
    return json.loads(path.read_text())


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def independent_ap(truth: np.ndarray, pred: np.ndarray, threshold: float) -> float:
    """TP / (TP + FP + FN) at one IoU threshold, without cellbench: the IoU of every
    (true, predicted) pair from a contingency table of the two label images, then the
    largest one-to-one set of pairs with IoU >= threshold (scipy's assignment)."""
    t_ids, t_index = np.unique(truth, return_inverse=True)
    p_ids, p_index = np.unique(pred, return_inverse=True)
    table = np.zeros((t_ids.size, p_ids.size), np.int64)
    np.add.at(table, (t_index.ravel(), p_index.ravel()), 1)
    t_fg, p_fg = t_ids > 0, p_ids > 0
    inter = table[np.ix_(t_fg, p_fg)]
    union = table[t_fg].sum(1)[:, None] + table[:, p_fg].sum(0)[None, :] - inter
    n_true, n_pred = int(t_fg.sum()), int(p_fg.sum())
    if n_true == 0 and n_pred == 0:
        return 1.0
    tp = 0
    if n_true and n_pred:
        ok = inter / union >= threshold
        rows, cols = linear_sum_assignment(ok, maximize=True)
        tp = int(ok[rows, cols].sum())
    return tp / (n_true + n_pred - tp)


def _recomputed_mean_ap(project: Path, dataset: str, model: str, thresholds: list) -> float:
    """The mean over the scored test images of the mean AP over ``thresholds``."""
    scored = pd.read_csv(
        project / "results/scores" / dataset / model / "per_image.csv", dtype={"id": str}
    )
    values = []
    for image_id in scored["id"]:
        truth = tifffile.imread(project / "data/converted" / dataset / "labels" / f"{image_id}.tif")
        pred = tifffile.imread(project / "results/masks" / dataset / model / f"{image_id}.tif")
        values.append(np.mean([independent_ap(truth, pred, t) for t in thresholds]))
    assert len(values) > 0, (dataset, model)
    return float(np.mean(values))


def test_independent_ap_agrees_with_hand_counts() -> None:
    truth = np.zeros((6, 12), np.int32)
    truth[:, :4], truth[:, 4:8], truth[:, 8:] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[:, :4] = 5  # IoU 1
    pred[:, 4:7] = 6  # IoU 0.75
    pred[:3, 8:] = 7  # IoU 0.5
    assert independent_ap(truth, pred, 0.5) == 1.0
    assert independent_ap(truth, pred, 0.55) == 2 / 4  # 2 TP, 1 FP, 1 FN
    assert independent_ap(truth, pred, 0.8) == 1 / 5
    assert independent_ap(truth, np.zeros_like(truth), 0.5) == 0.0
    assert independent_ap(np.zeros_like(truth), np.zeros_like(truth), 0.5) == 1.0


def test_every_dataset_and_model_is_scored(project: Path) -> None:
    lines = [f"{'dataset':14s} {'model':10s} {'images':>6s} {'mean AP':>8s} {'SEG':>6s}"]
    for dataset in DATASETS:
        for model in MODELS:
            summary = _summary(project, dataset, model)
            assert summary["n_images"] > 0, (dataset, model)
            mean = summary["per_image_mean"]
            tuned = json.loads(
                (project / "results/models" / dataset / model / "thresholds.json").read_text()
            )
            if dataset == "ctc_dic_hela":  # partial gold truth: SEG only, no AP
                assert _is_number(mean["seg"]) and 0.0 <= mean["seg"] <= 1.0
                assert _is_number(summary["pooled"]["seg"])
                assert mean.get("mean_ap") is None
                assert summary["pooled"]["n_images_fully_annotated"] == 0
                assert tuned["metric"] == "seg" and _is_number(tuned["val_score"])
            else:
                # the mean AP written by the score stage, recomputed here from the masks and
                # ground truth on disk with an independent matching (no cellbench code)
                expected = _recomputed_mean_ap(project, dataset, model, summary["thresholds"])
                assert mean["mean_ap"] == pytest.approx(expected, abs=1e-9), (dataset, model)
                assert tuned["metric"] == "mean_ap"
            lines.append(
                f"{dataset:14s} {model:10s} {summary['n_images']:6d} "
                f"{_fmt(mean.get('mean_ap')):>8s} {_fmt(mean.get('seg')):>6s}"
            )
    print("\n" + "\n".join(lines))
    # DSB is scored on the official stage-1 test images, all 14 of them
    assert _summary(project, "dsb2018", "unet")["n_images"] == 14
    split = (project / "data/splits/dsb2018.csv").read_text()
    assert split.count(",test,") == 14


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"


def test_local_sources_are_read_in_place(project: Path, shared_data: Path) -> None:
    for dataset, folder in LOCAL.items():
        raw = project / "data/raw" / dataset
        marker = raw / "LOCAL_SOURCE.json"
        assert marker.is_file()
        assert Path(json.loads(marker.read_text())["path"]) == (shared_data / folder).resolve()
        # nothing copied: the marker only (and Snakemake's empty directory timestamp)
        assert {p.name for p in raw.iterdir()} - {".snakemake_timestamp"} == {"LOCAL_SOURCE.json"}
    index = (project / "data/converted/ctc_dic_hela/index.csv").read_text()
    assert index.count(",partial,") == 6
    split = (project / "data/splits/ctc_dic_hela.csv").read_text().splitlines()[1:]
    assert {line.split(",")[1] for line in split} == {"train", "val", "test"}


def test_report_shows_real_datasets_beside_synthetic(project: Path) -> None:
    report = (project / "results/report.html").read_text()
    board = report.split('id="overview-table"', 1)[1].split("</table>", 1)[0]
    for model in MODELS:
        assert f"<th>{model}</th>" in board, model
    # each row: the score's name, then a number with its interval per model (SEG for partial truth)
    for dataset in DATASETS:
        assert f">{dataset}</a></td>" in board, dataset
        row = board.split(f">{dataset}</a></td>", 1)[1].split("</tr>", 1)[0]
        label = re.search(r'<td class="name">([^<]*)</td>', row).group(1)
        assert label.startswith("SEG" if dataset == "ctc_dic_hela" else "mean AP"), (dataset, row)
        cells = re.findall(
            r"<td[^>]*>(\d\.\d{3}) <span class=\"ci\">\[(\d\.\d{3}), (\d\.\d{3})\]", row
        )
        assert len(cells) == len(MODELS), (dataset, row)
        for mean, low, high in cells:
            assert float(low) <= float(mean) <= float(high), (dataset, row)
    ctc = report.split("<h2>Dataset <code>ctc_dic_hela</code>", 1)[1].split("<h2>", 1)[0]
    assert re.search(r"</b>: SEG \d\.\d{3}; TP \d+, FP \d+, FN \d+", ctc)
    # a gallery per dataset: the same test images for every model, crops of bounded size
    galleries = re.findall(r'<div class="gallery" id="gallery-\d+">', report)
    assert len(galleries) == len(DATASETS)
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", report)
    assert len(pngs) >= len(DATASETS) * (len(MODELS) + 1)
    for data in pngs:
        width, height = Image.open(io.BytesIO(base64.b64decode(data))).size
        assert height <= GALLERY_CROP and width <= GALLERY_CROP
    assert len(report.encode()) < 5_000_000  # a few MB at most
