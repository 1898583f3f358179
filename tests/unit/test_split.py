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


# ----------------------------------------------------------------------------- learning curves
def curve_split(n_a: int = 40, n_b: int = 10, n_rare: int = 2) -> pd.DataFrame:
    """A split with 3 cell types in train (shares 40 : 10 : 2) and a few val / test images."""
    rows = []
    for cell_type, n in (("a", n_a), ("b", n_b), ("rare", n_rare)):
        rows += [
            {
                "id": f"{cell_type}{i:03d}",
                "split": "train",
                "group": f"{cell_type}{i}",
                "cell_type": cell_type,
            }
            for i in range(n)
        ]
    rows += [{"id": f"v{i}", "split": "val", "group": f"v{i}", "cell_type": "a"} for i in range(3)]
    rows += [{"id": f"t{i}", "split": "test", "group": f"t{i}", "cell_type": "b"} for i in range(4)]
    return pd.DataFrame(rows)


def kept(split: pd.DataFrame) -> set[str]:
    return set(split.loc[split["split"] == "train", "id"])


def test_subsamples_are_nested_deterministic_and_keep_val_test() -> None:
    from cellbench.split import UNUSED, subsample_split

    split = curve_split()
    subs = {n: subsample_split(split, n, seed=3) for n in (3, 10, 30)}
    assert kept(subs[3]) < kept(subs[10]) < kept(subs[30])  # nested for one seed
    for n, sub in subs.items():
        assert len(kept(sub)) == n
        assert list(sub["id"]) == list(split["id"])  # same rows, same order
        assert set(sub["split"]) <= {"train", "val", "test", UNUSED}
        for part in ("val", "test"):
            assert sub.loc[sub["split"] == part, "id"].tolist() == (
                split.loc[split["split"] == part, "id"].tolist()
            )
        assert (sub["split"] == UNUSED).sum() == 52 - n
    assert subsample_split(split, 10, seed=3).equals(subs[10])  # deterministic
    assert kept(subsample_split(split, 10, seed=4)) != kept(subs[10])  # the seed matters


def test_subsamples_are_stratified_by_cell_type() -> None:
    from cellbench.split import subsample_split

    split = curve_split()
    types = split.set_index("id")["cell_type"]
    for seed in range(5):
        # 3 images: one of each type, even the rare one
        assert set(types[list(kept(subsample_split(split, 3, seed)))]) == {"a", "b", "rare"}
        # 26 of 52: about half of each type (40 : 10 : 2 -> 20 : 5 : 1)
        counts = types[list(kept(subsample_split(split, 26, seed)))].value_counts()
        assert counts["a"] == pytest.approx(20, abs=1.5)
        assert counts["b"] == pytest.approx(5, abs=1.5)
        assert 1 <= counts["rare"] <= 2


def test_all_and_large_sizes_keep_every_train_image() -> None:
    from cellbench.split import curve_sizes, parse_size, resolve_size, subsample_split

    split = curve_split()
    assert subsample_split(split, "all", seed=1).equals(split)
    assert subsample_split(split, 52, seed=1).equals(split)
    assert subsample_split(split, 500, seed=1).equals(split)
    assert resolve_size(30, 52) == 30 and resolve_size(52, 52) == "all"
    assert resolve_size("all", 52) == "all"
    # sizes at or above the number of train images collapse into one 'all' training
    assert curve_sizes([100, 30, "all", 300], 52) == ["30", "all"]
    assert curve_sizes([100, 300], 52) == ["all"]
    assert curve_sizes([5, 30], 52) == ["5", "30"]
    assert parse_size("all") == "all" and parse_size("30") == 30
    for bad in ("0", "-3", "1.5", "some"):
        with pytest.raises(ValueError, match="positive whole number"):
            parse_size(bad)
