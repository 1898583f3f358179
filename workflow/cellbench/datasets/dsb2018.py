"""Kaggle Data Science Bowl 2018 nuclei (= BBBC038), training set and stage-1 test set.

Download
    Kaggle competition ``data-science-bowl-2018``
    (https://www.kaggle.com/competitions/data-science-bowl-2018/data), through the
    official ``kaggle`` client: needs a Kaggle API token and the competition rules
    accepted once at https://www.kaggle.com/competitions/data-science-bowl-2018/rules.
    The bundle holds one ZIP per file, which are unpacked in place.
    (The same files are mirrored at https://bbbc.broadinstitute.org/BBBC038; put them in
    a folder and use ``source: local`` to read them from there.)

Original layout
    ::

        stage1_train/<ImageId>/images/<ImageId>.png   RGBA PNG, alpha always 255
        stage1_train/<ImageId>/masks/<maskId>.png     one nucleus per 8-bit PNG, {0, 255}
        stage1_test/<ImageId>/images/<ImageId>.png    RGB or RGBA PNG
        stage1_solution.csv                           ImageId,EncodedPixels,Height,Width,Usage

    ``EncodedPixels`` is Kaggle RLE, 1-indexed and **column-major**; one row per nucleus.

Conversion
    - Image: the constant alpha channel is dropped (``drop_alpha``), giving ``(H, W, 3)``.
    - Labels: one instance per mask PNG / solution row, merged with
      :func:`~cellbench.datasets.base.masks_to_labels` (smallest instance wins a
      contested pixel; none in the original files, but counted if present).
    - ``cell_type``: DSB has no per-image cell type, so an image class is derived:
      ``stained`` (colour image), ``brightfield`` (grey, bright background) or
      ``fluorescence`` (grey, dark background). It stratifies the split.
    - ``group`` = the ImageId; ``official_split = test`` for stage-1 test images, whose
      labels come from ``stage1_solution.csv`` (the official stage-1 answer key).

Options
    ``include_test`` (bool, default true): convert ``stage1_test`` with its solution.
    ``drop_alpha`` (bool, default true): drop the alpha channel of RGBA images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellbench.datasets._common import find_dir, find_file
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    masks_to_labels,
    safe_image_id,
)
from cellbench.datasets.download import (
    cache_dir,
    extract_nested_zips,
    kaggle_download,
    safe_extract,
)
from cellbench.datasets.rle import RLEError, rle_decode_indices
from cellbench.io import CellbenchIOError, read_image

__all__ = ["DSB2018", "image_class"]

COMPETITION = "data-science-bowl-2018"


def image_class(image: np.ndarray) -> str:
    """``stained`` for colour images, else ``brightfield`` or ``fluorescence`` by background."""
    if image.ndim == 3 and image.shape[2] >= 3:
        rgb = image[..., :3]
        if not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
        ):
            return "stained"
        grey = rgb[..., 0]
    else:
        grey = image
    top = np.iinfo(grey.dtype).max if np.issubdtype(grey.dtype, np.integer) else 1.0
    return "brightfield" if float(np.median(grey)) > top / 2 else "fluorescence"


def _read_png(path: Path, drop_alpha: bool) -> np.ndarray:
    image = read_image(path)
    if drop_alpha and image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image)


class DSB2018(DatasetSource):
    """Kaggle Data Science Bowl 2018 (stage-1 train + stage-1 test with its solution)."""

    kind = "dsb2018"

    def download(self, raw_dir: Path) -> None:
        """Fetch the competition bundle with the Kaggle client and unpack it into ``raw_dir``."""
        bundle = kaggle_download(COMPETITION, cache_dir(raw_dir) / COMPETITION)
        safe_extract(bundle, raw_dir)
        extract_nested_zips(Path(raw_dir))

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Convert ``stage1_train`` (mask PNGs) and ``stage1_test`` (solution RLE)."""
        opts = self.options
        train_dir = find_dir(raw_dir, "stage1_train")
        if train_dir is None:
            raise FileNotFoundError(
                f"{raw_dir}: no 'stage1_train' folder. Expected the Kaggle DSB 2018 layout "
                "stage1_train/<ImageId>/images/<ImageId>.png + masks/*.png."
            )
        for folder in sorted(p for p in train_dir.iterdir() if p.is_dir()):
            self._add_train(folder, writer, opts.drop_alpha)
        if opts.include_test:
            self._add_test(Path(raw_dir), writer, opts.drop_alpha)

    def _add_train(self, folder: Path, writer: ConvertedWriter, drop_alpha: bool) -> None:
        image_id = folder.name
        image_path = folder / "images" / f"{image_id}.png"
        if not image_path.is_file():
            writer.skip(folder, f"no image images/{image_id}.png in this folder")
            return
        image = _read_png(image_path, drop_alpha)
        h, w = image.shape[:2]
        masks = []
        for mask_path in sorted((folder / "masks").glob("*.png")):
            mask = read_image(mask_path)
            if mask.ndim == 3:
                mask = mask[..., 0]
            if mask.shape != (h, w):
                raise CellbenchIOError(
                    f"{mask_path}: mask shape {mask.shape} differs from the image {image_path} "
                    f"{(h, w)}. Every mask in masks/ must have its image's size; replace the "
                    "file with the original from stage1_train.zip."
                )
            masks.append(mask > 0)
        labels, contested = masks_to_labels(masks, (h, w))
        writer.add(
            safe_image_id(image_id),
            image,
            labels,
            cell_type=image_class(image),
            group=image_id,
            annotation="full",
            contested_pixels=contested,
            source="dsb2018 stage1_train",
            origin=image_path,
            label_origin=folder / "masks",
        )

    def _add_test(self, raw_dir: Path, writer: ConvertedWriter, drop_alpha: bool) -> None:
        test_dir = find_dir(raw_dir, "stage1_test")
        solution = find_file(raw_dir, "stage1_solution.csv")
        if test_dir is None or solution is None:
            missing = "stage1_test/" if test_dir is None else "stage1_solution.csv"
            raise FileNotFoundError(
                f"{raw_dir}: {missing} not found, which the official DSB test split needs. "
                "Add it (Kaggle: stage1_test.zip and stage1_solution.csv.zip), or set "
                f"'include_test: false' under datasets.{self.cfg.name}.options."
            )
        table = pd.read_csv(solution, dtype={"ImageId": str, "EncodedPixels": str})
        rows_by_id = {key: rows for key, rows in table.groupby("ImageId", sort=True)}
        folders = sorted(p for p in test_dir.iterdir() if p.is_dir())
        for image_id in sorted(set(rows_by_id) - {f.name for f in folders}):
            writer.skip(
                solution,
                f"{len(rows_by_id[image_id])} row(s) of ImageId {image_id}, which has no folder "
                f"in {test_dir}",
            )
        for folder in folders:
            image_id = folder.name
            rows = rows_by_id.get(image_id)
            if rows is None:
                writer.skip(folder, f"no rows for this ImageId in {solution}")
                continue
            image_path = folder / "images" / f"{image_id}.png"
            image = _read_png(image_path, drop_alpha)
            h, w = image.shape[:2]
            sh, sw = int(rows["Height"].iloc[0]), int(rows["Width"].iloc[0])
            if (sh, sw) != (h, w):
                raise CellbenchIOError(
                    f"{solution}: ImageId {image_id} is {sh}x{sw} there, but {image_path} is "
                    f"{h}x{w}. Use the stage1_solution.csv released with stage1_test.zip."
                )
            masks = []
            for row, rle in rows["EncodedPixels"].fillna("").items():
                try:
                    masks.append(rle_decode_indices(rle, (h, w), order="F"))
                except RLEError as exc:
                    raise CellbenchIOError(
                        f"{solution}: line {int(row) + 2} (ImageId {image_id}): {exc}. Replace "
                        "the file with the original stage1_solution.csv."
                    ) from None
            labels, contested = masks_to_labels(masks, (h, w))
            writer.add(
                safe_image_id(image_id),
                image,
                labels,
                cell_type=image_class(image),
                group=image_id,
                annotation="full",
                official_split="test",
                contested_pixels=contested,
                source="dsb2018 stage1_test + stage1_solution.csv",
                origin=image_path,
                label_origin=f"{solution}, rows of ImageId {image_id}",
            )
