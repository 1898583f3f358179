"""Dataset x model combinations that do not apply, skipped with a reason instead of failing.

A family that reads time windows (``lstm_unet``, ``needs_time``) has nothing to learn
from a dataset without time (no sequence of two or more frames). Snakemake has built
the job graph before the data is converted, so the combination cannot be left out
up front; instead every stage writes its folder holding only ``SKIPPED.json``
(``dataset``, ``model``, ``family``, ``reason``), each later stage passes it on, the
score stage writes an empty score table, and the report lists the combination as
skipped with its reason. The reason is also logged as a warning by each stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cellbench.io import atomic_dir, read_json, write_json

__all__ = ["SKIPPED_JSON", "read_skipped", "skip_reason", "write_skipped"]

log = logging.getLogger(__name__)

#: the file that marks a stage's output folder as skipped
SKIPPED_JSON = "SKIPPED.json"


def skip_reason(family, converted: Path, dataset: str) -> str | None:
    """Why ``family`` cannot run on the converted dataset, or None when it can."""
    if not getattr(family, "needs_time", False):
        return None
    from cellbench.datasets.base import read_index
    from cellbench.sequences import has_time

    if has_time(read_index(converted)):
        return None
    return (
        f"dataset '{dataset}' has no time (no sequence with two or more frames in "
        f"{Path(converted) / 'index.csv'}); model '{family.name}' ({family.family}) reads "
        "windows of consecutive frames, so it is skipped on this dataset"
    )


def write_skipped(out_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``out_dir`` (atomically) holding only ``SKIPPED.json``; log the reason."""
    log.warning("skipped: %s", record["reason"])
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / SKIPPED_JSON, record)
    return record


def read_skipped(folder: Path | None) -> dict[str, Any] | None:
    """The skip record of a stage's output folder, or None when it is not skipped."""
    if folder is None:
        return None
    path = Path(folder) / SKIPPED_JSON
    return read_json(path) if path.is_file() else None
