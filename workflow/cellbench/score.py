"""The score stage: post-processed masks vs ground truth for every test image of a dataset.

Writes into ``results/scores/{dataset}/{model}/``, atomically:

- ``per_image.csv``: one row per test image: id, cell_type, annotation and every column of
  :meth:`cellbench.metrics.ImageScore.row`, from :func:`cellbench.metrics.score_image`;
- ``summary.json``: every :func:`cellbench.metrics.summarize` aggregate;
- ``metrics.json``: the headline numbers (DVC's metrics file, a few keys for
  ``dvc metrics show`` / ``diff``): per-image means of mean AP, F1@0.5, PQ, AJI and CTC SEG,
  and the cost when the model folder and predictions are given (training seconds,
  network and post-processing seconds per image);
- ``ap_vs_iou.csv``: AP, precision, recall and F1 (per-image means) at every IoU threshold
  of ``score:`` (DVC's AP-vs-IoU plot);
- ``training.csv``: the model folder's ``history.csv`` columns epoch, train_loss, val_loss,
  val_mean_ap (DVC's training-curve plot; no rows for untrained models or without
  ``model_dir``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cellbench.config import ScoreOptions
from cellbench.datasets.base import read_index
from cellbench.io import CellbenchIOError, atomic_dir, read_labels, write_csv, write_json
from cellbench.metrics import score_image, summarize, threshold_tag
from cellbench.scale import median_diameter
from cellbench.skip import SKIPPED_JSON, read_skipped

log = logging.getLogger(__name__)

__all__ = [
    "AP_VS_IOU_COLUMNS",
    "HEADLINE_SCORES",
    "TRAINING_COLUMNS",
    "ap_vs_iou",
    "headline_metrics",
    "score_dir",
    "training_curve",
]

#: metrics.json's scores: the per-image means the report's leaderboard shows.
HEADLINE_SCORES = ("mean_ap", f"f1@{threshold_tag(0.5)}", "pq", "aji", "seg")
AP_VS_IOU_COLUMNS = ("iou", "ap", "precision", "recall", "f1")
TRAINING_COLUMNS = ("epoch", "train_loss", "val_loss", "val_mean_ap")


def score_dir(
    masks: Path,
    converted: Path,
    split_csv: Path,
    out_dir: Path,
    *,
    dataset: str,
    model: str,
    settings: ScoreOptions,
    model_dir: Path | None = None,
    predictions: Path | None = None,
) -> dict[str, Any]:
    """Score every test image; returns the summary written to ``summary.json``.

    ``settings`` is params.yaml's ``score:`` section (:class:`cellbench.config.ScoreOptions`):
    ``iou_thresholds`` (averaged
    into mean AP) and ``extra_thresholds`` (reported too). ``model_dir`` and ``predictions``
    (optional) only add the training and prediction times to ``metrics.json``.
    """
    thresholds: Sequence[float] = settings.iou_thresholds
    extra: Sequence[float] = settings.extra_thresholds
    skipped = read_skipped(masks)
    if skipped is not None:  # no masks: an empty score table that says why
        log.warning("skipped: %s", skipped["reason"])
        summary = {"dataset": dataset, "model": model, "skipped": skipped["reason"]}
        summary.update(summarize(pd.DataFrame(), thresholds))
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / SKIPPED_JSON, skipped)
            write_csv(tmp / "per_image.csv", pd.DataFrame(columns=["id"]))
            write_json(tmp / "summary.json", summary)
        return summary
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
        estimated = pd.read_csv(scales, dtype={"id": str})
        columns = [c for c in ("id", "estimated_diameter", "regressed_diameter") if c in estimated]
        per_image = per_image.merge(estimated[columns], on="id", how="left")
    summary = {"dataset": dataset, "model": model, **summarize(per_image, thresholds)}
    headline = headline_metrics(summary, Path(masks), model_dir, predictions)
    with atomic_dir(out_dir) as tmp:
        write_csv(tmp / "per_image.csv", per_image)
        write_json(tmp / "summary.json", summary)
        write_json(tmp / "metrics.json", headline)
        write_csv(tmp / "ap_vs_iou.csv", ap_vs_iou(summary, [*thresholds, *extra]))
        write_csv(tmp / "training.csv", training_curve(model_dir))
    return summary


def training_curve(model_dir: Path | None) -> pd.DataFrame:
    """The loss and validation columns of the model folder's history.csv (maybe no rows)."""
    history = Path(model_dir) / "history.csv" if model_dir is not None else None
    if history is None or not history.is_file():
        return pd.DataFrame(columns=list(TRAINING_COLUMNS))
    return pd.read_csv(history).reindex(columns=list(TRAINING_COLUMNS))


def headline_metrics(
    summary: dict[str, Any],
    masks: Path,
    model_dir: Path | None = None,
    predictions: Path | None = None,
) -> dict[str, Any]:
    """The few numbers of ``metrics.json``: scores (per-image means) and the cost.

    A cost whose file is absent (an older run, no ``model_dir``) is left out, not zero.
    """
    means = summary.get("per_image_mean", {})
    metrics: dict[str, Any] = {"n_images": summary["n_images"]}
    metrics.update({key: means.get(key) for key in HEADLINE_SCORES})
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        config = json.loads((Path(model_dir) / "config.json").read_text())
        if config.get("train_seconds") is not None:
            metrics["train_seconds"] = config["train_seconds"]
    for key, folder in (("predict", predictions), ("postprocess", masks)):
        seconds = _seconds_per_image(folder)
        if seconds is not None:
            metrics[f"{key}_seconds_per_image"] = seconds
    return metrics


def _seconds_per_image(folder: Path | None) -> float | None:
    timings = Path(folder) / "timings.csv" if folder is not None else None
    if timings is None or not timings.is_file():
        return None
    seconds = pd.read_csv(timings)["seconds"]
    return round(float(seconds.mean()), 6) if len(seconds) else None


def ap_vs_iou(summary: dict[str, Any], thresholds: Sequence[float]) -> pd.DataFrame:
    """One row per IoU threshold (sorted): the per-image means of AP, precision, recall, F1."""
    means = summary.get("per_image_mean", {})
    rows = [
        {"iou": t, **{c: means.get(f"{c}@{threshold_tag(t)}") for c in AP_VS_IOU_COLUMNS[1:]}}
        for t in sorted(set(thresholds))
    ]
    return pd.DataFrame(rows, columns=list(AP_VS_IOU_COLUMNS))
