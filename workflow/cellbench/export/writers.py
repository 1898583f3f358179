"""The export stage: a folder of instance masks -> files other tools open.

Stage code (file I/O); the conversions are the pure functions of
:mod:`cellbench.export.formats` and :mod:`cellbench.export.ctc`.

Input: a folder of label TIFFs, ``{id}.tif`` (``results/masks/{dataset}/{model}/``,
or ``{stem}_masks.tif`` written by ``cellbench segment``; the image id is the file
name without ``.tif``, and without ``_masks`` for ``segment``'s files). Output: one
folder per export, written atomically (all or nothing) and never over an existing
non-empty path, holding the format's files and ``export.json`` (format, source,
counts, per-image object counts). Layout per format:

==================  ==========================================================
``labels``          ``{id}.tif``: uint16 ImageJ TIFF (uint32 TIFF above 65535 labels)
``roi``             ``{id}.zip``: ImageJ / Fiji ROI set (no zip for an image
                    without objects; those are listed in ``export.json``)
``geojson``         ``{id}.geojson``: QuPath detections with measurements
``measurements``    ``measurements.csv``: one row per object of every image
``kaggle-dsb2018``  ``submission.csv``: ``ImageId,EncodedPixels``
``kaggle-sartorius`` ``submission.csv``: ``id,predicted``
``ctc``             ``{cell_type}/{sequence}_RES/maskTTT.tif`` (uint16)
==================  ==========================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellbench.export import FORMATS
from cellbench.export.ctc import plan_ctc
from cellbench.export.formats import (
    KAGGLE_FORMATS,
    kaggle_rows,
    labels_to_geojson,
    labels_to_rois,
    measure,
)
from cellbench.io import CellbenchIOError, atomic_dir, read_image, read_labels, write_json

__all__ = ["FORMATS", "ExportResult", "export_masks", "find_masks", "write_label_tiff"]

log = logging.getLogger(__name__)


_MASK_SUFFIX = "_masks"  # cellbench segment's output names: {stem}_masks.tif
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes
    ----------
    out : the export folder.
    fmt : the format name.
    n_images, n_objects : masks read and objects in them.
    n_files : files written (besides ``export.json``).
    notes : remarks for the user (images without objects, frames missing, ...).
    """

    out: Path
    fmt: str
    n_images: int
    n_objects: int
    n_files: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.fmt}: {self.n_images} images, {self.n_objects} objects, "
            f"{self.n_files} files in {self.out}"
        )
        return "; ".join([text, *self.notes])


