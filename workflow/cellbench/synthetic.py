"""The embedded offline default dataset: synthetic microscopy with exact instance labels.

Everything is generated from one seed, so the same params give byte-identical
images. Cells are star-convex shapes (an ellipse of random size, elongation and
orientation whose radius is perturbed by a few random Fourier modes), placed in
clusters so that many touch; later cells are clipped by earlier ones, which gives
realistic shared borders without overlaps. Two looks:

``fluorescent``
    bright nuclei on a dark background (uint16): per-cell brightness, brighter
    centre, granular internal texture, uneven illumination, optical blur, Poisson
    shot noise and camera read noise.
``phase``
    phase-contrast-like cells (uint8): mid-grey background, dark textured cell
    bodies surrounded by a bright halo, uneven illumination, blur and noise.

All functions are pure (arrays in, arrays out); :func:`generate_image` is the
entry point.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon

from cellbench.datasets.options import SyntheticOptions

__all__ = ["LOOKS", "generate_image", "random_cell_labels"]

LOOKS = ("fluorescent", "phase")

#: cell_type recorded in index.csv for each look
CELL_TYPES = {"fluorescent": "fluorescent_nuclei", "phase": "phase_cells"}


def _cell_polygon(
    rng: np.random.Generator, center: np.ndarray, radius: float, n_vertices: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (rows, cols) of a random star-convex cell outline around ``center``."""
    theta = np.linspace(0.0, 2.0 * np.pi, n_vertices, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4, 5):  # low-frequency shape irregularity
        r += rng.normal(0.0, 0.09 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.5, 1.6) * radius
    elongation = rng.uniform(1.0, 1.8)
    angle = rng.uniform(0.0, np.pi)
    y = r * np.sin(theta) / np.sqrt(elongation)
    x = r * np.cos(theta) * np.sqrt(elongation)
    rows = center[0] + y * np.cos(angle) + x * np.sin(angle)
    cols = center[1] - y * np.sin(angle) + x * np.cos(angle)
    return rows, cols


def random_cell_labels(rng: np.random.Generator, spec: SyntheticOptions) -> np.ndarray:
    """Draw an instance label image of touching and clustered irregular cells.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, 0 = background, 1..N consecutive instances, each one
        connected component, no overlaps.
    """
    h, w = spec.height, spec.width
    labels = np.zeros((h, w), np.int32)
    n_target = int(rng.integers(spec.n_cells[0], spec.n_cells[1] + 1))
    centers: list[np.ndarray] = []
    radii: list[float] = []
    next_id = 1
    for _ in range(n_target * 3):  # attempts; stop once n_target cells are placed
        if next_id > n_target:
            break
        radius = float(rng.uniform(*spec.radius))
        if centers and rng.random() < spec.cluster_fraction:
            j = int(rng.integers(len(centers)))
            direction = rng.normal(size=2)
            direction /= np.linalg.norm(direction) + 1e-9
            center = centers[j] + direction * (radii[j] + radius) * rng.uniform(0.75, 1.0)
        else:
            center = rng.uniform([0, 0], [h, w])
        rows, cols = _cell_polygon(rng, center, radius)
        rr, cc = draw_polygon(rows, cols, shape=(h, w))
        if rr.size == 0:
            continue
        free = labels[rr, cc] == 0
        full_area = rr.size
        rr, cc = rr[free], cc[free]
        if rr.size < max(20, 0.6 * full_area):  # mostly hidden behind earlier cells: skip
            continue
        cell = np.zeros((h, w), bool)
        cell[rr, cc] = True
        comp, n = ndi.label(cell)
        if n > 1:  # clipping split it: keep the largest piece
            sizes = np.bincount(comp.ravel())[1:]
            cell = comp == (1 + int(np.argmax(sizes)))
        labels[cell] = next_id
        centers.append(np.asarray(center, float))
        radii.append(radius)
        next_id += 1
    return labels


