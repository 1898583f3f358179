"""Time windows of frame sequences, for families that read several frames (``lstm_unet``).

A converted dataset keeps time-lapse order in ``index.csv``: ``sequence`` (e.g. CTC
``01``) and ``frame`` (the frame number; ``-1`` / empty sequence for single images).
A family with ``frames = T > 1`` predicts each frame from a *window*: the frame and
the ``T - 1`` frames before it in the same sequence, oldest first, stacked along
the channel axis: ``(T * C, H, W)``.

Rules (pure functions, no I/O except :func:`load_window_inputs`):

- a window never crosses sequences;
- a window only uses *context* frames its split may see: frames of the same split
  and frames that are in no split (unannotated frames converted as context, e.g.
  CTC frames without truth); so a training window never shows a test image;
- at a sequence's start (or where context is missing) the earliest available frame
  of the window is repeated, so every window has exactly ``T`` frames;
- gaps in the frame numbers are allowed (the window is the ``T - 1`` previous
  *available* frames).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["frame_windows", "has_time", "load_window_inputs", "sequence_lengths"]


def _timed(index: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``index`` that belong to a sequence (a sequence name and a frame >= 0)."""
    if "sequence" not in index or "frame" not in index:
        return index.iloc[0:0]
    frame = pd.to_numeric(index["frame"], errors="coerce").fillna(-1)
    seq = index["sequence"].astype(str).fillna("")
    return index[(seq != "") & (frame >= 0)]


def sequence_lengths(index: pd.DataFrame) -> dict[str, int]:
    """Frames per sequence of a converted dataset's index (empty for single images)."""
    timed = _timed(index)
    if timed.empty:
        return {}
    return {str(k): int(v) for k, v in timed.groupby("sequence").size().items()}


def has_time(index: pd.DataFrame) -> bool:
    """Whether a dataset has time: at least one sequence with two or more frames."""
    return any(n >= 2 for n in sequence_lengths(index).values())


def frame_windows(
    index: pd.DataFrame,
    ids: Iterable[str],
    frames: int,
    split: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """The window of every id: ``frames`` ids, oldest first, the id itself last.

    Parameters
    ----------
    index : ``index.csv`` (columns id, sequence, frame).
    ids : the frames to build windows for.
    frames : window length ``T >= 1``.
    split : id -> split name (``train`` / ``val`` / ``test``); a window of a frame in
        split S uses only frames in S or in no split. None: any frame of the sequence.

    Returns
    -------
    dict
        id -> list of ``frames`` ids. Images outside any sequence get their own id
        ``frames`` times.
    """
    if frames < 1:
        raise ValueError(f"window length must be >= 1, got {frames}")
    timed = _timed(index)
    order: dict[str, list[tuple[int, str]]] = {}
    where: dict[str, tuple[str, int]] = {}
    for image_id, seq, frame in zip(timed["id"], timed["sequence"], timed["frame"], strict=True):
        order.setdefault(str(seq), []).append((int(frame), str(image_id)))
        where[str(image_id)] = (str(seq), int(frame))
    for seq in order:
        order[seq].sort()
    out = {}
    for image_id in ids:
        image_id = str(image_id)
        if image_id not in where:
            out[image_id] = [image_id] * frames
            continue
        seq, frame = where[image_id]
        own = split.get(image_id) if split is not None else None
        visible = [
            i
            for f, i in order[seq]
            if f < frame and (split is None or split.get(i) in (None, "", own))
        ]
        context = visible[max(0, len(visible) - (frames - 1)) :] if frames > 1 else []
        window = context + [image_id]
        out[image_id] = [window[0]] * (frames - len(window)) + window
    return out


def load_window_inputs(
    converted: Path,
    ids: Iterable[str],
    channels: int,
    frames: int,
    split: Mapping[str, str] | None = None,
    *,
    min_contrast: float = 0.0,
) -> dict[str, np.ndarray]:
    """Normalised network inputs ``(frames * channels, H, W)`` float32 per id.

    Each frame is read and normalised on its own (:func:`cellbench.transforms.to_model_input`,
    with the model's contrast floor ``min_contrast``) once, however many windows use it. Frames of a window must share one shape.

    Raises
    ------
    ValueError
        Naming the frame whose shape differs from the rest of its window.
    """
    from cellbench.datasets.base import read_index
    from cellbench.io import read_image
    from cellbench.transforms import to_model_input

    converted = Path(converted)
    ids = [str(i) for i in ids]
    windows = frame_windows(read_index(converted), ids, frames, split)
    cache: dict[str, np.ndarray] = {}

    def frame(i: str) -> np.ndarray:
        if i not in cache:
            cache[i] = to_model_input(
                read_image(converted / "images" / f"{i}.tif"), channels, min_contrast
            )
        return cache[i]

    out = {}
    for image_id in ids:
        planes = [frame(i) for i in windows[image_id]]
        shape = planes[-1].shape
        for i, p in zip(windows[image_id], planes, strict=True):
            if p.shape != shape:
                raise ValueError(
                    f"{converted / 'images' / f'{i}.tif'}: shape {p.shape[1:]} differs from "
                    f"frame {image_id} {shape[1:]} of the same sequence; a time window needs "
                    "frames of one size (check the sequence/frame columns of index.csv)"
                )
        out[image_id] = np.concatenate(planes, axis=0)
    return out
