"""The score stage: post-processed masks vs ground truth for every test image of a dataset.

Writes ``per_image.csv`` (one row per test image: id, cell_type, annotation and every
column of :meth:`cellbench.metrics.ImageScore.row`, from
:func:`cellbench.metrics.score_image`) and ``summary.json`` (the
:func:`cellbench.metrics.summarize` aggregates, a DVC metrics file) into
``results/scores/{dataset}/{model}/``, atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cellbench.config import ScoreOptions
from cellbench.datasets.base import read_index
from cellbench.io import CellbenchIOError, atomic_dir, read_labels, write_csv, write_json
from cellbench.metrics import score_image, summarize
from cellbench.scale import median_diameter

__all__ = ["score_dir"]


def score_dir(
    masks: Path,
    converted: Path,
    split_csv: Path,
    out_dir: Path,
    *,
    dataset: str,
    model: str,
    settings: ScoreOptions,
) -> dict[str, Any]:
    """Score every test image; returns the summary written to ``summary.json``.

    ``settings`` is params.yaml's ``score:`` section (:class:`cellbench.config.ScoreOptions`):
    ``iou_thresholds`` (averaged
    into mean AP) and ``extra_thresholds`` (reported too).
    """
    thresholds: Sequence[float] = settings.iou_thresholds
    extra: Sequence[float] = settings.extra_thresholds
    index = read_index(converted).set_index("id")
    split = pd.read_csv(split_csv, dtype={"id": str}, keep_default_na=False)
    test_ids = list(split.loc[split["split"] == "test", "id"])
    rows = []
    for image_id in test_ids:
        annotation = index.at[image_id, "annotation"]
        if annotation == "none":
            continue
        mask_path = Path(masks) / f"{image_id}.tif"
        if not mask_path.is_file():
            raise CellbenchIOError(
                f"{mask_path}: missing prediction for test image '{image_id}'. Re-run the "
                "predict and postprocess stages for this dataset and model."
            )
        truth = read_labels(Path(converted) / "labels" / f"{image_id}.tif")
        pred = read_labels(mask_path)
        if truth.shape != pred.shape:
            raise CellbenchIOError(
                f"{mask_path}: shape {pred.shape} differs from the ground truth {truth.shape}. "
                "Delete the masks folder and re-run postprocess."
            )
        row = {
            "id": image_id,
            "cell_type": index.at[image_id, "cell_type"],
            "annotation": annotation,
        }
        row["true_diameter"] = median_diameter(truth)
        row.update(score_image(truth, pred, thresholds, extra, annotation=annotation).row())
        rows.append(row)
    per_image = pd.DataFrame(rows)
    scales = Path(masks) / "diameters.csv"
    if scales.is_file() and len(per_image):  # size-normalised models: estimated vs true size
        estimated = pd.read_csv(scales, dtype={"id": str})[["id", "estimated_diameter"]]
        per_image = per_image.merge(estimated, on="id", how="left")
    summary = {"dataset": dataset, "model": model, **summarize(per_image, thresholds)}
    with atomic_dir(out_dir) as tmp:
        write_csv(tmp / "per_image.csv", per_image)
        write_json(tmp / "summary.json", summary)
    return summary
