"""Exact pixel-edge outlines of instance labels, and filling them back.

Pure (arrays in, arrays out). Every label's region is described by polygons whose
vertices lie on **pixel corners**: pixel ``(row, col)`` is the unit square
``x in [col, col + 1]``, ``y in [row, row + 1]`` (the convention of ImageJ / Fiji
and QuPath, origin at the top-left corner of the top-left pixel, ``x`` to the
right, ``y`` down). The outline is traced along pixel edges, so it encloses
exactly the label's pixels: filling it with the pixel-centre rule (a pixel is
inside when its centre ``(col + 0.5, row + 0.5)`` is, the rule of ImageJ's
``PolygonFiller``, Java2D, QuPath and :func:`skimage.draw.polygon` with the
half-pixel shift of :func:`fill_polygons`) gives back the label's pixels, with no
pixel gained or lost. Pixel centres never lie on such an outline, so there are
no ties.

Shapes the labels can have, and what the outline is:

- one 4-connected piece without holes: one :class:`Polygon` without holes;
- holes (background, or another label, enclosed by the label): interior rings of
  the polygon;
- several pieces (a label whose pixels are not 4-connected, e.g. two blobs that
  share the id or pixels touching only at a corner): one polygon per piece;
- a piece that touches itself at a pixel corner (pixels meeting diagonally) is
  split at that corner, so every ring is simple (it never crosses or touches
  itself); rings may touch each other at corners, which the OGC simple-features
  rules (GeoJSON readers, shapely) accept.

Rings are closed implicitly (the first vertex is not repeated) and keep only the
corners where the outline turns. Exterior rings have positive signed area in
``(x, y)`` (the shoelace sum), holes negative: counter-clockwise and clockwise
in the mathematical sense, as RFC 7946 (GeoJSON) asks; on screen, with ``y``
pointing down, they appear the other way round.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Polygon", "fill_polygons", "label_outlines", "signed_area"]


@dataclass(frozen=True)
class Polygon:
    """One connected piece of a label's region.

    Attributes
    ----------
    shell : numpy.ndarray
        ``(N, 2)`` int64 ``(x, y)`` pixel-corner vertices of the exterior ring,
        not closed (the first vertex is not repeated), positive signed area.
    holes : list of numpy.ndarray
        Interior rings, each ``(M, 2)`` int64 ``(x, y)``, negative signed area.
    """

    shell: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)

    @property
    def area(self) -> int:
        """Pixels enclosed (shell area minus hole areas)."""
        return int(round(signed_area(self.shell) + sum(signed_area(h) for h in self.holes)))

    def rings(self) -> list[np.ndarray]:
        """Shell first, then the holes."""
        return [self.shell, *self.holes]


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a ring ``(N, 2)`` of ``(x, y)`` vertices (open or closed).

    Positive for counter-clockwise rings in the mathematical ``(x, y)`` sense.
    """
    ring = np.asarray(ring, dtype=np.float64)
    if len(ring) < 3:
        return 0.0
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


# --------------------------------------------------------------------------- tracing

# The four sides of a pixel (row r, col c) as directed edges between corners (x, y),
# oriented so the pixel is on the same side of every edge; a pixel alone gives the
# ring (c, r) -> (c+1, r) -> (c+1, r+1) -> (c, r+1), signed area +1.
_SIDES = (
    # neighbour offset (dr, dc), edge start (dx, dy), edge end (dx, dy)
    ((-1, 0), (0, 0), (1, 0)),  # top
    ((0, 1), (1, 0), (1, 1)),  # right
    ((1, 0), (1, 1), (0, 1)),  # bottom
    ((0, -1), (0, 1), (0, 0)),  # left
)


