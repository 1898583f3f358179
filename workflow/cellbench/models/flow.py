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

Options (params.yaml), defaults in brackets:

- network: ``encoder`` [resnet18] (any smp encoder), ``encoder_weights`` [null;
  ``imagenet`` needs the internet], ``encoder_depth`` [5], ``decoder_channels``
  [256, 128, 64, 32, 16], ``attention`` [none] (none | scse), ``in_channels`` [1];
- loss: ``contour_weight`` [0.0] (>= 0), ``contour_sigma`` [2.0] (px);
- post-processing: ``niter`` [200] (Euler steps), ``min_size`` [15] (px),
  ``min_seed_count`` [10] (a cluster seed needs more than this many converged
  pixels), ``max_size_fraction`` [0.4], ``postprocess_device`` [cpu] (cpu | cuda |
  auto);
- tuning grid (lists, first = default): ``cellprob_threshold`` [0.5, 0.3, 0.4,
  0.6] (probability; 0.5 = Cellpose's logit 0) and ``flow_threshold`` [0.4, 0.6,
  0.8, 0] (Cellpose's flow-error QC; 0 or null = off).

Training settings (epochs, batch_size, patch_size, ...) are read by :mod:`cellbench.train`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from cellbench.models.base import ModelFamily, grid, register_family
from cellbench.models.unet import build_smp_unet
from cellbench.postprocess.flows import finish_labels, mask_flow_errors, track_flows
from cellbench.targets import FLOW_SCALE, boundary_weights, labels_to_flows

__all__ = ["Flow"]

_CACHE_SIZE = 64


@register_family
class Flow(ModelFamily):
    family = "flow"
    vector_pairs = ((0, 1),)
    map_names = ("flow_y", "flow_x", "cellprob")

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        # tracking result per (maps, cellprob threshold): the tuning grid re-uses it
        # for every flow threshold instead of re-running the Euler integration.
        self._tracked: OrderedDict[tuple, list] = OrderedDict()

    @property
    def contour_weight(self) -> float:
        return float(self.cfg.get("contour_weight", 0.0))

    # -- network ------------------------------------------------------------------------
    def build_network(self):
        return build_smp_unet(self.cfg.options, self.in_channels, classes=3)

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        """``(3, H, W)``: 5 x dy, 5 x dx, cell probability; plus contour closeness when weighted."""
        target = labels_to_flows(labels)
        target[:2] *= FLOW_SCALE
        if self.contour_weight > 0:
            sigma = float(self.cfg.get("contour_sigma", 2.0))
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
        from cellbench.train import resolve_device

        return resolve_device(self.cfg.get("postprocess_device", "cpu"))

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
            niter=int(self.cfg.get("niter", 200)),
            max_size_fraction=float(self.cfg.get("max_size_fraction", 0.4)),
            min_seed_count=int(self.cfg.get("min_seed_count", 10)),
            device=self._device(),
        )
        entry = [masks, None]  # flow errors computed on first use
        self._tracked[key] = entry
        while len(self._tracked) > _CACHE_SIZE:
            self._tracked.popitem(last=False)
        return entry

    def postprocess(self, maps: np.ndarray, thresholds: Mapping[str, Any]) -> np.ndarray:
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 3 or maps.shape[0] != 3:
            raise ValueError(
                f"flow maps must be (3, H, W) (flow_y, flow_x, cellprob), got {maps.shape}"
            )
        flow_threshold = thresholds.get("flow_threshold", 0.4)
        qc = bool(flow_threshold)  # None or 0: off
        entry = self._track(maps, float(thresholds.get("cellprob_threshold", 0.5)))
        masks = entry[0]
        qc = qc and masks.n > 0
        if qc and entry[1] is None:
            entry[1] = mask_flow_errors(masks, maps[:2])
        return finish_labels(
            masks,
            entry[1],
            flow_threshold=float(flow_threshold) if qc else None,
            min_size=int(self.cfg.get("min_size", 15)),
        )

    def threshold_grid(self) -> list[dict[str, Any]]:
        def candidates(key: str, default: list) -> list:
            value = self.cfg.get(key, default)
            return list(value) if isinstance(value, list | tuple) else [value]

        return grid(
            cellprob_threshold=candidates("cellprob_threshold", [0.5, 0.3, 0.4, 0.6]),
            flow_threshold=candidates("flow_threshold", [0.4, 0.6, 0.8, 0.0]),
        )
