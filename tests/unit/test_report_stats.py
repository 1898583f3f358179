"""Bootstrap intervals and the "highlight only if significant" rule."""

import math

import numpy as np
import pandas as pd
import pytest
from cellbench.report.stats import (
    SIGNIFICANCE_RULE,
    bootstrap_mean,
    compare_best,
    paired_difference,
)


def test_interval_contains_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(1).beta(2, 5, size=40)
    ci = bootstrap_mean(values, seed=3)
    assert ci.low < ci.mean < ci.high and ci.n == 40
    assert ci.mean == pytest.approx(values.mean())
    assert bootstrap_mean(values, seed=3) == ci  # same seed, same interval
    other = bootstrap_mean(values, seed=4)
    assert other.mean == ci.mean and (other.low, other.high) != (ci.low, ci.high)
    # roughly the normal-theory interval of a mean
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_interval_narrows_with_more_images_and_widens_with_level() -> None:
    rng = np.random.default_rng(2)
    few, many = rng.random(10), rng.random(1000)
    width = lambda ci: ci.high - ci.low  # noqa: E731
    assert width(bootstrap_mean(many)) < width(bootstrap_mean(few))
    assert width(bootstrap_mean(few, level=0.99)) > width(bootstrap_mean(few, level=0.8))


def test_interval_edge_cases() -> None:
    empty = bootstrap_mean([np.nan, np.nan])
    assert empty.n == 0 and math.isnan(empty.mean) and not empty.defined
    one = bootstrap_mean([0.4, np.nan])
    assert (one.mean, one.low, one.high, one.n) == (0.4, 0.4, 0.4, 1)
    same = bootstrap_mean([0.7] * 5)
    assert same.low == same.high == pytest.approx(0.7)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([1.0, 2.0], level=1.5)


def test_paired_difference_uses_common_images_only() -> None:
    a = pd.Series([0.9, 0.8, 0.7, np.nan], index=["i1", "i2", "i3", "i4"])
    b = pd.Series([0.5, 0.5, 0.5, 0.5, 0.1], index=["i1", "i2", "i3", "i4", "i5"])
    diff = paired_difference(a, b, seed=0)
    assert diff.n == 3 and diff.mean == pytest.approx(0.3)


def test_clear_winner_is_significant() -> None:
    rng = np.random.default_rng(5)
    ids = [f"img{i}" for i in range(30)]
    base = rng.random(30)
    scores = {
        "weak": pd.Series(base * 0.5, index=ids),
        "strong": pd.Series(base * 0.5 + 0.1 + rng.normal(0, 0.02, 30), index=ids),
    }
    cmp = compare_best(scores, seed=0)
    assert (cmp.best, cmp.runner_up) == ("strong", "weak")
    assert cmp.significant and cmp.difference.low > 0
    assert cmp.difference.mean == pytest.approx((scores["strong"] - scores["weak"]).mean())


def test_lead_within_the_noise_is_not_significant() -> None:
    rng = np.random.default_rng(6)
    ids = [f"img{i}" for i in range(20)]
    a = pd.Series(rng.random(20), index=ids)
    b = pd.Series(a.to_numpy() + rng.normal(0.01, 0.2, 20), index=ids)
    cmp = compare_best({"a": a, "b": b}, seed=0)
    assert cmp.runner_up is not None
    assert cmp.difference.low <= 0 < cmp.difference.high
    assert not cmp.significant


def test_paired_beats_unpaired_when_images_vary_a_lot() -> None:
    # image difficulty varies far more than the (consistent) gap between the models:
    # the two marginal intervals overlap, the paired difference is clearly positive
    rng = np.random.default_rng(7)
    ids = [f"img{i}" for i in range(25)]
    difficulty = rng.random(25)
    a = pd.Series(difficulty, index=ids)
    b = pd.Series(difficulty + 0.05, index=ids)
    ca, cb = bootstrap_mean(a), bootstrap_mean(b)
    assert cb.low < ca.high  # marginal intervals overlap
    assert compare_best({"a": a, "b": b}).significant


def test_one_model_or_one_image_is_never_highlighted() -> None:
    only = compare_best({"m": pd.Series([0.5, 0.6], index=["a", "b"])})
    assert only.best == "m" and only.runner_up is None and not only.significant
    single = compare_best({"m": pd.Series([0.9], index=["a"]), "n": pd.Series([0.1], index=["a"])})
    assert single.best == "m" and not single.significant
    nothing = compare_best({"m": pd.Series([np.nan]), "n": pd.Series(dtype=float)})
    assert nothing.best is None and not nothing.significant


def test_ties_keep_the_given_order_and_are_not_significant() -> None:
    s = pd.Series([0.5, 0.6, 0.7], index=["a", "b", "c"])
    cmp = compare_best({"first": s, "second": s.copy()})
    assert cmp.best == "first" and not cmp.significant


def test_rule_is_stated() -> None:
    assert "paired bootstrap" in SIGNIFICANCE_RULE and "above zero" in SIGNIFICANCE_RULE
