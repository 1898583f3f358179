"""Gallery pictures: true positives, false positives and false negatives outlined (pure).

Arrays in, PNG data URIs out; the report stage reads the files. Objects are matched
with :func:`cellbench.metrics.match` at IoU 0.5 (one-to-one). Each predicted object
matched to a true one is a true positive (its outline drawn), each unmatched predicted
object a false positive, each unmatched true object a false negative. On partially
annotated ground truth an unmatched prediction may be an unlabelled cell, so it is
drawn in a neutral colour ("not scored") rather than as a false positive.

The colours are from the Okabe-Ito palette, distinct under the common colour-vision
deficiencies and against grey images. Pictures are stored as indexed (palette) PNGs:
the image in at most :data:`IMAGE_LEVELS` levels, the outline colours exact.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from cellbench.metrics import match

__all__ = [
    "CLASSES",
    "COLOURS",
    "IMAGE_LEVELS",
    "Crop",
    "OverlayCounts",
    "choose_crop",
    "classify_outlines",
    "hex_rgb",
    "overlay_rgb",
    "png_data_uri",
    "to_display",
]

#: outline classes, in painting order (a later class wins where outlines touch)
CLASSES: tuple[str, ...] = ("unscored", "fn", "fp", "tp")

#: class -> (hex colour, legend text)
COLOURS: dict[str, tuple[str, str]] = {
    "tp": ("#56B4E9", "true positive (prediction matched at IoU ≥ 0.5)"),
    "fp": ("#D55E00", "false positive (unmatched prediction)"),
    "fn": ("#F0E442", "false negative (missed true object)"),
    "unscored": ("#BBBBBB", "unmatched prediction on partial ground truth (not scored)"),
}

IMAGE_LEVELS = 64
"""Grey levels (or palette colours of an RGB image) a gallery picture keeps."""

_CODE = {name: k + 1 for k, name in enumerate(CLASSES)}  # 0 = no outline


@dataclass(frozen=True)
class OverlayCounts:
    """Objects of each outline class in a picture (the whole image, not only the crop)."""

    tp: int
    fp: int
    fn: int
    unscored: int = 0


@dataclass(frozen=True)
class Crop:
    """A window ``[y0:y0+height, x0:x0+width]`` of an image."""

    y0: int
    x0: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``"#56B4E9"`` -> ``(86, 180, 233)``."""
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def choose_crop(truth: np.ndarray, size: int) -> Crop:
    """The ``size`` x ``size`` window (or the whole image, if smaller) with the most labelled pixels.

    Candidates are a 5 x 5 grid of windows; ties go to the first (top-left) one, so
    the choice is deterministic.
    """
    h, w = truth.shape[:2]
    ch, cw = min(h, size), min(w, size)
    if (ch, cw) == (h, w):
        return Crop(0, 0, h, w)
    fg = np.asarray(truth) > 0
    integral = np.pad(fg.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, y0, x0 = -1, 0, 0
    for y in np.unique(np.linspace(0, h - ch, 5).astype(int)):
        for x in np.unique(np.linspace(0, w - cw, 5).astype(int)):
            s = int(
                integral[y + ch, x + cw]
                - integral[y, x + cw]
                - integral[y + ch, x]
                + integral[y, x]
            )
            if s > best:
                best, y0, x0 = s, int(y), int(x)
    return Crop(y0, x0, ch, cw)


def to_display(image: np.ndarray) -> np.ndarray:
    """Any image -> ``(H, W)`` or ``(H, W, 3)`` float in [0, 1], percentile-stretched.

    Two-channel and more-than-three-channel images show their mean; three or four
    channels (RGB, RGBA) show RGB.
    """
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = img[..., :3] if img.shape[-1] in (3, 4) else img.mean(axis=-1)
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)


