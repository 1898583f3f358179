"""Train / val / test split: grouped, stratified by cell type, seeded, official tests honoured.

Rules, in order:

1. Images without annotation (``annotation == "none"``) are left out: they can be
   neither trained on nor scored (unless they have train labels, see ``trainable``).
2. Images the source marks ``official_split == "test"`` (DSB 2018 stage-1 test, a
   held-out CTC sequence) form the test set when ``use_official_test`` is on; the
   rest is then split into train and val only.
3. Otherwise whole *groups* (DESIGN.md section 2: a Sartorius sample, a CTC
   sequence, one field of view) are dealt out, so a group never straddles two
   splits. Groups are stratified by their majority cell type: within each cell
   type, groups are shuffled with the seed and assigned to test, then val, until
   each split holds about its fraction of that cell type's images.
4. Datasets too small to give every split a group get at least one test group
   (2+ groups) and one val group (3+ groups), taken from train.

Pure: a DataFrame in, a DataFrame out.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from cellbench.config import SplitOptions

__all__ = ["SPLITS", "make_split"]

SPLITS = ("train", "val", "test")


def _deal(groups: pd.DataFrame, rng: np.random.Generator, fractions: dict[str, float]) -> dict:
    """Assign the groups of one stratum; ``groups`` has columns group, n (images)."""
    order = rng.permutation(len(groups))
    total = int(groups["n"].sum())
    filled = dict.fromkeys(fractions, 0)
    assignment = {}
    for i in order:
        name, n = groups.iloc[i]["group"], int(groups.iloc[i]["n"])
        target_split = "train"
        for split, fraction in fractions.items():
            # add the group if that brings the split closer to its target size
            if filled[split] + n / 2 <= fraction * total:
                target_split = split
                break
        if target_split != "train":
            filled[target_split] += n
        assignment[name] = target_split
    return assignment


def make_split(
    index: pd.DataFrame, cfg: SplitOptions, seed: int, trainable: Iterable[str] = ()
) -> pd.DataFrame:
    """Split a converted dataset's index.

    Parameters
    ----------
    index : ``index.csv`` of the common format (columns id, group, cell_type,
        annotation, official_split, ...).
    cfg : fractions and switches.
    seed : the run's seed; the same seed and index always give the same split.
    trainable : ids that have train labels (``train_labels/``): kept even when their
        annotation is ``none`` (split with their group like the rest; the train stage
        learns from them, scoring skips them).

    Returns
    -------
    pandas.DataFrame
        Columns ``id, split, group, cell_type``, sorted by id, ``split`` in
        {train, val, test}.
    """
    index = index.copy()
    for col, default in (("official_split", ""), ("annotation", "full"), ("cell_type", "unknown")):
        if col not in index:
            index[col] = default
    if "group" not in index:
        index["group"] = index["id"]
    index["group"] = index["group"].astype(str)
    usable = index[(index["annotation"] != "none") | index["id"].isin(set(trainable))].copy()
    if usable.empty:
        raise ValueError("no annotated images to split (every image has annotation 'none')")

    official = usable["official_split"].eq("test") if cfg.use_official_test else None
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B11]))
    if official is not None and official.any():
        fractions = {"val": cfg.val_fraction / max(1e-9, 1.0 - cfg.test_fraction)}
        pool = usable[~official]
        fixed = {g: "test" for g in usable.loc[official, "group"]}
    else:
        fractions = {"test": cfg.test_fraction, "val": cfg.val_fraction}
        pool = usable
        fixed = {}

    groups = (
        pool.groupby("group")
        .agg(n=("id", "size"), cell_type=("cell_type", lambda s: s.mode().iloc[0]))
        .reset_index()
        .sort_values("group")
    )
    assignment = dict(fixed)
    for _, stratum in groups.groupby("cell_type", sort=True):
        assignment.update(_deal(stratum.reset_index(drop=True), rng, fractions))

    # small datasets: make sure test and val are not empty when that is possible
    for split, min_groups in (("test", 2), ("val", 3)):
        if split not in fractions or fractions[split] <= 0:
            continue
        train_groups = sorted(g for g, s in assignment.items() if s == "train")
        if split not in assignment.values() and len(assignment) >= min_groups and train_groups:
            assignment[train_groups[int(rng.integers(len(train_groups)))]] = split

    if "test" not in assignment.values():
        raise ValueError(
            f"no test images: the {len(assignment)} group(s) of this dataset cannot be split "
            "into train and test. Add images, raise 'test_fraction', or give the source more "
            "groups (e.g. 'frame_blocks' for a single CTC sequence)."
        )
    out = usable[["id", "group", "cell_type"]].copy()
    out["split"] = out["group"].map(assignment)
    return out[["id", "split", "group", "cell_type"]].sort_values("id").reset_index(drop=True)
