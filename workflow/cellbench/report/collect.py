"""Read what the report shows: scores, model folders, timings, datasets, provenance.

The report stage's I/O. Everything optional (timings written by older runs, Snakemake
benchmark files, a git checkout) reads as None when absent, and the page shows "–".

Files read, per dataset ``d`` and model ``m`` of params.yaml's ``run:``::

    results/scores/d/m/{summary.json, per_image.csv}
    results/models/d/m/{config.json, thresholds.json, history.csv}
    results/predictions/d/m/{timings.csv, resources.json}     (network time, peak memory)
    results/masks/d/m/{timings.csv, resources.json, *.tif}    (post-processing, masks)
    results/benchmarks/train_model/d/m.tsv                    (Snakemake: training max RSS)
    data/converted/d/{index.csv, images/, labels/}   data/splits/d.csv

and, when ``run:`` asks for them (paths: :mod:`cellbench.studies`), the learning curves'
``data/splits/d/learning_curve.json`` and ``results/curves/scores/d/m/n{size}_s{seed}/``,
and the cross-dataset matrix's ``results/cross/m/{train}__on__{test}/scores/``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import math
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cellbench.config import Params
from cellbench.datasets.base import read_index
from cellbench.datasets.registry import DATASET_KINDS
from cellbench.io import read_json, read_labels
from cellbench.modelfolder import params_hash
from cellbench.skip import read_skipped
from cellbench.studies import CurvePlan, cross_dirs, curve_dirs, curve_plan_path, read_curve_plan

__all__ = [
    "MAX_AREA_IMAGES",
    "REPORT_PACKAGES",
    "Collected",
    "CrossRun",
    "CurveRun",
    "DatasetData",
    "ModelRun",
    "Provenance",
    "SkippedRun",
    "collect",
    "read_per_image",
]

#: at most this many label images (evenly spread over the sorted ids) are read to
#: measure the object size distribution of a dataset
MAX_AREA_IMAGES = 120

#: package versions shown under provenance (those installed when the report is made)
REPORT_PACKAGES = (
    "cellbench",
    "numpy",
    "scipy",
    "pandas",
    "scikit-image",
    "torch",
    "segmentation-models-pytorch",
    "albumentations",
    "snakemake",
    "matplotlib",
    "jinja2",
)


@dataclass
class ModelRun:
    """Everything the report reads of one dataset x model."""

    dataset: str
    model: str
    family: str
    summary: dict
    per_image: pd.DataFrame
    config: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None
    predict_timings: pd.DataFrame | None = None
    postprocess_timings: pd.DataFrame | None = None
    predict_resources: dict | None = None
    postprocess_resources: dict | None = None
    train_benchmark: dict | None = None
    masks_dir: Path | None = None


@dataclass(frozen=True)
class SkippedRun:
    """A dataset x model combination that does not apply (:mod:`cellbench.skip`)."""

    dataset: str
    model: str
    family: str
    reason: str


@dataclass
class CurveRun:
    """One learning-curve point: a model trained on ``n_train`` images with one seed.

    ``reason`` is set (and the scores empty) when the model was skipped on the dataset.
    """

    dataset: str
    model: str
    family: str
    size: str
    n_train: int
    seed: int
    summary: dict
    per_image: pd.DataFrame
    reason: str | None = None


@dataclass
class CrossRun:
    """One cell of the cross-dataset matrix: trained on ``train``, scored on ``test``."""

    model: str
    family: str
    train: str
    test: str
    summary: dict
    per_image: pd.DataFrame
    reason: str | None = None


@dataclass
class DatasetData:
    """One converted dataset: its index, split and measured object sizes."""

    name: str
    kind: str
    source: str
    summary: str
    licence: str
    citation: str
    index: pd.DataFrame
    split: pd.DataFrame | None
    object_areas: np.ndarray
    n_area_images: int
    converted: Path


@dataclass
class Provenance:
    """Where the numbers come from."""

    generated: str
    git_commit: str | None
    git_dirty: bool | None
    params_file: str
    params_sha256: str
    seed: int
    python: str
    versions: dict[str, str]


@dataclass
class Collected:
    """The whole input of the page."""

    params: Params
    datasets: list[DatasetData]
    runs: list[ModelRun]
    provenance: Provenance
    skipped: list[SkippedRun] = field(default_factory=list)
    curves: list[CurveRun] = field(default_factory=list)
    curve_plans: dict[str, CurvePlan] = field(default_factory=dict)
    cross: list[CrossRun] = field(default_factory=list)

    def runs_of(self, dataset: str) -> list[ModelRun]:
        return [r for r in self.runs if r.dataset == dataset]

    def skipped_of(self, dataset: str) -> list[SkippedRun]:
        return [r for r in self.skipped if r.dataset == dataset]


# ----------------------------------------------------------------------------- readers
def read_per_image(path: Path) -> pd.DataFrame:
    """``per_image.csv`` with ids and cell types kept as text (an id "NA" stays "NA")."""
    df = pd.read_csv(
        path,
        dtype={"id": str, "cell_type": str, "annotation": str},
        keep_default_na=False,
        na_values=[""],
    )
    for column in ("id", "cell_type", "annotation"):
        if column in df:
            df[column] = df[column].fillna("").astype(str)
    return df


def _optional_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"id": str}, keep_default_na=False, na_values=[""])


def _optional_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def _benchmark(path: Path) -> dict | None:
    """The Snakemake benchmark row of a job (seconds, max_rss in MB), if it was written."""
    if not path.is_file():
        return None
    try:
        row = pd.read_csv(path, sep="\t").iloc[-1]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, IndexError):
        return None
    out = {}
    for key in ("s", "max_rss"):
        value = pd.to_numeric(row.get(key), errors="coerce")
        out[key] = None if value is None or math.isnan(value) else float(value)
    return out


def _object_areas(converted: Path, ids: list[str]) -> tuple[np.ndarray, int]:
    """Pixel areas of the objects of at most MAX_AREA_IMAGES label images (evenly spread)."""
    if not ids:
        return np.zeros(0, np.int64), 0
    ordered = sorted(ids)
    if len(ordered) > MAX_AREA_IMAGES:
        pick = np.linspace(0, len(ordered) - 1, MAX_AREA_IMAGES).round().astype(int)
        ordered = [ordered[k] for k in np.unique(pick)]
    areas = []
    for image_id in ordered:
        path = converted / "labels" / f"{image_id}.tif"
        if not path.is_file():
            continue
        labels = read_labels(path)
        counts = np.bincount(labels.ravel().astype(np.int64))
        areas.append(counts[1:][counts[1:] > 0])
    if not areas:
        return np.zeros(0, np.int64), 0
    return np.concatenate(areas), len(areas)


def _dataset(params: Params, name: str, data: Path) -> DatasetData:
    cfg = params.dataset(name)
    entry = DATASET_KINDS.get(cfg.kind)
    converted = data / "converted" / name
    index = read_index(converted)
    split_path = data / "splits" / f"{name}.csv"
    split = None
    if split_path.is_file():
        split = pd.read_csv(split_path, dtype={"id": str, "split": str}, keep_default_na=False)
    labelled = index.loc[index["annotation"] != "none", "id"].astype(str).tolist()
    areas, n_area = _object_areas(converted, labelled)
    return DatasetData(
        name=name,
        kind=cfg.kind,
        source=cfg.source,
        summary=entry.summary if entry else "",
        licence=(entry.licence if entry else "") or "",
        citation=(entry.citation if entry else "") or "",
        index=index,
        split=split,
        object_areas=areas,
        n_area_images=n_area,
        converted=converted,
    )


def _run(params: Params, dataset: str, model: str, results: Path) -> ModelRun:
    scores = results / "scores" / dataset / model
    model_dir = results / "models" / dataset / model
    predictions = results / "predictions" / dataset / model
    masks = results / "masks" / dataset / model
    history = _optional_csv(model_dir / "history.csv")
    return ModelRun(
        dataset=dataset,
        model=model,
        family=params.model(model).family,
        summary=read_json(scores / "summary.json"),
        per_image=read_per_image(scores / "per_image.csv"),
        config=_optional_json(model_dir / "config.json") or {},
        thresholds=_optional_json(model_dir / "thresholds.json") or {},
        history=history,
        predict_timings=_optional_csv(predictions / "timings.csv"),
        postprocess_timings=_optional_csv(masks / "timings.csv"),
        predict_resources=_optional_json(predictions / "resources.json"),
        postprocess_resources=_optional_json(masks / "resources.json"),
        train_benchmark=_benchmark(
            results / "benchmarks" / "train_model" / dataset / f"{model}.tsv"
        ),
        masks_dir=masks,
    )


# ----------------------------------------------------------------------------- provenance
def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _versions() -> dict[str, str]:
    out = {}
    for package in REPORT_PACKAGES:
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out


def provenance(params: Params, cwd: Path | None = None) -> Provenance:
    """Git commit of the working directory, params hash and seed, package versions."""
    cwd = Path.cwd() if cwd is None else cwd
    commit = _git(["rev-parse", "HEAD"], cwd)
    dirty = None
    if commit:
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        dirty = bool(status) if status is not None else None
    return Provenance(
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        git_commit=commit,
        git_dirty=dirty,
        params_file=str(params.path or "params.yaml"),
        params_sha256=params_hash(params.raw),
        seed=params.seed,
        python=platform.python_version(),
        versions=_versions(),
    )


def _scores(folder: Path) -> tuple[dict, pd.DataFrame, str | None]:
    """summary.json, per_image.csv and the skip reason (None) of a scores folder."""
    record = read_skipped(folder)
    if record is not None:
        return {}, pd.DataFrame(columns=["id"]), str(record["reason"])
    return read_json(folder / "summary.json"), read_per_image(folder / "per_image.csv"), None


def _curves(
    params: Params, data: Path, results: Path
) -> tuple[list[CurveRun], dict[str, CurvePlan]]:
    """Every learning-curve point of ``run.train_sizes`` x ``run.seeds`` on the curve datasets."""
    runs, plans = [], {}
    for d in params.curve_datasets:
        plan = plans[d] = read_curve_plan(curve_plan_path(data, d))
        for m in params.run_models:
            for size in plan.labels:
                for seed in params.run_seeds:
                    folder = curve_dirs(results, d, m, size, seed, params.seed)["scores"]
                    summary, per_image, reason = _scores(folder)
                    runs.append(
                        CurveRun(
                            d,
                            m,
                            params.model(m).family,
                            size,
                            plan.n_images(size),
                            int(seed),
                            summary,
                            per_image,
                            reason,
                        )
                    )
    return runs, plans


def _cross(params: Params, results: Path) -> list[CrossRun]:
    """The cells of the cross-dataset matrix (``run.cross``, ``run.union``), diagonal included.

    With ``run.cross`` every training set meets every test dataset; with only
    ``run.union``, the dataset rows have their diagonal only (the main run).
    """
    if not (params.cross or params.union):
        return []
    cells = []
    for m in params.run_models:
        for train in params.training_sets():
            for test in params.run_datasets:
                if not (params.cross or train == test or train not in params.run_datasets):
                    continue
                summary, per_image, reason = _scores(cross_dirs(results, m, train, test)["scores"])
                cells.append(
                    CrossRun(m, params.model(m).family, train, test, summary, per_image, reason)
                )
    return cells


def collect(params: Params, data: Path, results: Path, cwd: Path | None = None) -> Collected:
    """Read every input of the page for the datasets and models of ``params.run_*``."""
    datasets = [_dataset(params, d, Path(data)) for d in params.run_datasets]
    runs, skipped = [], []
    for d in params.run_datasets:
        for m in params.run_models:
            record = read_skipped(Path(results) / "scores" / d / m)
            if record is not None:
                skipped.append(SkippedRun(d, m, params.model(m).family, str(record["reason"])))
            else:
                runs.append(_run(params, d, m, Path(results)))
    curves, plans = _curves(params, Path(data), Path(results))
    return Collected(
        params,
        datasets,
        runs,
        provenance(params, cwd),
        skipped,
        curves=curves,
        curve_plans=plans,
        cross=_cross(params, Path(results)),
    )
