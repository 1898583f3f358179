"""Labels -> the answers of ``POST /segment``. Pure: arrays in, bytes or dicts out.

The conversions are the exporters' own (:mod:`cellbench.export.formats` and the label
TIFF of :mod:`cellbench.export.writers`), so an answer opens wherever an export does.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellbench.export.formats import labels_to_geojson, labels_to_rois, measure

__all__ = [
    "FORMATS",
    "Answer",
    "geojson_answer",
    "json_summary",
    "overlay_png",
    "roi_zip",
    "tiff_answer",
]

#: outline colour of the overlay (Okabe-Ito sky blue, as the report's true positives)
OUTLINE = "#56B4E9"


@dataclass(frozen=True)
class Answer:
    """An encoded answer: body, media type and the file name suffix of a download."""

    body: bytes
    media_type: str
    suffix: str


def tiff_answer(labels: np.ndarray) -> Answer:
    """uint16 ImageJ label TIFF (uint32 above 65535 labels), as ``cellbench export`` writes."""
    from cellbench.export.writers import write_label_tiff

    buf = io.BytesIO()
    write_label_tiff(buf, labels)
    return Answer(buf.getvalue(), "image/tiff", "_masks.tif")


def roi_zip(labels: np.ndarray) -> Answer:
    """ImageJ / Fiji ROI set: one ``NNNNN.roi`` per label (an empty zip without objects)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # what roifile.roiwrite writes, in memory
        for roi in labels_to_rois(labels):
            zf.writestr(f"{roi.name}.roi", roi.tobytes())
    return Answer(buf.getvalue(), "application/zip", "_rois.zip")


def geojson_answer(labels: np.ndarray, image: np.ndarray, image_id: str) -> dict[str, Any]:
    """QuPath detections with measurements (mean intensity per channel of the image)."""
    table = measure(labels, image, image_id=image_id)
    return labels_to_geojson(labels, image_id=image_id, measurements=table)


def overlay_rgb(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image (percentile-stretched) with every object's inner outline painted, uint8 RGB."""
    from skimage.segmentation import find_boundaries

    from cellbench.report.gallery import hex_rgb, to_display

    display = to_display(image)
    rgb = np.rint(display * 255).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb[find_boundaries(labels, mode="inner")] = hex_rgb(OUTLINE)
    return rgb


def overlay_png(image: np.ndarray, labels: np.ndarray) -> Answer:
    """:func:`overlay_rgb` as a PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay_rgb(image, labels), "RGB").save(buf, format="PNG", compress_level=3)
    return Answer(buf.getvalue(), "image/png", "_overlay.png")


def json_summary(labels: np.ndarray) -> dict[str, Any]:
    """Object count and, per object, label, area (px) and centroid (x, y, pixel centres)."""
    table = measure(labels)
    objects = [
        {
            "label": int(row.label),
            "area": int(row.area),
            "centroid_x": round(float(row.centroid_x), 2),
            "centroid_y": round(float(row.centroid_y), 2),
        }
        for row in table.itertuples(index=False)
    ]
    return {"n_objects": len(objects), "objects": objects}


#: ``format=`` name -> what it answers (the JSON ones are built by the app).
FORMATS: dict[str, str] = {
    "json": "object count, per-object area and centroid, timings (application/json)",
    "tiff": "uint16 label TIFF, 0 = background (image/tiff)",
    "roi": "ImageJ / Fiji ROI set (application/zip)",
    "geojson": "QuPath detections with measurements (application/geo+json)",
    "png": "the image with the objects outlined (image/png)",
}

ENCODERS: dict[str, Callable[..., Answer]] = {
    "tiff": lambda image, labels: tiff_answer(labels),
    "roi": lambda image, labels: roi_zip(labels),
    "png": overlay_png,
}
