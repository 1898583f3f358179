"""The dataset-source registry: kind -> options class, allowed sources, implementation.

Light on purpose (the Snakefile validates params.yaml through it at parse time):
the implementation class (:class:`cellbench.datasets.base.DatasetSource`
subclass) is imported only when a source is instantiated (:func:`get_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cellbench.datasets.options import (
    BBBC007Options,
    BBBC009Options,
    BBBC018Options,
    BBBC041Options,
    CTCOptions,
    DSB2018Options,
    FolderOptions,
    LIVECellOptions,
    NoOptions,
    SartoriusOptions,
    SyntheticOptions,
)
from cellbench.errors import ConfigError
from cellbench.options import Options, check_all, load_implementation, registry_lookup

if TYPE_CHECKING:
    from cellbench.config import DatasetConfig, Params
    from cellbench.datasets.base import DatasetSource

__all__ = ["DATASET_KINDS", "KindEntry", "get_dataset", "kind_entry", "validate_datasets"]

FETCHABLE = ("download", "local")


@dataclass(frozen=True)
class KindEntry:
    """One dataset kind.

    Attributes
    ----------
    key : the params.yaml ``kind:`` value.
    options : the kind's options class.
    sources : the ``source:`` values it accepts.
    implementation : ``module:Class`` of the :class:`~cellbench.datasets.base.DatasetSource`.
    summary : one line for ``cellbench list``.
    """

    key: str
    options: type[Options]
    sources: tuple[str, ...]
    implementation: str
    summary: str

    def load(self) -> type[DatasetSource]:
        """Import and return the implementation class."""
        return load_implementation(self.implementation, "kind", self.key)


_M = "cellbench.datasets"
DATASET_KINDS: dict[str, KindEntry] = {
    e.key: e
    for e in (
        KindEntry(
            "synthetic",
            SyntheticOptions,
            ("generate",),
            f"{_M}.synthetic:SyntheticSource",
            "offline synthetic fluorescent nuclei and phase-contrast cells (exact labels)",
        ),
        KindEntry(
            "dsb2018",
            DSB2018Options,
            FETCHABLE,
            f"{_M}.dsb2018:DSB2018",
            "Kaggle Data Science Bowl 2018 nuclei (stage-1 train + test with solution)",
        ),
        KindEntry(
            "sartorius",
            SartoriusOptions,
            FETCHABLE,
            f"{_M}.sartorius:Sartorius",
            "Kaggle Sartorius Cell Instance Segmentation 2021 (RLE, overlaps resolved)",
        ),
        KindEntry(
            "ctc",
            CTCOptions,
            FETCHABLE,
            f"{_M}.ctc:CellTrackingChallenge",
            "Cell Tracking Challenge 2D training data (GT or ST segmentation truth)",
        ),
        KindEntry(
            "bbbc039",
            NoOptions,
            FETCHABLE,
            f"{_M}.bbbc:BBBC039",
            "BBBC039 U2OS nuclei (fluorescence), 16-bit TIFF + colour-coded masks",
        ),
        KindEntry(
            "bbbc009",
            BBBC009Options,
            FETCHABLE,
            f"{_M}.bbbc:BBBC009",
            "BBBC009 human red blood cells (DIC), outline annotations",
        ),
        KindEntry(
            "bbbc007",
            BBBC007Options,
            FETCHABLE,
            f"{_M}.bbbc:BBBC007",
            "BBBC007 Drosophila Kc167 cells, DNA/actin with outline annotations",
        ),
        KindEntry(
            "bbbc018",
            BBBC018Options,
            FETCHABLE,
            f"{_M}.bbbc:BBBC018",
            "BBBC018 HT29 cells (DNA/actin/pH3 DIB), outline annotations",
        ),
        KindEntry(
            "bbbc041",
            BBBC041Options,
            FETCHABLE,
            f"{_M}.bbbc:BBBC041",
            "BBBC041 malaria blood smears, bounding boxes only (no mask metrics)",
        ),
        KindEntry(
            "livecell",
            LIVECellOptions,
            FETCHABLE,
            f"{_M}.livecell:LIVECell",
            "LIVECell phase-contrast cells (COCO polygons, overlaps resolved)",
        ),
        KindEntry(
            "monuseg",
            NoOptions,
            FETCHABLE,
            f"{_M}.monuseg:MoNuSeg",
            "MoNuSeg 2018 H&E nuclei (Aperio XML polygons)",
        ),
        KindEntry(
            "folder",
            FolderOptions,
            ("local",),
            f"{_M}.folder:Folder",
            "Your own data: *_img.* + *_masks.* pairs, or images/ + labels/ folders",
        ),
    )
}


def kind_entry(key: str, where: str = "kind") -> KindEntry:
    """The registry entry of a dataset kind (ConfigError naming the valid kinds)."""
    return registry_lookup(DATASET_KINDS, key, where, "dataset kind")


def resolve_dataset_options(cfg: DatasetConfig, source: str) -> Options:
    """Validate one dataset entry: its source against the kind, its options with the class."""
    entry = kind_entry(cfg.kind, f"datasets.{cfg.name}.kind")
    if cfg.source not in entry.sources:
        raise ConfigError(
            f"{source} is invalid:\n  - datasets.{cfg.name}.source: '{cfg.source}' is not "
            f"possible for kind '{cfg.kind}'; allowed: {', '.join(entry.sources)}"
        )
    return entry.options.from_mapping(cfg.options, f"datasets.{cfg.name}.options", source)


def validate_datasets(params: Params) -> None:
    """Validate every ``datasets:`` entry with its kind's options class (all problems at once)."""
    check_all(
        (
            lambda cfg=cfg: resolve_dataset_options(cfg, str(params.path))
            for cfg in params.datasets.values()
        ),
        params.path,
    )


def get_dataset(cfg: DatasetConfig, seed: int = 0, source: str = "params.yaml") -> DatasetSource:
    """Instantiate the source of a dataset entry with its validated, typed options."""
    options = resolve_dataset_options(cfg, source)
    return kind_entry(cfg.kind).load()(cfg, options, seed=seed)
