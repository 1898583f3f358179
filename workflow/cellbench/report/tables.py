"""The report's tables as plain data (pure: collected results in, rows out).

Numbers stay numbers (None where a value is missing or undefined); the template
formats them. Thresholds, metric columns and cell types are read from the scores
themselves, never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cellbench.report.collect import CrossRun, CurveRun, DatasetData, ModelRun
from cellbench.report.stats import Comparison, Interval, bootstrap_mean, compare_best

__all__ = [
    "Cell",
    "Column",
    "Leaderboard",
    "cell_type_table",
    "cost_rows",
    "cross_matrix",
    "curves",
    "dataset_facts",
    "gallery_ids",
    "headline",
    "leaderboard",
    "learning_curve",
    "matrix_colour",
    "metric_columns",
    "pooled_rows",
    "pr_table",
    "scored_ids",
    "size_rows",
    "training_rows",
    "worst_ids",
]


@dataclass(frozen=True)
class Column:
    """One metric column: per-image ``per_image.csv`` column, header, tooltip."""

    key: str
    label: str
    title: str

    @property
    def short(self) -> str:
        """The label without its parenthesis: ``"mean AP (0.50:0.05:0.95)" -> "mean AP"``."""
        return self.label.split(" (", 1)[0]


@dataclass
class Cell:
    """One value with its interval; ``best`` when highlighted by the significance rule."""

    interval: Interval
    best: bool = False

    @property
    def mean(self) -> float | None:
        return None if math.isnan(self.interval.mean) else self.interval.mean


@dataclass
class Leaderboard:
    """A dataset's leaderboard: one row per model, one :class:`Cell` per column."""

    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[tuple[Column, Comparison]] = field(default_factory=list)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _tags(per_image: pd.DataFrame, prefix: str) -> list[str]:
    tags = {c.split("@", 1)[1] for c in per_image.columns if c.startswith(prefix + "@")}
    return sorted(tags, key=float)


def _all_tags(runs: Sequence[ModelRun], prefix: str) -> list[str]:
    tags: set[str] = set()
    for r in runs:
        tags.update(_tags(r.per_image, prefix))
    return sorted(tags, key=float)


def _series(run: ModelRun, key: str) -> pd.Series:
    """Per-image values of one column, indexed by image id (NaN where undefined)."""
    df = run.per_image
    if key not in df or "id" not in df:
        return pd.Series(dtype=float)
    values = pd.to_numeric(df[key], errors="coerce").to_numpy(float)
    return pd.Series(values, index=df["id"].astype(str).to_numpy())


def _has_values(runs: Sequence[ModelRun], key: str) -> bool:
    return any(_series(r, key).notna().any() for r in runs)


def _averaged_thresholds(runs: Sequence[ModelRun]) -> list[float]:
    for r in runs:
        if r.summary.get("thresholds"):
            return [float(t) for t in r.summary["thresholds"]]
    return []


def _threshold_span(thresholds: Sequence[float]) -> str:
    """``[0.5, 0.55, ..., 0.95]`` -> ``"0.50:0.05:0.95"``; uneven lists are listed."""
    if not thresholds:
        return "?"
    if len(thresholds) == 1:
        return f"{thresholds[0]:.2f}"
    steps = np.diff(thresholds)
    if np.allclose(steps, steps[0]):
        return f"{thresholds[0]:.2f}:{steps[0]:.2f}:{thresholds[-1]:.2f}"
    return ", ".join(f"{t:.2f}" for t in thresholds)


def _f1_tag(runs: Sequence[ModelRun]) -> str | None:
    """The F1 threshold of the leaderboard: 0.50 when scored, else the lowest averaged one."""
    tags = _all_tags(runs, "f1")
    if "0.50" in tags:
        return "0.50"
    averaged = [f"{t:.2f}" for t in _averaged_thresholds(runs)]
    for tag in averaged:
        if tag in tags:
            return tag
    return tags[0] if tags else None


