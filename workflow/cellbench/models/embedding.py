"""``embedding``: per-pixel embeddings + foreground, clustered into instances.

A segmentation-models-pytorch U-Net predicts ``1 + D`` channels (``D =
embedding_dim``): one foreground logit and a ``D``-dimensional embedding per
pixel. Pixels of one instance are trained to point the same way on the unit
sphere and pixels of different instances apart; distances are cosine distances
``d = 1 - cos`` between L2-normalised embeddings, in ``[0, 2]``.

Target (:meth:`Embedding.make_target`): ``(1, H, W)`` float32, the instance ids
(0 = background), a categorical channel (cropped and resized with nearest
neighbour by the training loop).

Loss: ``foreground_weight * (BCE + soft Dice)`` of the foreground, plus the
embedding loss of the ``loss`` option: ``contrastive`` (:func:`contrastive_loss`:
all pairs of the object pixels sampled per crop, ``uniform`` anywhere or
``windowed`` in a window on objects; same-instance pairs pulled by ``d^2``,
different-instance pairs pushed by ``max(0, margin - d)^2``, the two means
balanced) or ``discriminative`` (:func:`discriminative_loss`: pixels pulled to
their instance's mean direction, means pushed apart). Both are vectorised over
the batch, never NaN, and a crop with fewer than two instances gives only the
pull (same-instance) and foreground terms. The contrastive sampling draws from
torch's generator (seeded by training); validation losses use a fixed seed.

Maps (:meth:`Embedding.activate`): channel 0 the foreground probability, channels
``1..D`` the unit embedding (``map_names`` = ``foreground, embedding_0, ...``).
Test-time augmentation, tile blending and resizing average embeddings, so
post-processing renormalises them. An average stays uniform within an instance
as long as each averaged prediction is (the 8 test-time augmentation passes need
not agree on an instance's direction), but it can bring neighbouring instances
closer and blurs the boundaries between them, which the clustering is built to
tolerate (see :func:`cellbench.postprocess.clustering.fast_labels`).

Post-processing (:meth:`Embedding.postprocess`, :mod:`cellbench.postprocess.clustering`):
foreground = probability > ``foreground_threshold``, then the ``clustering`` option:
``fast`` (a full-resolution pixel graph, linear time) or ``agglomerative`` (the
Sartorius source's average-linkage clustering on a coarse grid); both cut at
``distance_threshold``. Both thresholds are tuned on the validation split.

Options: :class:`cellbench.models.options.EmbeddingOptions` (``cellbench options
embedding`` prints every one with its type, default and description).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from cellbench.models.base import ModelFamily
from cellbench.models.options import EmbeddingThresholds
from cellbench.models.unet import build_smp_unet
from cellbench.postprocess.clustering import GridLinkage, cut_linkage, fast_labels, grid_linkage

__all__ = [
    "Embedding",
    "contrastive_loss",
    "discriminative_loss",
    "foreground_loss",
    "pair_loss",
    "sample_pixels",
]

_CACHE_SIZE = 16
#: seed of the pixel sampling of validation losses (the same pixels every epoch).
_VALIDATION_SEED = 0


# --------------------------------------------------------------------------- losses


def foreground_loss(logit, foreground):
    """BCE + soft Dice of a foreground logit.

    Parameters
    ----------
    logit : ``(B, H, W)`` tensor, raw network output.
    foreground : ``(B, H, W)`` tensor, 1 on object pixels, 0 elsewhere.

    Returns
    -------
    torch.Tensor
        Scalar: mean BCE over pixels + ``1 - Dice`` over the batch (smoothed by 1).
    """
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logit, foreground)
    prob = torch.sigmoid(logit)
    dice = 1.0 - (2.0 * (prob * foreground).sum() + 1.0) / (prob.sum() + foreground.sum() + 1.0)
    return bce + dice


def sample_pixels(ids, *, sampling: str, n_pixels: int, window_size: int, generator=None):
    """Flat pixel indices to contrast in each crop.

    Parameters
    ----------
    ids : ``(B, H, W)`` long tensor of instance ids, 0 = background.
    sampling : ``"uniform"``: ``n_pixels`` object pixels drawn without replacement
        anywhere in the crop (fewer objects: every object pixel, the rest of the
        draw falls on background and is masked out by the caller);
        ``"windowed"``: every pixel of a ``window_size`` square window (clipped to
        the crop) centred on a random object pixel, so that neighbouring instances,
        the ones clustering must separate, are contrasted.
    generator : ``torch.Generator`` on ``ids.device`` (None: torch's global one).

    Returns
    -------
    torch.Tensor
        ``(B, S)`` long indices into ``H * W``; the caller keeps those with ``id > 0``.
    """
    import torch

    b, h, w = ids.shape
    objects = (ids > 0).flatten(1)
    score = torch.rand((b, h * w), generator=generator, device=ids.device)
    if sampling == "uniform":
        score = score.masked_fill(~objects, -1.0)
        return score.topk(min(int(n_pixels), h * w), dim=1).indices
    if sampling != "windowed":
        raise ValueError(f"sampling must be 'uniform' or 'windowed', got {sampling!r}")
    side = min(int(window_size), h, w)
    centre = (score * objects).argmax(dim=1)  # a random object pixel (0 without objects)
    y0 = (centre // w - side // 2).clamp(0, h - side)
    x0 = (centre % w - side // 2).clamp(0, w - side)
    steps = torch.arange(side, device=ids.device)
    rows, cols = y0[:, None] + steps, x0[:, None] + steps  # (B, side)
    return (rows[:, :, None] * w + cols[:, None, :]).flatten(1)


def pair_loss(embedding, ids, valid, *, margin: float):
    """Contrastive loss over all pairs of a set of pixels per crop (cosine distance).

    Parameters
    ----------
    embedding : ``(B, D, S)`` unit embeddings of ``S`` pixels per crop.
    ids : ``(B, S)`` their instance ids.
    valid : ``(B, S)`` bool, the pixels to use (object pixels).
    margin : different-instance pairs closer than this are pushed apart.

    Returns
    -------
    torch.Tensor
        Scalar ``mean(pull) + mean(push)``: pull = ``d^2`` over same-instance pairs,
        push = ``max(0, margin - d)^2`` over different-instance pairs; each term is
        the mean over the crops that have such pairs (balanced: the many negative
        pairs do not drown the positives), 0 where none has.

    Notes
    -----
    The pull is squared, not linear: near a collapsed state (every pixel the same
    direction, where a freshly initialised network starts) ``d ~ theta^2 / 2`` for
    an angle ``theta``, so a linear pull and the push with ``margin`` 0.5 have the
    same gradient ``~ theta`` and cancel out; in a tiny training run the linear pull
    stayed collapsed (every neighbour at ``d ~ 0``). The squared pull vanishes
    faster (``~ theta^3``), so the push escapes the collapse.
    """
    import torch
    import torch.nn.functional as F

    s = ids.shape[1]
    dist = (1.0 - torch.einsum("bds,bdt->bst", embedding, embedding)).clamp(min=0.0)
    both = valid[:, :, None] & valid[:, None, :]
    both &= ~torch.eye(s, dtype=torch.bool, device=ids.device)
    same = ids[:, :, None] == ids[:, None, :]
    total = embedding.sum() * 0.0  # keeps the graph when no pair exists
    for mask, value in ((both & same, dist**2), (both & ~same, F.relu(margin - dist) ** 2)):
        count = mask.sum(dim=(1, 2))
        per_crop = (value * mask).sum(dim=(1, 2)) / count.clamp(min=1)
        has = (count > 0).to(per_crop.dtype)
        total = total + (per_crop * has).sum() / has.sum().clamp(min=1.0)
    return total


def contrastive_loss(
    embedding,
    ids,
    *,
    sampling: str,
    n_pixels: int,
    window_size: int,
    margin: float,
    generator=None,
):
    """Contrastive embedding loss on sampled pixel pairs (:func:`sample_pixels`, :func:`pair_loss`).

    Parameters
    ----------
    embedding : ``(B, D, H, W)`` unit embeddings.
    ids : ``(B, H, W)`` long instance ids, 0 = background.

    Returns
    -------
    torch.Tensor
        Scalar, >= 0.

    Notes
    -----
    The pairs take ``B x S^2`` floats per intermediate, ``S = n_pixels`` (uniform)
    or ``window_size^2`` (windowed): about 32 MB each at the defaults (B 8, S 1024),
    half a GB for a 64 px window.
    """
    d = embedding.shape[1]
    index = sample_pixels(
        ids, sampling=sampling, n_pixels=n_pixels, window_size=window_size, generator=generator
    )
    picked = embedding.flatten(2).gather(2, index[:, None, :].expand(-1, d, -1))
    picked_ids = ids.flatten(1).gather(1, index)
    return pair_loss(picked, picked_ids, picked_ids > 0, margin=margin)


def discriminative_loss(embedding, ids, *, margin: float, pull_margin: float):
    """Discriminative loss (De Brabandere et al. 2017) in cosine distance.

    Every instance of every crop has a mean direction ``mu`` (the normalised sum
    of its pixels' unit embeddings). Pull: each pixel's ``max(0, d(e, mu) -
    pull_margin)^2``, averaged per instance, then over instances. Push: for every
    pair of instances of the same crop ``max(0, margin - d(mu_a, mu_b))^2``,
    averaged over pairs. The paper pushes means beyond ``2 * delta_d``; here the
    means are pushed beyond ``margin`` itself, so the option means the same in both
    losses ("different instances closer than this are pushed") and stays reachable
    (cosine distances are at most 2). The paper's regulariser (keeping the means
    near the origin) is left out: unit embeddings cannot drift.

    Parameters
    ----------
    embedding : ``(B, D, H, W)`` unit embeddings.
    ids : ``(B, H, W)`` long instance ids, 0 = background.

    Returns
    -------
    torch.Tensor
        Scalar ``pull + push``; 0 for crops without instances, pull only for crops
        with one.
    """
    import torch
    import torch.nn.functional as F

    b, d, h, w = embedding.shape
    objects = ids > 0
    zero = embedding.sum() * 0.0
    if not bool(objects.any()):
        return zero
    e = embedding.permute(0, 2, 3, 1)[objects]  # (N, D)
    crop = torch.arange(b, device=ids.device).view(b, 1, 1).expand(b, h, w)[objects]
    base = int(ids.max()) + 1
    keys, inverse = torch.unique(crop * base + ids[objects], return_inverse=True)
    k = keys.numel()
    sums = e.new_zeros((k, d)).index_add_(0, inverse, e)
    counts = torch.bincount(inverse, minlength=k).to(e.dtype)
    mu = F.normalize(sums, dim=1)
    to_mean = (1.0 - (e * mu[inverse]).sum(dim=1)).clamp(min=0.0)
    hinge = F.relu(to_mean - pull_margin) ** 2
    pull = (e.new_zeros(k).index_add_(0, inverse, hinge) / counts).mean()
    owner = keys // base
    pairs = (owner[:, None] == owner[None, :]) & ~torch.eye(k, dtype=torch.bool, device=e.device)
    between = (1.0 - mu @ mu.T).clamp(min=0.0)
    push = (F.relu(margin - between) ** 2 * pairs).sum() / pairs.sum().clamp(min=1)
    return zero + pull + push


# --------------------------------------------------------------------------- family


class Embedding(ModelFamily):
    family = "embedding"
    categorical_targets = (0,)
    #: the class lists the first channel only; each instance has ``1 + embedding_dim``
    #: names (``foreground``, ``embedding_0``, ...), set in ``__init__``.
    map_names = ("foreground",)

    def __init__(self, name, options) -> None:
        super().__init__(name, options)
        self.map_names = ("foreground", *(f"embedding_{i}" for i in range(self.embedding_dim)))
        # grid linkage per (maps, foreground threshold): the tuning grid reuses it for
        # every distance threshold instead of clustering again (agglomerative only).
        self._trees: OrderedDict[tuple, GridLinkage] = OrderedDict()

    @property
    def embedding_dim(self) -> int:
        return int(self.options.embedding_dim)

    # -- network ------------------------------------------------------------------------
    def build_network(self, *, load_weights: bool = True):
        return build_smp_unet(
            self.options, classes=1 + self.embedding_dim, load_weights=load_weights
        )

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        """``(1, H, W)`` float32: the instance ids, 0 = background."""
        return np.asarray(labels)[None].astype(np.float32)

    def loss(self, logits, target, generator=None):
        """Foreground BCE + Dice (times ``foreground_weight``) plus the embedding loss.

        ``logits`` ``(B, 1 + D, H, W)``, ``target`` ``(B, 1, H, W)`` instance ids;
        ``generator`` drives the contrastive pixel sampling (None: torch's global one).
        """
        import torch.nn.functional as F

        opts = self.options
        ids = target[:, 0].round().long()
        fg = foreground_loss(logits[:, 0], (ids > 0).to(logits.dtype))
        embedding = F.normalize(logits[:, 1:], dim=1)
        if opts.loss == "discriminative":
            emb = discriminative_loss(
                embedding, ids, margin=opts.margin, pull_margin=opts.pull_margin
            )
        else:
            emb = contrastive_loss(
                embedding,
                ids,
                sampling=opts.sampling,
                n_pixels=opts.sample_pixels,
                window_size=opts.window_size,
                margin=opts.margin,
                generator=generator,
            )
        return opts.foreground_weight * fg + emb

    def validation_loss(self, net, images, target, size: tuple[int, int]):
        """As the base class, with the same sampled pixels every epoch (a fixed seed)."""
        import torch

        h, w = size
        logits = net(images)[:, :, :h, :w]
        generator = torch.Generator(device=logits.device).manual_seed(_VALIDATION_SEED)
        return self.loss(logits, target, generator=generator)

    def activate(self, logits):
        """``(B, 1 + D, H, W)``: foreground probability, then the unit embedding."""
        import torch
        import torch.nn.functional as F

        return torch.cat([torch.sigmoid(logits[:, :1]), F.normalize(logits[:, 1:], dim=1)], dim=1)

    # -- post-processing ----------------------------------------------------------------
    def _tree(self, maps: np.ndarray, foreground: np.ndarray, threshold: float) -> GridLinkage:
        grid = int(self.options.cluster_grid)
        digest = hashlib.blake2b(np.ascontiguousarray(maps), digest_size=16).hexdigest()
        key = (digest, maps.shape, float(threshold), grid)
        if key in self._trees:
            self._trees.move_to_end(key)
            return self._trees[key]
        tree = grid_linkage(foreground, maps[1:], grid)
        self._trees[key] = tree
        while len(self._trees) > _CACHE_SIZE:
            self._trees.popitem(last=False)
        return tree

    def postprocess(self, maps: np.ndarray, thresholds: EmbeddingThresholds) -> np.ndarray:
        """Maps ``(1 + D, H, W)`` -> labels ``(H, W)`` int32, 0 = background, 1..N."""
        maps = np.asarray(maps, dtype=np.float32)
        expected = 1 + self.embedding_dim
        if maps.ndim != 3 or maps.shape[0] != expected:
            raise ValueError(
                f"embedding maps must be ({expected}, H, W) (foreground + {self.embedding_dim} "
                f"embedding channels), got {maps.shape}"
            )
        opts = self.options
        foreground = maps[0] > thresholds.foreground_threshold
        if opts.clustering == "fast":
            return fast_labels(
                foreground,
                maps[1:],
                distance_threshold=thresholds.distance_threshold,
                min_size=opts.min_size,
            )
        tree = self._tree(maps, foreground, thresholds.foreground_threshold)
        return cut_linkage(
            tree,
            foreground,
            maps[1:],
            distance_threshold=thresholds.distance_threshold,
            erosion_radius=opts.erosion_radius,
            min_size=opts.min_size,
        )

    def threshold_grid(self) -> list[EmbeddingThresholds]:
        return self.candidates(
            foreground_threshold=self.options.foreground_threshold,
            distance_threshold=self.options.distance_threshold,
        )
