"""The HTML report: one self-contained page (inline CSS, SVG charts, PNG data URIs).

Modules: :mod:`~cellbench.report.collect` reads the results,
:mod:`~cellbench.report.stats` (bootstrap intervals, significance),
:mod:`~cellbench.report.tables`, :mod:`~cellbench.report.charts` (matplotlib SVG) and
:mod:`~cellbench.report.gallery` (TP / FP / FN outlines) turn them into tables,
charts and pictures, and :mod:`~cellbench.report.render` fills the jinja2 template
``templates/report.html.j2`` (autoescaped) and writes the page.

After the overview, when ``run:`` asks for them: learning curves (score against the
number of training images, per dataset, with intervals over test images and seeds) and
the cross-dataset generalisation matrix (a heat-map table per model). Sections per
dataset: the data (sizes, objects, split, licence, citation), a
leaderboard with bootstrap intervals (best highlighted only when significantly
ahead), precision and recall, scores against the IoU threshold, per cell type,
training curves, cost, and a gallery. Then definitions and provenance. It opens
offline in any browser.
"""

from __future__ import annotations

from cellbench.report.render import render_report

__all__ = ["render_report"]