def metric_columns(runs: Sequence[ModelRun]) -> list[Column]:
    """Leaderboard columns with values in this dataset's scores.

    mean AP (over the thresholds recorded in ``summary.json``), F1 at IoU 0.5, PQ, AJI
    and CTC SEG; a column none of the models has a value for (e.g. AP on partially
    annotated ground truth) is left out.
    """
    span = _threshold_span(_averaged_thresholds(runs))
    candidates = [
        Column("mean_ap", f"mean AP ({span})", f"TP/(TP+FP+FN) averaged over IoU {span}"),
    ]
    tag = _f1_tag(runs)
    if tag:
        candidates.append(Column(f"f1@{tag}", f"F1@{tag}", f"F1 at IoU {tag}"))
    candidates += [
        Column("pq", "PQ", "panoptic quality at IoU 0.50: sum of matched IoU / (TP + FP/2 + FN/2)"),
        Column("aji", "AJI", "Aggregated Jaccard Index (Kumar et al. 2017)"),
        Column("seg", "SEG", "Cell Tracking Challenge SEG (false positives ignored)"),
    ]
    return [c for c in candidates if _has_values(runs, c.key)]


def headline(runs: Sequence[ModelRun]) -> Column:
    """The score that ranks a dataset's models: mean AP, or SEG where no model has AP.

    AP is undefined on partially annotated ground truth (CTC gold truth), which is
    scored with the CTC SEG measure only.
    """
    columns = metric_columns(runs)
    for key in ("mean_ap", "seg"):
        for c in columns:
            if c.key == key:
                return c
    return columns[0] if columns else Column("mean_ap", "mean AP", "")


def leaderboard(runs: Sequence[ModelRun], seed: int) -> Leaderboard:
    """Every model's mean per-image score with a bootstrap interval, per metric column.

    Rows are ordered by the headline metric (best first, ties by the order of
    ``runs``). In each column the best model is marked only when
    :func:`cellbench.report.stats.compare_best` finds its lead significant.
    """
    columns = metric_columns(runs)
    board = Leaderboard(columns)
    best: dict[str, str | None] = {}
    for column in columns:
        comparison = compare_best({r.model: _series(r, column.key) for r in runs}, seed=seed)
        board.comparisons.append((column, comparison))
        best[column.key] = comparison.best if comparison.significant else None
    for r in runs:
        cells = [
            Cell(bootstrap_mean(_series(r, c.key), seed=seed), best=best[c.key] == r.model)
            for c in columns
        ]
        board.rows.append(
            {
                "model": r.model,
                "family": r.family,
                "n_images": int(r.summary.get("n_images", len(r.per_image))),
                "cells": cells,
            }
        )
    key = headline(runs).key
    if key in [c.key for c in columns]:
        k = [c.key for c in columns].index(key)
        order = sorted(
            range(len(board.rows)),
            key=lambda i: (
                -(
                    board.rows[i]["cells"][k].mean
                    if board.rows[i]["cells"][k].mean is not None
                    else -math.inf
                )
            ),
        )
        board.rows = [board.rows[i] for i in order]
    return board


def pr_table(runs: Sequence[ModelRun], wanted: Sequence[float]) -> dict[str, Any]:
    """Precision and recall (per-image mean) at the wanted IoU thresholds that were scored.

    Parameters
    ----------
    wanted : thresholds to show (params.yaml's ``extra_thresholds`` and 0.5); those
        missing from the scores are skipped.
    """
    scored = set(_all_tags(runs, "precision")) & set(_all_tags(runs, "recall"))
    tags = [
        t
        for t in sorted({f"{t:.2f}" for t in wanted} & scored, key=float)
        if any(_has_values([r], f"precision@{t}") for r in runs)  # none on partial truth
    ]
    rows = []
    for r in runs:
        mean = r.summary.get("per_image_mean", {})
        rows.append(
            {
                "model": r.model,
                "cells": [
                    (_number(mean.get(f"precision@{t}")), _number(mean.get(f"recall@{t}")))
                    for t in tags
                ],
            }
        )
    return {"tags": tags, "rows": rows}


#: panels of the metric-against-IoU chart: (per_image column prefix, title)
CURVE_METRICS = (
    ("ap", "AP = TP/(TP+FP+FN)"),
    ("f1", "F1"),
    ("precision", "precision"),
    ("recall", "recall"),
)


