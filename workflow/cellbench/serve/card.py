"""The model card: what the served model is, what it was trained on, how it scored.

Read from the model folder (``config.json``, ``thresholds.json``) and, when found,
the test scores the score stage wrote (``results/scores/{dataset}/{model}/summary.json``,
next to ``results/models/{dataset}/{model}``). Pure apart from reading those files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellbench.io import CellbenchIOError, read_json

__all__ = ["SCORE_KEYS", "default_scores_path", "model_card"]

#: the test scores a card shows (``per_image_mean`` of ``summary.json``), with their labels
SCORE_KEYS: dict[str, str] = {
    "mean_ap": "mean AP (IoU 0.50:0.95)",
    "ap@0.50": "AP at IoU 0.5",
    "f1@0.50": "F1 at IoU 0.5",
    "precision@0.50": "precision at IoU 0.5",
    "recall@0.50": "recall at IoU 0.5",
    "aji": "aggregated Jaccard index",
    "seg": "CTC SEG",
}

#: ``config.json`` entries that describe the training run
TRAINING_KEYS = (
    "dataset",
    "n_train_images",
    "n_val_images",
    "train_label_stats",
    "train_diameters",
    "epochs_run",
    "device",
    "train_seconds",
    "seed",
    "cellbench_version",
    "versions",
)


def default_scores_path(model_dir: Path, config: Mapping[str, Any]) -> Path | None:
    """``results/scores/{dataset}/{model}/summary.json`` for ``results/models/{dataset}/{model}``."""
    model_dir = Path(model_dir).resolve()
    dataset, model = config.get("dataset"), config.get("model")
    if not dataset or not model or len(model_dir.parents) < 3:
        return None
    if model_dir.parent.parent.name != "models":
        return None
    return model_dir.parents[2] / "scores" / str(dataset) / str(model) / "summary.json"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _scores(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        summary = read_json(path)
    except CellbenchIOError:
        return None
    if not isinstance(summary, Mapping):
        return None
    per_image = summary.get("per_image_mean") or {}
    pooled = summary.get("pooled") or {}
    values = {}
    for key, label in SCORE_KEYS.items():
        value = _finite(per_image.get(key))
        if value is None:
            value = _finite(pooled.get(key))
        if value is not None:
            values[key] = {"label": label, "value": value}
    return {"split": "test", "n_images": summary.get("n_images"), "values": values}


def model_card(
    model_dir: Path,
    config: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    *,
    scores: Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Everything ``GET /model`` answers and the page shows.

    Parameters
    ----------
    model_dir : path
        The model folder (its name is shown, never a full path).
    config : mapping
        Its ``config.json``.
    thresholds : mapping
        The tuned setting in use (``thresholds.json`` "selected").
    scores : path, optional
        A ``summary.json`` of the score stage; default :func:`default_scores_path`.
    device : str
        Where the model runs.

    Returns
    -------
    dict
        ``model``, ``family``, ``device``, ``options``, ``thresholds``, ``training``
        (dataset, image counts, label statistics, ...), ``scores`` (test scores, or
        None when no ``summary.json`` was found).
    """
    path = scores if scores is not None else default_scores_path(model_dir, config)
    return {
        "model": config.get("model", Path(model_dir).name),
        "family": config.get("family"),
        "device": device,
        "options": dict(config.get("options") or {}),
        "thresholds": dict(thresholds),
        "training": {key: config[key] for key in TRAINING_KEYS if key in config},
        "scores": _scores(path),
    }
