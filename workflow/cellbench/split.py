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

Learning curves (``run.train_sizes``) keep only part of the train split:
:func:`subsample_split` marks the other train images ``unused`` (val and test are
unchanged; every loader reads the split by name, so ``unused`` images are never seen).
The images kept are a prefix of one seeded, cell-type-stratified order of the train
images (:func:`train_order`), so for one seed the subsamples are nested: the 30 are
inside the 100, which are inside the 300.

Pure: a DataFrame in, a DataFrame out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from cellbench.config import SplitOptions

__all__ = [
    "ALL",
    "SPLITS",
    "UNUSED",
    "read_split",
    "curve_sizes",
    "make_split",
    "parse_size",
    "resolve_size",
    "subsample_split",
    "train_order",
]

SPLITS = ("train", "val", "test")

ALL = "all"
"""The training-set size that keeps every train image."""

UNUSED = "unused"
"""Split value of the train images a learning-curve subsample leaves out."""


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


# ----------------------------------------------------------------------------- learning curves
def parse_size(text: str | int) -> int | str:
    """A training-set size as written (``30``, ``"30"``, ``"all"``) -> ``30`` or ``"all"``.

    Raises
    ------
    ValueError
        For anything but a positive whole number or ``all``.
    """
    if isinstance(text, str) and text.strip().lower() == ALL:
        return ALL
    try:
        size = int(str(text).strip())
    except ValueError:
        size = 0
    if size < 1 or str(size) != str(text).strip():
        raise ValueError(
            f"training-set size {text!r}: use a positive whole number of images or 'all'"
        )
    return size


def resolve_size(size: int | str, n_train: int) -> int | str:
    """The size actually trained: ``all`` when ``size`` keeps every train image anyway."""
    size = parse_size(size)
    return ALL if size == ALL or size >= n_train else size


def curve_sizes(sizes: Sequence[int | str], n_train: int) -> list[str]:
    """The distinct sizes to train, as path labels, smallest first, ``all`` last.

    Sizes of ``n_train`` or more collapse to ``all`` (the same training, run once).
    """
    resolved = {resolve_size(s, n_train) for s in sizes}
    numbers = sorted(s for s in resolved if s != ALL)
    return [str(s) for s in numbers] + ([ALL] if ALL in resolved else [])


def train_order(split: pd.DataFrame, seed: int) -> list[str]:
    """Every train id in the order a learning curve takes them (seeded, stratified).

    First one image of each cell type (the types in a random order), so any subsample
    at least as large as the number of types holds every type; then the rest by
    their fractional rank ``(j + u) / n_type`` (``j``: the image's place in its
    type's shuffled order, ``u`` uniform in [0, 1)), so every prefix keeps each type's
    share up to rounding. The same split and seed always give the same order.

    Parameters
    ----------
    split : the split table (columns id, split, and cell_type when stratified).
    seed : seeds the shuffles.
    """
    train = split.loc[split["split"] == "train"]
    ids = train["id"].astype(str).to_numpy()
    types = (
        train["cell_type"].astype(str).to_numpy()
        if "cell_type" in train
        else np.full(len(ids), "unknown")
    )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC5A3]))
    firsts, rest = [], []
    for cell_type in sorted(set(types)):
        members = np.sort(ids[types == cell_type])
        members = members[rng.permutation(len(members))]
        firsts.append(members[0])
        n = len(members)
        for j in range(1, n):
            rest.append(((j + rng.random()) / n, str(members[j])))
    firsts = [str(firsts[k]) for k in rng.permutation(len(firsts))]
    return firsts + [i for _, i in sorted(rest)]


def subsample_split(split: pd.DataFrame, size: int | str, seed: int) -> pd.DataFrame:
    """The split with only ``size`` of its train images kept, the others ``unused``.

    Parameters
    ----------
    split : the dataset's split (``data/splits/{dataset}.csv``).
    size : number of train images to keep, or ``"all"`` (sizes at or above the
        number of train images keep them all).
    seed : the learning curve's seed; the kept images are the first ``size`` of
        :func:`train_order`, so the subsamples of one seed are nested.

    Returns
    -------
    pandas.DataFrame
        The same rows and columns; val and test unchanged.
    """
    out = split.copy()
    size = resolve_size(size, int((split["split"] == "train").sum()))
    if size == ALL:
        return out
    keep = set(train_order(split, seed)[:size])
    dropped = (out["split"] == "train") & ~out["id"].astype(str).isin(keep)
    out.loc[dropped, "split"] = UNUSED
    return out


def read_split(path) -> pd.DataFrame:
    """Read a split CSV (``id, split, group, ...``) with ids and groups kept as text.

    Raises
    ------
    FileNotFoundError
        The file is missing; the message says to run the split stage first.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such split file. Run the split stage first.")
    return pd.read_csv(path, dtype={"id": str, "group": str}, keep_default_na=False)
