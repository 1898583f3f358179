"""Render ``results/report.html`` from a jinja2 template (autoescaped), and its assets.

The stage code of the report: :func:`render_report` reads the results
(:mod:`cellbench.report.collect`), builds the tables (:mod:`~cellbench.report.tables`),
charts (:mod:`~cellbench.report.charts`) and gallery pictures
(:mod:`~cellbench.report.gallery`), fills ``templates/report.html.j2`` and writes
one self-contained page. Every name that comes from data or config reaches the page
through jinja2's autoescaping; only the SVG charts (made and escaped by matplotlib)
and the PNG data URIs are marked safe.

With ``assets``, it also writes what ``snakemake --report`` shows next to the page:
``scores/{dataset}.csv`` (the leaderboard with its intervals),
``scores/{dataset}/{model}/{per_image.csv,summary.json}`` (copies of the scores) and
``training/{dataset}/{model}.svg`` (the training curves of each model).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from cellbench.config import Params
from cellbench.io import atomic_path, read_image, read_labels, write_csv, write_text
from cellbench.report import charts, gallery, tables
from cellbench.report.collect import Collected, DatasetData, ModelRun, collect
from cellbench.report.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, SIGNIFICANCE_RULE

__all__ = [
    "GALLERY_BUDGET_BYTES",
    "GALLERY_CROP",
    "GALLERY_IMAGES",
    "WORST_IMAGES",
    "build_context",
    "environment",
    "gallery_crop",
    "leaderboard_frame",
    "leaderboards",
    "render_page",
    "render_report",
    "write_assets",
]

log = logging.getLogger(__name__)

GALLERY_IMAGES = 3
"""Test images shown for every model, per dataset."""

WORST_IMAGES = 2
"""Lowest-scoring test images shown per model."""

GALLERY_CROP = 160
"""Gallery pictures are crops of at most this many pixels a side (no resampling)."""

GALLERY_BUDGET_BYTES = 2_500_000
"""About this much of the page goes to gallery pictures: with many datasets and models the
crops shrink (down to :data:`GALLERY_MIN_CROP`) so the page stays a few MB."""

GALLERY_MIN_CROP = 96
_BYTES_PER_PIXEL = 1.0  # a noisy microscopy crop as an indexed PNG, base64 (measured ~0.9)
_DISPLAY = 176  # small crops are shown enlarged (pixelated) by an integer factor


def gallery_crop(n_pictures: int) -> int:
    """Crop side for ``n_pictures`` gallery pictures in the page (the budget split evenly)."""
    if n_pictures <= 0:
        return GALLERY_CROP
    side = int(math.sqrt(GALLERY_BUDGET_BYTES / _BYTES_PER_PIXEL / n_pictures))
    return max(GALLERY_MIN_CROP, min(GALLERY_CROP, side))


def environment():
    """The jinja2 environment: the package's templates, autoescape on, strict undefined."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cellbench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = format_number
    env.filters["seconds"] = format_seconds
    env.filters["bytes"] = format_bytes
    env.filters["signed"] = format_signed
    return env


# ----------------------------------------------------------------------------- formatting
def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def format_number(value: Any, digits: int = 3) -> str:
    """``0.71234 -> "0.712"``; None or NaN -> ``"–"``; integers stay integers."""
    if _missing(value):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, str):
        return value
    return f"{float(value):.{digits}f}"


def format_signed(value: Any, digits: int = 3) -> str:
    """A difference with its sign: ``+0.120``."""
    return "–" if _missing(value) else f"{float(value):+.{digits}f}"


def format_seconds(value: Any) -> str:
    """Seconds with a precision that suits their size."""
    if _missing(value):
        return "–"
    v = float(value)
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def format_bytes(value: Any) -> str:
    """``1.5e9 -> "1.50 GB"`` (powers of 1000)."""
    if _missing(value):
        return "–"
    v = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(v) < 1000 or unit == "TB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.2f} {unit}"
        v /= 1000
    return f"{v:.2f} TB"


# ----------------------------------------------------------------------------- gallery
def _display_width(width: int) -> int:
    return width * max(1, round(_DISPLAY / max(width, 1)))


