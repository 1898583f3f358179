"""``flow``: Cellpose-style flow model (any segmentation-models-pytorch encoder).

The network predicts three maps: the y-flow, the x-flow and the cell
probability (logit). Target (:func:`cellbench.targets.labels_to_flows`): unit
flows towards each instance's centre (steady-state heat diffusion from the
centre, see :mod:`cellbench.targets`) times ``FLOW_SCALE`` (5, as Cellpose),
and the 0/1 cell probability. Loss, as Cellpose documents: ``MSE(flows) / 2 +
BCE(cell probability)``. Saved maps (``activate``): ``flow_y``, ``flow_x`` in
unit scale (network output / 5) and ``cellprob`` as a probability.
Post-processing: flow tracking (:func:`cellbench.postprocess.flows.flows_to_labels`).

Variants (separate model keys in params.yaml, same family):

- plain: ``attention: none``, ``contour_weight: 0``;
- scSE: ``attention: scse`` (concurrent spatial and channel squeeze & excitation
  in every decoder block);
- contour-aware: ``contour_weight > 0``: both loss terms are weighted per pixel by
  ``1 + contour_weight * b``, with ``b = exp(-d^2 / (2 contour_sigma^2))`` and
  ``d`` the distance to the nearest instance contour
  (:func:`cellbench.targets.boundary_weights`), normalised by the mean weight,
  so errors where touching cells meet cost more.

Options: :class:`cellbench.models.options.FlowOptions` (``cellbench options flow``
prints every one with its type, default and description).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from cellbench.device import resolve_device
from cellbench.models.base import ModelFamily
from cellbench.models.options import FlowThresholds
from cellbench.models.unet import build_smp_unet
from cellbench.postprocess.flows import finish_labels, mask_flow_errors, track_flows
from cellbench.targets import FLOW_SCALE, boundary_weights, labels_to_flows

__all__ = ["Flow"]

_CACHE_SIZE = 64


class Flow(ModelFamily):
    family = "flow"
    vector_pairs = ((0, 1),)
    map_names = ("flow_y", "flow_x", "cellprob")

    def __init__(self, name, options) -> None:
        super().__init__(name, options)
        # tracking result per (maps, cellprob threshold): the tuning grid re-uses it
        # for every flow threshold instead of re-running the Euler integration.
        self._tracked: OrderedDict[tuple, list] = OrderedDict()

    @property
    def contour_weight(self) -> float:
        return float(self.options.contour_weight)

    # -- network ------------------------------------------------------------------------
    def build_network(self, *, load_weights: bool = True):
        return build_smp_unet(self.options, classes=3, load_weights=load_weights)

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        """``(3, H, W)``: 5 x dy, 5 x dx, cell probability; plus contour closeness when weighted."""
        target = labels_to_flows(labels)
        target[:2] *= FLOW_SCALE
        if self.contour_weight > 0:
            sigma = self.options.contour_sigma
            target = np.concatenate([target, boundary_weights(labels, sigma)[None]])
        return target

    def loss(self, logits, target):
        import torch.nn.functional as F

        flow_err = (logits[:, :2] - target[:, :2]).pow(2).mean(dim=1)  # (B, H, W)
        bce = F.binary_cross_entropy_with_logits(logits[:, 2], target[:, 2], reduction="none")
        if self.contour_weight > 0 and target.shape[1] > 3:
            weight = 1.0 + self.contour_weight * target[:, 3]
            weight = weight / weight.mean()
            flow_err, bce = flow_err * weight, bce * weight
        return flow_err.mean() / 2.0 + bce.mean()

    def activate(self, logits):
        import torch

        return torch.cat([logits[:, :2] / FLOW_SCALE, torch.sigmoid(logits[:, 2:3])], dim=1)

    # -- post-processing ----------------------------------------------------------------
    def _device(self):
        return resolve_device(self.options.postprocess_device)

    def _track(self, maps: np.ndarray, cellprob_threshold: float) -> list:
        digest = hashlib.blake2b(np.ascontiguousarray(maps, dtype=np.float32), digest_size=16)
        key = (digest.hexdigest(), maps.shape, cellprob_threshold)
        if key in self._tracked:
            self._tracked.move_to_end(key)
            return self._tracked[key]
        masks = track_flows(
            maps[:2],
            maps[2],
            cellprob_threshold=cellprob_threshold,
            niter=self.options.niter,
            max_size_fraction=self.options.max_size_fraction,
            min_seed_count=self.options.min_seed_count,
            device=self._device(),
        )
        entry = [masks, None]  # flow errors computed on first use
        self._tracked[key] = entry
        while len(self._tracked) > _CACHE_SIZE:
            self._tracked.popitem(last=False)
        return entry

    def postprocess(self, maps: np.ndarray, thresholds: FlowThresholds) -> np.ndarray:
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 3 or maps.shape[0] != 3:
            raise ValueError(
                f"flow maps must be (3, H, W) (flow_y, flow_x, cellprob), got {maps.shape}"
            )
        flow_threshold = thresholds.flow_threshold
        qc = bool(flow_threshold)  # None or 0: off
        entry = self._track(maps, thresholds.cellprob_threshold)
        masks = entry[0]
        qc = qc and masks.n > 0
        if qc and entry[1] is None:
            entry[1] = mask_flow_errors(masks, maps[:2])
        return finish_labels(
            masks,
            entry[1],
            flow_threshold=float(flow_threshold) if qc else None,
            min_size=self.options.min_size,
        )

    def threshold_grid(self) -> list[FlowThresholds]:
        return self.candidates(
            cellprob_threshold=self.options.cellprob_threshold,
            flow_threshold=self.options.flow_threshold,
        )
