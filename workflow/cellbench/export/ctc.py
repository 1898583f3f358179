"""Cell Tracking Challenge result folders: which mask goes to which ``maskTTT.tif``.

Pure: the plan is computed from ``index.csv`` rows; :mod:`cellbench.export.writers`
writes the files. The layout is the CTC's submission layout, which the official
evaluation software and ``py-ctcmetrics`` read::

    {out}/{cell_type}/{sequence}_RES/mask{t:03d}.tif    e.g. DIC-C2DH-HeLa/01_RES/mask002.tif

``cell_type`` is the CTC dataset name (the CTC converter writes it there; without a
cell type the ``_RES`` folders sit directly in ``{out}``), ``sequence`` and the frame
number ``t`` come from the ``sequence`` and ``frame`` columns of ``index.csv``.
Frame numbers have three digits, four when the sequence has a frame numbered 1000
or more (the CTC's ``mask0000.tif`` naming for long sequences). Masks are written
as uint16 (the CTC's type); each object keeps its label, 0 is background.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd

from cellbench.io import CellbenchIOError

__all__ = ["CtcFrame", "CtcPlan", "plan_ctc"]


@dataclass(frozen=True)
class CtcFrame:
    """One ``maskTTT.tif`` to write.

    Attributes
    ----------
    path : relative path inside the export folder.
    image_id : the mask to copy; ``None`` for an empty frame (``fill_gaps``).
    shape : ``(H, W)`` of the frame (from ``index.csv``).
    """

    path: PurePosixPath
    image_id: str | None
    shape: tuple[int, int]


@dataclass
class CtcPlan:
    """Every frame file to write, and the frames of each sequence that have no mask.

    Attributes
    ----------
    frames : the files, sorted by path.
    missing : ``{"{cell_type}/{sequence}_RES": [frame, ...]}``: frames between 0 and
        the sequence's last converted frame that have no mask (written as empty
        masks when ``fill_gaps``, else left out).
    """

    frames: list[CtcFrame]
    missing: dict[str, list[int]] = field(default_factory=dict)


def _res_folder(cell_type: str, sequence: str) -> PurePosixPath:
    name = PurePosixPath(f"{sequence}_RES")
    return PurePosixPath(cell_type) / name if cell_type else name


def _listing(ids: Iterable[str], n: int = 5) -> str:
    ids = list(ids)
    shown = ", ".join(ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def plan_ctc(index: pd.DataFrame, image_ids: list[str], *, fill_gaps: bool = False) -> CtcPlan:
    """Map masks to CTC result files.

    Parameters
    ----------
    index : pandas.DataFrame
        The dataset's ``index.csv`` (:func:`cellbench.datasets.base.read_index`):
        ``id``, ``height``, ``width``, ``cell_type``, ``sequence``, ``frame``.
    image_ids : list of str
        The images that have a mask.
    fill_gaps : bool
        Also plan empty masks for the frames of a sequence without a mask (from
        frame 0 to the sequence's last frame in ``index``), so that tools that need
        every frame of a sequence (``py-ctcmetrics``, the CTC's TRA measure) accept
        the folder. The frames filled in are listed in ``missing``.

    Returns
    -------
    CtcPlan

    Raises
    ------
    CellbenchIOError
        A mask has no row in ``index``, an image is not a frame of a sequence
        (empty ``sequence`` or a negative ``frame``), or two masks claim the same
        frame of a sequence; the message names the images and the fix.
    """
    table = index.copy()
    table["id"] = table["id"].astype(str)
    table = table.set_index("id", drop=False)
    unknown = [i for i in image_ids if i not in table.index]
    if unknown:
        raise CellbenchIOError(
            f"masks {_listing(unknown)} have no row in index.csv: the CTC export takes the "
            "sequence and frame of every mask from the dataset's index.csv. Pass the index of "
            "the dataset the masks were predicted for (--index data/converted/{dataset}/index.csv)."
        )
    table["sequence"] = table["sequence"].fillna("").astype(str).str.strip()
    table["cell_type"] = table["cell_type"].fillna("").astype(str).str.strip()
    table["frame"] = pd.to_numeric(table["frame"], errors="coerce").fillna(-1).astype(int)
    rows = table.loc[image_ids]
    loose = rows[(rows["sequence"] == "") | (rows["frame"] < 0)]
    if len(loose):
        raise CellbenchIOError(
            f"images {_listing(loose['id'])} are not frames of a time-lapse sequence (empty "
            "'sequence' or no 'frame' in index.csv), so they have no place in a Cell Tracking "
            "Challenge result folder. Export them in another format (labels, roi, geojson, "
            "measurements), or export only the masks of a CTC dataset."
        )
    frames: list[CtcFrame] = []
    missing: dict[str, list[int]] = {}
    for (cell_type, sequence), group in rows.groupby(["cell_type", "sequence"], sort=True):
        everything = table[(table["cell_type"] == cell_type) & (table["sequence"] == sequence)]
        last = int(everything["frame"].max())
        digits = 4 if last >= 1000 else 3
        folder = _res_folder(cell_type, sequence)
        taken = group[group["frame"].duplicated(keep=False)]
        if len(taken):
            raise CellbenchIOError(
                f"images {_listing(taken['id'])} are the same frame of sequence "
                f"{folder.as_posix()[:-4]} in index.csv; one CTC result file per frame. Check "
                "the 'sequence' and 'frame' columns of index.csv (re-run the convert stage)."
            )
        for row in group.itertuples():
            frames.append(
                CtcFrame(
                    folder / f"mask{row.frame:0{digits}d}.tif",
                    str(row.id),
                    (int(row.height), int(row.width)),
                )
            )
        gaps = sorted(set(range(last + 1)) - set(group["frame"]))
        if gaps:
            missing[folder.as_posix()] = gaps
            if fill_gaps:
                shape = (int(group["height"].iloc[0]), int(group["width"].iloc[0]))
                frames += [CtcFrame(folder / f"mask{t:0{digits}d}.tif", None, shape) for t in gaps]
    frames.sort(key=lambda f: f.path.as_posix())
    return CtcPlan(frames, missing)
