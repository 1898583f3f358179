"""LIVECell (Edlund et al., Nature Methods 2021): 8 cell lines, phase contrast, COCO polygons.

Download
    From the LIVECell S3 bucket (https://github.com/sartorius-research/LIVECell):
    ``LIVECell_dataset_2021/images.zip`` and
    ``LIVECell_dataset_2021/annotations/LIVECell/livecell_coco_{train,val,test}.json``
    (CC BY-NC 4.0). The project stores no checksum for these yet: the first download
    prints the SHA-256 to record (see ``checksums.yaml``).

Original layout
    ::

        images/livecell_train_val_images/[<cell type>/]<name>.tif   8-bit, 704 x 520
        images/livecell_test_images/[<cell type>/]<name>.tif
        livecell_coco_train.json, livecell_coco_val.json, livecell_coco_test.json

    COCO JSON: ``images`` (id, file_name, width, height) and ``annotations`` (a list,
    or in the LIVECell files a dict keyed by annotation id) with ``segmentation``
    polygons ``[[x1, y1, x2, y2, ...], ...]`` (COCO RLE is accepted too). Cells of one
    image **overlap**. File names read ``<cell type>_Phase_<well>_<site>_<DDdHHhMMm>_<crop>.tif``.

Conversion
    - Polygons are rasterised with ``skimage.draw.polygon`` on pixel centres (COCO
      coordinates put pixel edges at integers, so vertices are shifted by -0.5), clipped
      to the image; all polygons of one annotation form one instance; ``iscrowd``
      annotations are skipped. Overlaps: :func:`~cellbench.datasets.base.masks_to_labels`
      (smallest cell wins), contested pixels counted.
    - ``cell_type`` from the file name; ``group`` = ``<cell type>_<well>`` (all sites,
      crops and time points of a well stay together); ``sequence`` =
      ``<cell type>_<well>_<site>_<crop>`` and ``frame`` = the time-point rank within it;
      ``official_split = test`` for the images of ``livecell_coco_test.json``.

Options
    ``subsets`` (list, default ``[train, val, test]``): which JSON files to convert.
    ``cell_types`` (list or null): keep only these cell lines (e.g. ``[A172, SHSY5Y]``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from skimage.draw import polygon as draw_polygon

from cellbench.datasets._common import find_file, iter_files
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    masks_to_labels,
    safe_image_id,
)
from cellbench.datasets.download import fetch_and_extract
from cellbench.datasets.rle import coco_rle_decode
from cellbench.io import CellbenchIOError, read_image

__all__ = ["LIVECell", "coco_instance_indices", "parse_livecell_name"]

SUBSETS = ("train", "val", "test")

_NAME_RE = re.compile(
    r"^(?P<cell_type>[^_]+)_(?P<modality>[^_]+)_(?P<well>[^_]+)_(?P<site>\d+)_"
    r"(?P<days>\d+)d(?P<hours>\d+)h(?P<minutes>\d+)m_(?P<crop>\d+)$"
)


def parse_livecell_name(file_name: str) -> dict[str, object]:
    """Split a LIVECell file name into cell type, group, sequence and elapsed minutes."""
    stem = Path(file_name).stem
    match = _NAME_RE.match(stem)
    if not match:
        cell_type = stem.split("_", 1)[0] or "unknown"
        return {"cell_type": cell_type, "group": stem, "sequence": "", "minutes": -1}
    g = match.groupdict()
    minutes = int(g["days"]) * 1440 + int(g["hours"]) * 60 + int(g["minutes"])
    return {
        "cell_type": g["cell_type"],
        "group": f"{g['cell_type']}_{g['well']}",
        "sequence": f"{g['cell_type']}_{g['well']}_{g['site']}_{g['crop']}",
        "minutes": minutes,
    }


def coco_instance_indices(segmentation: object, height: int, width: int) -> np.ndarray:
    """Flat row-major pixel indices of one COCO ``segmentation`` (polygons or RLE)."""
    if isinstance(segmentation, dict):
        mask = coco_rle_decode(segmentation, (height, width))
        return np.flatnonzero(mask)
    parts = []
    for poly in segmentation or []:
        coords = np.asarray(poly, dtype=float).reshape(-1, 2)
        if len(coords) < 3:
            continue
        rr, cc = draw_polygon(coords[:, 1] - 0.5, coords[:, 0] - 0.5, shape=(height, width))
        parts.append(rr.astype(np.int64) * width + cc)
    if not parts:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(parts))


class LIVECell(DatasetSource):
    """LIVECell: COCO polygon annotations (overlapping) over phase-contrast crops."""

    kind = "livecell"

    def download(self, raw_dir: Path) -> None:
        """Fetch images.zip (unpacked) and the three COCO JSON files."""
        fetch_and_extract("livecell", raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Rasterise every annotation of every image of the chosen subsets."""
        opts = self.options
        subsets = list(opts.subsets or [])
        bad = [s for s in subsets if s not in SUBSETS]
        if bad or not subsets:
            raise ValueError(
                f"datasets.{self.cfg.name}.options.subsets: {bad or subsets} invalid; "
                f"choose from {list(SUBSETS)}"
            )
        raw_dir = Path(raw_dir)
        image_index = {p.name: p for p in iter_files(raw_dir, "*.tif*")}
        wanted_types = set(opts.cell_types) if opts.cell_types else None
        records = []
        json_of: dict[str, Path] = {}
        for subset in subsets:
            path = find_file(raw_dir, f"livecell_coco_{subset}.json")
            if path is None:
                raise FileNotFoundError(
                    f"{raw_dir}: livecell_coco_{subset}.json not found; download it or drop "
                    f"'{subset}' from datasets.{self.cfg.name}.options.subsets"
                )
            json_of[subset] = path
            coco = json.loads(path.read_text())
            annotations = coco.get("annotations", [])
            if isinstance(annotations, dict):
                annotations = list(annotations.values())
            by_image = defaultdict(list)
            for ann in annotations:
                by_image[ann["image_id"]].append(ann)
            for info in coco.get("images", []):
                meta = parse_livecell_name(info["file_name"])
                if wanted_types and meta["cell_type"] not in wanted_types:
                    continue
                records.append((subset, info, meta, by_image.get(info["id"], [])))
        # frame = rank of the time point within its sequence
        times = defaultdict(set)
        for _, _, meta, _ in records:
            if meta["sequence"]:
                times[meta["sequence"]].add(meta["minutes"])
        rank = {seq: {t: i for i, t in enumerate(sorted(ts))} for seq, ts in times.items()}
        for subset, info, meta, anns in records:
            name = Path(info["file_name"]).name
            json_path = json_of[subset]
            if name not in image_index:
                writer.skip(json_path, f"entry for image {name}, which is not under {raw_dir}")
                continue
            image = read_image(image_index[name])
            h, w = image.shape[:2]
            if (int(info.get("height", h)), int(info.get("width", w))) != (h, w):
                raise CellbenchIOError(
                    f"{image_index[name]}: image is {h}x{w}, but {json_path} says "
                    f"{info['height']}x{info['width']}. Use the images and annotation files of "
                    "the same LIVECell release."
                )
            masks = []
            for ann in anns:
                if ann.get("iscrowd", 0):
                    continue
                try:
                    masks.append(coco_instance_indices(ann["segmentation"], h, w))
                except (KeyError, TypeError, ValueError) as exc:
                    raise CellbenchIOError(
                        f"{json_path}: annotation {ann.get('id', '?')} of image {name} cannot be "
                        f"rasterised ({type(exc).__name__}: {exc}). Replace the file with the "
                        "original LIVECell annotation JSON."
                    ) from None
            labels, contested = masks_to_labels(masks, (h, w))
            seq = str(meta["sequence"])
            writer.add(
                safe_image_id(Path(name).stem),
                image,
                labels,
                cell_type=str(meta["cell_type"]),
                group=str(meta["group"]),
                sequence=seq,
                frame=rank[seq][meta["minutes"]] if seq else -1,
                annotation="full",
                official_split="test" if subset == "test" else "",
                contested_pixels=contested,
                source=f"LIVECell livecell_coco_{subset}.json",
                origin=image_index[name],
                label_origin=json_path,
            )
