"""Small helpers shared by the dataset sources (finding files, reading labels)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

from cellbench.io import CellbenchIOError, read_image

__all__ = [
    "LABEL_FIX",
    "find_dir",
    "find_file",
    "iter_files",
    "read_label_image",
    "relabel",
    "log",
]

#: The fix named by every error about a label / mask file.
LABEL_FIX = (
    "Save it as a single-channel integer image (uint16/uint32 TIFF or PNG) with "
    "0 = background and one positive value per cell."
)

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
    """Read an instance label image (TIFF/PNG), squeeze singleton axes, check it is 2-D integer.

    Raises
    ------
    cellbench.io.CellbenchIOError
        The file is not a 2-D image of non-negative integers; the message names the
        file and the fix.
    """
    labels = np.squeeze(read_image(path))
    if labels.ndim != 2:
        raise CellbenchIOError(
            f"{path}: expected a 2-D label image, got shape {labels.shape}. {LABEL_FIX}"
        )
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise CellbenchIOError(
            f"{path}: a label image must hold integers, got {labels.dtype}. {LABEL_FIX}"
        )
    if labels.size and int(labels.min()) < 0:
        raise CellbenchIOError(f"{path}: the label image holds negative values. {LABEL_FIX}")
    return labels
