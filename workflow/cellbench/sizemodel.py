"""Size model: an unlabelled image's object diameter from its scale-space spectrum.

A network trained with size normalisation (the ``diameter`` option) must be told
how large the objects of a new image are. Segmenting at the original size and
measuring (:func:`cellbench.scale.estimate_scale` alone) fails when the network,
shown objects far from its standard size, fragments or merges them: the
measurement is then as wrong as the segmentation. As Cellpose does (Stringer et
al. 2021, ``SizeModel``), a small regression trained with the network on the
training images gives a first estimate, and one pass at that scale, segmented and
measured, refines it (``estimate_scale(..., start=...)``).

The regression's features (:func:`scale_features`) are the image's energy in
scale-normalised Laplacian-of-Gaussian bands, ``e(s) = sum_k |F(k)|^2 s^4 |k|^4
exp(-s^2 |k|^2)`` for band scales ``s`` from 1 to 48 px (computed from one FFT, by
Parseval), as a log profile, as a normalised profile and as its centroid: a blob of
radius ``r`` peaks at ``s = r / sqrt(2)``, so the profile moves with the objects'
size. Cellpose regresses on the network's style vector instead; on the DSB 2018
subset that gave a cross-validated log error of 0.34 (the deepest encoder stage,
or all stages) against 0.19 for these features (BENCHMARKS.md section 11), so the
features here do not depend on the network and the regression is fitted in
seconds.

The regression is a ridge regression of ``log(diameter)`` on the features; each
training image is shown at several random scales around the standard diameter,
and the ridge strength is chosen by leave-one-image-out cross-validation.

Shapes: images ``(C, H, W)`` float32 (normalised network input; channels are
averaged), labels ``(H, W)`` integer (0 = background), features ``(F,)`` float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cellbench.scale import MAX_FACTOR, MIN_FACTOR, median_diameter, rescale_image

__all__ = [
    "SIZE_MODEL_FILE",
    "SizeModel",
    "fit_size_model",
    "scale_features",
]

#: the size model's file in a model folder
SIZE_MODEL_FILE = "size_model.json"
#: band scales (px) of the Laplacian-of-Gaussian energy profile
SIGMAS = tuple(float(s) for s in np.geomspace(1.0, 48.0, 24))
#: training crops measure at most this side after rescaling (px)
CROP = 1024
#: training diameters are drawn log-uniformly in [standard / SPAN, standard * SPAN]
SPAN = 3.0
#: random scales per training image
SCALES_PER_IMAGE = 8
#: candidate ridge strengths (chosen by leave-one-image-out cross-validation)
RIDGES = tuple(float(r) for r in np.logspace(-8, 1, 19))


def scale_features(image: np.ndarray) -> np.ndarray:
    """Scale-space features ``(2 * len(SIGMAS) + 1,)`` of a ``(C, H, W)`` or ``(H, W)`` image.

    The log band energies minus their mean, the band energies as fractions of their
    sum, and the energy-weighted mean of ``log(s)``. Unchanged by the image's
    brightness, contrast offset and polarity.
    """
    x = np.asarray(image, np.float64)
    if x.ndim == 3:
        x = x.mean(axis=0)
    x = x - x.mean()
    h, w = x.shape
    power = np.abs(np.fft.rfft2(x)) ** 2
    ky = np.fft.fftfreq(h)[:, None] * 2 * np.pi
    kx = np.fft.rfftfreq(w)[None, :] * 2 * np.pi
    k2 = ky**2 + kx**2
    energy = np.array([(power * s**4 * k2**2 * np.exp(-(s**2) * k2)).sum() for s in SIGMAS])
    energy = energy + 1e-12 * max(1.0, float(energy.max()))
    log_energy = np.log(energy)
    fractions = energy / energy.sum()
    centroid = float(fractions @ np.log(SIGMAS))
    return np.concatenate([log_energy - log_energy.mean(), fractions, [centroid]])


@dataclass(frozen=True)
class SizeModel:
    """Ridge regression of the log object diameter on :func:`scale_features`.

    Attributes
    ----------
    standard : the diameter (px) the network was trained at.
    mean_features : ``(F,)`` mean features of the fitting samples.
    coef : ``(F,)`` regression weights.
    intercept : mean log diameter of the fitting samples.
    ridge : the ridge strength chosen by cross-validation.
    n_images, n_samples : training images and (image, scale) samples fitted.
    cv_log_error : leave-one-image-out root mean squared error of ``log(diameter)``
        (0.18 means a typical estimate within about 20 %).
    """

    standard: float
    mean_features: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    ridge: float
    n_images: int
    n_samples: int
    cv_log_error: float

    def diameter(self, features: np.ndarray) -> float:
        """The object diameter (px) that ``(F,)`` features imply."""
        features = np.asarray(features, np.float64)
        if features.shape != (len(self.coef),):
            raise ValueError(
                f"features have shape {features.shape}, the size model expects ({len(self.coef)},)"
            )
        centred = features - np.asarray(self.mean_features)
        return float(math.exp(self.intercept + float(centred @ np.asarray(self.coef))))

    def estimate(self, image: np.ndarray) -> float:
        """The object diameter (px) of a ``(C, H, W)`` image at its own size."""
        return self.diameter(scale_features(image))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content of ``size_model.json``."""
        return {
            "method": "ridge regression of log diameter on scale-space band energies",
            "sigmas": list(SIGMAS),
            **asdict(self),
            "mean_features": list(self.mean_features),
            "coef": list(self.coef),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SizeModel:
        """Read ``size_model.json`` content; ValueError on missing or inconsistent entries."""
        try:
            model = cls(
                standard=float(data["standard"]),
                mean_features=tuple(float(v) for v in data["mean_features"]),
                coef=tuple(float(v) for v in data["coef"]),
                intercept=float(data["intercept"]),
                ridge=float(data["ridge"]),
                n_images=int(data["n_images"]),
                n_samples=int(data["n_samples"]),
                cv_log_error=float(data["cv_log_error"]),
            )
            sigmas = tuple(float(s) for s in data.get("sigmas", SIGMAS))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"missing or malformed entry: {exc}") from exc
        expected = 2 * len(SIGMAS) + 1
        if len(model.mean_features) != expected or len(model.coef) != expected:
            raise ValueError(
                f"mean_features has {len(model.mean_features)} values and coef "
                f"{len(model.coef)}; this cellbench computes {expected} features"
            )
        if not np.allclose(sigmas, SIGMAS):
            raise ValueError("written with other band scales ('sigmas') than this cellbench uses")
        values = np.array([*model.coef, *model.mean_features, model.intercept])
        if not np.isfinite(values).all():
            raise ValueError("non-finite numbers in the regression")
        return model


