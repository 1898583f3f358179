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

Unpaired files
    An image without a mask, or a mask / label file without an image of the same name,
    is left out with a warning naming it (and counted as skipped in the conversion).

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

from cellbench.datasets._common import LABEL_FIX, find_dir, iter_files, relabel
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    Origin,
    safe_image_id,
)
from cellbench.io import CellbenchIOError, read_image

__all__ = ["Folder", "mask_to_instances"]

IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MASK_EXTS = (".tif", ".tiff", ".png")
_MASK_SUFFIXES = ("_masks", "_mask", "_labels", "_label", "")


def mask_to_instances(mask: np.ndarray, origin: Origin = None) -> np.ndarray:
    """Turn a user mask (instance ids, binary or colour-coded) into labels ``1..N``.

    Parameters
    ----------
    mask : ``(H, W)`` integer ids, a binary mask, or ``(H, W, 3|4)`` colour regions.
    origin : the mask's file, named in error messages.

    Raises
    ------
    cellbench.io.CellbenchIOError
        A mask of another shape, or with non-integer, non-finite or negative values;
        the message names ``origin`` and the fix.
    """
    where = str(origin) if origin else "mask"
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
        raise CellbenchIOError(
            f"{where}: a mask must be (H, W) or (H, W, C), got shape {mask.shape}. {LABEL_FIX}"
        )
    if mask.dtype == bool:
        return relabel(connected_components(mask))
    if not np.issubdtype(mask.dtype, np.integer):
        if mask.dtype.kind not in "f":
            raise CellbenchIOError(f"{where}: mask values are {mask.dtype}. {LABEL_FIX}")
        if not np.isfinite(mask).all():
            raise CellbenchIOError(f"{where}: mask holds NaN or infinite values. {LABEL_FIX}")
        if not np.all(np.mod(mask, 1) == 0):
            raise CellbenchIOError(
                f"{where}: mask holds non-integer values (e.g. {_first_fraction(mask)}), so "
                f"they cannot be cell ids. {LABEL_FIX}"
            )
        mask = mask.astype(np.int64)
    if mask.size and mask.min() < 0:
        raise CellbenchIOError(
            f"{where}: mask holds negative values (minimum {int(mask.min())}). {LABEL_FIX}"
        )
    values = np.unique(mask[mask > 0])
    if values.size == 1:
        return relabel(connected_components(mask > 0))
    return relabel(mask)


def _first_fraction(mask: np.ndarray) -> float:
    values = mask[np.mod(mask, 1) != 0]
    return float(values.flat[0])


Skipped = list[tuple[Path, str]]


def _cellpose_pairs(root: Path) -> tuple[list[tuple[Path, Path, str]], Skipped]:
    pairs, skipped = [], []
    used_masks = set()
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
            skipped.append((image, f"no mask {base}_masks.png/.tif next to it"))
            continue
        used_masks.add(mask)
        name = image.relative_to(root).with_name(base).as_posix()
        pairs.append((image, mask, name))
    if pairs:
        for mask in iter_files(root, "*_masks.*"):
            if mask.suffix.lower() in MASK_EXTS and mask not in used_masks:
                base = mask.name[: -len("_masks" + mask.suffix)]
                skipped.append((mask, f"mask with no image {base}_img.* next to it"))
    return pairs, skipped


def _folder_pairs(root: Path) -> tuple[list[tuple[Path, Path, str]], Skipped]:
    image_dir = find_dir(root, "images", max_depth=2)
    label_dir = find_dir(root, "labels", max_depth=2) or find_dir(root, "masks", max_depth=2)
    if image_dir is None or label_dir is None:
        return [], []
    labels = {}
    for path in iter_files(label_dir, "*"):
        if path.suffix.lower() in MASK_EXTS:
            labels[path.relative_to(label_dir).with_suffix("").as_posix()] = path
    pairs, skipped = [], []
    used = set()
    for image in iter_files(image_dir, "*"):
        if image.suffix.lower() not in IMAGE_EXTS:
            continue
        key = image.relative_to(image_dir).with_suffix("").as_posix()
        match = next((key + s for s in _MASK_SUFFIXES if key + s in labels), None)
        if match is None:
            skipped.append((image, f"no label file {key}.tif/.png in {label_dir}"))
            continue
        used.add(match)
        pairs.append((image, labels[match], key))
    for key, path in sorted(labels.items()):
        if key not in used:
            skipped.append((path, f"label file with no image of the same name in {image_dir}"))
    return pairs, skipped


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
        pairs: list[tuple[Path, Path, str]] = []
        skipped: Skipped = []
        if layout in ("auto", "cellpose"):
            pairs, skipped = _cellpose_pairs(root)
        if not pairs and layout in ("auto", "images_labels"):
            folder_pairs, folder_skipped = _folder_pairs(root)
            if folder_pairs or folder_skipped:
                pairs, skipped = folder_pairs, folder_skipped
        for path, reason in skipped:
            writer.skip(path, reason)
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
            labels = mask_to_instances(read_image(mask_path), mask_path)
            if labels.shape != image.shape[:2]:
                raise CellbenchIOError(
                    f"{mask_path}: mask shape {labels.shape} differs from the image "
                    f"{image_path.name} {image.shape[:2]}. Check that the mask belongs to this "
                    "image (same name, same size)."
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
                origin=image_path,
                label_origin=mask_path,
            )
