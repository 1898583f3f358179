"""``unet``: segmentation-models-pytorch U-Net, 3 classes (background / interior / boundary).

Target: class index per pixel, 0 background, 1 cell interior, 2 cell boundary
(the inner boundary of every instance, ``boundary_width`` px thick, which also
separates touching cells). Loss: class-weighted cross-entropy plus soft Dice of
the interior and boundary classes. Maps: softmax probabilities ``(3, H, W)``.
Post-processing: seeded watershed, seeds = interior > ``seed_threshold`` (pinched
seeds split at distance-transform h-maxima of depth ``split_h``), mask =
1 - P(background) > ``mask_threshold``; all three tuned on the validation split.
Optionally each instance is then closed with a disk of ``closing_radius`` px and
pieces smaller than ``area_opening`` px are removed
(:func:`cellbench.postprocess.watershed.close_and_open`; both 0 = off).

Options: :class:`cellbench.models.options.UNetOptions` (``cellbench options unet``
prints every one with its type, default and description).
"""

from __future__ import annotations

import numpy as np
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from cellbench.models.base import ModelFamily
from cellbench.models.options import NetworkOptions, UNetThresholds
from cellbench.postprocess.watershed import close_and_open, seeded_watershed

__all__ = ["UNet", "build_smp_unet", "labels_to_classes"]


def labels_to_classes(labels: np.ndarray, boundary_width: int) -> np.ndarray:
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


def build_smp_unet(options: NetworkOptions, classes: int, *, load_weights: bool = True):
    """A ``segmentation_models_pytorch.Unet`` from network options (shared by U-Net-like families).

    ``(B, options.in_channels, H, W) -> (B, classes, H, W)``. ``load_weights=False``
    builds the architecture without downloading ``encoder_weights`` (loading a trained
    model, whose saved weights replace them).

    Raises
    ------
    RuntimeError
        When pretrained encoder weights were asked for but cannot be downloaded.
    """
    import segmentation_models_pytorch as smp

    depth = options.encoder_depth
    weights = options.encoder_weights if load_weights else None
    try:
        return smp.Unet(
            encoder_name=options.encoder,
            encoder_weights=weights,
            encoder_depth=depth,
            decoder_channels=list(options.decoder_channels[:depth]),
            decoder_attention_type=None if options.attention == "none" else options.attention,
            in_channels=options.in_channels,
            classes=classes,
        )
    except (OSError, ConnectionError, RuntimeError) as exc:
        if weights:
            raise RuntimeError(
                f"could not load '{weights}' weights for encoder '{options.encoder}' "
                f"({exc}). Pretrained weights need the internet: set 'encoder_weights: null' "
                "in params.yaml to train from random initialisation."
            ) from exc
        raise


class UNet(ModelFamily):
    family = "unet"
    map_names = ("background", "interior", "boundary")
    categorical_targets = (0,)

    def build_network(self, *, load_weights: bool = True):
        return build_smp_unet(self.options, classes=3, load_weights=load_weights)

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        classes = labels_to_classes(labels, self.options.boundary_width)
        return classes[None].astype(np.float32)

    def loss(self, logits, target):
        import torch
        import torch.nn.functional as F

        classes = target[:, 0].long()
        weight = torch.as_tensor(
            self.options.class_weights, dtype=logits.dtype, device=logits.device
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

    def postprocess(self, maps: np.ndarray, thresholds: UNetThresholds) -> np.ndarray:
        labels = seeded_watershed(
            maps[1],
            1.0 - maps[0],
            seed_threshold=thresholds.seed_threshold,
            mask_threshold=thresholds.mask_threshold,
            min_size=self.options.min_size,
            split_h=thresholds.split_h,
        )
        radius = self.options.closing_radius
        opening = self.options.area_opening
        if radius > 0 or opening > 0:
            labels = close_and_open(labels, closing_radius=radius, area_opening=opening)
        return labels

    def threshold_grid(self) -> list[UNetThresholds]:
        return self.candidates(
            seed_threshold=self.options.seed_threshold,
            mask_threshold=self.options.mask_threshold,
            split_h=self.options.split_h,
        )
