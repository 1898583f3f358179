"""Cell Tracking Challenge (CTC) 2D training datasets, by name.

Download
    ``https://data.celltrackingchallenge.net/training-datasets/<name>.zip`` (see
    https://celltrackingchallenge.net/2d-datasets/), verified against the SHA-256 in
    ``checksums.yaml``. Known names: BF-C2DL-HSC, BF-C2DL-MuSC, DIC-C2DH-HeLa,
    Fluo-C2DL-Huh7, Fluo-C2DL-MSC, Fluo-N2DH-GOWT1, Fluo-N2DH-SIM+, Fluo-N2DL-HeLa,
    PhC-C2DH-U373, PhC-C2DL-PSC. Terms: CTC "Conditions of use of the images".

Original layout (LZW-compressed TIFFs, read through ``imagecodecs``)
    ::

        <name>/01/tNNN.tif                 frames of sequence 01 (uint8 or uint16)
        <name>/01_GT/SEG/man_segNNN.tif    gold truth: only some frames, often only some cells
        <name>/01_GT/TRA/...               tracking truth (not used)
        <name>/01_ST/SEG/man_segNNN.tif    silver truth: every cell of the covered frames
        <name>/02/...                      sequence 02, same layout

    Frame numbers have 3 digits (4 for long sequences); ``man_segNNN`` belongs to ``tNNN``.

Conversion
    - One image per annotated frame of the chosen truth (``truth: GT`` or ``ST``);
      frames without a label file are not converted.
    - ``annotation``: GT is ``partial`` (the gold truth labels only some cells) except
      for the synthetic Fluo-N2DH-SIM+, whose GT is complete (``full``); ST is ``full``.
    - ``sequence`` = ``01``/``02``, ``frame`` = the frame number, ``group`` =
      ``<name>/<sequence>`` (a sequence never straddles train and test),
      ``cell_type`` = the dataset name.
    - Held-out sequence: frames of ``test_sequence`` get ``official_split = test``.
      ``auto`` (default) holds out the last sequence when two or more are converted.
    - ``frame_blocks: N`` cuts each sequence's annotated frames, in time order, into N
      contiguous blocks, each its own ``group`` (``<name>/<sequence>/b<k>``). With only
      one sequence (e.g. a local copy of ``01``) that is what lets the split deal
      frames to train, val and test while keeping neighbouring frames together.
    - Label ids are renumbered ``1..N`` per frame (SEG ids carry no identity anyway).

Options
    ``name`` (str, required): the CTC dataset name, e.g. ``DIC-C2DH-HeLa``.
    ``truth`` (``GT`` | ``ST``, default ``GT``).
    ``sequences`` (list or null): sequences to convert, default all found (``01``, ``02``).
    ``test_sequence`` (``auto`` | a sequence | null): the held-out sequence.
    ``annotation`` (``full`` | ``partial`` | null): override the annotation level.
    ``frame_blocks`` (int >= 1 or null, default null): time blocks per sequence used as
    split groups; null keeps one group per sequence.
    ``train_truth`` (``GT`` | ``ST`` | null): a second truth the networks train on
    (``train_labels/``), e.g. ``truth: GT`` + ``train_truth: ST``: train on silver
    truth, score on gold truth. Frames with only the training truth are converted with
    ``annotation: none`` (trained on, never scored).
    ``context_frames`` (bool, default false): convert the frames without any truth
    too, unannotated (never split, trained on or scored), as time context for
    ``lstm_unet`` windows.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cellbench.datasets._common import log, read_label_image, relabel
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    safe_image_id,
)
from cellbench.datasets.download import fetch_and_extract, remote_files
from cellbench.io import CellbenchIOError, read_image

__all__ = ["CellTrackingChallenge", "COMPLETE_GT"]


#: CTC datasets whose gold truth segments every cell in every frame (synthetic data).
COMPLETE_GT = frozenset({"Fluo-N2DH-SIM+", "Fluo-N3DH-SIM+"})

_FRAME_RE = re.compile(r"^t(\d+)\.tiff?$")
_SEG_RE = re.compile(r"^man_seg(\d+)\.tiff?$")
_SEQ_RE = re.compile(r"^\d{2,}$")


def _index(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _sequence_dirs(folder: Path) -> list[str]:
    """Names of the sequence folders (``01``, ``02``, ...) directly in ``folder``, sorted."""
    try:
        return sorted(
            p.name for p in Path(folder).iterdir() if p.is_dir() and _SEQ_RE.match(p.name)
        )
    except OSError:
        return []


def _listing(folder: Path, limit: int = 12) -> str:
    """A short, sorted list of what ``folder`` holds (folders marked with a slash)."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return "nothing (cannot be read)"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries if not p.name.startswith(".")]
    if not names:
        return "nothing (empty folder)"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _not_found_message(raw_dir: Path, name: str, key: str) -> str:
    """What was looked for and what was found, when no CTC dataset folder is recognised."""
    looked = (
        f"looked for sequence folders (two-digit names such as 01 or 02, holding tNNN.tif "
        f"frames, next to 01_GT/ or 02_GT/) in {raw_dir / name} and in {raw_dir}"
    )
    if not raw_dir.is_dir():
        found = f"{raw_dir} does not exist"
    else:
        found = f"found in {raw_dir}: {_listing(raw_dir)}"
        if (raw_dir / name).is_dir():
            found += f"; found in {raw_dir / name}: {_listing(raw_dir / name)}"
        others = [p for p in sorted(raw_dir.iterdir()) if p.is_dir() and _sequence_dirs(p)]
        if others:
            found += "; " + "; ".join(
                f"{p.name}/ holds sequence folders {', '.join(_sequence_dirs(p))}" for p in others
            )
    return (
        f"no CTC dataset '{name}' under {raw_dir}: {looked}; {found}. Set "
        f"datasets.{key}.options.name to the dataset's folder name and 'path:' to the folder "
        "that holds it (or the dataset folder itself)."
    )


