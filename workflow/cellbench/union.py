"""The union training set (``run.union``): every run dataset's converted images in one.

``data/converted/union`` holds the images, labels (and train labels) of every member
dataset under ids prefixed with the dataset's name (``{dataset}--{id}``: dataset keys
have no ``-``, so the prefix is unambiguous and ids stay unique), ``index.csv`` is the
members' indexes concatenated (groups and sequences prefixed the same way), and
``data/splits/union.csv`` is the members' splits concatenated. So the union's train
images are exactly the members' train images, its val images their val images, and its
test images their test images: a model trained on the union never saw any member's test
image, and is scored on each member's test split separately.

:func:`union_index` and :func:`union_split` are pure; :func:`build_union` does the I/O.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from cellbench.config import UNION
from cellbench.datasets.base import TRAIN_LABELS, read_index
from cellbench.io import atomic_dir, write_csv
from cellbench.split import read_split

__all__ = ["SEPARATOR", "UNION", "build_union", "member_id", "union_index", "union_split"]

log = logging.getLogger(__name__)

SEPARATOR = "--"
"""Between the dataset name and the member's id in a union id."""


def member_id(dataset: str, image_id: str) -> str:
    """The id of a member's image in the union: ``{dataset}--{id}``."""
    return f"{dataset}{SEPARATOR}{image_id}"


def _prefixed(frame: pd.DataFrame, dataset: str, columns: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for column in columns:
        if column in out:
            values = out[column].astype(str)
            out[column] = [member_id(dataset, v) if v else v for v in values]
    return out


def union_index(indexes: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The members' ``index.csv`` tables as one, ids / groups / sequences prefixed.

    Parameters
    ----------
    indexes : mapping dataset name -> its index, in the order of ``run.datasets``.

    Returns
    -------
    pandas.DataFrame
        The union of the columns (a column missing from a member is empty there),
        sorted by id.
    """
    if len(indexes) < 2:
        raise ValueError(f"a union needs two or more datasets, got {list(indexes)}")
    parts = [_prefixed(ix, d, ("id", "group", "sequence")) for d, ix in indexes.items()]
    out = pd.concat(parts, ignore_index=True, sort=False)
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].fillna("")
    return out.sort_values("id").reset_index(drop=True)


def union_split(splits: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The members' split tables as one (ids and groups prefixed, splits unchanged)."""
    if len(splits) < 2:
        raise ValueError(f"a union needs two or more datasets, got {list(splits)}")
    parts = [_prefixed(sp, d, ("id", "group")) for d, sp in splits.items()]
    return pd.concat(parts, ignore_index=True, sort=False).sort_values("id").reset_index(drop=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (no extra space), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_union(
    members: Sequence[tuple[str, Path, Path]], out_converted: Path, out_split: Path
) -> pd.DataFrame:
    """Write the union's converted folder and split, atomically.

    Parameters
    ----------
    members : ``(dataset, converted folder, split CSV)`` of each run dataset.
    out_converted : ``data/converted/union``.
    out_split : ``data/splits/union.csv``.

    Returns
    -------
    pandas.DataFrame
        The union's split.
    """
    indexes = {name: read_index(Path(converted)) for name, converted, _ in members}
    splits = {name: read_split(split) for name, _, split in members}
    index, split = union_index(indexes), union_split(splits)
    with atomic_dir(out_converted) as tmp:
        for name, converted, _ in members:
            for folder in ("images", "labels", TRAIN_LABELS):
                src = Path(converted) / folder
                if not src.is_dir():
                    continue
                (tmp / folder).mkdir(exist_ok=True)
                for f in sorted(src.glob("*.tif")):
                    _link_or_copy(f, tmp / folder / f"{member_id(name, f.stem)}.tif")
        write_csv(tmp / "index.csv", index)
    write_csv(out_split, split)
    log.info(
        "union of %s: %d images, split %s",
        ", ".join(name for name, _, _ in members),
        len(index),
        split["split"].value_counts().to_dict(),
    )
    return split