def _ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Weights of ``y ~ x @ w`` (both centred) with the penalty ``ridge * n * |w|^2``."""
    return np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ y)


def _cv_error(x: np.ndarray, y: np.ndarray, groups: np.ndarray, ridge: float) -> float:
    """Leave-one-group-out root mean squared error of ``y`` for one ridge strength."""
    errors = []
    for g in np.unique(groups):
        test = groups == g
        mx, my = x[~test].mean(0), y[~test].mean()
        w = _ridge(x[~test] - mx, y[~test] - my, ridge)
        errors.append((x[test] - mx) @ w + my - y[test])
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))


def _crop(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, factor: float):
    """A crop of ``image`` that measures at most CROP px after rescaling, around an object."""
    _, h, w = image.shape
    side = max(8, math.ceil(CROP / factor))
    if side >= h and side >= w:
        return image
    ys, xs = np.nonzero(labels)
    i = int(rng.integers(len(ys)))
    y0 = int(np.clip(int(ys[i]) - side // 2, 0, max(0, h - side)))
    x0 = int(np.clip(int(xs[i]) - side // 2, 0, max(0, w - side)))
    return image[:, y0 : y0 + side, x0 : x0 + side]


def fit_size_model(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    standard: float,
    *,
    seed: int,
    scales_per_image: int = SCALES_PER_IMAGE,
) -> SizeModel:
    """Fit the size model on labelled images at their own size.

    Parameters
    ----------
    images : ``(C, H, W)`` normalised network inputs at their original size.
    labels : ``(H, W)`` labels of the same images (images without objects are skipped).
    standard : the diameter (px) the network is trained at.
    seed : drives the random scales and crops.
    scales_per_image : random scales drawn per image.

    Returns
    -------
    SizeModel

    Raises
    ------
    ValueError
        Fewer than 2 images have objects (nothing to fit or to cross-validate on).

    Notes
    -----
    Each image (median object diameter ``d``) is rescaled by ``f`` so its objects
    measure ``standard * SPAN ** u``, ``u`` uniform in [-1, 1] (``f`` clipped to the
    rescaling limits of :mod:`cellbench.scale`); a crop of at most CROP px after
    rescaling gives one sample with the target ``log(d * f)``.
    """
    rng = np.random.default_rng(seed)
    rows, logs, groups = [], [], []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        d = median_diameter(label)
        if d is None:
            continue
        for _ in range(scales_per_image):
            target = standard * SPAN ** rng.uniform(-1.0, 1.0)
            factor = float(np.clip(target / d, MIN_FACTOR, MAX_FACTOR))
            scaled = rescale_image(_crop(rng, image, label, factor), factor)
            if min(scaled.shape[1:]) < 16:
                continue
            rows.append(scale_features(scaled))
            logs.append(math.log(d * factor))
            groups.append(index)
    n_images = len(set(groups))
    if n_images < 2:
        raise ValueError(
            f"the size model needs at least 2 labelled images with objects; got {n_images}"
        )
    x, y, g = np.array(rows), np.array(logs), np.array(groups)
    errors = {r: _cv_error(x, y, g, r) for r in RIDGES}
    ridge = min(errors, key=errors.get)
    mx, my = x.mean(0), float(y.mean())
    return SizeModel(
        standard=float(standard),
        mean_features=tuple(float(v) for v in mx),
        coef=tuple(float(v) for v in _ridge(x - mx, y - my, ridge)),
        intercept=my,
        ridge=float(ridge),
        n_images=n_images,
        n_samples=len(y),
        cv_log_error=float(errors[ridge]),
    )
