"""The report's charts: matplotlib (Agg backend) figures as inline SVG strings.

Text stays text (``svg.fonttype: none``: small, searchable, and escaped by
matplotlib's SVG writer), mathtext is off (a ``$`` in a model name is just a
dollar), there is no date in the metadata, ids are salted per chart so several
SVGs live in one page without clashing, and nothing refers outside the SVG.
Inputs are plain arrays and frames; the functions read no files.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "MODEL_COLOURS",
    "dataset_svg",
    "learning_curve_svg",
    "metric_curves_svg",
    "model_colour",
    "training_svg",
]

#: Okabe-Ito, then black: distinct under common colour-vision deficiencies
MODEL_COLOURS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#000000",
    "#F0E442",
)
_STYLES = ("-", "--", ":", "-.")

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "cellbench",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e7ee",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "path.simplify": True,
}


def model_colour(k: int) -> tuple[str, str]:
    """(colour, line style) of the ``k``-th model: 8 colours, then dashed, dotted ..."""
    return MODEL_COLOURS[k % len(MODEL_COLOURS)], _STYLES[(k // len(MODEL_COLOURS)) % 4]


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.ravel())


_ID = re.compile(r'\bid="([^"]+)"')
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)


def _svg(fig, key: str) -> str:
    """Serialise a figure; strip the XML prolog and make every id unique to ``key``."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"cellbench-{key}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = _METADATA.sub("", text)
    prefix = "c" + re.sub(r"[^A-Za-z0-9_-]", "_", key) + "-"
    ids = set(_ID.findall(text))
    for old in sorted(ids, key=len, reverse=True):
        text = text.replace(f'id="{old}"', f'id="{prefix}{old}"')
        text = text.replace(f"url(#{old})", f"url(#{prefix}{old})")
        text = text.replace(f'href="#{old}"', f'href="#{prefix}{old}"')
    return text.strip()


def _with_rc(func):
    def wrapped(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_RC):
            return func(*args, **kwargs)

    wrapped.__name__ = func.__name__
    wrapped.__doc__ = func.__doc__
    return wrapped


