"""Clustering of per-pixel embeddings into instances (``embedding`` family post-processing).

Pure functions, arrays in, arrays out. Inputs are a boolean foreground ``(H, W)``
and an embedding ``(D, H, W)``, one vector per pixel. It need not be unit length:
test-time augmentation, tile blending and resizing average unit vectors, so every
function renormalises it first. Distances are cosine distances ``d = 1 - cos`` in
``[0, 2]``. Every function returns ``(H, W)`` int32 labels, 0 = background,
instances numbered 1..N consecutively.

Two methods (the ``clustering`` option of the family):

``agglomerative`` (:func:`agglomerative_labels` = :func:`grid_linkage` + :func:`cut_linkage`)
    The Sartorius embedding source's method: the embedding and the foreground are
    averaged over square blocks (a grid whose longer side has at most ``grid``
    cells), the foreground cells are clustered by average-linkage agglomerative
    clustering on cosine distance cut at ``distance_threshold``, each cluster is
    eroded (disk, grid cells) and split into connected components, and the
    components are upsampled (nearest neighbour) into the full-resolution
    foreground, where the pixels between them join the component of most similar
    mean embedding (``assign="similarity"``, the default; the source's nearest
    component is ``assign="nearest"``). Its time and memory grow with the square of
    the number of foreground grid cells (the linkage), and an object narrower than
    about ``2 * erosion_radius + 1`` grid cells loses its cluster and joins a
    touching neighbour (an isolated one is kept as a foreground region), so the
    grid must be fine enough for the objects.
``fast`` (:func:`fast_labels`)
    A pixel graph at full resolution, linear in the number of pixels: seeds are
    the regions kept away from every pair of pixels (on a row or column, up to
    ``reach`` px apart) whose embeddings differ, the rest of the foreground is
    given to the adjacent seed with the most similar mean embedding, and touching
    regions with close means are merged (centroid linkage). See the function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "GridLinkage",
    "agglomerative_labels",
    "cut_linkage",
    "erode_labels",
    "fast_labels",
    "grid_linkage",
    "normalize_embedding",
    "MAX_LINKAGE_CELLS",
]

#: most foreground grid cells :func:`grid_linkage` clusters (the pairwise distances
#: take ``8 * n**2 / 2`` bytes: 1.6 GB at this limit).
MAX_LINKAGE_CELLS = 20_000

_EPS = 1e-6
#: 4-neighbour offsets (dy, dx).
_NEIGHBOURS_4 = ((-1, 0), (1, 0), (0, -1), (0, 1))
#: growth stages: a pixel joins a label in stage i only when its cosine distance to
#: the label's mean is at most STAGES[i] x the distance threshold (then any).
_STAGES = (0.25, 0.5, 1.0)


# --------------------------------------------------------------------------- shared


def normalize_embedding(embedding: np.ndarray) -> np.ndarray:
    """Unit vectors along axis 0 of ``(D, ...)``; zero vectors stay zero.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``embedding``.
    """
    e = np.asarray(embedding, dtype=np.float32)
    norm = np.sqrt(np.einsum("d...,d...->...", e, e))
    return e / np.maximum(norm, _EPS)[None]


def _check_inputs(foreground: np.ndarray, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fg = np.asarray(foreground, dtype=bool)
    emb = np.asarray(embedding)
    if fg.ndim != 2 or emb.ndim != 3 or emb.shape[1:] != fg.shape:
        raise ValueError(
            f"foreground must be (H, W) and embedding (D, H, W) on the same grid, got "
            f"{fg.shape} and {emb.shape}"
        )
    return fg, normalize_embedding(emb)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber the non-zero ids of ``labels`` to 1..N (keeping their order), int32."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lookup = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int32)
    lookup[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lookup[labels]


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size > 0 and labels.any():
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    return labels


def _add_unlabelled_components(labels: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Foreground components without any label become one new instance each."""
    rest, n = ndi.label(foreground & (labels == 0))
    if not n:
        return labels
    touched = np.zeros(n + 1, bool)
    touched[rest[ndi.binary_dilation(labels > 0) & (rest > 0)]] = True
    lone = np.flatnonzero(~touched[1:]) + 1
    if lone.size:
        lookup = np.zeros(n + 1, labels.dtype)
        lookup[lone] = int(labels.max()) + np.arange(1, lone.size + 1)
        extra = lookup[rest]
        labels = np.where(extra > 0, extra, labels)
    return labels


