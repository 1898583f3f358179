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
    ``image_types`` (list, default all): keep only these image classes, e.g.
    ``[fluorescence]`` for the fluorescent subset.

Speed
    The 639 training images of the fixed stage1_train hold about 28,000 mask PNGs.
    Each image folder (image + its masks, merged into labels) is read in a pool of
    threads (PNG decoding releases the GIL), a chunk of folders at a time, and written
    in folder order, so the result does not depend on the number of threads
    (BENCHMARKS.md section 13).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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

#: image folders read at once by the conversion's thread pool (bounds memory)
_CHUNK = 32

#: threads reading image folders (None: the CPU count, at most 8)
WORKERS: int | None = None


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


def _read_mask(path: Path, shape: tuple[int, int], image_path: Path) -> np.ndarray:
    """One nucleus mask PNG -> ``(H, W)`` bool (nonzero = the nucleus).

    Read with PIL directly: masks are checked for their shape, not for everything
    :func:`cellbench.io.read_image` checks in an image (a third of the conversion
    time over 28,000 masks).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L") if im.mode in ("P", "1", "LA", "RGB", "RGBA") else im)
    except (OSError, ValueError) as exc:
        raise CellbenchIOError(
            f"{path}: cannot read this mask PNG ({exc}). Replace it with the original from "
            "stage1_train.zip."
        ) from None
    if mask.shape != shape:
        raise CellbenchIOError(
            f"{path}: mask shape {mask.shape} differs from the image {image_path} "
            f"{shape}. Every mask in masks/ must have its image's size; replace the "
            "file with the original from stage1_train.zip."
        )
    return mask > 0


@dataclass(frozen=True)
class _TrainImage:
    """One stage1_train folder, read: the image and its merged labels, or why it is skipped."""

    folder: Path
    image_path: Path
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    contested: int = 0
    skip: str | None = None


def _load_train(folder: Path, drop_alpha: bool) -> _TrainImage:
    image_id = folder.name
    image_path = folder / "images" / f"{image_id}.png"
    if not image_path.is_file():
        return _TrainImage(
            folder, image_path, skip=f"no image images/{image_id}.png in this folder"
        )
    image = _read_png(image_path, drop_alpha)
    h, w = image.shape[:2]
    masks = [_read_mask(m, (h, w), image_path) for m in sorted((folder / "masks").glob("*.png"))]
    labels, contested = masks_to_labels(masks, (h, w))
    return _TrainImage(folder, image_path, image, labels, contested)


def _read_in_threads(folders: list[Path], drop_alpha: bool) -> Iterator[_TrainImage]:
    """:func:`_load_train` of every folder, in folder order, read by a thread pool."""
    workers = WORKERS or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsb-convert") as pool:
        for start in range(0, len(folders), _CHUNK):
            yield from pool.map(_load_train, folders[start : start + _CHUNK], [drop_alpha] * _CHUNK)


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
        folders = sorted(p for p in train_dir.iterdir() if p.is_dir())
        for item in _read_in_threads(folders, opts.drop_alpha):
            self._add_train(item, writer)
        if opts.include_test:
            self._add_test(Path(raw_dir), writer, opts.drop_alpha)

    def _keep(self, image: np.ndarray) -> str | None:
        """The image's class, or None when ``image_types`` leaves it out."""
        kind = image_class(image)
        types = self.options.image_types
        return kind if types is None or kind in types else None

    def _add_train(self, item: _TrainImage, writer: ConvertedWriter) -> None:
        if item.skip is not None:
            writer.skip(item.folder, item.skip)
            return
        kind = self._keep(item.image)
        if kind is None:
            return
        writer.add(
            safe_image_id(item.folder.name),
            item.image,
            item.labels,
            cell_type=kind,
            group=item.folder.name,
            annotation="full",
            contested_pixels=item.contested,
            source="dsb2018 stage1_train",
            origin=item.image_path,
            label_origin=item.folder / "masks",
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
            kind = self._keep(image)
            if kind is None:
                continue
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
                cell_type=kind,
                group=image_id,
                annotation="full",
                official_split="test",
                contested_pixels=contested,
                source="dsb2018 stage1_test + stage1_solution.csv",
                origin=image_path,
                label_origin=f"{solution}, rows of ImageId {image_id}",
            )
