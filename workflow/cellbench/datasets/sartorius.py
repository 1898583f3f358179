"""Kaggle Sartorius Cell Instance Segmentation 2021 (neuronal cells, phase contrast).

Download
    Kaggle competition ``sartorius-cell-instance-segmentation``
    (https://www.kaggle.com/competitions/sartorius-cell-instance-segmentation/data),
    through the official ``kaggle`` client: needs a Kaggle API token and the rules
    accepted once at
    https://www.kaggle.com/competitions/sartorius-cell-instance-segmentation/rules.

Original layout
    ::

        train.csv      one row per cell: id, annotation, width, height, cell_type,
                       plate_time, sample_date, sample_id, elapsed_timedelta
        train/<id>.png 8-bit phase-contrast image, 520 x 704
        test/ train_semi_supervised/ LIVECell_dataset_2021/   (not used here)

    ``annotation`` is Kaggle RLE, 1-indexed. Its pixel order is **row-major** (runs go
    along image rows, as the competition's own decoding ``mask.reshape((520, 704))``
    does), unlike DSB 2018; the ``rle_order`` option can switch it. Cells of one image
    **overlap** (a pixel may be in several rows).

Conversion
    - Labels: all rows of an image merged with
      :func:`~cellbench.datasets.base.masks_to_labels` (a contested pixel goes to the
      smallest cell); the number of contested pixels is stored per image.
    - ``cell_type`` = the ``cell_type`` column (``shsy5y``, ``astro``, ``cort``);
      ``group`` = ``sample_id`` (never split across train and test).
    - The timing columns (``plate_time``, ``sample_date``, ``elapsed_timedelta``) and
      ``sample_id`` are kept per image in ``source_metadata.csv`` next to ``index.csv``.

Options
    ``rle_order`` (``row`` | ``column``, default ``row``): pixel order of the RLE.
    ``cell_types`` (list or null): keep only these cell types.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellbench.datasets._common import find_file
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    masks_to_labels,
    safe_image_id,
)
from cellbench.datasets.download import cache_dir, kaggle_download, safe_extract
from cellbench.datasets.rle import RLEError, rle_decode_indices
from cellbench.io import CellbenchIOError, read_image, write_csv

__all__ = ["Sartorius"]

COMPETITION = "sartorius-cell-instance-segmentation"
_REQUIRED = ("id", "annotation", "width", "height", "cell_type")
_METADATA = ("sample_id", "plate_time", "sample_date", "elapsed_timedelta")


class Sartorius(DatasetSource):
    """Kaggle Sartorius 2021: ``train.csv`` RLE (overlapping cells) + ``train/*.png``."""

    kind = "sartorius"

    def download(self, raw_dir: Path) -> None:
        """Fetch the competition bundle with the Kaggle client and unpack it into ``raw_dir``."""
        bundle = kaggle_download(COMPETITION, cache_dir(raw_dir) / COMPETITION)
        safe_extract(bundle, raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Decode ``train.csv`` per image and write image + merged labels."""
        opts = self.options
        if opts.rle_order not in ("row", "column"):
            raise ValueError(
                f"datasets.{self.cfg.name}.options.rle_order must be 'row' or 'column', "
                f"got {opts.rle_order!r}"
            )
        order = "C" if opts.rle_order == "row" else "F"
        csv_path = find_file(raw_dir, "train.csv")
        if csv_path is None:
            raise FileNotFoundError(
                f"{raw_dir}: no train.csv. Expected the Kaggle Sartorius layout train.csv + train/*.png."
            )
        image_dir = csv_path.parent / "train"
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        missing = [c for c in _REQUIRED if c not in table.columns]
        if missing:
            raise ValueError(
                f"{csv_path}: missing column(s) {missing}; found {list(table.columns)}"
            )
        if image_dir.is_dir():
            listed = set(table["id"])
            for png in sorted(image_dir.glob("*.png")):
                if png.stem not in listed:
                    writer.skip(png, f"image with no rows in {csv_path}")
        if opts.cell_types:
            table = table[table["cell_type"].isin(list(opts.cell_types))]
        metadata = []
        for image_id, rows in table.groupby("id", sort=True):
            path = image_dir / f"{image_id}.png"
            if not path.is_file():
                writer.skip(
                    csv_path, f"{len(rows)} row(s) of image {image_id}, but {path} is missing"
                )
                continue
            image = read_image(path)
            h, w = int(rows["height"].iloc[0]), int(rows["width"].iloc[0])
            if image.shape[:2] != (h, w):
                raise CellbenchIOError(
                    f"{path}: image is {image.shape[:2]}, but {csv_path} says height={h} "
                    f"width={w} for it. Use the original train.csv and train/ of the same "
                    "competition download."
                )
            masks = []
            for row, rle in rows["annotation"].items():
                if not rle.strip():
                    continue
                try:
                    masks.append(rle_decode_indices(rle, (h, w), order=order))
                except RLEError as exc:
                    raise CellbenchIOError(
                        f"{csv_path}: line {int(row) + 2} (image {image_id}): {exc}. Replace the "
                        "file with the original train.csv; if the runs go down columns instead "
                        f"of along rows, set 'rle_order: column' under datasets.{self.cfg.name}"
                        ".options."
                    ) from None
            labels, contested = masks_to_labels(masks, (h, w))
            sample = rows["sample_id"].iloc[0] if "sample_id" in rows else ""
            out_id = safe_image_id(image_id)
            writer.add(
                out_id,
                image,
                labels,
                cell_type=rows["cell_type"].iloc[0] or "unknown",
                group=sample or image_id,
                annotation="full",
                contested_pixels=contested,
                source="sartorius train.csv",
                origin=path,
                label_origin=f"{csv_path}, rows of image {image_id}",
            )
            metadata.append(
                {"id": out_id, **{c: rows[c].iloc[0] if c in rows else "" for c in _METADATA}}
            )
        if metadata:
            write_csv(writer.out_dir / "source_metadata.csv", pd.DataFrame(metadata))
