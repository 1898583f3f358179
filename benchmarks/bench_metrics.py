"""Speed of cellbench.metrics against stardist.matching and cellpose.metrics.

One process, two tables (markdown, ready for BENCHMARKS.md):

1. A whole dataset (real DSB 2018 / BBBC039 / CTC labels when ``../shared/data`` is
   there, synthetic otherwise, plus large images with 1,000+ cells) scored at the ten
   IoU thresholds 0.50:0.05:0.95 by every method. All methods must report identical TP
   counts, or the script fails.
2. A size sweep of synthetic images (touching cells at a fixed density, so pixels and
   instances grow together) showing that cellbench's cost is linear: the time per
   pixel stays flat and the fitted log-log slope is about 1. The peers solve a dense
   ``n_true x n_pred`` assignment per threshold and grow much faster.

Usage::

    python benchmarks/bench_metrics.py            # full run (a few minutes)
    python benchmarks/bench_metrics.py --quick    # CI-sized (well under a minute)

Peers are optional (``pip install stardist cellpose``); missing ones are reported and
skipped. Times are the best of ``--repeats`` runs, in seconds of wall-clock time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cellbench.metrics import DEFAULT_THRESHOLDS, match, score_image
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

THRESHOLDS = list(DEFAULT_THRESHOLDS)
Pair = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- data


def synthetic_labels(side: int, rng: np.random.Generator, spacing: int = 22) -> np.ndarray:
    """Touching, irregular cells: jittered grid seeds grown by ``expand_labels``."""
    n = max(side // spacing, 1)
    centres = (np.arange(n) + 0.5) * spacing
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    cy = np.clip(cy + rng.uniform(-0.3, 0.3, cy.shape) * spacing, 0, side - 1).astype(int)
    cx = np.clip(cx + rng.uniform(-0.3, 0.3, cx.shape) * spacing, 0, side - 1).astype(int)
    seeds = np.zeros((side, side), np.int32)
    seeds[cy.ravel(), cx.ravel()] = np.arange(1, cy.size + 1)
    y = expand_labels(seeds, distance=int(spacing * 0.6))
    y[rng.random(y.shape) < 0.002] = 0  # a few holes
    return y


def perturb(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An imperfect prediction: shifted, ~10 % split, ~5 % merged, ~5 % dropped, FPs."""
    y = np.roll(y, (1, 2), axis=(0, 1)).astype(np.int64)
    ids = np.unique(y[y > 0])
    top = int(y.max(initial=0))
    if ids.size == 0:
        return y
    # split along a vertical line through the centroid
    chosen = np.zeros(top + 1, bool)
    chosen[ids[rng.random(ids.size) < 0.1]] = True
    cx = np.zeros(top + 1)
    cx[ids] = np.asarray(ndi.center_of_mass(np.ones_like(y), y, ids))[:, 1]
    cols = np.broadcast_to(np.arange(y.shape[1]), y.shape)
    y = np.where(chosen[y] & (cols > cx[y]), y + top, y)
    # merge into the right-hand neighbour, drop some
    lut = np.arange(int(y.max()) + 1)
    a, b = y[:, :-1].ravel(), y[:, 1:].ravel()
    touch = (a > 0) & (b > 0) & (a != b)
    first = dict(zip(a[touch][::-1].tolist(), b[touch][::-1].tolist(), strict=True))
    for i in ids[rng.random(ids.size) < 0.05]:
        lut[i] = first.get(int(i), i)
    lut[ids[rng.random(ids.size) < 0.05]] = 0
    y = lut[y]
    # false positives: small squares in the background
    nxt = int(y.max()) + 1
    for r, c in zip(
        *(rng.integers(0, s - 6, max(ids.size // 20, 1)) for s in y.shape), strict=True
    ):
        if not y[r : r + 5, c : c + 5].any():
            y[r : r + 5, c : c + 5] = nxt
            nxt += 1
    return y


def shared_data_dir() -> Path:
    env = os.environ.get("CELLBENCH_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def real_labels(root: Path, quick: bool) -> list[np.ndarray]:
    """Dense label images from ../shared/data (empty list when it is absent)."""
    if not (root / "README.md").is_file():
        return []
    import tifffile
    from PIL import Image
    from skimage.measure import label as cc_label

    out = []
    for folder in sorted(root.glob("dsb2018/stage1_train/*"))[: 8 if quick else None]:
        y = None
        for i, path in enumerate(sorted((folder / "masks").glob("*.png")), start=1):
            m = np.asarray(Image.open(path)) > 0
            y = np.zeros(m.shape, np.int32) if y is None else y
            y[m] = i
        out.append(y)
    for path in sorted(root.glob("bbbc039/masks/*.png"))[: 3 if quick else None]:
        out.append(cc_label(np.asarray(Image.open(path))[..., 0]))
    for path in sorted(root.glob("ctc/*/01_ST/SEG/*.tif"))[: 3 if quick else 20]:
        out.append(tifffile.imread(path))
    return out


def tiled(y: np.ndarray, reps: int) -> np.ndarray:
    """``reps x reps`` copies of a label image with distinct ids per copy."""
    step = int(y.max()) + 1
    y = y.astype(np.int64)
    rows = [
        [np.where(y > 0, y + step * (reps * i + j), 0) for j in range(reps)] for i in range(reps)
    ]
    return np.block(rows)


def build_dataset(quick: bool, rng: np.random.Generator) -> tuple[list[Pair], str]:
    truths = real_labels(shared_data_dir(), quick)
    source = "real (DSB 2018, BBBC039, CTC ST)" if truths else "synthetic"
    if not truths:
        truths = [synthetic_labels(256, rng) for _ in range(8 if quick else 40)]
    large = [synthetic_labels(1024, rng) for _ in range(1 if quick else 3)]
    if len(truths) > 20:  # the most crowded real image tiled 3 x 3 and 4 x 4
        crowded = max(truths, key=lambda y: np.unique(y).size)
        large += [tiled(crowded, 3), tiled(crowded, 4)]
    truths += large
    return [(y, perturb(y, rng)) for y in truths], source


# --------------------------------------------------------------------------- methods


def ours_score_image(pairs: list[Pair]) -> np.ndarray:
    scores = [score_image(a, b) for a, b in pairs]
    return np.array([[s.matching(t).tp for t in THRESHOLDS] for s in scores])


def ours_match_loop(pairs: list[Pair]) -> np.ndarray:
    return np.array([[match(a, b, t).tp for t in THRESHOLDS] for a, b in pairs])


def stardist_loop(pairs: list[Pair]) -> np.ndarray:
    from stardist.matching import matching

    return np.array([[matching(a, b, thresh=t).tp for t in THRESHOLDS] for a, b in pairs])


def stardist_list(pairs: list[Pair]) -> np.ndarray:
    from stardist.matching import matching

    return np.array([[m.tp for m in matching(a, b, thresh=THRESHOLDS)] for a, b in pairs])


def cellpose_ap(pairs: list[Pair]) -> np.ndarray:
    from cellpose.metrics import average_precision

    with warnings.catch_warnings():  # 0/0 for ids absent from an image (gaps)
        warnings.simplefilter("ignore", RuntimeWarning)
        _, tp, _, _ = average_precision(
            [a for a, _ in pairs], [b for _, b in pairs], threshold=THRESHOLDS
        )
    return tp.astype(int)


OURS = {
    "cellbench `score_image` (all metrics, 12 thresholds)": ours_score_image,
    "cellbench `match` looped over 10 thresholds": ours_match_loop,
}
PEERS = {
    "stardist `matching` looped over 10 thresholds": ("stardist.matching", stardist_loop),
    "stardist `matching(thresh=[10 thresholds])`": ("stardist.matching", stardist_list),
    "cellpose `metrics.average_precision`": ("cellpose.metrics", cellpose_ap),
}


def available_peers() -> dict[str, Callable]:
    import importlib

    out = {}
    for name, (module, fn) in PEERS.items():
        try:
            importlib.import_module(module)
        except ImportError as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
            continue
        out[name] = fn
    return out


def best_time(fn: Callable, pairs: list[Pair], repeats: int) -> tuple[float, np.ndarray]:
    best, result = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(pairs)
        best = min(best, time.perf_counter() - t0)
    return best, result


# --------------------------------------------------------------------------- main


def dataset_table(pairs: list[Pair], peers: dict, repeats: int, peer_repeats: int) -> float:
    n_cells = [len(np.unique(a)) - 1 for a, _ in pairs]
    mpx = sum(a.size for a, _ in pairs) / 1e6
    print(
        f"\nDataset: {len(pairs)} images, {mpx:.1f} Mpx, {sum(n_cells)} true objects "
        f"(max {max(n_cells)} per image; {sum(c >= 1000 for c in n_cells)} images with "
        f"1,000+), 10 IoU thresholds.\n"
    )
    rows, reference = [], None
    for name, fn in {**OURS, **peers}.items():
        seconds, tp = best_time(fn, pairs, repeats if name in OURS else peer_repeats)
        if reference is None:
            reference = tp
        elif not np.array_equal(tp, reference):
            raise SystemExit(f"{name} disagrees with cellbench on TP counts")
        rows.append((name, seconds))
    ours = rows[0][1]
    print("| method | total (s) | per image (ms) | relative to cellbench |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.3f} | {1e3 * seconds / len(pairs):.1f} | {seconds / ours:.1f}x |"
        )
    peer_times = [s for n, s in rows if n not in OURS]
    if peer_times:
        print(
            f"\nAll methods report identical TP counts. cellbench `score_image` is "
            f"{min(peer_times) / ours:.1f}x faster than the fastest peer."
        )
    return min(peer_times) / ours if peer_times else float("nan")


def sweep_table(sides: list[int], peers: dict, repeats: int, peer_max_cells: int) -> float:
    rng = np.random.default_rng(1)
    print("\nSize sweep (synthetic touching cells, fixed density; 10 thresholds):\n")
    head = "| side | Mpx | true objects | cellbench (ms) | ns / pixel | us / object |"
    sep = "|---:|---:|---:|---:|---:|---:|"
    for name in peers:
        head += f" {name.split(' ')[0]} {'loop' if 'looped' in name else ''}".rstrip() + " (ms) |"
        sep += "---:|"
    print(head)
    print(sep)
    pixels, times = [], []
    for side in sides:
        y = synthetic_labels(side, rng)
        pair = [(y, perturb(y, rng))]
        n = len(np.unique(y)) - 1
        seconds, _ = best_time(ours_score_image, pair, repeats)
        pixels.append(y.size)
        times.append(seconds)
        line = (
            f"| {side} | {y.size / 1e6:.2f} | {n} | {1e3 * seconds:.1f} "
            f"| {1e9 * seconds / y.size:.1f} | {1e6 * seconds / n:.1f} |"
        )
        for fn in peers.values():
            if n <= peer_max_cells:
                line += f" {1e3 * best_time(fn, pair, 1)[0]:.0f} |"
            else:
                line += " (skipped) |"
        print(line)
    slope = float(np.polyfit(np.log(pixels), np.log(times), 1)[0])
    print(
        f"\nFitted log-log slope of cellbench time vs pixels (and objects): {slope:.2f} "
        "(1 = linear)."
    )
    return slope


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--repeats", type=int, default=None, help="best-of repeats (ours)")
    parser.add_argument("--no-peers", action="store_true", help="time cellbench only")
    parser.add_argument(
        "--peer-max-cells",
        type=int,
        default=None,
        help="skip peers in the sweep above this many objects (dense assignment is slow)",
    )
    parser.add_argument(
        "--min-speedup",
        type=float,
        default=None,
        help="exit non-zero unless cellbench is at least this much faster than the fastest peer",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    peer_max = args.peer_max_cells or (1000 if quick else 5000)
    sides = [256, 512, 1024, 2048] if quick else [256, 512, 1024, 2048, 4096]

    rng = np.random.default_rng(2018)
    pairs, source = build_dataset(quick, rng)
    peers = {} if args.no_peers else available_peers()
    if peers:  # warm-up: numba compilation in stardist, imports
        for fn in peers.values():
            fn(pairs[:1])
    ours_score_image(pairs[:1])
    print(f"cellbench metrics benchmark ({'quick' if quick else 'full'}; data: {source})")
    speedup = dataset_table(pairs, peers, repeats, 1)
    slope = sweep_table(sides, peers, repeats, peer_max)
    if args.min_speedup is not None and peers and speedup < args.min_speedup:
        print(f"FAIL: speed-up {speedup:.1f}x < {args.min_speedup}x", file=sys.stderr)
        return 1
    if slope > 1.3:
        print(f"FAIL: cost grows faster than linearly (slope {slope:.2f})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