def _n_objects(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


class _Pictures:
    """Reads each test image, ground truth and mask once, and makes the gallery panels."""

    def __init__(self, ds: DatasetData, crop: int = GALLERY_CROP):
        self.ds = ds
        self.crop = crop
        self._cache: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    def truth(self, image_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        if image_id not in self._cache:
            image = self.ds.converted / "images" / f"{image_id}.tif"
            labels = self.ds.converted / "labels" / f"{image_id}.tif"
            self._cache[image_id] = (
                (read_image(image), read_labels(labels))
                if image.is_file() and labels.is_file()
                else None
            )
        return self._cache[image_id]

    def image_panel(self, image_id: str) -> dict[str, Any] | None:
        pair = self.truth(image_id)
        if pair is None:
            return None
        image, truth = pair
        crop = gallery.choose_crop(truth, self.crop)
        return self._panel(image[crop.slices], None, crop, _n_objects(truth))

    def overlay_panel(self, run: ModelRun, image_id: str, partial: bool) -> dict[str, Any] | None:
        pair = self.truth(image_id)
        mask_path = (run.masks_dir or Path()) / f"{image_id}.tif"
        if pair is None or not mask_path.is_file():
            return None
        image, truth = pair
        pred = read_labels(mask_path)
        if pred.shape != truth.shape:
            return None
        classes, counts = gallery.classify_outlines(truth, pred, partial=partial)
        crop = gallery.choose_crop(truth, self.crop)
        panel = self._panel(image[crop.slices], classes[crop.slices], crop, None)
        panel["counts"] = counts
        panel["n_pred"] = _n_objects(pred)
        return panel

    @staticmethod
    def _panel(image, classes, crop: gallery.Crop, n_true: int | None) -> dict[str, Any]:
        return {
            "uri": gallery.png_data_uri(image, classes),
            "width": crop.width,
            "height": crop.height,
            "display_width": _display_width(crop.width),
            "crop": crop,
            "n_true": n_true,
        }


def _annotation(run: ModelRun, image_id: str) -> str:
    df = run.per_image
    if "annotation" not in df:
        return "full"
    hit = df.loc[df["id"].astype(str) == image_id, "annotation"]
    return str(hit.iloc[0]) if len(hit) else "full"


def _score_of(run: ModelRun, image_id: str, key: str) -> float | None:
    df = run.per_image
    if key not in df:
        return None
    hit = pd.to_numeric(df.loc[df["id"].astype(str) == image_id, key], errors="coerce")
    return None if hit.empty or math.isnan(hit.iloc[0]) else float(hit.iloc[0])


def _gallery(ds: DatasetData, runs: list[ModelRun], key: str, crop: int) -> dict[str, Any]:
    pictures = _Pictures(ds, crop)
    rows = []
    partial_seen = False
    for image_id in tables.gallery_ids(runs, GALLERY_IMAGES):
        base = pictures.image_panel(image_id)
        if base is None:
            continue
        partial = bool(runs) and _annotation(runs[0], image_id) == "partial"
        partial_seen |= partial
        panels = []
        for r in runs:
            panel = pictures.overlay_panel(r, image_id, partial)
            if panel is not None:
                panel["model"] = r.model
                panel["score"] = _score_of(r, image_id, key)
                panels.append(panel)
        rows.append({"id": image_id, "image": base, "panels": panels, "partial": partial})
    worst = []
    for r in runs:
        panels = []
        for image_id, value in tables.worst_ids(r, key, WORST_IMAGES):
            partial = _annotation(r, image_id) == "partial"
            partial_seen |= partial
            panel = pictures.overlay_panel(r, image_id, partial)
            if panel is not None:
                panel["id"] = image_id
                panel["score"] = value
                panels.append(panel)
        worst.append({"model": r.model, "panels": panels})
    legend = [
        {"name": name, "colour": gallery.COLOURS[name][0], "text": gallery.COLOURS[name][1]}
        for name in ("tp", "fp", "fn") + (("unscored",) if partial_seen else ())
    ]
    return {"rows": rows, "worst": worst, "legend": legend, "crop": crop}


# ----------------------------------------------------------------------------- context
def _colours(params: Params) -> dict[str, int]:
    return {m: k for k, m in enumerate(params.run_models)}


def leaderboards(collected: Collected) -> dict[str, tables.Leaderboard]:
    """Each dataset's leaderboard (bootstrap intervals seeded with params.yaml's seed)."""
    seed = collected.params.seed
    return {
        ds.name: tables.leaderboard(collected.runs_of(ds.name), seed) for ds in collected.datasets
    }


def _overview(collected: Collected, boards: dict[str, tables.Leaderboard]) -> dict[str, Any]:
    """Dataset x model matrix of each dataset's headline score (significance rule applied)."""
    rows = []
    for k, ds in enumerate(collected.datasets):
        runs = collected.runs_of(ds.name)
        column = tables.headline(runs)
        board = boards[ds.name]
        by_model = {}
        keys = [c.key for c in board.columns]
        if column.key in keys:
            i = keys.index(column.key)
            by_model = {row["model"]: row["cells"][i] for row in board.rows}
        rows.append(
            {
                "dataset": ds.name,
                "anchor": f"dataset-{k}",
                "column": column,
                "cells": [by_model.get(m) for m in collected.params.run_models],
                "skipped": {r.model: r.reason for r in collected.skipped_of(ds.name)},
            }
        )
    return {"models": list(collected.params.run_models), "rows": rows}


def _dataset_view(
    collected: Collected, k: int, ds: DatasetData, board: tables.Leaderboard, crop: int
) -> dict[str, Any]:
    params = collected.params
    seed = params.seed
    runs = collected.runs_of(ds.name)
    colours = _colours(params)
    anchor = f"dataset-{k}"
    head = tables.headline(runs)
    curve_data, curve_metrics = tables.curves(runs)
    test_ids = tables.scored_ids(runs)
    wanted_pr = sorted({0.5, *params.score.extra_thresholds})
    histories = {r.model: r.history for r in runs if r.history is not None and len(r.history)}
    return {
        "name": ds.name,
        "anchor": anchor,
        "facts": tables.dataset_facts(ds, test_ids),
        "data_chart": Markup(
            charts.dataset_svg(
                pd.to_numeric(
                    ds.index.loc[ds.index.get("annotation", "full") != "none", "n_instances"]
                    if "n_instances" in ds.index
                    else pd.Series(dtype=float),
                    errors="coerce",
                ).to_numpy(float),
                ds.object_areas,
                f"{anchor}-data",
            )
        ),
        "headline": head,
        "leaderboard": board,
        "pooled": tables.pooled_rows(runs, board.columns),
        "pr": tables.pr_table(runs, wanted_pr),
        "curves": Markup(
            charts.metric_curves_svg(curve_data, curve_metrics, f"{anchor}-curves", colours)
        )
        if curve_metrics
        else None,
        "cell_types": tables.cell_type_table(runs, seed),
        "sizes": tables.size_rows(runs),
        "training": tables.training_rows(runs),
        "training_chart": Markup(charts.training_svg(histories, f"{anchor}-training", colours))
        if histories
        else None,
        "untrained": [r.model for r in runs if r.model not in histories],
        "skipped": collected.skipped_of(ds.name),
        "cost": tables.cost_rows(runs),
        "gallery": _gallery(ds, runs, head.key, crop),
    }


def _learning_curves(collected: Collected) -> list[dict[str, Any]]:
    """Per dataset with learning-curve points: its table rows and chart."""
    params = collected.params
    colours = _colours(params)
    out = []
    for k, ds in enumerate(collected.datasets):
        points = [p for p in collected.curves if p.dataset == ds.name]
        if not points:
            continue
        column = tables.headline(collected.runs_of(ds.name))
        rows = tables.learning_curve(points, column.key, params.seed, params.run_models)
        plan = collected.curve_plans.get(ds.name)
        collapsed = []
        if plan is not None:
            collapsed = [
                s for s in plan.requested if s != "all" and s not in plan.labels
            ]  # at or above the number of train images: trained as 'all'
        out.append(
            {
                "dataset": ds.name,
                "anchor": f"curves-{k}",
                "column": column,
                "rows": rows,
                "chart": Markup(
                    charts.learning_curve_svg(rows, f"curves-{k}", colours, column.short)
                )
                if rows
                else None,
                "n_train": plan.n_train if plan is not None else None,
                "collapsed": collapsed,
                "seeds": list(params.run_seeds),
                "skipped": sorted({(p.model, p.reason) for p in points if p.reason}),
            }
        )
    return out


def _cross_matrices(collected: Collected) -> dict[str, Any] | None:
    """The cross-dataset heat-map tables, one per model (None when neither is on)."""
    params = collected.params
    if not collected.cross:
        return None
    tests = list(params.run_datasets)
    keys = {t: tables.headline(collected.runs_of(t)) for t in tests}
    return {
        "cross": params.cross,
        "union": params.union,
        "tests": tests,
        "matrices": [
            tables.cross_matrix(
                collected.cross, m, list(params.training_sets()), tests, keys, params.seed
            )
            for m in params.run_models
        ],
        "legend": [
            {
                "value": v,
                "background": tables.matrix_colour(v)[0],
                "ink": tables.matrix_colour(v)[1],
            }
            for v in (0.0, 0.25, 0.5, 0.75, 1.0)
        ],
    }


def build_context(
    collected: Collected, boards: dict[str, tables.Leaderboard] | None = None
) -> dict[str, Any]:
    """Everything the template shows, as plain data (charts and pictures made here)."""
    params = collected.params
    boards = boards if boards is not None else leaderboards(collected)
    n_models = len(params.run_models)
    n_pictures = len(collected.datasets) * (
        GALLERY_IMAGES * (1 + n_models) + WORST_IMAGES * n_models
    )
    crop = gallery_crop(n_pictures)
    datasets = [
        _dataset_view(collected, k, ds, boards[ds.name], crop)
        for k, ds in enumerate(collected.datasets)
    ]
    train_versions = {}
    devices = set()
    for r in collected.runs:
        for name, version in (r.config.get("versions") or {}).items():
            train_versions.setdefault(name, set()).add(str(version))
        for device in (
            r.config.get("device"),
            (r.predict_resources or {}).get("device"),
            (r.postprocess_resources or {}).get("device"),
        ):
            if device:
                devices.add(str(device))
    return {
        "title": params.report.title,
        "datasets": datasets,
        "models": list(params.run_models),
        "overview": _overview(collected, boards),
        "learning_curves": _learning_curves(collected),
        "cross": _cross_matrices(collected),
        "significance_rule": SIGNIFICANCE_RULE,
        "level": DEFAULT_LEVEL,
        "resamples": DEFAULT_RESAMPLES,
        "provenance": collected.provenance,
        "train_versions": {k: ", ".join(sorted(v)) for k, v in sorted(train_versions.items())},
        "devices": sorted(devices),
        "gallery_colours": gallery.COLOURS,
    }


def render_page(context: dict[str, Any]) -> str:
    """Fill the template; non-ASCII characters become character references."""
    html = environment().get_template("report.html.j2").render(**context)
    return html.encode("ascii", "xmlcharrefreplace").decode("ascii")


# ----------------------------------------------------------------------------- assets
def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:  # creates the parent folders
        shutil.copyfile(src, tmp)


def leaderboard_frame(board: tables.Leaderboard) -> pd.DataFrame:
    """The leaderboard as a table: per metric its mean, interval bounds and highlight."""
    rows = []
    for row in board.rows:
        out: dict[str, Any] = {
            "model": row["model"],
            "family": row["family"],
            "n_images": row["n_images"],
        }
        for column, cell in zip(board.columns, row["cells"], strict=True):
            out[column.key] = cell.mean
            out[f"{column.key}_ci_low"] = (
                None if math.isnan(cell.interval.low) else cell.interval.low
            )
            out[f"{column.key}_ci_high"] = (
                None if math.isnan(cell.interval.high) else cell.interval.high
            )
            out[f"{column.key}_best"] = cell.best
        rows.append(out)
    return pd.DataFrame(rows)


def write_assets(
    collected: Collected,
    results: Path,
    assets: Path,
    boards: dict[str, tables.Leaderboard] | None = None,
) -> list[Path]:
    """Write the files ``snakemake --report`` registers; returns their paths."""
    written = []
    colours = _colours(collected.params)
    boards = boards if boards is not None else leaderboards(collected)
    for ds in collected.datasets:
        runs = collected.runs_of(ds.name)
        board = boards[ds.name]
        written.append(write_csv(assets / "scores" / f"{ds.name}.csv", leaderboard_frame(board)))
        for r in runs:
            scores = results / "scores" / ds.name / r.model
            for name in ("per_image.csv", "summary.json"):
                target = assets / "scores" / ds.name / r.model / name
                _copy(scores / name, target)
                written.append(target)
            history = {r.model: r.history} if r.history is not None and len(r.history) else {}
            svg = charts.training_svg(
                history, f"{ds.name}-{r.model}-training", {r.model: colours.get(r.model, 0)}
            )
            target = assets / "training" / ds.name / f"{r.model}.svg"
            text = svg.encode("ascii", "xmlcharrefreplace").decode("ascii")
            written.append(
                write_text(target, '<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n")
            )
        for r in collected.skipped_of(ds.name):  # the empty score table that says why
            scores = results / "scores" / ds.name / r.model
            for name in ("per_image.csv", "summary.json"):
                target = assets / "scores" / ds.name / r.model / name
                _copy(scores / name, target)
                written.append(target)
            svg = charts.training_svg({}, f"{ds.name}-{r.model}-training", {})
            target = assets / "training" / ds.name / f"{r.model}.svg"
            text = svg.encode("ascii", "xmlcharrefreplace").decode("ascii")
            written.append(
                write_text(target, '<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n")
            )
    return written


def render_report(
    params: Params,
    data: Path,
    results: Path,
    out: Path,
    assets: Path | None = None,
) -> Path:
    """Render the report for the datasets and models of ``params.run_*``; atomic writes.

    Parameters
    ----------
    params : the validated params.yaml.
    data, results : the data and results roots (``data/``, ``results/``).
    out : the page to write (``results/report.html``).
    assets : optional folder for the ``snakemake --report`` files (:func:`write_assets`).
    """
    collected = collect(params, Path(data), Path(results))
    boards = leaderboards(collected)
    page = render_page(build_context(collected, boards))
    out = Path(out)
    write_text(out, page)
    size = len(page.encode())
    log.info("report: %s (%.2f MB)", out, size / 1e6)
    if assets is not None:
        write_assets(collected, Path(results), Path(assets), boards)
    return out
