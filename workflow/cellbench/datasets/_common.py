"""Small helpers shared by the dataset sources (finding files, reading labels)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

from cellbench.io import read_image

__all__ = ["find_dir", "find_file", "iter_files", "read_label_image", "relabel", "log"]

log = logging.getLogger("cellbench.datasets")

_SKIP_PARTS = ("__MACOSX",)


def iter_files(root: Path, pattern: str = "*") -> Iterator[Path]:
    """Files under ``root`` matching ``pattern`` (recursive, sorted), skipping macOS/hidden junk."""
    for path in sorted(Path(root).rglob(pattern)):
        if not path.is_file():
            continue
        rel = path.relative_to(root).parts
        if any(p in _SKIP_PARTS or p.startswith("._") or p.startswith(".extract-") for p in rel):
            continue
        yield path


def find_dir(root: Path, name: str, max_depth: int = 3) -> Path | None:
    """The shallowest folder called ``name`` at or below ``root`` (``root`` itself counts)."""
    root = Path(root)
    if root.name == name and root.is_dir():
        return root
    frontier = [root]
    for _ in range(max_depth):
        nxt = []
        for folder in frontier:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                if child.name in _SKIP_PARTS or child.name.startswith("."):
                    continue
                if child.name == name:
                    return child
                nxt.append(child)
        frontier = nxt
    return None


def find_file(root: Path, name: str, max_depth: int = 4) -> Path | None:
    """The shallowest file called ``name`` at or below ``root``."""
    root = Path(root)
    if (root / name).is_file():
        return root / name
    for depth in range(1, max_depth + 1):
        hits = sorted(root.glob("/".join(["*"] * depth) + "/" + name))
        hits = [h for h in hits if not any(p in _SKIP_PARTS for p in h.parts)]
        if hits:
            return hits[0]
    return None


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber instance labels to ``1..N`` (0 stays background), as int32."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.max(initial=0) == 0:
        return labels.astype(np.int32, copy=False)
    out, _, _ = relabel_sequential(labels.astype(np.int64, copy=False))
    return out.astype(np.int32, copy=False)


def read_label_image(path: Path) -> np.ndarray:
    """Read an instance label image (TIFF/PNG), squeeze singleton axes, check it is 2-D integer."""
    labels = np.squeeze(read_image(path))
    if labels.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise ValueError(f"{path}: label image must hold integers, got {labels.dtype}")
    return labels