def _frame_groups(base: str, frames: list[int], blocks: int | None) -> dict[int, str]:
    """Split group per frame: ``base`` for all, or ``base/b<k>`` for ``blocks`` time blocks."""
    if not blocks:
        return dict.fromkeys(frames, base)
    chunks = np.array_split(np.asarray(sorted(frames), dtype=int), min(blocks, len(frames)))
    return {int(f): f"{base}/b{k}" for k, chunk in enumerate(chunks) for f in chunk}


def _frame_labels(path: Path | None, frame: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The relabelled label image of one frame (None without a file), checked against its size."""
    if path is None:
        return None
    labels = read_label_image(path)
    if labels.shape != tuple(shape[:2]):
        raise CellbenchIOError(
            f"{path}: shape {labels.shape} differs from the frame {frame} {tuple(shape)}. The "
            "label file must have the frame's size: check that the archive was extracted "
            "completely and that the files of different datasets are not mixed."
        )
    return relabel(labels)


class CellTrackingChallenge(DatasetSource):
    """A CTC 2D training dataset: sequences 01/02 with GT or ST segmentation truth."""

    kind = "ctc"

    def download(self, raw_dir: Path) -> None:
        """Fetch ``<name>.zip`` from the CTC server (checksum-verified) and unpack it."""
        name = self.options.name
        known = {r.filename: r for r in remote_files("ctc")}
        if f"{name}.zip" not in known:
            raise ValueError(
                f"datasets.{self.cfg.name}.options.name: no download known for CTC dataset "
                f"'{name}'; known: {', '.join(sorted(k[:-4] for k in known))}. For another "
                "dataset use 'source: local' with 'path:' pointing at its folder."
            )
        fetch_and_extract("ctc", raw_dir, [f"{name}.zip"])

    def _dataset_root(self, raw_dir: Path, name: str) -> Path:
        raw_dir = Path(raw_dir)
        for candidate in (raw_dir / name, raw_dir):
            if _sequence_dirs(candidate):
                return candidate
        raise FileNotFoundError(_not_found_message(raw_dir, name, self.cfg.name))

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Convert every frame that has a label file of the chosen truth."""
        opts = self.options
        name = self.options.name
        truth = opts.truth
        blocks = opts.frame_blocks
        root = self._dataset_root(raw_dir, name)
        available = _sequence_dirs(root)
        wanted = [str(s).zfill(2) for s in opts.sequences] if opts.sequences else available
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise ValueError(
                f"datasets.{self.cfg.name}.options.sequences: {unknown} not found in {root}; "
                f"available: {available}"
            )
        sequences = []
        for seq in wanted:
            seg_dir = root / f"{seq}_{truth}" / "SEG"
            if seg_dir.is_dir() and _index(seg_dir, _SEG_RE):
                sequences.append(seq)
            elif opts.sequences:
                raise FileNotFoundError(
                    f"{seg_dir}: no {truth} segmentation for sequence {seq}. "
                    + self._truth_hint(root, seq, truth)
                )
            else:
                log.warning("%s: no %s segmentation for sequence %s; skipped", name, truth, seq)
        if not sequences:
            looked = ", ".join(f"{s}_{truth}/SEG/man_segNNN.tif" for s in wanted)
            raise FileNotFoundError(
                f"{root}: no sequence has {truth} segmentation ({truth} = "
                f"{'gold' if truth == 'GT' else 'silver'} truth): found sequence folders: "
                f"{', '.join(available)}; looked for {looked}; found in {root}: "
                f"{_listing(root)}. " + self._truth_hint(root, wanted, truth)
            )
        test_seq = self._test_sequence(opts.test_sequence, sequences)
        if opts.annotation:
            level = opts.annotation
        elif truth == "ST" or name in COMPLETE_GT:
            level = "full"
        else:
            level = "partial"
        if len(sequences) == 1 and test_seq is None and blocks is None:
            log.warning(
                "%s: only sequence %s is converted and it is one split group, so the split "
                "cannot hold out a test set; set 'frame_blocks: 3' (or more) in the options "
                "to split its frames in time blocks",
                name,
                sequences[0],
            )
        train_truth = opts.train_truth if opts.train_truth not in (None, truth) else None
        for seq in sequences:
            frames = _index(root / seq, _FRAME_RE)
            segs = _index(root / f"{seq}_{truth}" / "SEG", _SEG_RE)
            train_dir = root / f"{seq}_{train_truth}" / "SEG" if train_truth else None
            trains = _index(train_dir, _SEG_RE) if train_dir and train_dir.is_dir() else {}
            if train_truth and not trains:
                log.warning(
                    "%s: no %s segmentation for sequence %s (%s); it trains on %s",
                    name,
                    train_truth,
                    seq,
                    train_dir,
                    truth,
                )
            missing = sorted(f for f in {*segs, *trains} if f not in frames)
            for frame in missing:
                writer.skip(
                    segs.get(frame, trains.get(frame)),
                    f"no frame t{frame:03d}.tif in {root / seq}",
                )
            kept = [f for f in sorted({*segs, *trains}) if f in frames]
            if opts.context_frames:
                kept = sorted(frames)
            if not kept:
                log.warning(
                    "%s: none of the %d %s label files has its frame tNNN.tif in %s "
                    "(found there: %s); sequence %s skipped",
                    name,
                    len(segs),
                    truth,
                    root / seq,
                    _listing(root / seq, 5),
                    seq,
                )
                continue
            group_of = _frame_groups(f"{name}/{seq}", kept, blocks)
            for frame in kept:
                image = read_image(frames[frame])
                seg_path = segs.get(frame)
                labels = _frame_labels(seg_path, frames[frame], image.shape)
                train_labels = _frame_labels(trains.get(frame), frames[frame], image.shape)
                writer.add(
                    safe_image_id(f"{name}_{seq}_t{frame:03d}"),
                    image,
                    labels,
                    cell_type=name,
                    group=group_of[frame],
                    sequence=seq,
                    frame=frame,
                    annotation=level if labels is not None else "none",
                    official_split="test" if seq == test_seq else "",
                    source=f"CTC {name} {seq}_{truth}/SEG"
                    + (f" (trains on {seq}_{train_truth}/SEG)" if frame in trains else ""),
                    origin=frames[frame],
                    label_origin=seg_path,
                    train_labels=train_labels,
                )

    def _test_sequence(self, option: object, sequences: list[str]) -> str | None:
        if option is None or str(option).lower() in ("none", "null", ""):
            return None
        if str(option).lower() == "auto":
            return sequences[-1] if len(sequences) >= 2 else None
        seq = str(option).zfill(2)
        if seq not in sequences:
            raise ValueError(
                f"datasets.{self.cfg.name}.options.test_sequence: '{option}' is not among the "
                f"converted sequences {sequences}"
            )
        return seq

    @staticmethod
    def _truth_hint(root: Path, seqs: str | list[str], truth: str) -> str:
        other = "ST" if truth == "GT" else "GT"
        seqs = [seqs] if isinstance(seqs, str) else seqs
        if any((root / f"{seq}_{other}" / "SEG").is_dir() for seq in seqs):
            return f"{other} exists: set 'truth: {other}' in the dataset options."
        return "Check that the CTC training archive was extracted completely."
