"""Collect results and render ``results/report.html``."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellbench.config import Params
from cellbench.io import read_image, read_json, read_labels, write_text

__all__ = ["ModelResult", "collect_results", "overlay_png", "render_report"]

#: columns of the per-dataset table: (summary key, header, tooltip)
TABLE_COLUMNS = (
    ("mean_ap", "mean AP", "mean over IoU 0.50:0.05:0.95 of TP/(TP+FP+FN) (DSB 2018 / Sartorius)"),
    ("ap@0.50", "AP@0.50", "TP/(TP+FP+FN) at IoU 0.50"),
    ("ap@0.75", "AP@0.75", "TP/(TP+FP+FN) at IoU 0.75"),
    ("f1@0.25", "F1@0.25", "F1 at IoU 0.25"),
    ("precision@0.50", "P@0.50", "precision at IoU 0.50"),
    ("recall@0.50", "R@0.50", "recall at IoU 0.50"),
    ("f1@0.50", "F1@0.50", "F1 at IoU 0.50"),
    ("f1@0.75", "F1@0.75", "F1 at IoU 0.75"),
    ("pq", "PQ", "panoptic quality at IoU 0.5"),
    ("aji", "AJI", "Aggregated Jaccard Index (Kumar et al. 2017)"),
    ("seg", "SEG", "Cell Tracking Challenge SEG"),
    ("dice", "Dice", "foreground pixel Dice"),
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#1d2330;padding:0 1rem;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e3e7ee;padding-bottom:.2rem;margin-top:2.2rem}
.meta{color:#5a6475;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #d8dde6;padding:.28rem .55rem;text-align:right}
th{background:#f2f4f8;font-weight:600}td.name,th.name{text-align:left}
tr.best td{background:#eaf7ee;font-weight:600}.win{background:#eaf7ee;font-weight:700}
.note{font-size:.85rem;color:#5a6475}.figs{display:flex;flex-wrap:wrap;gap:1.2rem}
figure{margin:0;max-width:100%}figcaption{font-size:.85rem;color:#39414f}
img.overlay{max-width:100%;image-rendering:pixelated;border:1px solid #d8dde6}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
code{background:#f2f4f8;padding:0 .2rem;border-radius:3px}
"""

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class ModelResult:
    """Everything the report shows of one dataset x model."""

    dataset: str
    model: str
    family: str
    summary: dict
    per_image: pd.DataFrame
    config: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    masks_dir: Path | None = None


def collect_results(params: Params, results: Path) -> list[ModelResult]:
    """Read every ``summary.json`` / ``per_image.csv`` / model config of the run."""
    out = []
    for dataset in params.run_datasets:
        for model in params.run_models:
            scores = results / "scores" / dataset / model
            model_dir = results / "models" / dataset / model
            out.append(
                ModelResult(
                    dataset=dataset,
                    model=model,
                    family=params.model(model).family,
                    summary=read_json(scores / "summary.json"),
                    per_image=pd.read_csv(scores / "per_image.csv", dtype={"id": str}),
                    config=read_json(model_dir / "config.json"),
                    thresholds=read_json(model_dir / "thresholds.json"),
                    masks_dir=results / "masks" / dataset / model,
                )
            )
    return out


# ----------------------------------------------------------------------------- pictures
def _to_rgb(image: np.ndarray) -> np.ndarray:
    """Any image -> ``(H, W, 3)`` float in [0, 1], percentile-stretched."""
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = img[..., :3] if img.shape[-1] >= 3 else img.mean(axis=-1)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


def _outline(rgb: np.ndarray, labels: np.ndarray, color: tuple[float, float, float]) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    out[find_boundaries(labels, mode="inner")] = color
    return out


