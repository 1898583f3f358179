"""Bring your own data: a folder of image + mask pairs (``kind: folder``, ``source: local``).

There is nothing to download: set ``source: local`` and ``path:`` to the folder.

Accepted layouts (``layout: auto`` picks the one that is present)
    ``cellpose``: image and mask side by side, named like Cellpose training data::

        <path>/[train/|test/]<name>_img.png   (or .tif/.tiff/.jpg/.jpeg)
        <path>/[train/|test/]<name>_masks.png (or .tif/.tiff)

    ``images_labels``: two folders with the same file stems::

        <path>/images/<name>.tif|png|jpg
        <path>/labels/<name>.tif|png      (``masks/`` is accepted too; a label file may
                                           also be called <name>_masks / _mask / _labels / _label)

Masks
    An integer image with one value per cell (0 = background) is kept as instances
    (renumbered ``1..N``). A mask with a single foreground value (binary) is split into
    connected components (8-connectivity). A colour mask (``(H, W, 3)`` / ``(H, W, 4)``)
    gets one instance per connected region of one colour (black = background). Images keep their dtype and channels.

Index columns
    ``cell_type`` from the ``cell_type`` option (default ``unknown``); ``group`` is the
    image name, or the first match group of ``group_regex`` applied to it (e.g.
    ``'^(plate\\d+)_'`` keeps plates together); images under a folder named ``test``
    get ``official_split = test``; ``annotation`` from the option (``full`` | ``partial``).

Options
    ``layout`` (``auto`` | ``cellpose`` | ``images_labels``), ``cell_type`` (str),
    ``annotation`` (``full`` | ``partial``), ``group_regex`` (str or null).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from skimage.measure import label as connected_components

from cellbench.datasets._common import find_dir, iter_files, log, relabel
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    safe_image_id,
)
from cellbench.io import read_image

__all__ = ["Folder", "mask_to_instances"]

IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MASK_EXTS = (".tif", ".tiff", ".png")
_MASK_SUFFIXES = ("_masks", "_mask", "_labels", "_label", "")


def mask_to_instances(mask: np.ndarray) -> np.ndarray:
    """Turn a user mask (instance ids, binary or colour-coded) into labels ``1..N``."""
    mask = np.squeeze(np.asarray(mask))
    if mask.ndim == 3:
        colours = mask[..., :3] if mask.shape[-1] == 4 else mask
        flat = colours.reshape(-1, colours.shape[-1])
        _, inverse = np.unique(flat, axis=0, return_inverse=True)
        ids = inverse.reshape(mask.shape[:2])
        background = ids[(colours == 0).all(axis=-1)]
        bg = int(background[0]) if background.size else -1
        out = ids + 1
        out[ids == bg] = 0
        return relabel(connected_components(out))
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W) or (H, W, C), got shape {mask.shape}")
    if mask.dtype == bool:
        return relabel(connected_components(mask))
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.all(np.mod(mask, 1) == 0):
            raise ValueError("mask holds non-integer values; save instance labels as integers")
        mask = mask.astype(np.int64)
    if mask.min() < 0:
        raise ValueError("mask holds negative values")
    values = np.unique(mask[mask > 0])
    if values.size == 1:
        return relabel(connected_components(mask > 0))
    return relabel(mask)


def _cellpose_pairs(root: Path) -> list[tuple[Path, Path, str]]:
    pairs = []
    for image in iter_files(root, "*_img.*"):
        if image.suffix.lower() not in IMAGE_EXTS:
            continue
        base = image.name[: -len("_img" + image.suffix)]
        mask = next(
            (
                image.with_name(f"{base}_masks{ext}")
                for ext in MASK_EXTS
                if image.with_name(f"{base}_masks{ext}").is_file()
            ),
            None,
        )
        if mask is None:
            log.warning("folder: %s has no %s_masks.* next to it; skipped", image, base)
            continue
        name = image.relative_to(root).with_name(base).as_posix()
        pairs.append((image, mask, name))
    return pairs


def _folder_pairs(root: Path) -> list[tuple[Path, Path, str]]:
    image_dir = find_dir(root, "images", max_depth=2)
    label_dir = find_dir(root, "labels", max_depth=2) or find_dir(root, "masks", max_depth=2)
    if image_dir is None or label_dir is None:
        return []
    labels = {}
    for path in iter_files(label_dir, "*"):
        if path.suffix.lower() in MASK_EXTS:
            labels[path.relative_to(label_dir).with_suffix("").as_posix()] = path
    pairs = []
    for image in iter_files(image_dir, "*"):
        if image.suffix.lower() not in IMAGE_EXTS:
            continue
        key = image.relative_to(image_dir).with_suffix("").as_posix()
        mask = next((labels[key + s] for s in _MASK_SUFFIXES if key + s in labels), None)
        if mask is None:
            log.warning("folder: no label file for %s in %s; skipped", image.name, label_dir)
            continue
        pairs.append((image, mask, key))
    return pairs


class Folder(DatasetSource):
    """The user's own annotated images (Cellpose-style pairs or images/ + labels/)."""

    kind = "folder"

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Pair images with masks and write them in the common format."""
        opts = self.options
        layout = opts.layout
        if layout not in ("auto", "cellpose", "images_labels"):
            raise ValueError(
                f"datasets.{self.cfg.name}.options.layout must be auto, cellpose or "
                f"images_labels, got {layout!r}"
            )
        if opts.annotation not in ("full", "partial"):
            raise ValueError(f"datasets.{self.cfg.name}.options.annotation must be full or partial")
        group_re = re.compile(opts.group_regex) if opts.group_regex else None
        root = Path(raw_dir)
        pairs = []
        if layout in ("auto", "cellpose"):
            pairs = _cellpose_pairs(root)
        if not pairs and layout in ("auto", "images_labels"):
            pairs = _folder_pairs(root)
        if not pairs:
            raise FileNotFoundError(
                f"{root}: no image/mask pairs found. Put <name>_img.png next to "
                "<name>_masks.png (Cellpose style), or images/<name>.tif with labels/<name>.tif."
            )
        used: set[str] = set()
        for image_path, mask_path, name in pairs:
            rel = image_path.relative_to(root)
            image_id = safe_image_id(name)
            if image_id in used:
                raise ValueError(f"{image_path}: two images map to the id '{image_id}'; rename one")
            used.add(image_id)
            image = read_image(image_path)
            labels = mask_to_instances(read_image(mask_path))
            if labels.shape != image.shape[:2]:
                raise ValueError(
                    f"{mask_path}: mask shape {labels.shape} differs from image {image.shape[:2]}"
                )
            group = image_id
            if group_re is not None:
                match = group_re.search(Path(name).name)
                if match:
                    group = match.group(1) if match.groups() else match.group(0)
            is_test = any(p.lower() == "test" for p in rel.parts[:-1])
            writer.add(
                image_id,
                image,
                labels,
                cell_type=str(opts.cell_type),
                group=group,
                annotation=opts.annotation,
                official_split="test" if is_test else "",
                source=f"folder {root.name}",
            )
