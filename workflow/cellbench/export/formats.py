"""Instance labels -> the formats other tools read. Pure: arrays in, objects out.

Every function takes one ``(H, W)`` integer label image (0 = background, ids need
not be consecutive; the common format's convention, DESIGN.md section 2) and
returns in-memory objects; :mod:`cellbench.export.writers` does the file I/O.

- :func:`labels_to_rois`: ImageJ / Fiji ROIs (:mod:`roifile`), one per label,
  named with the zero-padded label (``00001``), so the ROI Manager lists them in
  label order. Outlines follow pixel edges (:mod:`cellbench.export.outlines`), so a
  ROI filled by ImageJ (pixel-centre rule) gives back exactly the label's pixels.
- :func:`labels_to_geojson`: a GeoJSON ``FeatureCollection`` in QuPath's layout
  (one ``detection`` per label; ``Polygon`` with holes or ``MultiPolygon``).
- :func:`measure`: one row of measurements per object (scikit-image regionprops).
- :func:`kaggle_rows`: Kaggle submission rows (run-length encoding) of one image.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cellbench.export.outlines import Polygon, fill_polygons, label_outlines

__all__ = [
    "GEOMETRY_COLUMNS",
    "KAGGLE_FORMATS",
    "KaggleFormat",
    "fill_roi",
    "kaggle_rows",
    "labels_to_geojson",
    "labels_to_rois",
    "measure",
    "roi_name_width",
]

# --------------------------------------------------------------------------- ImageJ ROIs

#: ImageJ stores integer ROI coordinates as 16-bit numbers; beyond this, float coordinates.
_IMAGEJ_INT_MAX = 32000

# java.awt.geom.PathIterator segment types, as ImageJ stores composite (shape) ROIs.
_MOVETO, _LINETO, _CLOSE = 0.0, 1.0, 4.0


def roi_name_width(labels: np.ndarray) -> int:
    """Digits of the zero-padded ROI / feature names: 5, or more for larger ids."""
    return max(5, len(str(int(np.max(labels, initial=0)))))


def _traced_roi(ring: np.ndarray, name: str):
    """One simple ring as an ImageJ TRACED polygon ROI (what ImageJ's wand produces)."""
    import roifile

    big = int(ring.max(initial=0)) > _IMAGEJ_INT_MAX
    roi = roifile.ImagejRoi.frompoints(ring.astype(np.float32) if big else ring, name=name)
    roi.roitype = roifile.ROI_TYPE.TRACED
    roi.options &= roifile.ROI_OPTIONS.SUB_PIXEL_RESOLUTION  # keep only what frompoints needs
    # ImageJ's bounds of an integer polygon are max - min wide (pixel corners, not pixels)
    roi.right, roi.bottom = int(ring[:, 0].max()), int(ring[:, 1].max())
    return roi


def _composite_roi(rings: list[np.ndarray], name: str):
    """Several rings (pieces and holes) as an ImageJ composite (shape) ROI."""
    import roifile

    path: list[float] = []
    for ring in rings:
        path += [_MOVETO, float(ring[0, 0]), float(ring[0, 1])]
        for x, y in ring[1:].tolist():
            path += [_LINETO, float(x), float(y)]
        path.append(_CLOSE)
    allpoints = np.concatenate(rings)
    roi = roifile.ImagejRoi()
    roi.roitype = roifile.ROI_TYPE.RECT  # ImageJ's marker for a composite ROI
    roi.multi_coordinates = np.asarray(path, dtype=np.float32)
    roi.shape_roi_size = len(path)
    roi.left, roi.top = (int(v) for v in allpoints.min(axis=0))
    roi.right, roi.bottom = (int(v) for v in allpoints.max(axis=0))
    roi.name = name
    return roi


def labels_to_rois(labels: np.ndarray) -> list:
    """One ImageJ ROI per label, in increasing label order.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background.

    Returns
    -------
    list of roifile.ImagejRoi
        A label that is one 4-connected piece without holes becomes a ``TRACED``
        polygon ROI with integer pixel-corner vertices (as ImageJ's wand tool and
        *Analyze Particles* make them); any other label (holes, several pieces,
        pieces meeting at a corner) becomes a *composite* ROI holding every ring,
        which ImageJ fills with its holes left out. Names are the zero-padded
        label (:func:`roi_name_width` digits), so ImageJ's ROI Manager sorts them
        in label order. An image without objects gives an empty list.
    """
    width = roi_name_width(labels)
    rois = []
    for label, polygons in label_outlines(labels).items():
        name = f"{label:0{width}d}"
        rings = [ring for polygon in polygons for ring in polygon.rings()]
        rois.append(_traced_roi(rings[0], name) if len(rings) == 1 else _composite_roi(rings, name))
    return rois


def fill_roi(roi, shape: tuple[int, int]) -> np.ndarray:
    """The pixels an ImageJ polygon or composite ROI covers (pixel-centre, even-odd rule).

    The rule of ImageJ (``PolygonFiller`` for polygons, Java2D for composite ROIs),
    used here to read exported ROIs back. Returns ``(H, W)`` bool.
    """
    rings = roi.coordinates(multi=True)
    return fill_polygons([np.asarray(r, dtype=np.float64) for r in rings], shape)


# --------------------------------------------------------------------------- GeoJSON


def _ring_coordinates(ring: np.ndarray) -> list[list[int]]:
    """A ring as a closed GeoJSON position list (the first position repeated last)."""
    closed = np.concatenate([ring, ring[:1]])
    return closed.tolist()


def _geometry(polygons: list[Polygon]) -> dict[str, Any]:
    if len(polygons) == 1:
        return {
            "type": "Polygon",
            "coordinates": [_ring_coordinates(r) for r in polygons[0].rings()],
        }
    return {
        "type": "MultiPolygon",
        "coordinates": [[_ring_coordinates(r) for r in p.rings()] for p in polygons],
    }


def labels_to_geojson(
    labels: np.ndarray,
    *,
    image_id: str | None = None,
    measurements: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """A GeoJSON ``FeatureCollection`` of the labels, as QuPath imports it.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background.
    image_id : str, optional
        Stored in every feature's properties (``image_id``) and in its ``id`` (a
        UUID derived from image id and label, so exports are reproducible).
    measurements : pandas.DataFrame, optional
        Rows of :func:`measure` for this image; each feature gets its row's numeric
        columns (except ``label``) as QuPath ``measurements``.

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``, one feature per label
        in increasing label order::

            {"type": "Feature", "id": "<uuid>",
             "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...], ...]},
             "properties": {"objectType": "detection", "name": "00001", "label": 1,
                            "image_id": "...", "measurements": {...}}}

        Coordinates are pixels, ``x`` right and ``y`` down from the top-left corner
        of the image (QuPath's and ImageJ's convention): vertices lie on pixel
        corners, so the polygon covers exactly the label's pixels. A label with
        holes is a ``Polygon`` with interior rings; a label in several pieces a
        ``MultiPolygon``. Rings are closed and follow RFC 7946's right-hand rule
        in ``(x, y)`` (exterior counter-clockwise, holes clockwise).
    """
    width = roi_name_width(labels)
    rows: Mapping[int, Mapping[str, Any]] = {}
    if measurements is not None and len(measurements):
        numeric = measurements.select_dtypes("number").drop(columns=["label"], errors="ignore")
        rows = {
            int(label): {k: _json_number(v) for k, v in row.items()}
            for label, row in zip(measurements["label"], numeric.to_dict("records"), strict=True)
        }
    features = []
    for label, polygons in label_outlines(labels).items():
        properties: dict[str, Any] = {
            "objectType": "detection",
            "name": f"{label:0{width}d}",
            "label": label,
        }
        if image_id is not None:
            properties["image_id"] = image_id
        if label in rows:
            properties["measurements"] = dict(rows[label])
        feature: dict[str, Any] = {"type": "Feature"}
        if image_id is not None:
            feature["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cellbench:{image_id}:{label}"))
        feature["geometry"] = _geometry(polygons)
        feature["properties"] = properties
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def _json_number(value: Any) -> float | int | None:
    if isinstance(value, np.integer | int):
        return int(value)
    value = float(value)
    return None if not np.isfinite(value) else value


# --------------------------------------------------------------------------- measurements

#: Columns of :func:`measure` before the per-channel intensity columns.
GEOMETRY_COLUMNS = (
    "image_id",
    "label",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "eccentricity",
    "equivalent_diameter",
    "perimeter",
    "solidity",
    "major_axis_length",
    "minor_axis_length",
)

_PROPERTIES = {
    "label": "label",
    "area": "area",
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "bbox-0": "bbox_min_y",
    "bbox-1": "bbox_min_x",
    "bbox-2": "bbox_max_y",
    "bbox-3": "bbox_max_x",
    "eccentricity": "eccentricity",
    "equivalent_diameter_area": "equivalent_diameter",
    "perimeter": "perimeter",
    "solidity": "solidity",
    "axis_major_length": "major_axis_length",
    "axis_minor_length": "minor_axis_length",
}


def measure(
    labels: np.ndarray, image: np.ndarray | None = None, *, image_id: str = ""
) -> pd.DataFrame:
    """Per-object measurements (scikit-image ``regionprops``), one row per label.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background.
    image : numpy.ndarray, optional
        The image, ``(H, W)`` or ``(H, W, C)``, any numeric dtype, same ``(H, W)``
        as ``labels``; gives one mean-intensity column per channel, in the image's
        own units (no normalisation).
    image_id : str
        Written to the ``image_id`` column.

    Returns
    -------
    pandas.DataFrame
        :data:`GEOMETRY_COLUMNS`, then ``mean_intensity_c0``, ``mean_intensity_c1``,
        ... when ``image`` is given; sorted by label. Units are pixels. Centroids
        use scikit-image's convention (the centre of pixel ``(row, col)`` is at
        ``y = row, x = col``; add 0.5 for ImageJ's and QuPath's convention, where
        ``(0, 0)`` is the top-left corner of the image). Bounding boxes are
        half-open: ``bbox_max_*`` is one past the last row / column. ``perimeter``
        is scikit-image's estimate (4-connected contour, diagonal steps sqrt 2).

    Raises
    ------
    ValueError
        When ``image`` does not have the labels' height and width.
    """
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    properties = list(dict.fromkeys(key.split("-")[0] for key in _PROPERTIES))
    intensity = None
    if image is not None:
        image = np.asarray(image)
        if image.shape[:2] != labels.shape:
            raise ValueError(f"image shape {image.shape} does not match labels {labels.shape}")
        intensity = image if image.ndim == 3 else image[..., None]
        properties.append("intensity_mean")
    table = regionprops_table(
        labels.astype(np.int64, copy=False),
        intensity_image=None if intensity is None else intensity.astype(np.float64),
        properties=properties,
    )
    frame = pd.DataFrame(table).rename(columns=_PROPERTIES)
    frame = frame.rename(
        columns={
            c: "mean_intensity_c" + c.split("-")[1] for c in frame if c.startswith("intensity")
        }
    )
    frame.insert(0, "image_id", image_id)
    frame["area"] = frame["area"].astype(np.int64)
    channels = (
        [] if intensity is None else [f"mean_intensity_c{k}" for k in range(intensity.shape[2])]
    )
    return frame[[*GEOMETRY_COLUMNS, *channels]].sort_values("label", ignore_index=True)


# --------------------------------------------------------------------------- Kaggle


class KaggleFormat:
    """A Kaggle competition's submission layout.

    Attributes
    ----------
    id_column, rle_column : the CSV header.
    order : ``"F"`` (runs go down columns) or ``"C"`` (along rows).
    """

    def __init__(self, name: str, id_column: str, rle_column: str, order: str) -> None:
        self.name, self.id_column, self.rle_column, self.order = name, id_column, rle_column, order

    @property
    def columns(self) -> list[str]:
        return [self.id_column, self.rle_column]


#: ``--format`` name -> layout. DSB 2018: ``ImageId,EncodedPixels``, column-major runs
#: (its ``stage1_solution.csv``); Sartorius 2021: ``id,predicted``, row-major runs (its
#: ``train.csv``; see :mod:`cellbench.datasets.rle`).
KAGGLE_FORMATS: dict[str, KaggleFormat] = {
    "kaggle-dsb2018": KaggleFormat("Data Science Bowl 2018", "ImageId", "EncodedPixels", "F"),
    "kaggle-sartorius": KaggleFormat("Sartorius 2021", "id", "predicted", "C"),
}


def kaggle_rows(labels: np.ndarray, image_id: str, fmt: KaggleFormat) -> list[dict[str, str]]:
    """Kaggle submission rows of one image: one row per object, in label order.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background (objects never overlap,
        as both competitions require).
    image_id : str
        The competition's image id (the mask file's name without extension).
    fmt : KaggleFormat
        An entry of :data:`KAGGLE_FORMATS`.

    Returns
    -------
    list of dict
        ``{fmt.id_column: image_id, fmt.rle_column: "start length ..."}``; starts
        are 1-indexed, in ``fmt.order`` pixel order, ascending, runs never touching
        (:func:`cellbench.datasets.rle.rle_encode` of each object's mask). An image
        without objects gives one row with an empty run-length string, so every
        image of the test set is listed.
    """
    flat = np.asarray(labels).ravel(order=fmt.order)
    change = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    values = flat[change]
    lengths = np.diff(np.r_[change, flat.size])
    keep = values != 0
    values, starts, lengths = values[keep], change[keep] + 1, lengths[keep]
    if values.size == 0:
        return [{fmt.id_column: image_id, fmt.rle_column: ""}]
    order = np.argsort(values, kind="stable")  # runs of a label stay in ascending start order
    values, starts, lengths = values[order], starts[order], lengths[order]
    bounds = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1, values.size]
    rows = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        pairs = np.stack([starts[a:b], lengths[a:b]], axis=1).ravel()
        rows.append({fmt.id_column: image_id, fmt.rle_column: " ".join(map(str, pairs.tolist()))})
    return rows
