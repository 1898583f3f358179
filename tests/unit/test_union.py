"""The union training set of run.union: prefixed ids, concatenated index and split, no leakage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cellbench.datasets.base import read_index
from cellbench.io import read_image
from cellbench.union import build_union, member_id, union_index, union_split
from tiny_networks import write_tiny_dataset


def test_union_tables_prefix_ids_groups_and_sequences() -> None:
    a = pd.DataFrame(
        {"id": ["x", "y"], "group": ["g", "g"], "sequence": ["s1", ""], "cell_type": ["nuc"] * 2}
    )
    b = pd.DataFrame({"id": ["x"], "group": ["x"], "sequence": [""], "channels": [3]})
    index = union_index({"a": a, "b": b})
    assert index["id"].tolist() == ["a--x", "a--y", "b--x"]  # the same id twice stays unique
    assert index["group"].tolist() == ["a--g", "a--g", "b--x"]
    assert index["sequence"].tolist() == ["a--s1", "", ""]  # no sequence stays none
    assert index["cell_type"].tolist() == ["nuc", "nuc", ""]  # columns of either member kept
    splits = {
        "a": pd.DataFrame({"id": ["x", "y"], "split": ["train", "test"], "group": ["g", "g"]}),
        "b": pd.DataFrame({"id": ["x"], "split": ["val"], "group": ["x"]}),
    }
    split = union_split(splits)
    assert dict(zip(split["id"], split["split"], strict=True)) == {
        "a--x": "train",
        "a--y": "test",
        "b--x": "val",
    }
    with pytest.raises(ValueError, match="two or more datasets"):
        union_index({"a": a})


def test_build_union_writes_every_member_image_and_keeps_each_split(tmp_path: Path) -> None:
    members = []
    for name, splits in (
        ("one", ("train", "train", "val", "test")),
        ("two", ("train", "val", "test", "test")),
    ):
        converted, split_csv = write_tiny_dataset(
            tmp_path / "converted" / name, tmp_path / "splits" / f"{name}.csv", splits=splits
        )
        members.append((name, converted, split_csv))
    out, out_split = tmp_path / "converted" / "union", tmp_path / "splits" / "union.csv"
    split = build_union(members, out, out_split)

    index = read_index(out)
    assert len(index) == 8 and index["id"].is_unique
    assert pd.read_csv(out_split, dtype=str).equals(split.astype(str))
    for name, converted, split_csv in members:
        own = pd.read_csv(split_csv, dtype=str)
        for part in ("train", "val", "test"):  # the union's splits are the members' splits
            expected = {member_id(name, i) for i in own.loc[own["split"] == part, "id"]}
            ours = set(split.loc[split["split"] == part, "id"])
            assert {i for i in ours if i.startswith(f"{name}--")} == expected
        for image_id in own["id"]:
            union_id = member_id(name, image_id)
            assert np.array_equal(
                read_image(out / "images" / f"{union_id}.tif"),
                read_image(converted / "images" / f"{image_id}.tif"),
            )
            assert (out / "labels" / f"{union_id}.tif").is_file()