def find_masks(masks_dir: Path) -> dict[str, Path]:
    """``{image id: mask file}`` for every ``*.tif`` / ``*.tiff`` in ``masks_dir``, by id.

    Raises
    ------
    CellbenchIOError
        The folder is missing or holds no TIFF, or two files give the same id.
    """
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise CellbenchIOError(
            f"{masks_dir}: no such folder. --masks takes a folder of label TIFFs, e.g. "
            "results/masks/{dataset}/{model} (written by the postprocess stage) or the --out "
            "folder of cellbench segment."
        )
    files = sorted(p for p in masks_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise CellbenchIOError(
            f"{masks_dir}: holds no .tif label files. Run the postprocess stage (or cellbench "
            "segment) first, or point --masks at the folder that holds the masks."
        )
    masks: dict[str, Path] = {}
    for path in files:
        image_id = path.stem
        if image_id.endswith(_MASK_SUFFIX) and len(image_id) > len(_MASK_SUFFIX):
            image_id = image_id[: -len(_MASK_SUFFIX)]
        if image_id in masks:
            raise CellbenchIOError(
                f"{masks[image_id]} and {path} are both masks of image '{image_id}'. Keep one "
                "of them in the masks folder."
            )
        masks[image_id] = path
    return dict(sorted(masks.items()))


def _check_out(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise CellbenchIOError(
            f"{out}: exists and is not a folder; an export is a folder. Nothing was written. "
            "Choose another --out, or move that file away."
        )
    if out.is_dir() and any(out.iterdir()):
        raise CellbenchIOError(
            f"{out}: exists and is not empty; an export never replaces files. Nothing was "
            f"written. Choose another --out, or delete the old export first (rm -r {out})."
        )


def _find_image(images: Path, image_id: str) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        candidate = images / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise CellbenchIOError(
        f"{images}: no image for mask '{image_id}' ({image_id}.tif, .tiff, .png, .jpg or "
        ".jpeg). --images takes the folder of the images the masks were made from, e.g. "
        "data/converted/{dataset}/images."
    )


def _read_image(images: Path | None, image_id: str, shape: tuple[int, int]) -> np.ndarray | None:
    if images is None:
        return None
    path = _find_image(images, image_id)
    image = read_image(path)
    if image.shape[:2] != shape:
        raise CellbenchIOError(
            f"{path}: image is {image.shape[:2]} but its mask is {shape}. --images must be the "
            "images the masks were made from."
        )
    return image


def _read_index(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CellbenchIOError(
            f"{path}: no such file (--index). Pass the dataset's index.csv, e.g. "
            "data/converted/{dataset}/index.csv (written by the convert stage)."
        )
    text_columns = ("id", "cell_type", "group", "sequence", "source", "annotation")
    index = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str), keep_default_na=False)
    needed = {"id", "height", "width", "cell_type", "sequence", "frame"} - set(index.columns)
    if needed:
        raise CellbenchIOError(
            f"{path}: no column {', '.join(sorted(needed))}; this is not a cellbench index.csv. "
            "Pass data/converted/{dataset}/index.csv (re-run the convert stage if it is old)."
        )
    return index


def write_label_tiff(path: Path, labels: np.ndarray) -> None:
    """uint16 ImageJ hyperstack TIFF (Fiji opens it as 16-bit), uint32 when ids exceed 65535."""
    import tifffile

    if int(labels.max(initial=0)) < 2**16:
        tifffile.imwrite(
            path, labels.astype(np.uint16), imagej=True, metadata={"axes": "YX"}, compression="zlib"
        )
    else:  # ImageJ has no 32-bit integer type: a plain TIFF that napari and Python read
        tifffile.imwrite(path, labels.astype(np.uint32), compression="zlib")


def export_masks(
    masks_dir: Path,
    fmt: str,
    out: Path,
    *,
    images: Path | None = None,
    index: Path | None = None,
    fill_gaps: bool = False,
) -> ExportResult:
    """Export every mask of a folder in one format.

    Parameters
    ----------
    masks_dir : pathlib.Path
        Folder of ``(H, W)`` label TIFFs (0 = background); see :func:`find_masks`.
    fmt : str
        One of :data:`FORMATS`.
    out : pathlib.Path
        The export folder; must not exist or be empty. Written atomically.
    images : pathlib.Path, optional
        Folder of the images (``{id}.tif``, ...): adds mean intensity per channel to
        ``measurements`` and to the ``geojson`` measurements. Not read otherwise.
    index : pathlib.Path, optional
        The dataset's ``index.csv`` (sequence and frame of every image); required
        by ``ctc``.
    fill_gaps : bool
        ``ctc`` only: write empty masks for the frames of a sequence that have no
        mask (see :func:`cellbench.export.ctc.plan_ctc`).

    Returns
    -------
    ExportResult

    Raises
    ------
    CellbenchIOError
        Unknown format, ``out`` not empty, unreadable masks or images, ``ctc``
        without ``index`` or with images that are not frames of a sequence.
    """
    if fmt not in FORMATS:
        raise CellbenchIOError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    images = None if images is None else Path(images)
    if images is not None and not images.is_dir():
        raise CellbenchIOError(f"{images}: no such folder (--images).")
    masks = find_masks(Path(masks_dir))
    _check_out(out)
    plan = None
    if fmt == "ctc":
        if index is None:
            raise CellbenchIOError(
                "the ctc format needs the dataset's index.csv for the sequence and frame of "
                "every mask: add --index data/converted/{dataset}/index.csv"
            )
        plan = plan_ctc(_read_index(Path(index)), list(masks), fill_gaps=fill_gaps)

    counts: dict[str, int] = {}
    notes: list[str] = []
    n_files = 0
    with atomic_dir(out) as tmp:
        tables: list[pd.DataFrame] = []
        rows: list[dict[str, str]] = []
        for image_id, path in masks.items():
            labels = read_labels(path)
            counts[image_id] = int(np.unique(labels[labels > 0]).size)
            if fmt == "labels":
                write_label_tiff(tmp / f"{image_id}.tif", labels)
                n_files += 1
            elif fmt == "roi":
                rois = labels_to_rois(labels)
                if rois:
                    import roifile

                    roifile.roiwrite(tmp / f"{image_id}.zip", rois, mode="w")
                    n_files += 1
            elif fmt == "geojson":
                image = _read_image(images, image_id, labels.shape)
                table = measure(labels, image, image_id=image_id)
                collection = labels_to_geojson(labels, image_id=image_id, measurements=table)
                write_json(tmp / f"{image_id}.geojson", collection)
                n_files += 1
            elif fmt == "measurements":
                image = _read_image(images, image_id, labels.shape)
                tables.append(measure(labels, image, image_id=image_id))
            elif fmt in KAGGLE_FORMATS:
                rows += kaggle_rows(labels, image_id, KAGGLE_FORMATS[fmt])
        if fmt == "measurements":
            frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
            frame.to_csv(tmp / "measurements.csv", index=False)
            n_files += 1
        elif fmt in KAGGLE_FORMATS:
            columns = KAGGLE_FORMATS[fmt].columns
            pd.DataFrame(rows, columns=columns).to_csv(tmp / "submission.csv", index=False)
            n_files += 1
        elif plan is not None:
            n_files += _write_ctc(tmp, plan, masks)
            notes += _ctc_notes(plan, fill_gaps)
        empty = sorted(i for i, n in counts.items() if n == 0)
        if empty and fmt == "roi":
            notes.append(f"{len(empty)} images without objects have no ROI zip")
        manifest: dict[str, Any] = {
            "format": fmt,
            "masks": str(masks_dir),
            "images": None if images is None else str(images),
            "index": None if index is None else str(index),
            "n_images": len(masks),
            "n_objects": int(sum(counts.values())),
            "images_without_objects": empty,
            "objects_per_image": counts,
        }
        if plan is not None:
            manifest["ctc_missing_frames"] = plan.missing
            manifest["ctc_gaps_filled"] = bool(fill_gaps)
        write_json(tmp / "export.json", _with_version(manifest))
    return ExportResult(out, fmt, len(masks), int(sum(counts.values())), n_files, notes)


def _write_ctc(tmp: Path, plan, masks: dict[str, Path]) -> int:
    import tifffile

    for frame in plan.frames:
        target = tmp / frame.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if frame.image_id is None:
            labels = np.zeros(frame.shape, dtype=np.uint16)
        else:
            labels = read_labels(masks[frame.image_id])
            if int(labels.max(initial=0)) >= 2**16:
                raise CellbenchIOError(
                    f"{masks[frame.image_id]}: label ids up to {int(labels.max())} do not fit "
                    "the CTC's uint16 masks. Renumber the objects 1..N "
                    "(skimage.segmentation.relabel_sequential) first."
                )
        tifffile.imwrite(target, labels.astype(np.uint16))  # uncompressed: every CTC tool reads it
    return len(plan.frames)


def _ctc_notes(plan, fill_gaps: bool) -> list[str]:
    if not plan.missing:
        return []
    n = sum(len(v) for v in plan.missing.values())
    where = ", ".join(plan.missing)
    if fill_gaps:
        return [f"{n} frames without a mask written as empty masks ({where})"]
    message = (
        f"{n} frames of {where} have no mask (not in the test split, or not converted); "
        "tools that need every frame (py-ctcmetrics, CTC TRA) refuse such a folder: add "
        "--fill-gaps to write them as empty masks"
    )
    log.warning(message)
    return [message]


def _with_version(manifest: dict[str, Any]) -> dict[str, Any]:
    from cellbench import __version__

    return {**manifest, "cellbench_version": __version__}