def _boundary_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel side between a labelled pixel and a pixel of another value.

    Returns
    -------
    label : ``(E,)`` int64, the label each edge belongs to.
    edges : ``(E, 6)`` int64: start x, start y, end x, end y, owner row, owner col.
    """
    padded = np.pad(labels, 1)
    h, w = labels.shape
    centre = padded[1:-1, 1:-1]
    out_labels, out_edges = [], []
    for (dr, dc), (sx, sy), (ex, ey) in _SIDES:
        neighbour = padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        rows, cols = np.nonzero((centre != 0) & (centre != neighbour))
        out_labels.append(centre[rows, cols].astype(np.int64))
        out_edges.append(np.stack([cols + sx, rows + sy, cols + ex, rows + ey, rows, cols], axis=1))
    return np.concatenate(out_labels), np.concatenate(out_edges).astype(np.int64)


def _link(edges: np.ndarray) -> list[list[tuple[int, int, int, int]]]:
    """Chain one label's directed unit edges into closed loops.

    Each loop is a list of ``(x, y, row, col)``: the corner an edge starts at and
    the pixel it belongs to. At a corner where the label's pixels meet diagonally
    (two edges leave it), the walk continues along the pixel it came along, so it
    turns around that pixel.
    """
    outgoing: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (sx, sy, *_rest) in enumerate(edges.tolist()):
        outgoing[(sx, sy)].append(i)
    used = np.zeros(len(edges), dtype=bool)
    loops = []
    for first in range(len(edges)):
        if used[first]:
            continue
        loop = []
        i = first
        while not used[i]:
            used[i] = True
            sx, sy, ex, ey, orow, ocol = edges[i].tolist()
            loop.append((sx, sy, orow, ocol))
            options = [j for j in outgoing[(ex, ey)] if not used[j]]
            if not options:
                break
            if len(options) > 1:
                same = [j for j in options if edges[j, 4] == orow and edges[j, 5] == ocol]
                options = same or options
            i = options[0]
        loops.append(loop)
    return loops


def _split_at_repeats(
    loop: list[tuple[int, int, int, int]],
) -> list[list[tuple[int, int, int, int]]]:
    """Split a closed loop at every corner it passes twice, into simple loops."""
    out, stack = [], [loop]
    while stack:
        current = stack.pop()
        seen: dict[tuple[int, int], int] = {}
        for k, (x, y, _row, _col) in enumerate(current):
            if (x, y) in seen:
                j = seen[(x, y)]
                stack.append(current[j:k])
                stack.append(current[:j] + current[k:])
                break
            seen[(x, y)] = k
        else:
            out.append(current)
    return out


def _corners(loop: list[tuple[int, int, int, int]]) -> np.ndarray:
    """The ``(x, y)`` corners of a loop of unit steps where it turns (straight runs merged)."""
    ring = np.asarray(loop, dtype=np.int64)[:, :2]
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    turns = np.any(before != after, axis=1)
    return ring[turns]


def _inside(point: tuple[float, float], ring: np.ndarray) -> bool:
    """Even-odd test of a point against a ring; the point must not lie on the ring."""
    x, y = point
    xs, ys = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    crosses = (ys > y) != (yn > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = xs + (y - ys) * (xn - xs) / (yn - ys)
    return bool(np.count_nonzero(crosses & (x < at)) % 2)


def _assemble(loops: list[list[tuple[int, int, int, int]]]) -> list[Polygon]:
    """Sort simple loops into shells (positive area) and holes, each hole in its shell."""
    rings = [_corners(loop) for loop in loops]
    areas = [signed_area(r) for r in rings]
    shells = [k for k, a in enumerate(areas) if a > 0]
    holes: dict[int, list[np.ndarray]] = {k: [] for k in shells}
    for k, area in enumerate(areas):
        if area >= 0:
            continue
        # a pixel of the label next to the hole: inside the hole's shell, outside the hole
        _x, _y, row, col = loops[k][0]
        centre = (col + 0.5, row + 0.5)
        containing = [s for s in shells if _inside(centre, rings[s])]
        owner = min(containing, key=lambda s: areas[s])
        holes[owner].append(rings[k])
    order = sorted(shells, key=lambda s: (int(rings[s][:, 1].min()), int(rings[s][:, 0].min())))
    return [Polygon(rings[s], holes[s]) for s in order]


def label_outlines(labels: np.ndarray) -> dict[int, list[Polygon]]:
    """Trace the exact pixel-edge outline of every label.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background; ids need not be
        consecutive.

    Returns
    -------
    dict
        ``{label: [Polygon, ...]}`` for every non-zero label, in increasing label
        order; the polygons of a label are its pieces, ordered by their top-left
        corner (top row first). See the module docstring for the conventions.

    Raises
    ------
    ValueError
        When ``labels`` is not a 2-D integer array or holds negative values.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and int(labels.min()) < 0:
        raise ValueError("labels must be >= 0 (0 = background)")
    ids, edges = _boundary_edges(labels)
    if ids.size == 0:
        return {}
    order = np.argsort(ids, kind="stable")
    ids, edges = ids[order], edges[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    bounds = np.r_[starts, ids.size]
    out: dict[int, list[Polygon]] = {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        loops = [simple for loop in _link(edges[a:b]) for simple in _split_at_repeats(loop)]
        out[int(ids[a])] = _assemble(loops)
    return out


# --------------------------------------------------------------------------- filling


def fill_polygons(
    rings: list[np.ndarray], shape: tuple[int, int], *, origin: str = "corner"
) -> np.ndarray:
    """Rasterise rings with the even-odd rule, a pixel being in when its centre is.

    Parameters
    ----------
    rings : list of numpy.ndarray
        ``(N, 2)`` ``(x, y)`` vertices per ring (open or closed); shells and holes
        of one region together (the even-odd rule makes holes empty).
    shape : tuple of int
        ``(H, W)`` of the mask.
    origin : ``"corner"`` or ``"centre"``
        ``"corner"``: integer coordinates are pixel corners (this module, ImageJ,
        QuPath); ``"centre"``: integer coordinates are pixel centres (scikit-image).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool.
    """
    from skimage.draw import polygon as draw_polygon

    if origin not in ("corner", "centre"):
        raise ValueError(f"origin must be 'corner' or 'centre', got {origin!r}")
    shift = 0.5 if origin == "corner" else 0.0
    parity = np.zeros(shape, dtype=np.uint8)
    for ring in rings:
        ring = np.asarray(ring, dtype=np.float64)
        rr, cc = draw_polygon(ring[:, 1] - shift, ring[:, 0] - shift, shape=shape)
        np.add.at(parity, (rr, cc), 1)
    return (parity % 2).astype(bool)
