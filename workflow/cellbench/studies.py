"""Learning curves and the cross-dataset matrix: their targets and paths, in one place.

The Snakefile (``workflow/rules/common.smk``) asks for these paths and the report
(:mod:`cellbench.report.collect`) reads them, so both use the functions here.

Learning curves (``run.train_sizes`` x ``run.seeds``), per dataset ``d`` and model ``m``::

    data/splits/d/learning_curve.json             the sizes trained (after collapsing)
    data/splits/d/n{size}_s{seed}.csv             the subsampled split
    results/curves/{models,predictions,masks,scores}/d/m/n{size}_s{seed}/

The point (``all``, the top-level seed) is the main run itself
(``results/{models,...}/d/m``): it is not trained twice.

Cross-dataset matrix (``run.cross``, ``run.union``), per model ``m``, training set
``a`` (a run dataset, or ``union``) and test dataset ``b``::

    results/cross/m/a__on__b/{predictions,masks,scores}/

The diagonal (``a == b``) is the main run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellbench.io import read_json, write_json
from cellbench.split import ALL, curve_sizes

__all__ = [
    "CROSS_SEPARATOR",
    "CURVE_PLAN",
    "STAGES",
    "CurvePlan",
    "cross_dirs",
    "cross_label",
    "curve_dirs",
    "curve_label",
    "curve_plan_path",
    "curve_split_path",
    "make_curve_plan",
    "read_curve_plan",
    "write_curve_plan",
]

STAGES = ("models", "predictions", "masks", "scores")
CROSS_SEPARATOR = "__on__"
CURVE_PLAN = "learning_curve.json"


@dataclass(frozen=True)
class CurvePlan:
    """The sizes of one dataset's learning curve, known once its split exists.

    Attributes
    ----------
    n_train : train images of the full split.
    requested : ``run.train_sizes`` as labels (``"30"``, ``"all"``).
    labels : the distinct sizes trained, smallest first, ``"all"`` last.
    """

    n_train: int
    requested: tuple[str, ...]
    labels: tuple[str, ...]

    def n_images(self, label: str) -> int:
        """Train images of a size label (``all``: every one)."""
        return self.n_train if label == ALL else int(label)


def make_curve_plan(sizes: Sequence[int | str], n_train: int) -> CurvePlan:
    """The plan for ``run.train_sizes`` on a split with ``n_train`` train images."""
    return CurvePlan(
        n_train=int(n_train),
        requested=tuple(str(s) for s in sizes),
        labels=tuple(curve_sizes(sizes, n_train)),
    )


def write_curve_plan(path: Path, plan: CurvePlan) -> Path:
    """Write a plan as JSON (n_train, requested, labels, images per label)."""
    return write_json(
        path,
        {
            "n_train": plan.n_train,
            "requested": list(plan.requested),
            "labels": list(plan.labels),
            "n_images": {label: plan.n_images(label) for label in plan.labels},
        },
    )


def read_curve_plan(path: Path) -> CurvePlan:
    """Read a plan written by :func:`write_curve_plan`."""
    data: dict[str, Any] = read_json(path)
    return CurvePlan(
        n_train=int(data["n_train"]),
        requested=tuple(str(s) for s in data["requested"]),
        labels=tuple(str(s) for s in data["labels"]),
    )


def curve_label(size: int | str, seed: int) -> str:
    """The folder name of one learning-curve point: ``n30_s1``, ``nall_s2``."""
    return f"n{size}_s{seed}"


def curve_plan_path(data: Path, dataset: str) -> Path:
    return Path(data) / "splits" / dataset / CURVE_PLAN


def curve_split_path(data: Path, dataset: str, size: int | str, seed: int) -> Path:
    return Path(data) / "splits" / dataset / f"{curve_label(size, seed)}.csv"


def curve_dirs(
    results: Path, dataset: str, model: str, size: int | str, seed: int, base_seed: int
) -> dict[str, Path]:
    """Stage -> output folder of one learning-curve point.

    ``size == "all"`` with the top-level seed is the main run (not trained again).
    """
    results = Path(results)
    if str(size) == ALL and int(seed) == int(base_seed):
        return {stage: results / stage / dataset / model for stage in STAGES}
    label = curve_label(size, seed)
    return {stage: results / "curves" / stage / dataset / model / label for stage in STAGES}


def cross_label(train: str, test: str) -> str:
    """The folder name of one cell of the matrix: ``a__on__b``."""
    return f"{train}{CROSS_SEPARATOR}{test}"


def cross_dirs(results: Path, model: str, train: str, test: str) -> dict[str, Path]:
    """Stage -> folder of the model trained on ``train`` scored on ``test``.

    The model folder is ``results/models/{train}/{model}``; the diagonal is the main run.
    """
    results = Path(results)
    if train == test:
        return {stage: results / stage / test / model for stage in STAGES}
    cell = results / "cross" / model / cross_label(train, test)
    return {
        "models": results / "models" / train / model,
        **{stage: cell / stage for stage in STAGES[1:]},
    }
