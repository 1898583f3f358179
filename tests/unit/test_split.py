import pandas as pd
import pytest
from cellbench.config import SplitOptions
from cellbench.split import make_split


def index(n_groups: int = 20, per_group: int = 3) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            rows.append(
                {
                    "id": f"g{g:02d}_{k}",
                    "group": f"g{g:02d}",
                    "annotation": "full",
                    "cell_type": "a" if g % 2 else "b",
                    "official_split": "",
                }
            )
    return pd.DataFrame(rows)


def test_grouped_stratified_deterministic() -> None:
    idx = index()
    cfg = SplitOptions(val_fraction=0.2, test_fraction=0.2)
    split = make_split(idx, cfg, seed=1)
    assert split.equals(make_split(idx, cfg, seed=1))
    assert not split.equals(make_split(idx, cfg, seed=2))
    assert split.groupby("group")["split"].nunique().max() == 1  # no group straddles
    counts = split["split"].value_counts()
    assert counts["test"] == pytest.approx(12, abs=3) and counts["val"] == pytest.approx(12, abs=3)
    for _, sub in split.groupby("cell_type"):  # both cell types in every split
        assert set(sub["split"]) == {"train", "val", "test"}


def test_official_test_is_honoured_and_none_dropped() -> None:
    idx = index(10, 1)
    idx.loc[idx["id"].isin(["g00_0", "g01_0"]), "official_split"] = "test"
    idx.loc[idx["id"] == "g02_0", "annotation"] = "none"
    split = make_split(idx, SplitOptions(val_fraction=0.2, test_fraction=0.2), seed=0)
    assert set(split.loc[split["split"] == "test", "id"]) == {"g00_0", "g01_0"}
    assert "g02_0" not in set(split["id"])
    ignore = make_split(idx, SplitOptions(use_official_test=False), seed=0)
    assert (ignore["split"] == "test").sum() >= 1


def test_tiny_dataset_still_gets_test_and_val() -> None:
    split = make_split(index(3, 1), SplitOptions(val_fraction=0.1, test_fraction=0.1), seed=0)
    assert sorted(split["split"]) == ["test", "train", "val"]


def test_single_group_fails_loudly() -> None:
    one = index(1, 4)
    with pytest.raises(ValueError, match="no test images"):
        make_split(one, SplitOptions(), seed=0)