def overlay_png(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, max_size: int = 384) -> str:
    """Three panels side by side: image | ground truth outlines | prediction outlines.

    Large images are cropped to the ``max_size`` square with the most true cells.
    Returns a ``data:image/png;base64,...`` URI.
    """
    from PIL import Image

    h, w = truth.shape
    y0 = x0 = 0
    if h > max_size or w > max_size:
        ch, cw = min(h, max_size), min(w, max_size)
        density = (truth > 0).astype(np.float32)
        best = -1.0
        for y in np.linspace(0, h - ch, 5).astype(int):
            for x in np.linspace(0, w - cw, 5).astype(int):
                s = float(density[y : y + ch, x : x + cw].sum())
                if s > best:
                    best, y0, x0 = s, int(y), int(x)
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        image, truth, pred = image[sl], truth[sl], pred[sl]
    rgb = _to_rgb(image)
    gap = np.ones((rgb.shape[0], 4, 3), np.float32)
    panels = np.concatenate(
        [
            rgb,
            gap,
            _outline(rgb, truth, (0.1, 0.9, 0.2)),
            gap,
            _outline(rgb, pred, (1.0, 0.1, 0.8)),
        ],
        axis=1,
    )
    buf = io.BytesIO()
    Image.fromarray((panels * 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ----------------------------------------------------------------------------- charts
def ap_curve_svg(results: list[ModelResult], width: int = 520, height: int = 260) -> str:
    """Inline SVG: per-image mean AP against IoU threshold, one line per model."""
    pad_l, pad_r, pad_t, pad_b = 44, 110, 12, 34
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="AP against IoU threshold">'
    ]
    for k in range(6):
        y = pad_t + ph * (1 - k / 5)
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7ee"/>'
        )
        parts.append(
            f'<text x="{pad_l - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{k / 5:.1f}</text>'
        )
    for k, t in enumerate(np.arange(0.5, 0.96, 0.05)):
        x = pad_l + pw * k / 9
        parts.append(
            f'<text x="{x:.1f}" y="{pad_t + ph + 16}" font-size="11" text-anchor="middle">{t:.2f}</text>'
        )
    parts.append(
        f'<text x="{pad_l + pw / 2}" y="{height - 2}" font-size="11" text-anchor="middle">IoU threshold</text>'
    )
    for i, r in enumerate(results):
        mean = r.summary.get("per_image_mean", {})
        pts = []
        for k, t in enumerate(np.arange(0.5, 0.96, 0.05)):
            v = mean.get(f"ap@{t:.2f}")
            if v is not None and not math.isnan(v):
                pts.append(f"{pad_l + pw * k / 9:.1f},{pad_t + ph * (1 - v):.1f}")
        color = PALETTE[i % len(PALETTE)]
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>'
            )
        ly = pad_t + 14 + 16 * i
        parts.append(
            f'<line x1="{pad_l + pw + 10}" x2="{pad_l + pw + 28}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="3"/>'
        )
        parts.append(
            f'<text x="{pad_l + pw + 32}" y="{ly}" font-size="11">{html.escape(r.model)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------- tables
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _metric(summary: dict, block: str, key: str) -> float | None:
    value = summary.get(block, {}).get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _headline(results: list[ModelResult]) -> tuple[str, str]:
    """The score that ranks one dataset's models: mean AP, or SEG where no model has AP.

    AP is undefined on partially annotated ground truth (CTC gold truth), which is
    scored with the CTC SEG measure only.
    """
    if any(_metric(r.summary, "per_image_mean", "mean_ap") is not None for r in results):
        return "mean_ap", "mean AP"
    if any(_metric(r.summary, "per_image_mean", "seg") is not None for r in results):
        return "seg", "SEG"
    return "mean_ap", "mean AP"


def _leaderboard(results: list[ModelResult], datasets: list[str], models: list[str]) -> str:
    by = {(r.dataset, r.model): r for r in results}
    rows = [
        "<table><tr><th class='name'>dataset</th><th class='name'>score</th>"
        + "".join(f"<th>{html.escape(m)}</th>" for m in models)
        + "<th class='name'>best</th></tr>"
    ]
    for d in datasets:
        key, label = _headline([by[(d, m)] for m in models])
        vals = {m: _metric(by[(d, m)].summary, "per_image_mean", key) for m in models}
        scored = {m: v for m, v in vals.items() if v is not None}
        best = max(scored, key=scored.get) if scored else None
        cells = "".join(
            f"<td class='{'win' if m == best else ''}'>{_fmt(vals[m])}</td>" for m in models
        )
        rows.append(
            f"<tr><td class='name'>{html.escape(d)}</td><td class='name'>{label}</td>{cells}"
            f"<td class='name'>{html.escape(best or '–')}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _dataset_table(results: list[ModelResult], block: str) -> str:
    head = "".join(f"<th title='{html.escape(tip)}'>{name}</th>" for _, name, tip in TABLE_COLUMNS)
    rows = [
        f"<table><tr><th class='name'>model</th><th class='name'>family</th>{head}"
        "<th>images</th><th>train s</th></tr>"
    ]
    key, _ = _headline(results)
    ranked = sorted(results, key=lambda r: -(_metric(r.summary, "per_image_mean", key) or -1.0))
    for rank, r in enumerate(ranked):
        cells = "".join(
            f"<td>{_fmt(_metric(r.summary, block, k))}</td>" for k, _, _ in TABLE_COLUMNS
        )
        train_s = r.config.get("train_seconds")
        rows.append(
            f"<tr class='{'best' if rank == 0 else ''}'><td class='name'>{html.escape(r.model)}</td>"
            f"<td class='name'>{html.escape(r.family)}</td>{cells}<td>{r.summary.get('n_images', 0)}"
            f"</td><td>{_fmt(train_s, 1)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _cell_type_table(results: list[ModelResult]) -> str:
    types = sorted({ct for r in results for ct in r.summary.get("per_cell_type", {})})
    if len(types) < 2:
        return ""
    rows = [
        "<table><tr><th class='name'>model</th>"
        + "".join(f"<th>{html.escape(t)}</th>" for t in types)
        + "</tr>"
    ]
    for r in results:
        per = r.summary.get("per_cell_type", {})
        cells = "".join(
            f"<td>{_fmt(_metric(per.get(t, {}), 'per_image_mean', 'mean_ap'))}</td>" for t in types
        )
        rows.append(f"<tr><td class='name'>{html.escape(r.model)}</td>{cells}</tr>")
    rows.append("</table>")
    return "<h3>Mean AP per cell type (per-image mean)</h3>" + "".join(rows)


def _training_table(results: list[ModelResult]) -> str:
    rows = [
        "<table><tr><th class='name'>model</th><th>train / val images</th><th>epochs</th>"
        "<th>device</th><th>train s</th><th class='name'>tuned post-processing (val score)</th></tr>"
    ]
    for r in results:
        c, t = r.config, r.thresholds
        tuned = ", ".join(f"{k}={v}" for k, v in t.get("selected", {}).items())
        metric = "SEG" if t.get("metric") == "seg" else "mean AP"
        rows.append(
            f"<tr><td class='name'>{html.escape(r.model)}</td>"
            f"<td>{c.get('n_train_images', '–')} / {c.get('n_val_images', '–')}</td>"
            f"<td>{c.get('epochs_run', 0) if c.get('trainable') else '–'}</td>"
            f"<td>{html.escape(str(c.get('device', '–')))}</td><td>{_fmt(c.get('train_seconds'), 1)}</td>"
            f"<td class='name'>{html.escape(tuned)} ({metric} {_fmt(t.get('val_score'))})</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _size_table(results: list[ModelResult]) -> str:
    """Estimated against true object diameter of the test images (size-normalised models)."""
    rows = []
    for r in results:
        df = r.per_image
        if "estimated_diameter" not in df or "true_diameter" not in df:
            continue
        both = df[["estimated_diameter", "true_diameter"]].apply(pd.to_numeric, errors="coerce")
        both = both.dropna()
        if not len(both):
            continue
        ratio = both["estimated_diameter"] / both["true_diameter"]
        within = float((abs(ratio - 1) <= 0.2).mean())
        standard = r.config.get("options", {}).get("diameter")
        rows.append(
            f"<tr><td class='name'>{html.escape(r.model)}</td><td>{_fmt(standard, 0)}</td>"
            f"<td>{len(both)}</td><td>{_fmt(both['true_diameter'].median(), 1)}</td>"
            f"<td>{_fmt(both['estimated_diameter'].median(), 1)}</td>"
            f"<td>{_fmt(ratio.median(), 2)}</td><td>{_fmt(within, 2)}</td></tr>"
        )
    if not rows:
        return ""
    head = (
        "<h3>Object size: estimated against true diameter</h3><p class='note'>Size-normalised "
        "models rescale each test image so its objects measure the model's standard diameter; "
        "the diameter of a test image is estimated by the network (the ground truth is not "
        "used). True diameter: median equivalent diameter of the image's labelled objects.</p>"
        "<table><tr><th class='name'>model</th><th>standard px</th><th>images</th>"
        "<th>median true px</th><th>median estimated px</th><th>median ratio</th>"
        "<th>share within ±20 %</th></tr>"
    )
    return head + "".join(rows) + "</table>"


def _example_id(per_image: pd.DataFrame) -> str | None:
    """The test image with the median number of true cells (same for every model)."""
    full = per_image[per_image.get("annotation", "full") != "none"] if len(per_image) else per_image
    if not len(full):
        return None
    order = full.sort_values(["n_true", "id"]).reset_index(drop=True)
    return str(order.loc[len(order) // 2, "id"])


def _figures(results: list[ModelResult], converted: Path) -> str:
    if not results:
        return ""
    image_id = _example_id(results[0].per_image)
    if image_id is None:
        return "<p class='note'>No scored test image to show.</p>"
    image = read_image(converted / "images" / f"{image_id}.tif")
    truth = read_labels(converted / "labels" / f"{image_id}.tif")
    figs = []
    key, label = _headline(results)
    for r in results:
        mask_path = r.masks_dir / f"{image_id}.tif"
        if not mask_path.is_file():
            continue
        pred = read_labels(mask_path)
        row = r.per_image.loc[r.per_image["id"] == image_id]
        score = row[key].iloc[0] if len(row) and key in row else None
        figs.append(
            f"<figure><img class='overlay' alt='{html.escape(r.model)} on {html.escape(image_id)}' "
            f"src='{overlay_png(image, truth, pred)}'><figcaption><b>{html.escape(r.model)}</b>: "
            f"{int(pred.max())} predicted / {int(truth.max())} true cells, {label} "
            f"{_fmt(score)}</figcaption></figure>"
        )
    legend = (
        "<p class='legend note'>Test image <code>" + html.escape(image_id) + "</code>: "
        "image | <span style='background:#1ae633'></span>ground truth | "
        "<span style='background:#ff1acc'></span>prediction</p>"
    )
    return legend + "<div class='figs'>" + "".join(figs) + "</div>"


def render_report(params: Params, data: Path, results: Path, out: Path) -> Path:
    """Render the report for the datasets and models of ``params.run_*``; atomic write."""
    from cellbench import __version__

    collected = collect_results(params, results)
    datasets, models = list(params.run_datasets), list(params.run_models)
    title = params.report.title
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>cellbench {__version__} · generated "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} · seed {params.seed} · "
        f"datasets: {html.escape(', '.join(datasets))} · models: {html.escape(', '.join(models))}</p>",
        "<h2>Leaderboard</h2>",
        "<p class='note'>Mean AP on each dataset's test split: TP/(TP+FP+FN) averaged over IoU "
        "thresholds 0.50, 0.55, …, 0.95 per image, then averaged over images (the Data Science "
        "Bowl 2018 / Sartorius score). A dataset whose ground truth labels only some cells "
        "(annotation <code>partial</code>, e.g. CTC gold truth) has no AP: it is ranked by the "
        "CTC SEG, averaged per image, as its <i>score</i> column says. Best per dataset "
        "highlighted.</p>",
        _leaderboard(collected, datasets, models),
    ]
    for d in datasets:
        rs = [r for r in collected if r.dataset == d]
        n_images = rs[0].summary.get("n_images", 0) if rs else 0
        body += [
            f"<h2>Dataset <code>{html.escape(d)}</code> ({params.dataset(d).kind}, "
            f"{n_images} test images)</h2>",
            "<h3>Averaged per image</h3>"
            "<p class='note'>Each score computed per image, then averaged over images.</p>",
            _dataset_table(rs, "per_image_mean"),
            "<h3>Pooled over the dataset</h3>"
            "<p class='note'>Counts (TP, FP, FN, matched IoU, AJI and pixel sums) added over all "
            "fully annotated test images, then the ratio taken once; SEG over all reference "
            "objects, as the Cell Tracking Challenge computes it.</p>",
            _dataset_table(rs, "pooled"),
            "<h3>AP against IoU threshold (per-image mean)</h3>",
            ap_curve_svg(rs),
            _cell_type_table(rs),
            "<h3>Training and tuning</h3>",
            _training_table(rs),
            _size_table(rs),
            "<h3>Example predictions</h3>",
            _figures(rs, data / "converted" / d),
        ]
    body.append(
        "<h2>Definitions</h2><p class='note'>Predicted and true instances are matched one-to-one "
        "by IoU (unique for IoU &gt; 0.5). AP@t = TP/(TP+FP+FN) at IoU ≥ t; precision, recall and "
        "F1 likewise at t. PQ = sum of matched IoU / (TP + FP/2 + FN/2) at 0.5. AJI: Kumar et al. "
        "2017. SEG: Cell Tracking Challenge (a reference object matches the predicted object "
        "covering more than half of it; false positives ignored). Partially annotated images are "
        "scored with SEG only. Thresholds were tuned on each dataset's validation split; the "
        "test split was used only here.</p>"
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    return write_text(out, page)