@_with_rc
def metric_curves_svg(
    curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    metrics: Sequence[tuple[str, str]],
    key: str,
    colours: Mapping[str, int] | None = None,
) -> str:
    """Small multiples: each metric (per-image mean) against the IoU threshold.

    Parameters
    ----------
    curves : mapping model -> metric -> (thresholds, values)
        Thresholds as found in the scores; NaN values are not drawn.
    metrics : sequence of (metric key, axis title)
        One panel each, in order.
    key : str
        Unique name of the chart in the page (salts the SVG ids).
    colours : mapping model -> colour index, optional
        Keeps a model's colour the same in every chart (default: order of ``curves``).
    """
    fig, axes = _figure(3.0 * len(metrics), 2.6, ncols=len(metrics))
    colours = colours or {m: k for k, m in enumerate(curves)}
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        for model, per_metric in curves.items():
            if metric not in per_metric:
                continue
            x, y = (np.asarray(v, float) for v in per_metric[metric])
            ok = ~np.isnan(y)
            if not ok.any():
                continue
            colour, style = model_colour(colours[model])
            ax.plot(x[ok], y[ok], style, color=colour, marker="o", ms=2.5, lw=1.4, label=model)
        ax.set_title(title)
        ax.set_xlabel("IoU threshold")
        ax.set_ylim(-0.02, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper")
    return _svg(fig, key)


@_with_rc
def training_svg(
    histories: Mapping[str, pd.DataFrame],
    key: str,
    colours: Mapping[str, int] | None = None,
) -> str:
    """Loss (train solid, validation dashed) and validation mean AP per epoch.

    Parameters
    ----------
    histories : mapping model -> history frame
        Columns ``epoch``, ``train_loss``, ``val_loss``, ``val_mean_ap`` (the model
        folder's ``history.csv``); models without epochs are left out.
    key : str
        Unique name of the chart in the page.
    colours : mapping model -> colour index, optional
    """
    fig, (loss_ax, score_ax) = _figure(7.0, 2.6, ncols=2)
    colours = colours or {m: k for k, m in enumerate(histories)}
    any_score = False
    for model, h in histories.items():
        if h is None or not len(h):
            continue
        colour, _ = model_colour(colours[model])
        epoch = pd.to_numeric(h["epoch"], errors="coerce").to_numpy(float)
        for column, style, suffix in (("train_loss", "-", "train"), ("val_loss", "--", "val")):
            if column in h:
                y = pd.to_numeric(h[column], errors="coerce").to_numpy(float)
                ok = ~np.isnan(y)
                if ok.any():
                    loss_ax.plot(
                        epoch[ok], y[ok], style, color=colour, lw=1.4, label=f"{model} ({suffix})"
                    )
        if "val_mean_ap" in h:
            y = pd.to_numeric(h["val_mean_ap"], errors="coerce").to_numpy(float)
            ok = ~np.isnan(y)
            if ok.any():
                any_score = True
                score_ax.plot(epoch[ok], y[ok], "-", color=colour, marker="o", ms=2.5, label=model)
    loss_ax.set_title("loss (solid: train, dashed: validation)")
    loss_ax.set_xlabel("epoch")
    score_ax.set_title("validation mean AP")
    score_ax.set_xlabel("epoch")
    if any_score:
        score_ax.set_ylim(-0.02, 1.02)
    else:
        score_ax.text(
            0.5,
            0.5,
            "not computed during training\n(select_by: val_loss)",
            ha="center",
            va="center",
            transform=score_ax.transAxes,
            color="#5a6475",
        )
        score_ax.set_xticks([])
        score_ax.set_yticks([])
    handles, labels = loss_ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper")
    return _svg(fig, key)


def _log_bins(values: np.ndarray, n: int = 30) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if lo <= 0 or hi <= lo:
        return np.linspace(max(lo - 0.5, 0), hi + 0.5, 10)
    return np.geomspace(lo, hi * 1.0001, n)


@_with_rc
def dataset_svg(objects_per_image: Sequence[float], object_areas: Sequence[float], key: str) -> str:
    """Histograms: objects per image, and object area in pixels (log scale).

    Parameters
    ----------
    objects_per_image : sequence of int
        Instances per image (the converted index's ``n_instances``).
    object_areas : sequence of int
        Pixel area of each measured object.
    key : str
        Unique name of the chart in the page.
    """
    fig, (count_ax, area_ax) = _figure(7.0, 2.3, ncols=2)
    counts = np.asarray(objects_per_image, float)
    counts = counts[~np.isnan(counts)]
    if counts.size:
        top = int(counts.max())
        width = max(1, math.ceil((top + 1) / 30))
        count_ax.hist(counts, bins=np.arange(0, top + width + 1, width), color="#0072B2")
    count_ax.set_title("objects per image")
    count_ax.set_xlabel("objects")
    count_ax.set_ylabel("images")
    areas = np.asarray(object_areas, float)
    areas = areas[areas > 0]
    if areas.size:
        area_ax.hist(areas, bins=_log_bins(areas), color="#009E73")
        if areas.max() > areas.min():
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            area_ax.set_xscale("log")  # plain tick labels: mathtext is off
            area_ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            area_ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            area_ax.xaxis.set_minor_formatter(NullFormatter())
    area_ax.set_title("object area")
    area_ax.set_xlabel("pixels")
    area_ax.set_ylabel("objects")
    return _svg(fig, key)


@_with_rc
def learning_curve_svg(
    rows: Sequence[Mapping],
    key: str,
    colours: Mapping[str, int] | None = None,
    metric: str = "mean AP",
) -> str:
    """The score against the number of training images (log scale), one line per model.

    Parameters
    ----------
    rows : the rows of :func:`cellbench.report.tables.learning_curve`: per model and
        size ``n_train``, ``mean`` (over seeds), ``interval`` (bootstrap over test
        images of the seed-averaged per-image scores: the shaded band) and
        ``seed_min`` / ``seed_max`` (the error bars).
    key : unique name of the chart in the page.
    colours : mapping model -> colour index, optional.
    metric : the y axis label.
    """
    fig, (ax,) = _figure(5.6, 3.0)
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = colours or {m: k for k, m in enumerate(models)}
    sizes = sorted({int(r["n_train"]) for r in rows})
    for model in models:
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["n_train"])
        colour, style = model_colour(colours.get(model, 0))
        x = np.array([r["n_train"] for r in mine], float)
        y = np.array([r["mean"] for r in mine], float)
        low = np.array([r["interval"].low for r in mine], float)
        high = np.array([r["interval"].high for r in mine], float)
        if len(x) > 1:
            ax.fill_between(x, low, high, color=colour, alpha=0.15, lw=0)
        else:  # one size: the interval as a bar
            ax.vlines(x, low, high, color=colour, alpha=0.35, lw=6)
        spread = np.array(
            [[m - r["seed_min"], r["seed_max"] - m] for r, m in zip(mine, y, strict=True)]
        ).T.clip(min=0)  # min..max over seeds
        ax.errorbar(
            x,
            y,
            yerr=spread,
            marker="o",
            linestyle=style,
            color=colour,
            ms=3.5,
            lw=1.4,
            capsize=2.5,
            label=model,
        )
    if sizes and sizes[-1] > sizes[0]:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper")
    return _svg(fig, key)
