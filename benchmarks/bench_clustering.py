"""Embedding clustering: time and accuracy of the ``fast`` and ``agglomerative`` post-processings.

One process, CPU, the functions the ``embedding`` family calls
(:mod:`cellbench.postprocess.clustering`) with the family's defaults
(``foreground_threshold`` 0.5, ``distance_threshold`` 0.3, ``min_size`` 15,
``erosion_radius`` 1), on 512 x 512 label images with a known number of touching
cells:

- **labels**: Voronoi cells around random points at least ``0.75 x`` the mean cell
  spacing apart, each clipped to a disc of random radius, so most cells touch
  several neighbours along straight boundaries and some border the background;
- **maps** a network would give if it were good but not perfect: every instance
  gets a random unit embedding (``--dim`` 8) at least ``margin`` (0.5, the option's
  default) in cosine distance from the embeddings of the cells within 3 px of it
  (what a contrastive loss asks for); the embedding image is blurred (Gaussian,
  ``sigma = blur`` px: network outputs, tile blending, test-time augmentation and
  resizing all make boundaries smooth) and gets Gaussian pixel noise (``noise``
  per component); the foreground probability is the blurred mask plus Gaussian
  noise (0.1).

Printed: one markdown table; per cell count, condition (noise, blur) and method,
the median wall time of ``--repeats`` runs per image, the number of instances found
and the mean AP (IoU 0.50:0.05:0.95) and AP at IoU 0.5 against the labels.
``agglomerative`` runs at each ``--grids`` value (the ``cluster_grid`` option;
time and memory grow with the square of the foreground grid cells).

Usage::

    python benchmarks/bench_clustering.py                      # 100 / 300 / 600 cells
    python benchmarks/bench_clustering.py --cells 300 --repeats 5
    python benchmarks/bench_clustering.py --conditions 0.1:1.0 0.2:1.5 0.1:2.0
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np
from cellbench.metrics import score_image
from cellbench.postprocess.clustering import agglomerative_labels, fast_labels
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

FOREGROUND_THRESHOLD = 0.5
DISTANCE_THRESHOLD = 0.3
MIN_SIZE = 15
EROSION_RADIUS = 1
MARGIN = 0.5


# --------------------------------------------------------------------------- data


def touching_cells(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size)`` int32 labels of ``n`` touching Voronoi cells clipped to discs."""
    spacing = size / np.sqrt(n)
    points = np.empty((0, 2))
    attempts = 0
    while len(points) < n and attempts < 400 * n:
        attempts += 1
        p = rng.uniform(0, size, 2)
        if not len(points) or np.min(np.hypot(*(points - p).T)) > 0.75 * spacing:
            points = np.vstack([points, p])
    seeds = np.zeros((size, size), np.int32)
    ij = np.clip(points.astype(int), 0, size - 1)
    seeds[ij[:, 0], ij[:, 1]] = np.arange(1, len(points) + 1)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    radius = rng.uniform(0.45, 0.75, len(points) + 1) * spacing
    labels[dist > radius[labels]] = 0
    return labels


def neighbour_sets(labels: np.ndarray, within: int = 3) -> list[set[int]]:
    """For every instance id, the ids of the instances within ``within`` px of it."""
    near = expand_labels(labels, within)
    out: list[set[int]] = [set() for _ in range(int(labels.max()) + 1)]
    for a, b in ((near[:-1], near[1:]), (near[:, :-1], near[:, 1:])):
        touch = (a != b) & (a > 0) & (b > 0)
        for i, j in zip(a[touch].tolist(), b[touch].tolist(), strict=True):
            out[i].add(j)
            out[j].add(i)
    return out


def ideal_maps(
    labels: np.ndarray, rng: np.random.Generator, *, dim: int, noise: float, blur: float
) -> np.ndarray:
    """``(1 + dim, H, W)`` float32: foreground probability, then the noisy embedding."""
    neighbours = neighbour_sets(labels)
    vectors = np.zeros((int(labels.max()) + 1, dim), np.float32)
    for i in range(1, len(vectors)):
        for _ in range(200):  # a direction at least MARGIN from the neighbours drawn so far
            v = rng.normal(size=dim)
            v /= np.linalg.norm(v)
            if all(1.0 - v @ vectors[j] >= MARGIN for j in neighbours[i] if j < i):
                break
        vectors[i] = v
    embedding = vectors[labels].transpose(2, 0, 1)
    fg = (labels > 0).astype(np.float32)
    if blur:
        embedding = ndi.gaussian_filter(embedding, (0, blur, blur))
        fg = ndi.gaussian_filter(fg, blur)
    embedding = embedding + rng.normal(0.0, noise, embedding.shape)
    fg = np.clip(fg + rng.normal(0.0, 0.1, fg.shape), 0.0, 1.0)
    return np.concatenate([fg[None], embedding]).astype(np.float32)


# --------------------------------------------------------------------------- timing


def methods(grids: list[int]) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    out: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "fast": lambda fg, emb: fast_labels(
            fg, emb, distance_threshold=DISTANCE_THRESHOLD, min_size=MIN_SIZE
        )
    }
    for grid in grids:
        out[f"agglomerative (grid {grid})"] = lambda fg, emb, grid=grid: agglomerative_labels(
            fg,
            emb,
            distance_threshold=DISTANCE_THRESHOLD,
            grid=grid,
            erosion_radius=EROSION_RADIUS,
            min_size=MIN_SIZE,
        )
    return out


def run(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray], maps: np.ndarray, repeats: int
) -> tuple[float, np.ndarray]:
    """Median seconds of ``repeats`` runs (foreground threshold included) and the labels."""
    times, labels = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        labels = fn(maps[0] > FOREGROUND_THRESHOLD, maps[1:])
        times.append(time.perf_counter() - start)
    return float(np.median(times)), labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[100, 300, 600])
    parser.add_argument("--size", type=int, default=512, help="image side, px")
    parser.add_argument("--dim", type=int, default=8, help="embedding dimension")
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=["0.1:1.0", "0.2:1.5"],
        help="noise:blur pairs (pixel noise per component : boundary blur sigma, px)",
    )
    parser.add_argument("--grids", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--repeats", type=int, default=3, help="runs per image (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    conditions = [tuple(float(v) for v in c.split(":")) for c in args.conditions]

    print(
        f"embedding clustering benchmark: {args.size} x {args.size} px, D = {args.dim}, "
        f"median of {args.repeats} runs; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, numpy {np.__version__}\n"
    )
    print("| cells | noise | blur | method | time (ms) | found | mean AP | AP@0.5 |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for n in args.cells:
        rng = np.random.default_rng([args.seed, n])
        labels = touching_cells(n, args.size, rng)
        for noise, blur in conditions:
            maps = ideal_maps(labels, rng, dim=args.dim, noise=noise, blur=blur)
            for name, fn in methods(args.grids).items():
                seconds, pred = run(fn, maps, args.repeats)
                score = score_image(labels, pred)
                print(
                    f"| {int(labels.max())} | {noise:g} | {blur:g} | {name} | "
                    f"{1000 * seconds:.0f} | {int(pred.max())} | {score.mean_ap:.3f} | "
                    f"{score.matching(0.5).ap:.3f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