def _region_means(labels: np.ndarray, e: np.ndarray, n: int) -> np.ndarray:
    """Unit mean embedding of each label 0..n, ``(n + 1, D)`` (row 0: zeros)."""
    flat = labels.ravel()
    means = np.stack([np.bincount(flat, weights=c.ravel(), minlength=n + 1) for c in e], axis=1)
    means[0] = 0.0
    return normalize_embedding(means.T.astype(np.float32)).T


def _box_smooth(e: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """3 x 3 box mean of the foreground pixels' embeddings, renormalised (zero outside)."""
    acc = ndi.uniform_filter(e, size=(1, 3, 3), mode="constant")
    return normalize_embedding(acc) * fg[None]


def _staged_floors(distance_threshold: float) -> tuple[float, ...]:
    """The similarity floors of :func:`_grow_by_similarity` for a distance threshold."""
    return tuple(1.0 - f * float(distance_threshold) for f in _STAGES)


def _grow_by_similarity(
    labels: np.ndarray, e: np.ndarray, fg: np.ndarray, floors: tuple[float, ...] = ()
) -> np.ndarray:
    """Give unlabelled foreground pixels, front by front, the adjacent label of most similar mean.

    Every pass labels the unlabelled foreground pixels that have a labelled
    4-neighbour with the neighbouring label whose mean embedding (of the labels
    as they were at the start) has the largest cosine similarity with the pixel's
    embedding. With ``floors`` (decreasing similarities), the growth runs in
    stages: in stage ``i`` a pixel is labelled only when that similarity is at
    least ``floors[i]``, so the front of one label stops at the pixels that
    resemble another label's mean until that label's own front reaches them (a
    discrete priority flood; the last stage takes every reachable pixel).
    Foreground pixels not connected to any label stay 0.
    """
    h, w = labels.shape
    n = int(labels.max())
    if n == 0:
        return labels
    means = _region_means(labels, e, n)
    padded = np.zeros((h + 2, w + 2), np.int32)
    padded[1:-1, 1:-1] = labels
    todo_pad = np.zeros((h + 2, w + 2), bool)
    todo_pad[1:-1, 1:-1] = fg & (labels == 0)
    flat_e = e.reshape(e.shape[0], -1)
    flat = padded.ravel()
    stride = w + 2
    offsets = np.array([dy * stride + dx for dy, dx in _NEIGHBOURS_4])
    remaining = todo_pad.ravel()
    for floor in (*floors, -np.inf):
        # every pass scores only the pixels next to those labelled by the previous one:
        # the others would score as before (a new stage rescores every pixel once)
        active = np.flatnonzero(remaining)
        while active.size:
            neighbour = flat[active[:, None] + offsets[None, :]]  # (k, 4)
            reached = (neighbour > 0).any(axis=1)
            idx, neighbour = active[reached], neighbour[reached]
            if not idx.size:
                break
            y, x = np.divmod(idx, stride)
            vec = flat_e[:, (y - 1) * w + (x - 1)].T  # (k, D)
            score = np.einsum("kjd,kd->kj", means[neighbour], vec)
            score[neighbour == 0] = -np.inf
            best = score.argmax(axis=1)
            accept = score[np.arange(idx.size), best] >= floor
            new = idx[accept]
            if not new.size:
                break
            flat[new] = neighbour[accept, best[accept]]
            remaining[new] = False
            around = (new[:, None] + offsets[None, :]).ravel()
            active = np.unique(around[remaining[around]])
    return padded[1:-1, 1:-1].copy()


# --------------------------------------------------------------------------- agglomerative


@dataclass(frozen=True)
class GridLinkage:
    """The average-linkage tree of the foreground cells of a coarse grid.

    Attributes
    ----------
    shape : ``(H, W)`` of the full-resolution image.
    factor : side of one grid cell, px (the block the image was averaged over).
    grid_shape : ``(gh, gw)`` = ``ceil(H / factor), ceil(W / factor)``.
    cells : flat indices (into ``grid_shape``) of the ``n`` foreground grid cells.
    linkage : ``(n - 1, 4)`` scipy linkage matrix, None when ``n < 2``.
    """

    shape: tuple[int, int]
    factor: int
    grid_shape: tuple[int, int]
    cells: np.ndarray
    linkage: np.ndarray | None


def _block_sum(array: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``(..., H, W)`` over ``factor x factor`` blocks (zero-padded at bottom / right)."""
    h, w = array.shape[-2:]
    gh, gw = -(-h // factor), -(-w // factor)
    pad = [(0, 0)] * (array.ndim - 2) + [(0, gh * factor - h), (0, gw * factor - w)]
    padded = np.pad(array, pad)
    shape = array.shape[:-2] + (gh, factor, gw, factor)
    return padded.reshape(shape).sum(axis=(-3, -1))


def grid_linkage(foreground: np.ndarray, embedding: np.ndarray, grid: int) -> GridLinkage:
    """Average the maps over a coarse grid and build the average-linkage tree of its cells.

    Parameters
    ----------
    foreground : ``(H, W)`` bool, object pixels.
    embedding : ``(D, H, W)`` pixel embeddings (renormalised here).
    grid : the longer side of the grid has at most this many cells: blocks of
        ``factor = ceil(max(H, W) / grid)`` px are averaged (area averaging; 1 = no
        downsampling).

    Returns
    -------
    GridLinkage
        A grid cell is foreground when at least half of its pixels are; its vector is
        the mean embedding of its foreground pixels, renormalised. The tree is
        scipy's ``linkage(method="average")`` on the cells' cosine distances.
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    fg, e = _check_inputs(foreground, embedding)
    h, w = fg.shape
    factor = max(1, -(-max(h, w) // int(grid)))
    inside = _block_sum(np.ones((h, w), np.float32), factor)
    fg_sum = _block_sum(fg.astype(np.float32), factor)
    emb_sum = _block_sum(e * fg[None], factor)
    grid_shape = (int(inside.shape[0]), int(inside.shape[1]))
    cells = np.flatnonzero(fg_sum >= 0.5 * inside)
    if cells.size > MAX_LINKAGE_CELLS:
        raise ValueError(
            f"agglomerative clustering of {cells.size} foreground grid cells (grid {grid} on a "
            f"{h} x {w} image) needs {cells.size**2 * 4 / 1e9:.1f} GB for the distances; the "
            f"limit is {MAX_LINKAGE_CELLS} cells. Lower the model's 'cluster_grid' option or "
            "use 'clustering: fast'"
        )
    vectors = normalize_embedding(emb_sum.reshape(e.shape[0], -1)[:, cells]).T  # (n, D)
    zero = ~vectors.any(axis=1)
    if zero.any():  # opposite vectors averaged away: give them one arbitrary direction
        vectors[zero, 0] = 1.0
    tree = None
    if cells.size >= 2:
        distances = pdist(vectors.astype(np.float64), metric="cosine")
        np.clip(distances, 0.0, 2.0, out=distances)
        tree = linkage(distances, method="average")
    return GridLinkage((h, w), factor, grid_shape, cells, tree)


def erode_labels(labels: np.ndarray, radius: int) -> np.ndarray:
    """Erode every instance of ``(h, w)`` labels on its own by a disk of ``radius``.

    A pixel is kept when every pixel of the disk around it has its label; pixels
    outside the array count as the same label (instances are not eroded from the
    image border). ``radius`` 0 returns the labels unchanged.
    """
    labels = np.asarray(labels)
    if radius <= 0 or not labels.any():
        return labels
    from skimage.morphology import disk

    footprint = disk(int(radius)).astype(bool)
    low = ndi.minimum_filter(labels, footprint=footprint, mode="nearest")
    high = ndi.maximum_filter(labels, footprint=footprint, mode="nearest")
    return np.where((low == high) & (labels > 0), labels, 0)


def cut_linkage(
    tree: GridLinkage,
    foreground: np.ndarray,
    embedding: np.ndarray,
    *,
    distance_threshold: float,
    erosion_radius: int,
    min_size: int,
    assign: Literal["similarity", "nearest"] = "similarity",
) -> np.ndarray:
    """Instances from a :class:`GridLinkage` cut at ``distance_threshold``.

    1. ``fcluster(criterion="distance")``: clusters of grid cells whose average
       cosine distance is below the threshold;
    2. each cluster is eroded by a disk of ``erosion_radius`` grid cells (removing
       the cells of mixed embedding along boundaries and thin bridges; clusters no
       wider than the disk vanish) and split into its connected components
       (4-connectivity): one cluster may hold distant objects with similar
       embeddings;
    3. the components are upsampled (nearest neighbour: every px of a grid cell)
       and restricted to the full-resolution ``foreground``; every other foreground
       pixel joins an adjacent component. ``assign="nearest"`` (the source's): the
       nearest one along the foreground (geodesic growth); ``"similarity"``: the one
       whose mean embedding is most similar, grown front by front in stages (most
       similar pixels first), which puts the boundary between two touching cells
       where their embeddings change instead of halfway between the coarse
       components. Foreground regions no component reaches become one instance each;
    4. instances smaller than ``min_size`` px (pieces of a cell cut at a neck by
       the erosion) are released and their pixels grown into adjacent instances as
       in step 3; those with no labelled neighbour are removed; ids renumbered 1..N.

    Parameters
    ----------
    tree : from :func:`grid_linkage` on the same ``foreground`` and ``embedding``.
    foreground : ``(H, W)`` bool.
    embedding : ``(D, H, W)`` pixel embeddings (used by ``assign="similarity"``).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels.
    """
    from scipy.cluster.hierarchy import fcluster
    from skimage.measure import label as connected
    from skimage.segmentation import watershed

    fg, e = _check_inputs(foreground, embedding)
    if fg.shape != tree.shape:
        raise ValueError(f"foreground {fg.shape} does not match the linkage's image {tree.shape}")
    if assign not in ("similarity", "nearest"):
        raise ValueError(f"assign must be 'similarity' or 'nearest', got {assign!r}")
    labels = np.zeros(fg.shape, np.int32)
    if tree.cells.size:
        if tree.linkage is None:
            clusters = np.ones(tree.cells.size, np.int32)
        else:
            clusters = fcluster(tree.linkage, t=float(distance_threshold), criterion="distance")
        grid = np.zeros(tree.grid_shape[0] * tree.grid_shape[1], np.int32)
        grid[tree.cells] = clusters
        eroded = erode_labels(grid.reshape(tree.grid_shape), erosion_radius)
        components = connected(eroded, background=0, connectivity=1).astype(np.int32)
        f = tree.factor
        up = np.repeat(np.repeat(components, f, axis=0), f, axis=1)[: fg.shape[0], : fg.shape[1]]
        markers = np.where(fg, up, 0).astype(np.int32)
        vote = _box_smooth(e * fg[None], fg)
        floors = _staged_floors(distance_threshold)

        def grow(seeds: np.ndarray) -> np.ndarray:
            if assign == "similarity":
                return _grow_by_similarity(seeds, vote, fg, floors)
            return watershed(np.zeros(fg.shape, np.float32), seeds, mask=fg).astype(np.int32)

        if markers.any():
            labels = grow(markers)
            if min_size > 0:  # small pieces (a neck cut by the erosion) join a neighbour
                released = _drop_small(labels, min_size)
                if (released != labels).any() and released.any():
                    labels = grow(released)
    labels = _add_unlabelled_components(labels, fg)
    return _relabel(_drop_small(labels, min_size))


def agglomerative_labels(
    foreground: np.ndarray,
    embedding: np.ndarray,
    *,
    distance_threshold: float,
    grid: int,
    erosion_radius: int,
    min_size: int,
    assign: Literal["similarity", "nearest"] = "similarity",
) -> np.ndarray:
    """Instances by agglomerative clustering on a coarse grid (:func:`grid_linkage` + :func:`cut_linkage`).

    Parameters
    ----------
    foreground : ``(H, W)`` bool, object pixels.
    embedding : ``(D, H, W)`` pixel embeddings.
    distance_threshold : average-linkage cosine distance at which the tree is cut.
    grid : the longer side of the grid has at most this many cells.
    erosion_radius : erosion of each cluster, grid cells (0 = none).
    min_size : instances smaller than this (px) are removed.
    assign : how foreground pixels outside the upsampled components are labelled
        (see :func:`cut_linkage`).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels, 0 = background, 1..N.
    """
    tree = grid_linkage(foreground, embedding, grid)
    return cut_linkage(
        tree,
        foreground,
        embedding,
        distance_threshold=distance_threshold,
        erosion_radius=erosion_radius,
        min_size=min_size,
        assign=assign,
    )


# --------------------------------------------------------------------------- fast


def _pair_similarities(e: np.ndarray, fg: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of the foreground pixels ``k`` px apart on a column and on a row.

    Returns ``(down, right)``, ``(H - k, W)`` and ``(H, W - k)``: the similarity of
    pixel ``(y, x)`` with ``(y + k, x)`` and with ``(y, x + k)``; 2 (never a cut)
    where either pixel is background.
    """
    down = np.einsum("dhw,dhw->hw", e[:, :-k], e[:, k:])
    right = np.einsum("dhw,dhw->hw", e[:, :, :-k], e[:, :, k:])
    down[~(fg[:-k] & fg[k:])] = 2.0
    right[~(fg[:, :-k] & fg[:, k:])] = 2.0
    return down, right


def _pair_cuts(pairs: tuple[np.ndarray, np.ndarray], similarity: float, k: int) -> np.ndarray:
    """Pixels of the pairs from :func:`_pair_similarities` not more similar than ``similarity``."""
    down, right = pairs[0] <= similarity, pairs[1] <= similarity
    out = np.zeros((right.shape[0], down.shape[1]), bool)  # (H, W)
    out[:-k] |= down
    out[k:] |= down
    out[:, :-k] |= right
    out[:, k:] |= right
    return out


def _add_seeds(seeds: np.ndarray, region: np.ndarray, seed_size: int) -> np.ndarray:
    """Add the connected components of ``region`` that hold no seed yet (and have >= ``seed_size`` px)."""
    parts, n = ndi.label(region)
    if not n:
        return seeds
    sizes = np.bincount(parts.ravel(), minlength=n + 1)
    taken = np.zeros(n + 1, bool)
    taken[parts[seeds > 0]] = True
    new = np.flatnonzero(~taken[1:] & (sizes[1:] >= seed_size)) + 1
    if not new.size:
        return seeds
    lookup = np.zeros(n + 1, np.int32)
    lookup[new] = int(seeds.max()) + np.arange(1, new.size + 1)
    extra = lookup[parts]
    return np.where(extra > 0, extra, seeds)


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique ``(a, b)`` pairs, ``0 < a < b``, of labels that touch (4-neighbours), ``(k, 2)``."""
    base = np.int64(labels.max()) + 1
    keys = []
    for a, b in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        touch = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
        keys.append(lo.astype(np.int64) * base + hi)
    keys = np.unique(np.concatenate(keys))
    return np.stack(np.divmod(keys, base), axis=1)


def _merge_regions(labels: np.ndarray, e: np.ndarray, similarity: float) -> np.ndarray:
    """Merge touching regions, closest mean embeddings first, while closer than ``similarity``.

    Centroid linkage on the region adjacency graph: the touching pair whose mean
    embeddings have the largest cosine similarity is merged (the merged region's
    mean is the size-weighted mean), its neighbours' similarities are updated, and
    so on until no touching pair is more similar than ``similarity``. Unlike
    joining every close pair at once, a small region whose mean lies between two
    instances joins one of them without linking the two.
    """
    import heapq

    n = int(labels.max())
    if n < 2:
        return labels
    pairs = _adjacent_pairs(labels)
    if not pairs.size:
        return labels
    flat = labels.ravel()
    sums = np.stack(
        [np.bincount(flat, weights=c.ravel(), minlength=n + 1) for c in e], axis=1
    )  # (n + 1, D): sums of unit vectors
    norms = np.linalg.norm(sums, axis=1)
    cos = np.einsum("kd,kd->k", sums[pairs[:, 0]], sums[pairs[:, 1]])
    cos /= np.maximum(norms[pairs[:, 0]] * norms[pairs[:, 1]], _EPS)
    neighbours: list[set[int]] = [set() for _ in range(n + 1)]
    for a, b in pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    version = [0] * (n + 1)
    heap = [
        (-c, a, b, 0, 0)
        for (a, b), c in zip(pairs.tolist(), cos.tolist(), strict=True)
        if c > similarity
    ]
    heapq.heapify(heap)
    parent = np.arange(n + 1)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if version[a] != va or version[b] != vb:
            continue  # stale: a or b changed (or was merged away) since this entry
        parent[b] = a
        sums[a] += sums[b]
        version[b] = -1
        version[a] += 1
        neighbours[b].discard(a)
        neighbours[a].discard(b)
        for c in neighbours[b]:
            neighbours[c].discard(b)
            neighbours[c].add(a)
        neighbours[a] |= neighbours[b]
        neighbours[b] = set()
        if not neighbours[a]:
            continue
        norms[a] = np.sqrt(sums[a] @ sums[a])
        others = np.fromiter(neighbours[a], dtype=np.int64)
        sim = (sums[others] @ sums[a]) / np.maximum(norms[others] * norms[a], _EPS)
        for c, s in zip(others.tolist(), sim.tolist(), strict=True):
            if s > similarity:
                heapq.heappush(heap, (-s, a, c, version[a], version[c]))
    while True:  # path compression: every id to its root
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent = grand
    return parent[labels].astype(np.int32)


def fast_labels(
    foreground: np.ndarray,
    embedding: np.ndarray,
    *,
    distance_threshold: float,
    min_size: int,
    reach: int = 4,
    guard: int = 1,
    seed_size: int = 8,
    cut_fraction: float = 0.5,
) -> np.ndarray:
    """Instances from a full-resolution pixel graph; cost linear in the number of pixels.

    1. **boundaries**: two foreground pixels on one row or column, ``1..reach`` px
       apart, whose embeddings are farther apart than a cut distance are both
       boundary pixels. Comparing pixels a few px apart, not only neighbours, finds
       the boundaries that the network, tile blending, test-time augmentation or
       resizing made smooth: across a transition a few px wide every pair of
       neighbours is close, and a neighbour graph would chain two cells together.
       The cut distance is ``cut_fraction x distance_threshold`` first (the pixels
       along a network's boundary are often closer to each other than the two
       instances' means are), then ``distance_threshold`` (for pixel noise, which
       makes nearly every pixel a boundary at the stricter cut);
    2. **seeds**: the connected components (4-connectivity) of the foreground less
       the boundary pixels, dilated ``guard`` times (3 x 3). The guard closes gaps
       of up to ``2 * guard`` px in a boundary, so a few pixels that look alike
       cannot join two touching instances. Where no seed was found, looser
       boundaries add seeds, in turn: without the guard, then with smaller reaches
       down to neighbours only, then all of that again at the full cut distance
       (objects too small for the strict levels, noisy regions). Components under
       ``seed_size`` px are ignored;
    3. **growth**: the other foreground pixels are labelled front by front with
       the adjacent seed whose mean embedding is most similar to theirs (3 x 3
       mean, against pixel noise), in stages: first only pixels within
       ``distance_threshold / 4`` of that mean, then ``/ 2``, then
       ``distance_threshold``, then any (a discrete priority flood: a seed near a
       boundary does not grow into its neighbour before the neighbour's own seed
       gets there);
    4. **merge**: touching regions are merged, the most similar mean embeddings
       first (centroid linkage, see :func:`_merge_regions`), while their means are
       closer than ``distance_threshold``: pieces of one instance cut apart by
       noise join up, and a small region between two instances joins one of them
       without linking the two;
    5. instances smaller than ``min_size`` px are released and their pixels grown
       into adjacent instances as in step 3 (fragments along boundaries); those
       with no labelled neighbour are removed. Foreground regions without any seed
       become one instance each (then also removed when smaller than ``min_size``).

    Parameters
    ----------
    foreground : ``(H, W)`` bool, object pixels.
    embedding : ``(D, H, W)`` pixel embeddings (renormalised here).
    distance_threshold : cosine distance in (0, 2] that separates two instances.
    min_size : instances smaller than this (px) are removed.
    reach, guard, seed_size, cut_fraction : see steps 1 and 2 (``guard`` 0 = no
        dilation; ``cut_fraction`` 1 = one cut distance).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels, 0 = background, 1..N.

    Notes
    -----
    The defaults were chosen on synthetic maps (``benchmarks/bench_clustering.py``)
    and on the maps of small networks trained briefly on synthetic images: ``reach``
    4 rather than 1-3 finds boundaries blurred over 1-2 px; ``cut_fraction`` 0.5
    rather than 1 helps on network maps and costs nothing on synthetic ones; the
    staged growth keeps boundaries where the embeddings change under pixel noise.
    """
    fg, e = _check_inputs(foreground, embedding)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    similarity = 1.0 - float(distance_threshold)
    e = e * fg[None]
    # seeds from the strictest boundaries first: at the strict cut, then at the full
    # threshold; for each, the guarded boundaries of the largest reach down to reach 1
    seeds = np.zeros(fg.shape, np.int32)
    reaches = range(1, max(1, int(reach)) + 1)
    pairs = {k: _pair_similarities(e, fg, k) for k in reaches}
    for fraction in (cut_fraction, 1.0) if cut_fraction < 1.0 else (1.0,):
        cut_similarity = 1.0 - fraction * float(distance_threshold)
        levels, boundary = [], np.zeros(fg.shape, bool)
        for k in reaches:  # boundaries of growing reach
            boundary = boundary | _pair_cuts(pairs[k], cut_similarity, k)
            levels.append(boundary)
            if guard:
                square = np.ones((3, 3), bool)
                levels.append(ndi.binary_dilation(boundary, square, iterations=guard))
        for cut in levels[::-1]:
            seeds = _add_seeds(seeds, fg & ~cut, seed_size)
    vote = _box_smooth(e, fg)
    floors = _staged_floors(distance_threshold)
    labels = _grow_by_similarity(seeds, vote, fg, floors)
    labels = _merge_regions(labels, e, similarity)
    labels = _add_unlabelled_components(labels, fg)
    if min_size > 0 and labels.any():
        released = _drop_small(labels, min_size)
        if (released != labels).any():
            labels = _drop_small(_grow_by_similarity(released, vote, fg, floors), min_size)
    return _relabel(labels)
