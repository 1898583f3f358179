"""Spread and significance of per-image scores: bootstrap intervals (pure).

Every score in the report is a mean over a dataset's test images. Its spread is a
percentile bootstrap interval of that mean: the images are resampled with
replacement ``n_boot`` times and the interval is the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles of the resampled means.

The best model of a column is highlighted by :func:`compare_best` only when its lead
is larger than the interval: the paired bootstrap interval (images resampled jointly
for both models) of the mean per-image difference between the best and the runner-up
lies entirely above zero. Everything is seeded with a :class:`numpy.random.Generator`,
so the same inputs and seed give the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "SIGNIFICANCE_RULE",
    "Comparison",
    "Interval",
    "bootstrap_mean",
    "compare_best",
    "paired_difference",
]

DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples per interval."""

DEFAULT_LEVEL = 0.95
"""Coverage of the intervals."""

SIGNIFICANCE_RULE = (
    "In each column the model with the highest mean is highlighted only when it beats the "
    "runner-up by more than the interval: the 95 % paired bootstrap interval of the mean "
    "per-image difference (best minus runner-up; the same test images resampled for both "
    f"models, {DEFAULT_RESAMPLES} resamples, seeded with params.yaml's seed) lies entirely "
    "above zero, over at least two images. Otherwise nothing in the column is highlighted: "
    "the test set cannot tell the two apart."
)
"""The rule, as the report states it."""

_CHUNK = 256  # resamples drawn at once (bounds memory for large test sets)


@dataclass(frozen=True)
class Interval:
    """A mean over images and its bootstrap interval.

    Attributes
    ----------
    mean : float
        Mean of the values (NaN when there are none).
    low, high : float
        Interval bounds (equal to ``mean`` for one value; NaN for none).
    n : int
        Number of (non-NaN) values.
    level : float
        Coverage, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    n: int
    level: float = DEFAULT_LEVEL

    @property
    def defined(self) -> bool:
        """Whether there was at least one value."""
        return self.n > 0

    def above_zero(self) -> bool:
        """Whether the whole interval lies above zero, from at least two values."""
        return self.n >= 2 and self.low > 0


@dataclass(frozen=True)
class Comparison:
    """The best model of one column and whether it is significantly ahead.

    Attributes
    ----------
    best, runner_up : str or None
        Model names by mean (higher is better); ``runner_up`` is None with one model.
    difference : Interval or None
        Paired bootstrap interval of ``mean(best - runner_up)`` over the images both
        were scored on; None without a runner-up.
    significant : bool
        ``difference`` lies entirely above zero, from at least two images (see
        :data:`SIGNIFICANCE_RULE`).
    """

    best: str | None
    runner_up: str | None
    difference: Interval | None
    significant: bool


def _clean(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[~np.isnan(arr)]


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = values.size
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, _CHUNK):
        stop = min(start + _CHUNK, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_mean(
    values,
    *,
    n_boot: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` and its percentile bootstrap interval.

    Parameters
    ----------
    values : array-like of float
        One value per image; NaN (a score undefined on that image) is dropped.
    n_boot : int
        Number of resamples.
    level : float in (0, 1)
        Coverage of the interval.
    seed : int
        Seed of the :class:`numpy.random.Generator` that draws the resamples.

    Returns
    -------
    Interval
        ``low <= mean <= high`` up to the resampling (with two or more distinct values
        the mean always lies inside); all NaN with no value, ``low == high == mean``
        with one.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    arr = _clean(values)
    if arr.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    mean = float(arr.mean())
    if arr.size == 1 or np.all(arr == arr[0]):
        return Interval(mean, mean, mean, int(arr.size), level)
    means = _resampled_means(arr, n_boot, np.random.default_rng(seed))
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    # the percentile interval can miss the sample mean for very skewed tiny samples
    return Interval(mean, float(min(low, mean)), float(max(high, mean)), int(arr.size), level)


def paired_difference(
    a: pd.Series,
    b: pd.Series,
    *,
    n_boot: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Paired bootstrap interval of ``mean(a - b)`` over the images both scored.

    Parameters
    ----------
    a, b : Series of float indexed by image id
        Per-image scores of two models; images missing from either, or NaN in either,
        are left out.
    n_boot, level, seed
        As in :func:`bootstrap_mean` (the images are resampled jointly).
    """
    joined = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    diff = (joined["a"] - joined["b"]).to_numpy(dtype=np.float64)
    return bootstrap_mean(diff, n_boot=n_boot, level=level, seed=seed)


def compare_best(
    scores: Mapping[str, pd.Series],
    *,
    n_boot: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Comparison:
    """The model with the highest mean score, and whether its lead is significant.

    Parameters
    ----------
    scores : mapping model -> Series of float indexed by image id
        Per-image scores (higher is better). Models without any value are ignored.
    n_boot, level, seed
        As in :func:`bootstrap_mean`.

    Returns
    -------
    Comparison
        Ties in the mean are broken by the order of ``scores``; ``significant`` only when
        the paired interval of best minus runner-up lies entirely above zero (see
        :data:`SIGNIFICANCE_RULE`). One model alone is never marked significant.
    """
    means = {}
    for model, series in scores.items():
        arr = _clean(series)
        if arr.size:
            means[model] = float(arr.mean())
    if not means:
        return Comparison(None, None, None, False)
    order = sorted(means, key=lambda m: -means[m])  # stable: ties keep the given order
    best = order[0]
    if len(order) == 1:
        return Comparison(best, None, None, False)
    runner_up = order[1]
    diff = paired_difference(scores[best], scores[runner_up], n_boot=n_boot, level=level, seed=seed)
    return Comparison(best, runner_up, diff, diff.above_zero())
