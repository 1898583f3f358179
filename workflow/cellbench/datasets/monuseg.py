"""MoNuSeg 2018 (Kumar et al., IEEE TMI 2017/2020): multi-organ H&E nuclei, polygon XML.

Download
    The organisers' Google Drive archives (https://monuseg.grand-challenge.org/Data/):
    training data (file id ``1ZgqFJomqQGNnsx7w7QBzQQMVA16lbVCA``) and test data
    (``1NKkSQ5T0ZNQ8aUhh0a8Dt2YKYCQXIViw``), checked against ``checksums.yaml``.
    Licence CC BY-NC-SA 4.0.

Original layout
    ::

        MoNuSeg 2018 Training Data/Tissue Images/TCGA-*.tif   RGB 1000 x 1000
        MoNuSeg 2018 Training Data/Annotations/TCGA-*.xml
        MoNuSegTestData/TCGA-*.tif + TCGA-*.xml               (side by side)

    Annotations are Aperio ImageScope XML:
    ``Annotations/Annotation/Regions/Region/Vertices/Vertex X= Y=``, one ``Region``
    polygon per nucleus, **float** vertices that can lie slightly **outside** the image
    (e.g. -1.0 or 1001.0).

Conversion
    - Each region is rasterised with ``skimage.draw.polygon`` (vertices taken as pixel
      centres, ``X`` = column, ``Y`` = row), clipped to the image; regions with fewer
      than 3 vertices or no pixel are skipped. Overlapping regions:
      :func:`~cellbench.datasets.base.masks_to_labels` (smallest nucleus wins),
      contested pixels counted.
    - ``cell_type`` = the organ, looked up from the TCGA tissue-source-site code in the
      image name (``unknown`` when not in the table; the organisers label the TCGA-18,
      -21, -38, -49 and -50 slides "liver", which is kept); ``group`` = the patient
      (``TCGA-XX-YYYY``); ``official_split = test`` for the test archive
      (``MoNuSegTestData``).

Options: none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from skimage.draw import polygon as draw_polygon

from cellbench.datasets._common import iter_files
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    masks_to_labels,
    safe_image_id,
)
from cellbench.datasets.download import fetch_and_extract
from cellbench.io import CellbenchIOError, read_image

__all__ = ["MoNuSeg", "TSS_ORGAN", "read_aperio_polygons"]

#: TCGA tissue-source-site code -> organ, for the slides in MoNuSeg 2018.
TSS_ORGAN = {
    **dict.fromkeys(("A7", "AR", "E2", "AC", "AO"), "breast"),
    **dict.fromkeys(("B0", "HE", "GL", "2Z"), "kidney"),
    **dict.fromkeys(("18", "21", "38", "49", "50"), "liver"),
    **dict.fromkeys(("G9", "CH", "EJ", "HC"), "prostate"),
    **dict.fromkeys(("DK", "G2", "CU", "ZF"), "bladder"),
    **dict.fromkeys(("AY", "NH", "A6"), "colon"),
    **dict.fromkeys(("KB", "RD"), "stomach"),
    **dict.fromkeys(("44", "69"), "lung"),
    **dict.fromkeys(("HT", "FG"), "brain"),
}


def read_aperio_polygons(xml_path: Path) -> list[np.ndarray]:
    """The ``Region`` polygons of an Aperio ImageScope XML, each ``(N, 2)`` as (row, col)."""
    try:
        root = ET.parse(xml_path).getroot()
        polygons = []
        for region in root.iter("Region"):
            vertices = [
                (float(v.get("Y")), float(v.get("X")))
                for v in region.iter("Vertex")
                if v.get("X") is not None and v.get("Y") is not None
            ]
            polygons.append(np.asarray(vertices, dtype=float).reshape(-1, 2))
    except (ET.ParseError, ValueError) as exc:
        raise CellbenchIOError(
            f"{xml_path}: not a readable Aperio ImageScope annotation file "
            f"({type(exc).__name__}: {exc}). Replace it with the original XML from the MoNuSeg "
            "archive."
        ) from None
    return polygons


class MoNuSeg(DatasetSource):
    """MoNuSeg 2018: H&E tiles with per-nucleus polygons (Aperio XML)."""

    kind = "monuseg"

    def download(self, raw_dir: Path) -> None:
        """Fetch and unpack the training and test archives."""
        fetch_and_extract("monuseg", raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Rasterise each XML's regions over the image with the same name."""
        raw_dir = Path(raw_dir)
        images = {}
        for path in iter_files(raw_dir, "*"):
            if path.suffix.lower() in (".tif", ".tiff", ".png"):
                images.setdefault(path.stem, path)
        xmls = list(iter_files(raw_dir, "*.xml"))
        if not xmls:
            raise FileNotFoundError(f"{raw_dir}: no MoNuSeg annotation XML files")
        annotated = {p.stem for p in xmls}
        for stem, path in sorted(images.items()):
            if stem not in annotated:
                writer.skip(path, "image with no annotation XML of the same name")
        for xml_path in xmls:
            stem = xml_path.stem
            if stem not in images:
                writer.skip(xml_path, "annotation XML with no image of the same name")
                continue
            image = read_image(images[stem])
            h, w = image.shape[:2]
            masks = []
            for poly in read_aperio_polygons(xml_path):
                if len(poly) < 3:
                    continue
                rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape=(h, w))
                if rr.size:
                    masks.append(rr.astype(np.int64) * w + cc)
            labels, contested = masks_to_labels(masks, (h, w))
            parts = stem.split("-")
            tss = parts[1] if len(parts) > 2 else ""
            is_test = any("test" in p.lower() for p in xml_path.relative_to(raw_dir).parts[:-1])
            writer.add(
                safe_image_id(stem),
                image,
                labels,
                cell_type=TSS_ORGAN.get(tss, "unknown"),
                group="-".join(parts[:3]) if len(parts) >= 3 else stem,
                annotation="full",
                official_split="test" if is_test else "",
                contested_pixels=contested,
                source="MoNuSeg 2018 Aperio XML",
                origin=images[stem],
                label_origin=xml_path,
            )
