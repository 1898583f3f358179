"""Dataset sources (registry). Importing this package registers every source."""

from cellbench.datasets import (  # noqa: F401  (registration side effect)
    bbbc,
    ctc,
    dsb2018,
    folder,
    livecell,
    monuseg,
    sartorius,
    synthetic,
)
from cellbench.datasets.base import (
    DATASET_KINDS,
    INDEX_COLUMNS,
    LOCAL_MARKER,
    ConvertedWriter,
    DatasetSource,
    get_dataset,
    raw_root,
    read_index,
    register_dataset,
)

__all__ = [
    "DATASET_KINDS",
    "INDEX_COLUMNS",
    "LOCAL_MARKER",
    "ConvertedWriter",
    "DatasetSource",
    "get_dataset",
    "raw_root",
    "read_index",
    "register_dataset",
]
