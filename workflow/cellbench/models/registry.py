"""The model-family registry: key -> options class, tuned-thresholds class, implementation.

Light on purpose: the Snakefile validates params.yaml through it at parse time, so
it imports no torch, scikit-image or scipy. The implementation class
(:class:`cellbench.models.base.ModelFamily` subclass) is imported only when a
family is instantiated (:func:`get_family`).

A new family is one options class in :mod:`cellbench.models.options`, one module
with its :class:`~cellbench.models.base.ModelFamily` subclass, and one
:class:`FamilyEntry` line in ``MODEL_FAMILIES`` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cellbench.models.options import (
    ClassicalOptions,
    ClassicalThresholds,
    EmbeddingOptions,
    EmbeddingThresholds,
    FlowOptions,
    FlowThresholds,
    LSTMUNetOptions,
    MaskRCNNOptions,
    MaskRCNNThresholds,
    UNetOptions,
    UNetThresholds,
)
from cellbench.options import Options, check_all, load_implementation, registry_lookup

if TYPE_CHECKING:
    from cellbench.config import ModelConfig, Params
    from cellbench.models.base import ModelFamily

__all__ = [
    "MODEL_FAMILIES",
    "FamilyEntry",
    "family_entry",
    "get_family",
    "get_options",
    "validate_models",
]


@dataclass(frozen=True)
class FamilyEntry:
    """One model family.

    Attributes
    ----------
    key : the params.yaml ``family:`` value.
    options : the family's options class (every option, its default and range).
    thresholds : the class of one tuned post-processing setting (``thresholds.json``).
    implementation : ``module:Class`` of the :class:`~cellbench.models.base.ModelFamily`.
    summary : one line for ``cellbench list``.
    trainable : whether the family trains a network.
    """

    key: str
    options: type[Options]
    thresholds: type[Options]
    implementation: str
    summary: str
    trainable: bool

    def load(self) -> type[ModelFamily]:
        """Import and return the implementation class."""
        return load_implementation(self.implementation, "family", self.key)


MODEL_FAMILIES: dict[str, FamilyEntry] = {
    entry.key: entry
    for entry in (
        FamilyEntry(
            "classical",
            ClassicalOptions,
            ClassicalThresholds,
            "cellbench.models.classical:Classical",
            "threshold + distance-transform watershed, no training",
            trainable=False,
        ),
        FamilyEntry(
            "unet",
            UNetOptions,
            UNetThresholds,
            "cellbench.models.unet:UNet",
            "smp U-Net, background / interior / boundary, seeded watershed",
            trainable=True,
        ),
        FamilyEntry(
            "flow",
            FlowOptions,
            FlowThresholds,
            "cellbench.models.flow:Flow",
            "Cellpose-style flows + cell probability, flow tracking",
            trainable=True,
        ),
        FamilyEntry(
            "embedding",
            EmbeddingOptions,
            EmbeddingThresholds,
            "cellbench.models.embedding:Embedding",
            "contrastive pixel embeddings + foreground, clustered into instances",
            trainable=True,
        ),
        FamilyEntry(
            "lstm_unet",
            LSTMUNetOptions,
            UNetThresholds,
            "cellbench.models.lstm_unet:LSTMUNet",
            "ConvLSTM U-Net on frame windows (time-lapse), seeded watershed",
            trainable=True,
        ),
        FamilyEntry(
            "maskrcnn",
            MaskRCNNOptions,
            MaskRCNNThresholds,
            "cellbench.models.maskrcnn:MaskRCNN",
            "torchvision Mask R-CNN, overlaps resolved by score",
            trainable=True,
        ),
    )
}


def family_entry(key: str, where: str = "family") -> FamilyEntry:
    """The registry entry of a family key (ConfigError naming the valid families)."""
    return registry_lookup(MODEL_FAMILIES, key, where, "model family")


def validate_models(params: Params) -> None:
    """Validate every ``models:`` entry with its family's options class (all problems at once)."""
    check_all(
        (lambda cfg=cfg: get_options(cfg, str(params.path)) for cfg in params.models.values()),
        params.path,
    )


def get_options(cfg: ModelConfig, source: str = "params.yaml") -> Options:
    """The validated, typed options of a model entry."""
    entry = family_entry(cfg.family, f"models.{cfg.name}.family")
    return entry.options.from_mapping(cfg.options, f"models.{cfg.name}", source)


def get_family(cfg: ModelConfig, source: str = "params.yaml") -> ModelFamily:
    """Instantiate the family of a model entry with its validated, typed options."""
    return family_entry(cfg.family).load()(cfg.name, get_options(cfg, source))
