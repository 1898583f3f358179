"""Exports: instance masks and trained models in the formats other tools read.

- :mod:`cellbench.export.outlines`: exact pixel-edge outlines of labels (pure).
- :mod:`cellbench.export.formats`: labels -> ImageJ ROIs, GeoJSON, measurements,
  Kaggle run-length rows (pure).
- :mod:`cellbench.export.ctc`: masks -> Cell Tracking Challenge result files (pure plan).
- :mod:`cellbench.export.writers`: the ``cellbench export`` stage (file I/O).
- :mod:`cellbench.export.bioimageio`: a trained model folder -> bioimage.io model
  package, and the choice of the best model of a dataset.

``docs/exports.md`` describes every format, what was checked and what is left out.
"""

from __future__ import annotations

__all__ = ["FORMATS"]

#: ``cellbench export --format`` choices (kept here so the CLI imports nothing heavy).
FORMATS = ("labels", "roi", "geojson", "measurements", "kaggle-dsb2018", "kaggle-sartorius", "ctc")
