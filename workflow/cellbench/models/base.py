"""The model-family interface.

A *model family* (DESIGN.md section 4) turns label images into training targets,
builds a network, defines its loss, turns network outputs into saved "raw maps"
and post-processes those maps into instance labels. The training loop
(:mod:`cellbench.train`), inference (:mod:`cellbench.inference`) and threshold
tuning are generic and call only this interface, so a new family is an options
class (:mod:`cellbench.models.options`), one module that subclasses
:class:`ModelFamily`, and one entry in :mod:`cellbench.models.registry`.

Conventions
-----------
- images given to networks: float32 ``(C, H, W)``, percentile-normalised
  (see :func:`cellbench.transforms.to_model_input`).
- targets: float32 ``(K, H, W)`` from :meth:`ModelFamily.make_target`.
  ``vector_pairs`` lists ``(dy_channel, dx_channel)`` index pairs of targets that
  are vector fields, so geometric augmentation can rotate/flip them correctly.
- maps: float32 ``(M, H, W)`` in physical units (probabilities, flows) as saved
  by the predict stage (:meth:`ModelFamily.activate`).
- labels: int32 ``(H, W)``, 0 = background, 1..N instances.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cellbench.options import Options

__all__ = ["ModelFamily", "grid"]


class ModelFamily(ABC):
    """One model family, built from a model name and its validated options.

    Instantiate through :func:`cellbench.models.get_family` (from a params.yaml
    entry) or :func:`cellbench.modelfolder.load_model` (from a model folder);
    ``options`` is an instance of the family's options class
    (:mod:`cellbench.models.options`), every default filled in.

    Trainable families implement the network part (``n_outputs``,
    ``build_network``, ``make_target``, ``loss``, ``activate``); families without
    a network (``trainable = False``) implement :meth:`image_to_maps` instead.
    All families implement :meth:`postprocess` and :meth:`threshold_grid`.
    """

    family: ClassVar[str]
    trainable: ClassVar[bool] = True
    #: pairs of target channels (dy, dx) that form vector fields.
    vector_pairs: ClassVar[tuple[tuple[int, int], ...]] = ()
    #: target channels holding class indices (resized with nearest neighbour, never blended).
    categorical_targets: ClassVar[tuple[int, ...]] = ()
    #: names of the channels of the saved maps, for the report and napari.
    map_names: ClassVar[tuple[str, ...]] = ()
    #: map channels holding ids or per-instance values: resized with nearest neighbour.
    categorical_maps: ClassVar[tuple[int, ...]] = ()
    #: whether maps may be put together from tiles and averaged (test-time
    #: augmentation); False (per-image instance ids): images are predicted whole.
    blendable_maps: ClassVar[bool] = True
    #: whether the family needs time-lapse data (skipped on datasets without time,
    #: see :mod:`cellbench.skip`).
    needs_time: ClassVar[bool] = False

    def __init__(self, name: str, options: Options) -> None:
        from cellbench.models.registry import family_entry

        entry = family_entry(self.family)
        if not isinstance(options, entry.options):
            raise TypeError(
                f"model family '{self.family}' takes {entry.options.__name__}, "
                f"got {type(options).__name__}"
            )
        self.name = name
        self.options = options
        #: the class of one tuned post-processing setting (``thresholds.json`` "selected").
        self.thresholds_class: type[Options] = entry.thresholds

    # -- network families -------------------------------------------------------------
    @property
    def frames(self) -> int:
        """Frames of a time window the network reads (1 = single images; ``frames`` option).

        With ``frames > 1`` the network input stacks the window's frames along the
        channel axis, oldest first: ``(frames * in_channels, H, W)``; the maps and
        targets belong to the last frame (see :mod:`cellbench.sequences`).
        """
        return int(getattr(self.options, "frames", 1))

    @property
    def in_channels(self) -> int:
        """Image channels the family reads (the ``in_channels`` option)."""
        channels = self.options.in_channels
        if channels == "auto":
            raise ValueError(
                f"model '{self.name}': in_channels 'auto' is resolved from the training data "
                "when training (cellbench.train.resolve_channels); this model was not trained"
            )
        return int(channels)

    def build_network(self, *, load_weights: bool = True):  # -> torch.nn.Module
        """Return an untrained ``torch.nn.Module``: ``(B, in_channels, H, W) -> (B, n_outputs, H, W)``.

        ``load_weights=False`` skips downloading pretrained weights (``encoder_weights``,
        ``pretrained_backbone``): what loading a trained model folder does, since its
        weights replace them anyway, so a model trained online loads offline.
        """
        raise NotImplementedError(f"model family '{self.family}' has no network")

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        """Labels ``(H, W)`` -> training target ``(K, H, W)`` float32. Pure, deterministic."""
        raise NotImplementedError(f"model family '{self.family}' has no training target")

    def loss(self, logits, target):  # (B, n_out, H, W), (B, K, H, W) -> scalar tensor
        """Training loss of raw network outputs against targets."""
        raise NotImplementedError(f"model family '{self.family}' has no loss")

    def training_loss(self, net, images, target):
        """Loss of one training batch: ``images (B, C, H, W)``, ``target (B, K, H, W)`` tensors.

        Default ``loss(net(images), target)``; families whose network computes its own
        losses (Mask R-CNN) override it. Called with the network in training mode. Under
        bf16 autocast (``precision: bf16``) the network runs in bf16 and the loss in fp32.
        """
        import torch

        logits = net(images)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.loss(logits.float(), target)

    def validation_loss(self, net, images, target, size: tuple[int, int]):
        """Loss of one validation image (network in eval mode, under ``no_grad``).

        ``images`` ``(1, C, H', W')`` is the image reflect-padded at the bottom / right
        to a multiple of 32; ``target`` ``(1, K, H, W)`` is not padded; ``size = (H, W)``.
        """
        h, w = size
        return self.loss(net(images)[:, :, :h, :w], target)

    def activate(self, logits):  # (B, n_out, H, W) -> (B, M, H, W)
        """Raw network outputs -> the maps the predict stage saves (e.g. softmax)."""
        raise NotImplementedError(f"model family '{self.family}' has no network")

    # -- families without a network ---------------------------------------------------
    def image_to_maps(self, image: np.ndarray) -> np.ndarray:
        """Model input ``(C, H, W)`` float32 -> maps ``(M, H, W)`` (non-trainable families)."""
        raise NotImplementedError(f"model family '{self.family}' needs a trained network")

    # -- every family -----------------------------------------------------------------
    @abstractmethod
    def postprocess(self, maps: np.ndarray, thresholds: Options) -> np.ndarray:
        """Maps ``(M, H, W)`` -> instance labels ``(H, W)`` int32 (0 = background).

        ``thresholds`` is an instance of :attr:`thresholds_class` (one tuned setting).
        """

    @abstractmethod
    def threshold_grid(self) -> list[Options]:
        """Candidate post-processing settings (:attr:`thresholds_class`), tuned on val.

        The first entry is the default used when there is no validation data.
        """

    def candidates(self, **axes: Sequence[Any]) -> list[Options]:
        """The Cartesian product of named candidate lists as :attr:`thresholds_class` objects."""
        return [self.thresholds_class(**setting) for setting in grid(**axes)]


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Cartesian product of named candidate values, as a list of dicts (first = all firsts)."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]
