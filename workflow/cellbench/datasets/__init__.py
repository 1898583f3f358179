"""Dataset sources (registry). Importing this package is light: the registry only.

The implementations (download + convert) are imported when a source is
instantiated; the common-format writer is in :mod:`cellbench.datasets.base`.
"""

from cellbench.datasets.registry import DATASET_KINDS, KindEntry, get_dataset, kind_entry

__all__ = ["DATASET_KINDS", "KindEntry", "get_dataset", "kind_entry"]
