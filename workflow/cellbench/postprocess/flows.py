"""Flow tracking: Cellpose-style flows + cell probability -> instance labels.

The ``flow`` family's post-processing, in torch so it runs on CPU or GPU, for
images of any size: every step works on the foreground pixels only (memory
``O(foreground)`` besides the input maps and the output label image), with no
dense histogram of the whole image.

Steps (:func:`flows_to_labels`), each giving the same result as Cellpose's
``dynamics.compute_masks`` on the same input (``benchmarks/bench_flows.py``):

1. **Euler integration** (:func:`follow_flows`). Every pixel with cell
   probability above the threshold moves along the flow field, sampled with
   bilinear interpolation (``grid_sample``) from the flows masked to the
   foreground, one unit-flow step per iteration for ``niter`` iterations, with
   Cellpose's sampling convention. Unlike Cellpose, a pixel stops being moved
   once it provably keeps its final grid cell (it sits at its sink or converges
   there), so the work falls to a third or less of ``niter x foreground``.
2. **Clustering** (:func:`cluster_positions`). Final positions are truncated to
   the pixel grid; the occupied grid cells and their counts come from
   ``torch.unique`` (sparse). Seeds are cells with more than 10 pixels that are
   maxima of their 5 x 5 neighbourhood; each seed grows 5 steps (8-connected)
   through cells holding more than 2 pixels, and where two seeds meet the one
   with more pixels wins; every pixel takes the label of the cell it ended in.
   These are Cellpose's rules (``get_masks_torch``) evaluated on the occupied
   cells only (neighbour look-ups by sorted search) instead of on an
   ``(H + 40) x (W + 40)`` histogram. Masks larger than ``max_size_fraction``
   of the image are removed.
3. **Flow-error quality control** (:func:`mask_flow_errors`, optional). The
   flows of each mask are recomputed with the training-target field
   (:func:`cellbench.targets.pixel_flows`); masks whose mean squared
   difference to the predicted flows exceeds ``flow_threshold`` are dropped.
4. Masks smaller than ``min_size`` px are dropped, holes inside a mask are
   filled and labels renumbered 1..N (:func:`finish_labels`).

Conventions: ``flows`` are ``(dy, dx)`` in *unit* scale (the network's output
divided by :data:`cellbench.targets.FLOW_SCALE`, i.e. Cellpose's ``dP / 5``);
``cellprob`` is a *probability* in [0, 1] (Cellpose thresholds logits: its
``cellprob_threshold = 0`` is our ``0.5``); ``flow_threshold`` has Cellpose's
meaning and scale (0.4 by default; ``None`` or 0 turns quality control off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi

from cellbench.models.options import FlowOptions
from cellbench.targets import pixel_flows

# Keyword defaults of the public functions below are the flow family's option defaults
# (for a tuning grid, its first candidate): read from FlowOptions, written nowhere else.
_DEFAULT = FlowOptions()

__all__ = [
    "Tracked",
    "cluster_positions",
    "fill_holes",
    "finish_labels",
    "flows_to_labels",
    "follow_flows",
    "mask_flow_errors",
    "track_flows",
]


def _device(device, *arrays) -> torch.device:
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _tensor(a, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


@torch.inference_mode()
def follow_flows(
    flows: torch.Tensor,
    keys: torch.Tensor,
    niter: int = _DEFAULT.niter,
    *,
    foreground: torch.Tensor | None = None,
    check_every: int = 10,
    tol: float = 1e-4,
    safety: float = 10.0,
    max_ratio: float = 0.7,
) -> torch.Tensor:
    """Euler-integrate pixels along a flow field with bilinear interpolation.

    Parameters
    ----------
    flows : ``(2, H, W)`` float tensor, ``(dy, dx)`` in pixels per step (positions are
        clamped to the image).
    keys : ``(N,)`` int64 flat indices ``y * W + x`` of the starting pixels.
    niter : number of steps.
    foreground : optional ``(H, W)`` bool; flows outside it are taken as zero (as
        Cellpose, so pixels cannot flow out of the foreground).
    check_every, tol, safety, max_ratio : early stopping of single pixels, see below.

    Returns
    -------
    torch.Tensor
        ``(N, 2)`` float32 ``(y, x)`` positions after ``niter`` steps, in pixels.

    Notes
    -----
    Sampling follows Cellpose's ``steps_interp`` exactly (coordinates normalised by
    ``size - 1``, ``grid_sample(align_corners=False)``), so that the same flows give the
    same trajectories. Cellpose moves every pixel for all ``niter`` steps, although
    most reach their sink within a few dozen. Here, every ``check_every`` steps (at
    steps ``niter - k * check_every``, so a pixel that repeats with a period dividing
    ``check_every`` is where it will be at step ``niter``), a pixel leaves the working
    set when

    - it moved at most ``tol`` px since the last check (it sits at a fixed point or
      on a short cycle), or
    - it is converging (its displacement shrank by a ratio ``r < max_ratio`` between
      the last two checks) and ``safety`` times the geometric bound on its remaining
      travel, ``d r / (1 - r)``, is less than its distance to the edge of its pixel:
      it can no longer change the grid cell it is clustered in.

    On network outputs this cuts the integration work to about a third (to a tenth
    on flows from labels) at the same clusters as Cellpose's (see
    ``benchmarks/bench_flows.py``).
    """
    _, height, width = flows.shape
    lx, ly = max(width - 1, 1), max(height - 1, 1)
    sy, sx = ly / 2.0, lx / 2.0
    # grid_sample wants (x, y) in [-1, 1]; the field in those units, zero off the foreground
    field = flows.flip(0) * torch.tensor([2.0 / lx, 2.0 / ly], device=flows.device)[:, None, None]
    if foreground is not None:
        field *= foreground
    field = field[None]
    ys = torch.div(keys, width, rounding_mode="floor")
    # positions as (2, N): the update below is then contiguous; grid_sample reads it strided
    # (the arithmetic of Cellpose's steps_interp, so rounding matches too)
    pos = torch.stack([(keys - ys * width).float() / lx * 2.0 - 1.0, ys.float() / ly * 2.0 - 1.0])
    out = pos.clone()
    alive = torch.arange(len(keys), device=keys.device)
    last = last_moved = None
    px = torch.tensor([[sx], [sy]], device=pos.device)
    grid = pos.t()[None, None]  # a view of pos: follows the in-place updates
    for it in range(1, niter + 1):
        # = F.grid_sample(field, grid, "bilinear", "zeros", align_corners=False), minus the
        # argument checks, which cost as much as the sampling once few pixels are left
        step = torch.grid_sampler(field, grid, 0, 0, False)
        pos += step.view(2, -1)
        pos.clamp_(-1.0, 1.0)
        if (niter - it) % check_every or it == niter:
            continue
        if last is not None:
            moved = last.sub_(pos).abs_().mul_(px).amax(dim=0)  # px moved since last check
            settled = moved <= tol
            if last_moved is not None:
                ratio = moved / last_moved.clamp_(min=1e-12)
                # geometric bound on the travel left: moved * ratio / (1 - ratio)
                remaining = (1.0 - ratio).clamp_(min=1e-6).reciprocal_().mul_(ratio).mul_(moved)
                frac = (pos + 1.0).mul_(px).frac_()
                edge = torch.minimum(frac, 1.0 - frac).amin(dim=0)
                settled |= (ratio < max_ratio) & (remaining.mul_(safety) < edge)
            done = torch.nonzero(settled).squeeze(1)
            if len(done):
                out[:, alive[done]] = pos[:, done]
                keep = torch.nonzero(~settled).squeeze(1)
                alive, pos, moved = alive[keep], pos[:, keep], moved[keep]
                grid = pos.t()[None, None]
                if len(alive) == 0:
                    break
            last_moved = moved
        last = pos.clone()
    out[:, alive] = pos
    out += 1.0
    out *= 0.5
    return torch.stack([out[1] * ly, out[0] * lx], dim=1)


@torch.inference_mode()
def cluster_positions(
    positions: torch.Tensor,
    shape: tuple[int, int],
    *,
    min_seed_count: int = _DEFAULT.min_seed_count,
    min_count: int = 2,
    grow_steps: int = 5,
    seed_radius: int = 2,
) -> torch.Tensor:
    """Cluster final pixel positions into instances (Cellpose's rules, sparse).

    Parameters
    ----------
    positions : ``(N, 2)`` float ``(y, x)`` final positions.
    shape : ``(H, W)`` of the image (positions are truncated to grid cells and clipped).
    min_seed_count : a seed is a grid cell with more than this many pixels that is the
        maximum of its ``(2 seed_radius + 1)^2`` neighbourhood.
    min_count : seeds grow through cells holding more than this many pixels,
        ``grow_steps`` 8-connected steps.

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64 label per pixel, 0 = not in any cluster; ids are seed ranks
        (not consecutive).
    """
    height, width = shape
    device = positions.device
    n = len(positions)
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    by = positions[:, 0].floor().long().clamp_(0, height - 1)
    bx = positions[:, 1].floor().long().clamp_(0, width - 1)
    ukeys, inverse, counts = torch.unique(by * width + bx, return_inverse=True, return_counts=True)
    dense = counts > min_count
    dkeys, dcounts = ukeys[dense], counts[dense]
    if len(dkeys) == 0:
        return torch.zeros(n, dtype=torch.int64, device=device)
    # neighbour table: for every dense cell and every offset of the seed window, the
    # index of that neighbour among the dense cells, or m (a sentinel holding 0)
    m, r = len(dkeys), seed_radius
    oy, ox = torch.meshgrid(
        torch.arange(-r, r + 1, device=device),
        torch.arange(-r, r + 1, device=device),
        indexing="ij",
    )
    oy, ox = oy.reshape(-1), ox.reshape(-1)
    col = (dkeys % width)[:, None] + ox
    target = dkeys[:, None] + (oy * width + ox)
    idx = torch.searchsorted(dkeys, target).clamp_(max=m - 1)
    found = (col >= 0) & (col < width) & (dkeys[idx] == target)
    table = torch.where(found, idx, m)
    # seeds: local maxima of the counts (only dense cells can beat a seed's count)
    padded = torch.cat([dcounts, dcounts.new_zeros(1)])
    window_max = padded[table].amax(dim=1)  # includes the cell itself
    seeds = torch.nonzero((dcounts > min_seed_count) & (dcounts >= window_max)).squeeze(1)
    if len(seeds) == 0:
        return torch.zeros(n, dtype=torch.int64, device=device)
    # rank seeds by count, so the bigger seed wins where two meet (ties: as Cellpose's
    # argsort of int32 counts of seeds in raster order); then grow each seed grow_steps
    # 8-connected steps through dense cells: max-propagation
    order = torch.argsort(dcounts[seeds].to(torch.int32))
    cell_label = torch.zeros(m + 1, dtype=torch.int64, device=device)
    cell_label[seeds[order]] = torch.arange(1, len(seeds) + 1, device=device)
    ring = table[:, ((oy.abs() <= 1) & (ox.abs() <= 1))]  # the 3 x 3 neighbourhood
    for _ in range(grow_steps):
        cell_label[:m] = cell_label[ring].amax(dim=1)
    cell_label = cell_label[:m]
    occupied = torch.zeros(len(ukeys), dtype=torch.int64, device=device)
    occupied[dense] = cell_label
    return occupied[inverse]


@dataclass(frozen=True)
class Tracked:
    """Masks before quality control, stored sparsely (``O(foreground)``).

    ``keys``: sorted flat indices ``y * W + x`` of the pixels in a mask; ``ids``: their
    mask ids, 1..``n`` consecutive (raster order of each mask's first pixel).
    """

    shape: tuple[int, int]
    keys: np.ndarray
    ids: np.ndarray
    n: int

    def to_labels(self) -> np.ndarray:
        """``(H, W)`` int32 label image."""
        labels = np.zeros(self.shape[0] * self.shape[1], dtype=np.int32)
        labels[self.keys] = self.ids
        return labels.reshape(self.shape)

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> Tracked:
        """From a label image with ids 1..n."""
        labels = np.asarray(labels)
        keys = np.flatnonzero(labels)
        ids = labels.ravel()[keys].astype(np.int32)
        return cls(labels.shape, keys, ids, int(ids.max()) if len(ids) else 0)


def track_flows(
    flows,
    cellprob,
    *,
    cellprob_threshold: float = _DEFAULT.cellprob_threshold[0],
    niter: int = _DEFAULT.niter,
    max_size_fraction: float = _DEFAULT.max_size_fraction,
    min_seed_count: int = _DEFAULT.min_seed_count,
    device=None,
) -> Tracked:
    """Steps 1 and 2 of :func:`flows_to_labels`: the masks before quality control."""
    dev = _device(device, flows, cellprob)
    flows_t = _tensor(flows, dev)
    prob = _tensor(cellprob, dev)
    if flows_t.ndim != 3 or flows_t.shape[0] != 2 or flows_t.shape[1:] != prob.shape:
        raise ValueError(
            f"flows must be (2, H, W) and cellprob (H, W) of the same size, got "
            f"{tuple(flows_t.shape)} and {tuple(prob.shape)}"
        )
    height, width = prob.shape
    foreground = prob > cellprob_threshold
    keys = torch.nonzero(foreground.reshape(-1)).squeeze(1)
    empty = Tracked((height, width), np.zeros(0, np.int64), np.zeros(0, np.int32), 0)
    if len(keys) == 0:
        return empty
    positions = follow_flows(flows_t, keys, niter, foreground=foreground)
    del flows_t, foreground
    pixel_label = cluster_positions(positions, (height, width), min_seed_count=min_seed_count)
    # renumber in raster order of first pixel; drop masks bigger than max_size_fraction
    present = torch.nonzero(pixel_label).squeeze(1)
    ids, inverse, sizes = torch.unique(
        pixel_label[present], return_inverse=True, return_counts=True
    )
    keep = sizes <= max_size_fraction * height * width
    first = torch.full((len(ids),), len(keys), dtype=torch.int64, device=dev)
    first.scatter_reduce_(0, inverse, present, reduce="amin")
    rank = torch.zeros(len(ids), dtype=torch.int64, device=dev)
    kept = torch.nonzero(keep).squeeze(1)
    rank[kept[torch.argsort(first[kept])]] = torch.arange(1, len(kept) + 1, device=dev)
    new = rank[inverse]
    inside = new > 0
    return Tracked(
        (height, width),
        keys[present][inside].cpu().numpy(),
        new[inside].to(torch.int32).cpu().numpy(),
        len(kept),
    )


def mask_flow_errors(
    masks: Tracked | np.ndarray, flows, *, batch_pixels: int = 1 << 20
) -> np.ndarray:
    """Mean squared error between each mask's own flow field and the predicted flows.

    Parameters
    ----------
    masks : :class:`Tracked`, or an ``(H, W)`` label image with ids 1..N.
    flows : ``(2, H, W)`` predicted unit-scale flows.
    batch_pixels : masks are processed in batches of whole masks of about this many
        pixels (bounds the memory of the sparse solves; the result does not depend on it).

    Returns
    -------
    numpy.ndarray
        ``(N + 1,)`` float64, entry ``i`` the error of mask ``i`` (entry 0 unused, 0);
        Cellpose's ``flow_error``: the mean over the mask of
        ``(dy_mask - dy)^2 + (dx_mask - dx)^2``, the mask's flows computed with the
        training-target field (:func:`cellbench.targets.pixel_flows`).
    """
    if not isinstance(masks, Tracked):
        masks = Tracked.from_labels(masks)
    if isinstance(flows, torch.Tensor):
        flows = flows.detach().cpu().numpy()
    flat = np.asarray(flows, dtype=np.float32).reshape(2, -1)
    count = np.bincount(masks.ids, minlength=masks.n + 1)
    total = np.zeros(masks.n + 1)
    # whole masks in batches of about batch_pixels pixels: a mask's flows depend on its
    # own pixels only, and the sparse solve's working memory stays O(batch)
    batch = (np.cumsum(count) // batch_pixels)[masks.ids]
    order = np.argsort(batch, kind="stable")  # raster order within a batch
    for sel in np.split(order, np.flatnonzero(np.diff(batch[order])) + 1):
        keys, ids = masks.keys[sel], masks.ids[sel]
        own = pixel_flows(keys, ids, masks.shape)
        sq = ((own - flat[:, keys]) ** 2).sum(axis=0)
        total += np.bincount(ids, sq, minlength=masks.n + 1)
    return total / np.maximum(count, 1)


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background regions enclosed by a single mask with that mask's id (vectorised).

    A background region (4-connected) that does not touch the image border and
    borders exactly one mask becomes part of it. Regions enclosed by several
    touching masks are left alone. Returns a new array.
    """
    labels = np.array(labels, copy=True)
    background = labels == 0
    regions, n_regions = ndi.label(background)
    if n_regions == 0:
        return labels
    enclosed = np.ones(n_regions + 1, dtype=bool)
    enclosed[0] = False
    for edge in (regions[0], regions[-1], regions[:, 0], regions[:, -1]):
        enclosed[edge] = False
    if not enclosed.any():
        return labels
    flat_regions, flat = regions.ravel(), labels.ravel()
    holes = np.flatnonzero(enclosed[flat_regions])  # never on the border: no wrap-around
    width = labels.shape[1]
    region = flat_regions[holes].astype(np.int64)
    n_ids = int(flat.max()) + 1
    pairs = []
    for step in (1, -1, width, -width):
        owner = flat[holes + step]
        hit = owner > 0
        pairs.append(region[hit] * n_ids + owner[hit])
    pairs = np.unique(np.concatenate(pairs))
    hole, owner = np.divmod(pairs, n_ids)
    single = enclosed & (np.bincount(hole, minlength=n_regions + 1) == 1)
    fill_with = np.zeros(n_regions + 1, dtype=labels.dtype)
    fill_with[hole[single[hole]]] = owner[single[hole]]
    flat[holes] = fill_with[region]
    return labels


def finish_labels(
    masks: Tracked | np.ndarray,
    errors: np.ndarray | None = None,
    *,
    flow_threshold: float | None,
    min_size: int = _DEFAULT.min_size,
) -> np.ndarray:
    """Drop masks failing quality control or smaller than ``min_size``; fill holes; renumber.

    Parameters
    ----------
    masks : :class:`Tracked`, or an ``(H, W)`` label image with ids 1..N.
    errors : ``(N + 1,)`` flow errors from :func:`mask_flow_errors` (needed when
        ``flow_threshold`` is set).
    flow_threshold : drop masks whose error is above it; ``None`` or ``<= 0``: keep all.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, ids 1..M consecutive.
    """
    if not isinstance(masks, Tracked):
        masks = Tracked.from_labels(masks)
    keep = np.ones(masks.n + 1, dtype=bool)
    if flow_threshold is not None and flow_threshold > 0:
        if errors is None:
            raise ValueError("flow_threshold is set but no flow errors were given")
        keep &= np.asarray(errors)[: masks.n + 1] <= flow_threshold
    if min_size > 0:
        keep &= np.bincount(masks.ids, minlength=masks.n + 1) >= min_size
    keep[0] = False
    new_id = np.cumsum(keep).astype(np.int32) * keep
    ids = new_id[masks.ids]
    out = np.zeros(masks.shape[0] * masks.shape[1], dtype=np.int32)
    out[masks.keys] = ids
    out = out.reshape(masks.shape)
    return fill_holes(out) if ids.any() else out


def flows_to_labels(
    flows,
    cellprob,
    *,
    cellprob_threshold: float = _DEFAULT.cellprob_threshold[0],
    flow_threshold: float | None = _DEFAULT.flow_threshold[0],
    min_size: int = _DEFAULT.min_size,
    niter: int = _DEFAULT.niter,
    max_size_fraction: float = _DEFAULT.max_size_fraction,
    min_seed_count: int = _DEFAULT.min_seed_count,
    device=None,
) -> np.ndarray:
    """Flows + cell probability -> instance labels (the ``flow`` family's post-processing).

    Parameters
    ----------
    flows : ``(2, H, W)`` numpy array or tensor, ``(dy, dx)`` in unit scale
        (network output / :data:`~cellbench.targets.FLOW_SCALE`; Cellpose's ``dP / 5``).
    cellprob : ``(H, W)`` cell **probability** in [0, 1] (not logits).
    cellprob_threshold : pixels with ``cellprob > cellprob_threshold`` are tracked
        (0.5 = Cellpose's default logit threshold 0).
    flow_threshold : quality control: drop masks whose mean squared flow error is
        above it (Cellpose's default 0.4); ``None`` or 0 turns it off.
    min_size : drop masks smaller than this (px) after quality control.
    niter : maximum Euler steps (Cellpose: 200; raise it for cells wider than ~400 px).
    max_size_fraction : drop masks covering more than this fraction of the image.
    min_seed_count : an instance needs a grid cell where more than this many pixels
        converged (Cellpose: 10); instances smaller than that cannot be found.
    device : torch device for tracking and clustering; default: the device of
        ``flows`` when it is a tensor, else CPU.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, 0 = background, instances 1..N.
    """
    masks = track_flows(
        flows,
        cellprob,
        cellprob_threshold=cellprob_threshold,
        niter=niter,
        max_size_fraction=max_size_fraction,
        min_seed_count=min_seed_count,
        device=device,
    )
    qc = flow_threshold is not None and flow_threshold > 0 and masks.n > 0
    errors = mask_flow_errors(masks, flows) if qc else None
    return finish_labels(
        masks, errors, flow_threshold=flow_threshold if qc else None, min_size=min_size
    )