def _inner_boundaries(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Boolean map of the inner boundary pixels of the objects ``ids`` of ``labels``."""
    from skimage.segmentation import find_boundaries

    if ids.size == 0:
        return np.zeros(labels.shape, bool)
    chosen = np.where(np.isin(labels, ids), labels, 0)
    return find_boundaries(chosen, mode="inner")


def classify_outlines(
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    threshold: float = 0.5,
    partial: bool = False,
) -> tuple[np.ndarray, OverlayCounts]:
    """Outline class of every pixel: 0 none, else ``1 + CLASSES.index(name)``.

    Parameters
    ----------
    truth, pred : ndarray of int, (H, W)
        Label images (0 = background).
    threshold : float
        IoU at which objects are matched (:func:`cellbench.metrics.match`).
    partial : bool
        The ground truth labels only some cells: unmatched predictions are "unscored".

    Returns
    -------
    classes : ndarray of uint8, (H, W)
        True positives and false positives are outlined on the predicted objects,
        false negatives on the true objects; where outlines meet, the later class of
        :data:`CLASSES` wins (true positives on top).
    counts : OverlayCounts
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    m = match(truth, pred, threshold)
    true_ids = np.unique(truth[truth > 0])
    pred_ids = np.unique(pred[pred > 0])
    fn_ids = np.setdiff1d(true_ids, m.matched_true)
    fp_ids = np.setdiff1d(pred_ids, m.matched_pred)
    tp_ids = np.asarray(m.matched_pred)
    classes = np.zeros(truth.shape, np.uint8)
    layers = {
        "unscored": (pred, fp_ids if partial else np.array([], np.int64)),
        "fn": (truth, fn_ids),
        "fp": (pred, np.array([], np.int64) if partial else fp_ids),
        "tp": (pred, tp_ids),
    }
    for name in CLASSES:
        labels, ids = layers[name]
        classes[_inner_boundaries(labels, ids)] = _CODE[name]
    counts = OverlayCounts(
        tp=int(tp_ids.size),
        fp=0 if partial else int(fp_ids.size),
        fn=int(fn_ids.size),
        unscored=int(fp_ids.size) if partial else 0,
    )
    return classes, counts


def _indexed(display: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(palette indices, flat RGB palette) of a display image, at most IMAGE_LEVELS colours."""
    from PIL import Image

    if display.ndim == 2:
        idx = np.rint(display * (IMAGE_LEVELS - 1)).astype(np.uint8)
        ramp = np.rint(np.linspace(0, 255, IMAGE_LEVELS)).astype(int)
        return idx, [int(v) for g in ramp for v in (g, g, g)]
    rgb = Image.fromarray(np.rint(display * 255).astype(np.uint8), "RGB")
    quant = rgb.quantize(
        colors=IMAGE_LEVELS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    palette = list(quant.getpalette()[: 3 * IMAGE_LEVELS])
    palette += [0] * (3 * IMAGE_LEVELS - len(palette))
    return np.asarray(quant, np.uint8), palette


def overlay_rgb(image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The display image with the outline classes painted in :data:`COLOURS` (uint8 RGB)."""
    indices, palette = _overlay_indexed(to_display(image), classes)
    lut = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut[indices]


def _overlay_indexed(display: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, list[int]]:
    indices, palette = _indexed(display)
    indices = indices.copy()
    for name in CLASSES:
        code = _CODE[name]
        indices[classes == code] = IMAGE_LEVELS + code - 1
        palette += list(hex_rgb(COLOURS[name][0]))
    return indices, palette


def png_data_uri(image: np.ndarray, classes: np.ndarray | None = None, scale: int = 1) -> str:
    """An indexed PNG of ``image`` (outlines from ``classes`` painted) as a data URI.

    Parameters
    ----------
    image : ndarray, (H, W) or (H, W, C)
        Any intensity range; percentile-stretched (:func:`to_display`).
    classes : ndarray of uint8, (H, W), optional
        From :func:`classify_outlines`; no outlines when None.
    scale : int
        Integer upscaling (nearest neighbour) of tiny images, so outlines stay visible.
    """
    from PIL import Image

    if classes is None:
        classes = np.zeros(np.asarray(image).shape[:2], np.uint8)
    indices, palette = _overlay_indexed(to_display(image), classes)
    if scale > 1:
        indices = np.repeat(np.repeat(indices, scale, axis=0), scale, axis=1)
    pic = Image.fromarray(indices, "P")
    pic.putpalette(palette)
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
