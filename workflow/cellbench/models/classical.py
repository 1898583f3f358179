"""``classical``: threshold + distance-transform watershed. No network, no training.

Maps: one channel, the smoothed, percentile-normalised intensity with objects
made bright (polarity per image: ``auto`` picks the side of the histogram's
long tail, which is bright nuclei in fluorescence and dark cells in phase
contrast). Post-processing: Otsu threshold of the map scaled by
``threshold_scale``, holes filled, distance-transform watershed. The "training"
of this family is only the tuning of ``threshold_scale`` and ``min_distance``
on the validation split, the same tuning every family gets.

Options: :class:`cellbench.models.options.ClassicalOptions` (``cellbench options
classical`` prints them).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import skew
from skimage.filters import threshold_otsu

from cellbench.models.base import ModelFamily
from cellbench.models.options import ClassicalThresholds
from cellbench.postprocess.watershed import distance_watershed


class Classical(ModelFamily):
    family = "classical"
    trainable = False
    map_names = ("objectness",)

    def image_to_maps(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` normalised input -> ``(1, H, W)`` float32 objectness in about [0, 1]."""
        plane = np.asarray(image, np.float32).mean(axis=0)
        polarity = self.options.polarity
        if polarity == "auto":
            sample = plane[:: max(1, plane.shape[0] // 256), :: max(1, plane.shape[1] // 256)]
            polarity = "bright" if skew(sample.ravel()) >= 0 else "dark"
        if polarity == "dark":
            plane = -plane
        sigma = float(self.options.smooth)
        if sigma > 0:
            plane = ndi.gaussian_filter(plane, sigma)
        lo, hi = np.percentile(plane, [1.0, 99.8])
        return np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1)[None].astype(np.float32)

    def postprocess(self, maps: np.ndarray, thresholds: ClassicalThresholds) -> np.ndarray:
        plane = maps[0]
        if np.ptp(plane) <= 0:
            return np.zeros(plane.shape, np.int32)
        level = threshold_otsu(plane) * thresholds.threshold_scale
        return distance_watershed(
            plane > level,
            min_distance=thresholds.min_distance,
            min_size=self.options.min_size,
        )

    def threshold_grid(self) -> list[ClassicalThresholds]:
        return self.candidates(
            threshold_scale=self.options.threshold_scale,
            min_distance=self.options.min_distance,
        )
