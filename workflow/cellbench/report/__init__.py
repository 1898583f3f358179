"""The HTML report: one self-contained page (inline CSS, SVG charts, PNG data URIs).

Sections: a leaderboard matrix (dataset x model, mean AP, winner marked), one
detailed table per dataset (AP at several IoU thresholds, precision / recall /
F1, PQ, AJI, SEG, per-image mean and pooled), an AP-vs-IoU chart, per-cell-type
breakdown, training facts, and per model an overlay picture of image, ground
truth and prediction on the same test image. It opens offline in any browser.
"""

from __future__ import annotations

from cellbench.report.render import render_report

__all__ = ["render_report"]
