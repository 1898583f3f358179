"""``unet``: segmentation-models-pytorch U-Net, 3 classes (background / interior / boundary).

Target: class index per pixel, 0 background, 1 cell interior, 2 cell boundary
(the inner boundary of every instance, ``boundary_width`` px thick, which also
separates touching cells). Loss: class-weighted cross-entropy plus soft Dice of
the interior and boundary classes. Maps: softmax probabilities ``(3, H, W)``.
Post-processing: seeded watershed, seeds = interior > ``seed_threshold`` (pinched
seeds split at distance-transform h-maxima of depth ``split_h``), mask =
1 - P(background) > ``mask_threshold``; all three tuned on the validation split.

Options (params.yaml): ``encoder`` (any smp encoder), ``encoder_weights`` (null
offline, ``imagenet`` with internet), ``encoder_depth``, ``decoder_channels``,
``attention`` (none | scse), ``in_channels``, ``boundary_width``,
``class_weights``, ``min_size``, ``seed_threshold`` / ``mask_threshold`` /
``split_h`` (lists: the tuning grid), plus the training settings read by :mod:`cellbench.train`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from cellbench.models.base import ModelFamily, grid, register_family
from cellbench.postprocess.watershed import seeded_watershed

__all__ = ["UNet", "build_smp_unet", "labels_to_classes"]


def labels_to_classes(labels: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """Instance labels ``(H, W)`` -> class map ``(H, W)`` uint8: 0 bg, 1 interior, 2 boundary."""
    labels = np.asarray(labels)
    boundary = find_boundaries(labels, mode="inner")
    if boundary_width > 1:
        from scipy import ndimage as ndi

        grown = ndi.binary_dilation(boundary, structure=disk(boundary_width // 2))
        boundary = grown & (labels > 0)
    classes = (labels > 0).astype(np.uint8)
    classes[boundary] = 2
    return classes


def build_smp_unet(options: Mapping[str, Any], in_channels: int, classes: int):
    """A ``segmentation_models_pytorch.Unet`` from model options (shared by U-Net-like families).

    Raises
    ------
    RuntimeError
        When pretrained encoder weights were asked for but cannot be downloaded.
    """
    import segmentation_models_pytorch as smp

    depth = int(options.get("encoder_depth", 5))
    decoder_channels = list(options.get("decoder_channels", [256, 128, 64, 32, 16]))[:depth]
    attention = options.get("attention", "none")
    weights = options.get("encoder_weights")
    try:
        return smp.Unet(
            encoder_name=options.get("encoder", "resnet18"),
            encoder_weights=weights,
            encoder_depth=depth,
            decoder_channels=decoder_channels,
            decoder_attention_type=None if attention in (None, "none") else attention,
            in_channels=in_channels,
            classes=classes,
        )
    except (OSError, ConnectionError, RuntimeError) as exc:
        if weights:
            raise RuntimeError(
                f"could not load '{weights}' weights for encoder '{options.get('encoder')}' "
                f"({exc}). Pretrained weights need the internet: set 'encoder_weights: null' "
                "in params.yaml to train from random initialisation."
            ) from exc
        raise


@register_family
class UNet(ModelFamily):
    family = "unet"
    map_names = ("background", "interior", "boundary")

    def build_network(self):
        return build_smp_unet(self.cfg.options, self.in_channels, classes=3)

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        classes = labels_to_classes(labels, int(self.cfg.get("boundary_width", 2)))
        return classes[None].astype(np.float32)

    def loss(self, logits, target):
        import torch
        import torch.nn.functional as F

        classes = target[:, 0].long()
        weight = torch.as_tensor(
            self.cfg.get("class_weights", [1.0, 1.0, 2.0]), dtype=logits.dtype, device=logits.device
        )
        ce = F.cross_entropy(logits, classes, weight=weight)
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(classes, 3).permute(0, 3, 1, 2).to(probs.dtype)
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        union = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        dice = 1.0 - (2.0 * inter[1:] + 1.0) / (union[1:] + 1.0)
        return ce + dice.mean()

    def activate(self, logits):
        return logits.softmax(dim=1)

    def postprocess(self, maps: np.ndarray, thresholds: Mapping[str, Any]) -> np.ndarray:
        return seeded_watershed(
            maps[1],
            1.0 - maps[0],
            seed_threshold=float(thresholds.get("seed_threshold", 0.6)),
            mask_threshold=float(thresholds.get("mask_threshold", 0.5)),
            min_size=int(self.cfg.get("min_size", 15)),
            split_h=float(thresholds.get("split_h", 0.0)),
        )

    def threshold_grid(self) -> list[dict[str, Any]]:
        return grid(
            seed_threshold=self.cfg.get("seed_threshold", [0.7, 0.5, 0.8, 0.9]),
            mask_threshold=self.cfg.get("mask_threshold", [0.5]),
            split_h=self.cfg.get("split_h", [1.0, 2.0, 0.0]),
        )
