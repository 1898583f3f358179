"""The model-family interface and its registry.

A *model family* (DESIGN.md section 4) turns label images into training targets,
builds a network, defines its loss, turns network outputs into saved "raw maps"
and post-processes those maps into instance labels. The training loop
(:mod:`cellbench.train`), inference (:mod:`cellbench.predict`) and threshold
tuning are generic and call only this interface, so a new family is one module
that subclasses :class:`ModelFamily` and is decorated with
:func:`register_family`.

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
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from cellbench.config import ModelConfig

__all__ = ["MODEL_FAMILIES", "ModelFamily", "get_family", "grid", "register_family"]

MODEL_FAMILIES: dict[str, type[ModelFamily]] = {}


class ModelFamily(ABC):
    """One model family. Instances are built from a :class:`~cellbench.config.ModelConfig`.

    Trainable families implement the network part (``n_outputs``,
    ``build_network``, ``make_target``, ``loss``, ``activate``); families without
    a network (``trainable = False``) implement :meth:`image_to_maps` instead.
    All families implement :meth:`postprocess` and :meth:`threshold_grid`.
    """

    family: ClassVar[str]
    trainable: ClassVar[bool] = True
    #: pairs of target channels (dy, dx) that form vector fields.
    vector_pairs: ClassVar[tuple[tuple[int, int], ...]] = ()
    #: names of the channels of the saved maps, for the report and napari.
    map_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg

    # -- network families -------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return int(self.cfg.get("in_channels", 1))

    def build_network(self):  # -> torch.nn.Module
        """Return an untrained ``torch.nn.Module``: ``(B, in_channels, H, W) -> (B, n_outputs, H, W)``."""
        raise NotImplementedError(f"model family '{self.family}' has no network")

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        """Labels ``(H, W)`` -> training target ``(K, H, W)`` float32. Pure, deterministic."""
        raise NotImplementedError(f"model family '{self.family}' has no training target")

    def loss(self, logits, target):  # (B, n_out, H, W), (B, K, H, W) -> scalar tensor
        """Training loss of raw network outputs against targets."""
        raise NotImplementedError(f"model family '{self.family}' has no loss")

    def activate(self, logits):  # (B, n_out, H, W) -> (B, M, H, W)
        """Raw network outputs -> the maps the predict stage saves (e.g. softmax)."""
        raise NotImplementedError(f"model family '{self.family}' has no network")

    # -- families without a network ---------------------------------------------------
    def image_to_maps(self, image: np.ndarray) -> np.ndarray:
        """Model input ``(C, H, W)`` float32 -> maps ``(M, H, W)`` (non-trainable families)."""
        raise NotImplementedError(f"model family '{self.family}' needs a trained network")

    # -- every family -----------------------------------------------------------------
    @abstractmethod
    def postprocess(self, maps: np.ndarray, thresholds: Mapping[str, Any]) -> np.ndarray:
        """Maps ``(M, H, W)`` -> instance labels ``(H, W)`` int32 (0 = background)."""

    @abstractmethod
    def threshold_grid(self) -> list[dict[str, Any]]:
        """Candidate post-processing settings, tuned on the validation split.

        The first entry is the default used when there is no validation data.
        """


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Cartesian product of named candidate values, as a list of dicts (first = all firsts)."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: add a :class:`ModelFamily` to the registry under ``cls.family``."""
    if cls.family in MODEL_FAMILIES and MODEL_FAMILIES[cls.family] is not cls:
        raise ValueError(f"model family '{cls.family}' is registered twice")
    MODEL_FAMILIES[cls.family] = cls
    return cls


def get_family(cfg: ModelConfig) -> ModelFamily:
    """Instantiate the family registered for ``cfg.family``.

    Raises
    ------
    KeyError
        Naming the valid families and the fix.
    """
    try:
        cls = MODEL_FAMILIES[cfg.family]
    except KeyError:
        raise KeyError(
            f"models.{cfg.name}.family: unknown model family '{cfg.family}'; valid families: "
            f"{', '.join(sorted(MODEL_FAMILIES))}. Fix 'family:' in params.yaml."
        ) from None
    return cls(cfg)