def curves(runs: Sequence[ModelRun]) -> tuple[dict, list[tuple[str, str]]]:
    """Per-image mean of each metric at every scored threshold: ``model -> metric -> (x, y)``."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    shown = []
    for prefix, title in CURVE_METRICS:
        tags = _all_tags(runs, prefix)
        if not tags or not any(
            _number(r.summary.get("per_image_mean", {}).get(f"{prefix}@{t}")) is not None
            for r in runs
            for t in tags
        ):
            continue
        shown.append((prefix, title))
        for r in runs:
            mean = r.summary.get("per_image_mean", {})
            y = [_number(mean.get(f"{prefix}@{t}")) for t in tags]
            out.setdefault(r.model, {})[prefix] = (
                [float(t) for t in tags],
                [math.nan if v is None else v for v in y],
            )
    return out, shown


def pooled_rows(runs: Sequence[ModelRun], columns: Sequence[Column]) -> list[dict[str, Any]]:
    """The same metrics pooled over the dataset (``summary.json``'s ``pooled`` block)."""
    return [
        {
            "model": r.model,
            "values": [_number(r.summary.get("pooled", {}).get(c.key)) for c in columns],
        }
        for r in runs
    ]


def cell_type_table(runs: Sequence[ModelRun], seed: int) -> dict[str, Any] | None:
    """The headline metric per cell type (per-image mean and interval); None for < 2 types."""
    types = sorted(
        {
            str(t)
            for r in runs
            if "cell_type" in r.per_image
            for t in r.per_image["cell_type"].astype(str)
            if str(t)
        }
    )
    if len(types) < 2:
        return None
    column = headline(runs)
    rows = []
    for r in runs:
        df = r.per_image
        values = pd.to_numeric(df.get(column.key), errors="coerce")
        cells = []
        for t in types:
            picked = values[df["cell_type"].astype(str) == t] if values is not None else []
            cells.append(Cell(bootstrap_mean(np.asarray(picked, float), seed=seed)))
        rows.append({"model": r.model, "cells": cells})
    counts = {}
    if runs and "cell_type" in runs[0].per_image:
        counts = runs[0].per_image["cell_type"].astype(str).value_counts().to_dict()
    return {
        "column": column,
        "types": [{"name": t, "n": int(counts.get(t, 0))} for t in types],
        "rows": rows,
    }


def _starts(options: dict[str, Any]) -> str:
    starts = options.get("diameter_starts") or [1.0]
    if len(starts) < 2:
        return ""
    return ", first pass from " + " / ".join(f"{float(k):g}x" for k in starts) + " the estimate"


def size_rows(runs: Sequence[ModelRun]) -> list[dict[str, Any]]:
    """Estimated against true object diameter, for size-normalised models."""
    rows = []
    for r in runs:
        df = r.per_image
        if "estimated_diameter" not in df or "true_diameter" not in df:
            continue
        both = df[["estimated_diameter", "true_diameter"]].apply(pd.to_numeric, errors="coerce")
        both = both.dropna()
        if not len(both):
            continue
        ratio = both["estimated_diameter"] / both["true_diameter"]
        options = r.config.get("options", {})
        regressed = None
        if "regressed_diameter" in df:
            alone = pd.to_numeric(df["regressed_diameter"], errors="coerce") / pd.to_numeric(
                df["true_diameter"], errors="coerce"
            )
            regressed = float(alone.median()) if alone.notna().any() else None
        method = (
            "size model + segmented passes"
            if regressed is not None
            else "segmented passes from the original size"
        )
        rows.append(
            {
                "model": r.model,
                "method": f"{method} (at most {options.get('diameter_passes')}){_starts(options)}",
                "regressed_ratio": regressed,
                "standard": _number(options.get("diameter")),
                "n": len(both),
                "true": float(both["true_diameter"].median()),
                "estimated": float(both["estimated_diameter"].median()),
                "ratio": float(ratio.median()),
                "within": float((abs(ratio - 1) <= 0.2).mean()),
            }
        )
    return rows


def training_rows(runs: Sequence[ModelRun]) -> list[dict[str, Any]]:
    """What each model was trained and tuned on, and what was selected."""
    rows = []
    for r in runs:
        c, t = r.config, r.thresholds
        selected = ", ".join(f"{k}={v}" for k, v in (t.get("selected") or {}).items())
        metric = {"seg": "SEG", "mean_ap": "mean AP"}.get(str(t.get("metric")), t.get("metric"))
        rows.append(
            {
                "model": r.model,
                "family": r.family,
                "trainable": bool(c.get("trainable")),
                "epochs": c.get("epochs_run") if c.get("trainable") else None,
                "n_train": c.get("n_train_images"),
                "n_val": c.get("n_val_images"),
                "select_by": (c.get("options") or {}).get("select_by"),
                "best_loss": _number(c.get("best_monitored_loss")),
                "selected": selected,
                "tune_metric": metric,
                "val_score": _number(t.get("val_score")),
                "params_sha256": c.get("params_sha256"),
            }
        )
    return rows


def _per_image_cost(timings: pd.DataFrame | None) -> tuple[float | None, float | None]:
    """(mean seconds per image, seconds per megapixel) of a ``timings.csv``."""
    if timings is None or not len(timings) or "seconds" not in timings:
        return None, None
    seconds = pd.to_numeric(timings["seconds"], errors="coerce")
    per_image = _number(seconds.mean())
    per_mp = None
    if {"height", "width"} <= set(timings.columns):
        mp = (
            pd.to_numeric(timings["height"], errors="coerce")
            * pd.to_numeric(timings["width"], errors="coerce")
            / 1e6
        )
        total = float(mp.sum())
        per_mp = _number(seconds.sum() / total) if total > 0 else None
    return per_image, per_mp


def _train_device(config: Mapping[str, Any]) -> str | None:
    """The training device with its arithmetic when the model folder records one: ``cpu (bf16)``."""
    device, precision = config.get("device"), config.get("precision")
    if device is None or not precision:
        return device
    return f"{device} ({precision})"


def cost_rows(runs: Sequence[ModelRun]) -> list[dict[str, Any]]:
    """Training time, inference and post-processing time, peak memory and devices.

    ``train_device`` names the training arithmetic too (``cpu (bf16)``) where the
    model folder records it: the same recipe trains several times faster or slower
    with it (``precision: auto``).
    """
    rows = []
    for r in runs:
        infer, infer_mp = _per_image_cost(r.predict_timings)
        post, post_mp = _per_image_cost(r.postprocess_timings)
        pred_res = r.predict_resources or {}
        post_res = r.postprocess_resources or {}
        bench = r.train_benchmark or {}
        train_rss = bench.get("max_rss")
        rows.append(
            {
                "model": r.model,
                "train_device": _train_device(r.config),
                "train_seconds": _number(r.config.get("train_seconds")),
                "tune_seconds": _number(r.config.get("tune_seconds")),
                "train_peak_rss": None if train_rss is None else train_rss * 1e6,
                "predict_device": pred_res.get("device"),
                "infer_per_image": infer,
                "infer_per_mp": infer_mp,
                "post_device": post_res.get("device"),
                "post_per_image": post,
                "post_per_mp": post_mp,
                "predict_peak_rss": _number(pred_res.get("peak_rss_bytes")),
                "predict_peak_gpu": _number(pred_res.get("cuda_max_memory_allocated_bytes")),
                "post_peak_rss": _number(post_res.get("peak_rss_bytes")),
            }
        )
    return rows


def _counts(series: pd.Series) -> str:
    counts = series.astype(str).replace("", "(none)").value_counts()
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def dataset_facts(ds: DatasetData, test_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(label, value) lines describing a converted dataset."""
    index = ds.index
    facts: list[tuple[str, str]] = [("kind", f"{ds.kind}: {ds.summary}" if ds.summary else ds.kind)]
    facts.append(("source", ds.source))
    facts.append(("images", f"{len(index)} ({len(test_ids)} in the test split, scored)"))
    if {"height", "width"} <= set(index.columns) and len(index):
        sizes = (
            index["height"].astype(int).astype(str) + " × " + index["width"].astype(int).astype(str)
        )
        uniq = sizes.value_counts()
        if len(uniq) <= 4:
            text = ", ".join(f"{k} px ({v})" for k, v in sorted(uniq.items()))
        else:
            h, w = index["height"].astype(int), index["width"].astype(int)
            text = (
                f"height {h.min()}–{h.max()} px (median {int(h.median())}), "
                f"width {w.min()}–{w.max()} px (median {int(w.median())})"
            )
        facts.append(("image size", text))
    if "channels" in index and len(index):
        facts.append(("channels", _counts(index["channels"])))
    labelled = index[index["annotation"] != "none"] if "annotation" in index else index
    if "n_instances" in labelled and len(labelled):
        n = pd.to_numeric(labelled["n_instances"], errors="coerce").dropna()
        if len(n):
            facts.append(
                (
                    "objects per image",
                    f"min {int(n.min())}, median {n.median():g}, max {int(n.max())}; "
                    f"{int(n.sum())} objects in total",
                )
            )
    if ds.object_areas.size:
        a = ds.object_areas.astype(float)
        p10, p50, p90 = np.percentile(a, [10, 50, 90])
        facts.append(
            (
                "object area",
                f"median {p50:.0f} px (10–90 %: {p10:.0f}–{p90:.0f} px; equivalent diameter "
                f"{2 * math.sqrt(p50 / math.pi):.1f} px), measured on {ds.n_area_images} "
                f"of {len(labelled)} labelled images",
            )
        )
    if ds.split is not None and "split" in ds.split:
        counts = ds.split["split"].value_counts()
        facts.append(
            (
                "split",
                ", ".join(f"{s}: {int(counts.get(s, 0))}" for s in ("train", "val", "test")),
            )
        )
    if "annotation" in index:
        facts.append(("annotation", _counts(index["annotation"])))
    if "cell_type" in index and (index["cell_type"].astype(str) != "").any():
        facts.append(("cell types", _counts(index["cell_type"])))
    if "contested_pixels" in index:
        contested = int(pd.to_numeric(index["contested_pixels"], errors="coerce").fillna(0).sum())
        if contested:
            facts.append(("overlapping source pixels", f"{contested} (resolved at conversion)"))
    facts.append(("licence", ds.licence or "–"))
    facts.append(("citation", ds.citation or "–"))
    return facts


def scored_ids(runs: Sequence[ModelRun]) -> list[str]:
    """Ids scored by every model, in the first model's order."""
    if not runs:
        return []
    common = set(runs[0].per_image.get("id", pd.Series(dtype=str)).astype(str))
    for r in runs[1:]:
        common &= set(r.per_image.get("id", pd.Series(dtype=str)).astype(str))
    return [i for i in runs[0].per_image["id"].astype(str) if i in common]


def gallery_ids(runs: Sequence[ModelRun], n: int = 3) -> list[str]:
    """``n`` test images shown for every model: spread over the number of true objects.

    The images scored by every model, sorted by number of true objects then id, are
    picked at the quantiles ``(k + 0.5) / n``: a sparse, a typical and a crowded one.
    """
    ids = set(scored_ids(runs))
    if not ids:
        return []
    df = runs[0].per_image
    df = df[df["id"].astype(str).isin(ids)].copy()
    df["_n"] = pd.to_numeric(df.get("n_true"), errors="coerce").fillna(0)
    ordered = df.sort_values(["_n", "id"], kind="stable")["id"].astype(str).tolist()
    picks = []
    for k in range(min(n, len(ordered))):
        i = min(len(ordered) - 1, int((k + 0.5) * len(ordered) / n))
        if ordered[i] not in picks:
            picks.append(ordered[i])
    return picks


def worst_ids(run: ModelRun, key: str, n: int = 2) -> list[tuple[str, float]]:
    """The ``n`` images where a model scores lowest on ``key`` (ties: by id)."""
    series = _series(run, key).dropna()
    if series.empty:
        return []
    frame = pd.DataFrame({"id": series.index.astype(str), "v": series.to_numpy()})
    frame = frame.sort_values(["v", "id"], kind="stable").head(n)
    return [(str(i), float(v)) for i, v in zip(frame["id"], frame["v"], strict=True)]


# ----------------------------------------------------------------------------- learning curves
def learning_curve(
    points: Sequence[CurveRun], key: str, seed: int, models: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per model and training-set size: the score over seeds and test images.

    Parameters
    ----------
    points : the learning-curve points of one dataset (every seed of every size).
    key : the per-image column scored (the dataset's headline, usually ``mean_ap``).
    seed : seeds the bootstrap.
    models : the order of the rows (``run.models``).

    Returns
    -------
    list of dict
        ``model``, ``family``, ``size`` (label), ``n_train``, ``seeds`` (how many scored),
        ``mean`` (the mean over seeds of each seed's mean over images), ``interval``
        (:class:`~cellbench.report.stats.Interval`: percentile bootstrap over test images
        of the per-image scores averaged over seeds), ``seed_sd`` (sample standard
        deviation of the seeds' means, None for one seed), ``seed_min`` / ``seed_max``.
        Sizes where every seed was skipped are left out; rows by model, then size.
    """
    rows = []
    for model in models:
        mine = [p for p in points if p.model == model and p.reason is None]
        for n_train in sorted({p.n_train for p in mine}):
            at = sorted((p for p in mine if p.n_train == n_train), key=lambda p: p.seed)
            per_seed = {p.seed: _series(p, key).dropna() for p in at}
            per_seed = {s: v for s, v in per_seed.items() if len(v)}
            if not per_seed:
                continue
            means = np.array([float(v.mean()) for v in per_seed.values()])
            averaged = pd.concat(list(per_seed.values()), axis=1).mean(axis=1)
            rows.append(
                {
                    "model": model,
                    "family": at[0].family,
                    "size": at[0].size,
                    "n_train": int(n_train),
                    "seeds": len(per_seed),
                    "seed_list": sorted(per_seed),
                    "mean": float(means.mean()),
                    "interval": bootstrap_mean(averaged.to_numpy(float), seed=seed),
                    "seed_sd": float(means.std(ddof=1)) if len(means) > 1 else None,
                    "seed_min": float(means.min()),
                    "seed_max": float(means.max()),
                }
            )
    return rows


# ----------------------------------------------------------------------------- cross-dataset
#: the heat-map's colour ramp (ColorBrewer Blues, light to dark) and where text turns white
_RAMP = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))
_DARK_FROM = 0.6


def matrix_colour(value: float | None) -> tuple[str, str]:
    """(background, text colour) of a heat-map cell for a score in [0, 1]; grey when None."""
    if value is None or math.isnan(value):
        return "#eeeeee", "#1d2330"
    x = min(max(float(value), 0.0), 1.0) * (len(_RAMP) - 1)
    k = min(int(x), len(_RAMP) - 2)
    t = x - k
    rgb = [round(a + (b - a) * t) for a, b in zip(_RAMP[k], _RAMP[k + 1], strict=True)]
    ink = "#ffffff" if value >= _DARK_FROM else "#1d2330"
    return "#{:02x}{:02x}{:02x}".format(*rgb), ink


def cross_matrix(
    cells: Sequence[CrossRun],
    model: str,
    trains: Sequence[str],
    tests: Sequence[str],
    keys: dict[str, Column],
    seed: int,
) -> dict[str, Any]:
    """One model's heat-map table: rows trained on, columns tested on.

    Parameters
    ----------
    cells : every cell of the matrix (all models); those of ``model`` are used.
    trains : row order (the run datasets, then ``union``).
    tests : column order (the run datasets).
    keys : test dataset -> the metric column scored there (its headline).
    seed : seeds the bootstrap.

    Returns
    -------
    dict
        ``model``, ``family``, ``columns`` (test, metric label) and ``rows``: ``train``
        and one cell per test: ``interval`` (None when not run), ``diagonal``,
        ``reason`` (skipped), ``background`` / ``ink`` (inline colours), ``drop``
        (the score minus the test dataset's own diagonal, None on the diagonal).
    """
    mine = {(c.train, c.test): c for c in cells if c.model == model}
    own: dict[str, float | None] = {}
    for test in tests:
        c = mine.get((test, test))
        mean = None
        if c is not None and c.reason is None:
            mean = _number(_series(c, keys[test].key).mean())
        own[test] = mean
    rows = []
    family = next((c.family for c in mine.values()), "")
    for train in trains:
        out = []
        for test in tests:
            c = mine.get((train, test))
            interval = None
            if c is not None and c.reason is None:
                interval = bootstrap_mean(_series(c, keys[test].key).to_numpy(float), seed=seed)
            mean = None if interval is None or math.isnan(interval.mean) else interval.mean
            background, ink = matrix_colour(mean)
            out.append(
                {
                    "interval": interval,
                    "mean": mean,
                    "diagonal": train == test,
                    "reason": c.reason if c is not None else None,
                    "run": c is not None,
                    "background": background,
                    "ink": ink,
                    "drop": None
                    if train == test or mean is None or own[test] is None
                    else mean - own[test],
                }
            )
        rows.append({"train": train, "cells": out})
    return {
        "model": model,
        "family": family,
        "columns": [{"test": t, "label": keys[t].short} for t in tests],
        "rows": rows,
    }