def _illumination(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """Smooth multiplicative illumination field around 1 (vignetting + tilt)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    r2 = ((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2
    tilt = rng.normal(0, 1) * (yy / h - 0.5) + rng.normal(0, 1) * (xx / w - 0.5)
    field = 1.0 - strength * r2 + 0.5 * strength * tilt
    return np.clip(field, 0.3, 1.7).astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Granular texture: smoothed white noise, zero mean, unit-ish variance."""
    tex = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), scale)
    return tex / (tex.std() + 1e-6)


def _render_fluorescent(rng: np.random.Generator, labels: np.ndarray, noise: float) -> np.ndarray:
    h, w = labels.shape
    n = int(labels.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.35, 1.0, n)]).astype(np.float32)
    signal = brightness[labels]
    # brighter towards each nucleus centre (distance to its border)
    dist = ndi.distance_transform_edt(labels > 0)
    inner = np.zeros(n + 1, np.float32)
    if n:
        inner[1:] = ndi.maximum(dist, labels, index=np.arange(1, n + 1))
    rel = np.where(labels > 0, dist / np.maximum(inner[labels], 1.0), 0.0)
    signal = signal * (0.6 + 0.4 * np.sqrt(rel))
    signal *= 1.0 + 0.25 * _texture(rng, (h, w), 1.2) * (labels > 0)
    signal = ndi.gaussian_filter(signal, rng.uniform(0.8, 1.6))  # optics
    signal = signal * _illumination(rng, h, w, 0.6) + 0.04 + 0.02 * _texture(rng, (h, w), 8)
    photons = rng.uniform(120, 400) / noise  # expected photons at brightness 1
    counts = rng.poisson(np.clip(signal, 0, None) * photons).astype(np.float32)
    counts += rng.normal(0.0, 2.0 * noise, size=(h, w))  # camera read noise
    image = np.clip(100.0 + counts * (3000.0 / photons), 0, 65535)
    return image.astype(np.uint16)


def _render_phase(rng: np.random.Generator, labels: np.ndarray, noise: float) -> np.ndarray:
    h, w = labels.shape
    fg = labels > 0
    n = int(labels.max())
    darkness = np.concatenate([[0.0], rng.uniform(0.12, 0.3, n)]).astype(np.float32)
    image = 0.5 - darkness[labels]
    image -= 0.05 * _texture(rng, (h, w), 1.0) * fg
    # bright halo just outside every cell, and a thin bright rim on shared borders
    outside = ndi.distance_transform_edt(~fg)
    image += 0.22 * np.exp(-((outside - 1.5) ** 2) / 3.0) * ~fg
    from skimage.segmentation import find_boundaries

    image += 0.08 * find_boundaries(labels, mode="inner")
    image = ndi.gaussian_filter(image.astype(np.float32), rng.uniform(0.7, 1.3))
    image = image * _illumination(rng, h, w, 0.5)
    image += rng.normal(0.0, 0.025 * noise, size=(h, w))
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)


def generate_image(
    seed: int | np.random.SeedSequence, look: str, spec: SyntheticOptions | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic image and its exact labels.

    Parameters
    ----------
    seed : seed (or SeedSequence) of this image; same seed, same output.
    look : ``"fluorescent"`` or ``"phase"``.
    spec : size and difficulty (the ``synthetic`` dataset options; None = their defaults).

    Returns
    -------
    image : numpy.ndarray
        ``(H, W)``, uint16 for ``fluorescent``, uint8 for ``phase``.
    labels : numpy.ndarray
        ``(H, W)`` int32 instance labels, 0 = background, 1..N, no overlaps.
    """
    if look not in LOOKS:
        raise ValueError(f"unknown synthetic look {look!r}; valid looks: {', '.join(LOOKS)}")
    spec = spec if spec is not None else SyntheticOptions()
    rng = np.random.default_rng(seed)
    labels = random_cell_labels(rng, spec)
    render = _render_fluorescent if look == "fluorescent" else _render_phase
    return render(rng, labels, spec.noise), labels
