"""The ``segment`` command: new images + a trained model folder -> instance label TIFFs.

What it guarantees, in the order it happens:

1. **Inputs** (:func:`expand_inputs`): every argument is an image file, a folder
   (every file in it with an image extension, see :data:`IMAGE_SUFFIXES`; its
   subfolders too with ``recursive``) or a glob pattern the shell did not expand
   (``'data/*.tif'``; ``**`` matches any depth). An argument that matches nothing
   is an error naming it, before any work.
2. **Output names** (:func:`output_names`): ``{stem}_masks.tif``, made unique
   for inputs that share a stem (the rule is in :func:`output_names`).
3. **No overwriting**: before any work, the run is refused when an output file
   already exists (unless ``overwrite``), listing the files; an output that
   would replace one of the input images is refused even with ``overwrite``.
4. **One image at a time**: an image that cannot be read or is not a single 2-D
   image is reported (file name and reason) and skipped; the others are still
   segmented. Each mask is checked to have the image's ``(H, W)`` shape and
   written atomically (:func:`cellbench.io.write_labels`). A mask that cannot be
   written (the disk is full, the quota used up) stops the run with an error naming
   it: no partial file is left, the masks written before are kept, and the images
   not segmented are listed.
5. **Plausibility**: objects per megapixel and the median object area of each
   mask are compared with the model's training labels (``train_label_stats``
   in the model folder's ``config.json``); far more or far smaller objects than
   in training give a warning (:func:`plausibility_warning`).
6. **Progress** on stderr: one line per image (index/total, name, size,
   seconds), tile counts for tiled images (a tqdm bar when stderr is a
   terminal), and a summary; :class:`SegmentReport` holds every count.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cellbench.inference import predict_image
from cellbench.io import (
    CellbenchIOError,
    DiskFullError,
    disk_full_error,
    read_image,
    write_labels,
)
from cellbench.modelfolder import LoadedModel, load_model
from cellbench.scale import ScaleEstimate, object_stats
from cellbench.transforms import to_model_input

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIX",
    "SegmentError",
    "SegmentReport",
    "expand_inputs",
    "label_stats",
    "output_names",
    "Segmentation",
    "plausibility_warning",
    "segment_array",
    "segment_images",
    "training_stats",
]

#: File extensions (compared case-insensitively) that a folder argument picks up.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: Every output file name ends with this.
MASK_SUFFIX = "_masks.tif"
#: With a warning, more than this many times the training objects per megapixel ...
MAX_DENSITY_RATIO = 10.0
#: ... or a median object area below this fraction of the training one.
MIN_AREA_RATIO = 0.1
#: An (H, W, C) image has at most this many channels (grey, grey+alpha, RGB, RGBA).
#: Without a terminal, tile progress is printed at most this often (seconds).
TILE_REPORT_SECONDS = 10.0


class SegmentError(ValueError):
    """The segment run cannot start, or some images failed; the message says which and why."""


class _Skip(Exception):
    """One image cannot be segmented; the message is the reason shown to the user."""


# ----------------------------------------------------------------------------- inputs
def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and _is_image_name(p.name))
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in sorted(files) if _is_image_name(f)]
    return found


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_inputs(arguments: Iterable[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """Turn command-line arguments into the list of image files to segment.

    Parameters
    ----------
    arguments : iterable of str or path
        Files, folders or glob patterns. A file is taken as it is (whatever its
        extension; one that is not an image fails later, on its own). A folder
        stands for every file in it whose extension is in :data:`IMAGE_SUFFIXES`
        (case-insensitive; hidden files skipped), sorted by name. A pattern with
        ``*``, ``?`` or ``[`` that names no existing file is expanded like the
        shell does (``**`` matches any number of folders); folders it matches are
        expanded as folders.
    recursive : bool
        Folders include the images of their subfolders (hidden ones skipped).

    Returns
    -------
    list of pathlib.Path
        In argument order; a file named twice (also through a link) appears once.

    Raises
    ------
    SegmentError
        Naming every argument that matched no file, before any work is done.
    """
    found: list[Path] = []
    problems: list[str] = []
    for arg in arguments:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            images = _folder_images(path, recursive)
            if not images:
                problems.append(
                    f"{text}: a folder without image files {_empty_hint(path, recursive)}"
                )
            found += images
        elif path.exists():
            found.append(path)
        elif _has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            images = []
            for match in matches:
                images += _folder_images(match, recursive) if match.is_dir() else [match]
            if not images:
                problems.append(f"{text}: no file matches this pattern")
            found += images
        else:
            problems.append(f"{text}: no such file or folder")
    if problems:
        raise SegmentError(
            f"{len(problems)} of the image arguments match no image, nothing was segmented:\n  "
            + "\n  ".join(problems)
        )
    return _unique_files(found)


def _empty_hint(folder: Path, recursive: bool) -> str:
    suffixes = " ".join(IMAGE_SUFFIXES)
    if not recursive and _folder_images(folder, recursive=True):
        return f"({suffixes}) directly in it; its subfolders have some: add --recursive"
    return f"({suffixes})"


def _unique_files(paths: Iterable[Path]) -> list[Path]:
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(Path(path))
    return unique


# ----------------------------------------------------------------------------- output names
def _ladder(path: Path) -> list[str]:
    """Candidate names after the stem one, from short to long; the last is always unique."""
    absolute = Path(os.path.abspath(path))
    folders = [p for p in absolute.parent.parts if p != absolute.anchor]
    name = absolute.name
    rungs = [f"{name}{MASK_SUFFIX}"]
    rungs += [
        "__".join([*folders[len(folders) - k :], name]) + MASK_SUFFIX
        for k in range(1, len(folders) + 1)
    ]
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:12]
    rungs.append(f"{name}_{digest}{MASK_SUFFIX}")
    return rungs


def output_names(paths: Sequence[str | os.PathLike]) -> dict[Path, str]:
    """The output file name of every input image: unique, predictable, independent of order.

    The rule (names are compared ignoring case, as macOS and Windows file systems do):

    1. ``{stem}_masks.tif`` (``img.tif`` -> ``img_masks.tif``) when no other input
       has the same stem;
    2. otherwise ``{name}_masks.tif``, the extension kept (``img.tif_masks.tif``,
       ``img.png_masks.tif``);
    3. when that still collides, the nearest parent folder names are put in front,
       joined with ``__``, as many as it takes to tell the inputs apart
       (``a/img.tif`` and ``b/img.tif`` -> ``a__img.tif_masks.tif`` and
       ``b__img.tif_masks.tif``);
    4. a name from step 2 or 3 never takes a name that step 1 gives another input
       (it moves on to the next step instead); if even the full path collides
       (names differing in case only), a hash of the path is added:
       ``{name}_{sha256[:12]}_masks.tif``.

    Parameters
    ----------
    paths : sequence of str or path
        Distinct input files (relative paths are taken from the working directory).

    Returns
    -------
    dict
        ``Path(input) -> file name``, for every input.

    Raises
    ------
    ValueError
        If two inputs are the same path.
    """
    paths = [Path(p) for p in paths]
    absolute = [os.path.abspath(p) for p in paths]
    if len(set(absolute)) != len(absolute):
        repeated = sorted(p for p, n in Counter(absolute).items() if n > 1)
        raise ValueError(f"the same input is given twice: {', '.join(repeated)}")
    stems = Counter(p.stem.casefold() for p in paths)
    names: dict[int, str] = {}
    for i, path in enumerate(paths):
        if stems[path.stem.casefold()] == 1:
            names[i] = f"{path.stem}{MASK_SUFFIX}"
    reserved = {n.casefold() for n in names.values()}
    rest = [i for i in range(len(paths)) if i not in names]
    ladders = {i: _ladder(paths[i]) for i in rest}
    rung = dict.fromkeys(rest, 0)
    while True:
        current = {i: ladders[i][rung[i]] for i in rest}
        counts = Counter(n.casefold() for n in current.values())
        clashing = [
            i for i, n in current.items() if counts[n.casefold()] > 1 or n.casefold() in reserved
        ]
        if not clashing:
            break
        for i in clashing:
            if rung[i] == len(ladders[i]) - 1:  # two full paths equal up to case and hash
                raise ValueError(f"cannot give {paths[i]} an output name of its own")
            rung[i] += 1
    names.update(current)
    return {paths[i]: names[i] for i in range(len(paths))}


# ----------------------------------------------------------------------------- plausibility
def label_stats(labels: np.ndarray) -> tuple[int, float, float]:
    """Objects, objects per megapixel and median object area (pixels) of a label image.

    Returns
    -------
    tuple
        ``(n_objects, objects_per_megapixel, median_area)``; the median is NaN
        without objects.
    """
    stats = object_stats([labels])
    median = stats.median_area if stats.median_area is not None else math.nan
    return stats.n_objects, stats.objects_per_megapixel or 0.0, median


def training_stats(config: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(objects_per_megapixel, median_area)`` of a model's training labels, if recorded.

    Parameters
    ----------
    config : mapping
        A model folder's ``config.json`` (its ``train_label_stats`` entry).

    Returns
    -------
    tuple of float or None
        None for a folder without (valid, positive) statistics: an older cellbench.
    """
    stats = config.get("train_label_stats")
    if not isinstance(stats, Mapping):
        return None
    values = []
    for key in ("objects_per_megapixel", "median_area"):
        value = stats.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or value <= 0:
            return None
        values.append(float(value))
    return values[0], values[1]


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def plausibility_warning(
    name: str, labels: np.ndarray, training: tuple[float, float] | None
) -> str | None:
    """A warning when a mask has far more, or far smaller, objects than the training labels.

    Parameters
    ----------
    name : str
        The image, as shown to the user.
    labels : numpy.ndarray
        The post-processed ``(H, W)`` mask.
    training : tuple of float or None
        ``(objects_per_megapixel, median_area)`` of the training labels; ``None``
        (a model folder without ``train_label_stats``) skips the check.

    Returns
    -------
    str or None
        The warning when objects per megapixel exceed :data:`MAX_DENSITY_RATIO`
        times the training value, or the median area is below
        :data:`MIN_AREA_RATIO` times it; else ``None``.
    """
    if training is None:
        return None
    n, density, median = label_stats(labels)
    if n == 0:
        return None
    train_density, train_area = training
    if density <= MAX_DENSITY_RATIO * train_density and median >= MIN_AREA_RATIO * train_area:
        return None
    return (
        f"{name}: {_num(density)} objects per megapixel (training data: {_num(train_density)}) "
        f"and a median object area of {_num(median)} px (training data: {_num(train_area)} px). "
        "The image may be unlike the training data, mostly noise, or at another scale "
        "(pixel size) than the training images: check these masks before using them."
    )


# ----------------------------------------------------------------------------- one image
@dataclass(frozen=True)
class Segmentation:
    """The instance labels of one image and the rescaling they were predicted at."""

    labels: np.ndarray
    scale: ScaleEstimate


def segment_array(
    model: LoadedModel,
    image: np.ndarray,
    *,
    image_diameter: float | None = None,
    tile_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> Segmentation:
    """Segment one decoded image with a loaded model folder and its tuned thresholds.

    The one path from pixels to labels of ``cellbench segment`` and ``cellbench
    serve``: the same image and model give the same labels in both.

    Parameters
    ----------
    model : LoadedModel
        From :func:`cellbench.modelfolder.load_model`.
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``, checked by :func:`cellbench.io.check_image`.
    image_diameter : float, optional
        Object diameter (px), for families with size normalisation; None: estimated.
    tile_size : int
        Images larger than this are predicted in overlapping tiles.
    progress : callable, optional
        ``progress(done, total)`` after every tile (it may raise to stop the work).

    Returns
    -------
    Segmentation
        ``(H, W)`` integer labels (0 = background) and the scale estimate.

    Raises
    ------
    SegmentError
        The post-processed mask does not have the image's shape (a cellbench bug).
    """
    h, w = image.shape[:2]
    x = to_model_input(image, model.family.in_channels, model.min_contrast)
    if model.family.frames > 1:  # a time-window model given one image: a still sequence
        log.warning(
            "model %s reads windows of %d frames; a single image is segmented as a still "
            "sequence of %d copies of itself (time-lapse data: run the pipeline's predict "
            "stage, which builds windows from the sequence)",
            model.family.name,
            model.family.frames,
            model.family.frames,
        )
        x = np.concatenate([x] * model.family.frames, axis=0)
    maps, scale = predict_image(
        model.family,
        model.net,
        x,
        model.device,
        image_diameter=image_diameter,
        size_model=model.size_model,
        tile_size=tile_size,
        progress=progress,
    )
    labels = model.family.postprocess(maps, model.thresholds)
    if labels.shape != (h, w):
        raise SegmentError(
            f"internal error: the mask has shape {labels.shape} but the image is "
            f"{h} x {w} (H x W); not written. Please report this as a cellbench bug"
        )
    return Segmentation(labels, scale)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no details"


def _load(path: Path) -> np.ndarray:
    """Read one input image (checked by :func:`cellbench.io.check_image`); raise _Skip otherwise."""
    if not path.is_file():
        raise _Skip("not a file (a folder, device or pipe)" if path.exists() else "no such file")
    try:
        image = np.asarray(read_image(path))
    except CellbenchIOError as exc:
        cause = exc.__cause__
        if cause is not None:
            raise _Skip(
                f"cannot be read as an image ({type(cause).__name__}: {_first_line(cause)}); "
                "segment takes TIFF, PNG and JPEG images"
            ) from None
        message = str(exc)
        prefix = f"{path}: "
        raise _Skip(message[len(prefix) :] if message.startswith(prefix) else message) from None
    return image


@dataclass
class SegmentReport:
    """What one segment run did: every count, for the summary and for callers."""

    n_images: int
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every image was segmented (warnings do not count)."""
        return not self.failed

    def summary(self) -> str:
        """One line when all went well; with failures, one more line per failed image."""
        warned = ""
        if self.warnings:
            s = "s" if len(self.warnings) > 1 else ""
            warned = f", {len(self.warnings)} plausibility warning{s} (see above)"
        if not self.failed:
            return (
                f"{len(self.written)} of {self.n_images} images segmented into {self.out_dir} "
                f"in {self.seconds:.1f} s{warned}"
            )
        lines = [f"{len(self.failed)} of {self.n_images} images failed:"]
        lines += [f"  {path}: {reason}" for path, reason in self.failed]
        n = len(self.written)
        lines.append(f"{n} mask{'' if n == 1 else 's'} written to {self.out_dir}{warned}")
        return "\n".join(lines)


class _Progress:
    """Progress on a stream: plain lines, plus a tqdm tile bar when the stream is a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(enabled and isatty is not None and isatty())

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def info(self, text: str) -> None:
        if self.enabled:
            self.say(text)

    def tiles(self, label: str) -> Callable[[int, int], None]:
        """A ``predict_maps`` progress callback for one image (silent for a single tile)."""
        state: dict[str, Any] = {"bar": None, "last": time.monotonic()}

        def callback(done: int, total: int) -> None:
            if not self.enabled or total <= 1:
                return
            if self.tty:
                if state["bar"] is None:
                    from tqdm.auto import tqdm

                    state["bar"] = tqdm(
                        total=total, desc=f"{label} tiles", file=self.stream, leave=False
                    )
                state["bar"].update(done - state["bar"].n)
                if done >= total:
                    state["bar"].close()
                return
            now = time.monotonic()
            if done == 1 or done == total or now - state["last"] >= TILE_REPORT_SECONDS:
                state["last"] = now
                self.say(f"{label} tile {done}/{total}")

        return callback


# ----------------------------------------------------------------------------- the run
def _refusal(paths: list[Path], what: str, fix: str) -> SegmentError:
    """The error refusing a run before any work: how many paths, ``what`` is wrong, each path."""
    listed = "\n  ".join(str(p) for p in paths)
    return SegmentError(f"{len(paths)} {what}:\n  {listed}\nNothing was written. {fix}")


def _check_outputs(inputs: list[Path], outputs: dict[Path, Path], overwrite: bool) -> None:
    """Refuse, before any work, to write onto an input or (without overwrite) an existing file."""
    input_real = {os.path.realpath(path) for path in inputs}
    input_ids = {(st.st_dev, st.st_ino) for st in (p.stat() for p in inputs if p.exists())}
    folders = [out for out in outputs.values() if out.is_dir()]
    if folders:
        raise _refusal(
            folders,
            "output name(s) are taken by folders, which segment never replaces (not even "
            "with --overwrite)",
            "Choose another --out folder, or move those folders.",
        )
    onto_inputs, existing = [], []
    for out in outputs.values():
        exists = out.exists() or out.is_symlink()
        same = os.path.realpath(out) in input_real
        if exists and not same:
            st = out.stat() if out.exists() else None
            same = st is not None and (st.st_dev, st.st_ino) in input_ids
        if same:
            onto_inputs.append(out)
        elif exists:
            existing.append(out)
    if onto_inputs:
        raise _refusal(
            onto_inputs,
            "output file(s) would replace input images, which segment never does (not even "
            "with --overwrite)",
            "Choose another --out folder.",
        )
    if existing and not overwrite:
        raise _refusal(
            existing,
            "output file(s) already exist",
            "Choose another --out folder, or add --overwrite to replace them.",
        )


def _check_out_dir(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and check a file can be made in it, before any work.

    Returns the folders it created, outermost first.
    """
    absolute = Path(os.path.abspath(out_dir))
    created = [p for p in (*reversed(absolute.parents), absolute) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".cellbench-probe-"):
            pass
    except OSError as exc:
        _remove_empty(created)
        full = disk_full_error(exc, out_dir / "x")
        reason = "the disk is full" if full is not None else exc.strerror or type(exc).__name__
        raise SegmentError(
            f"--out {out_dir}: cannot create a file in this folder ({reason}). Nothing was "
            "written. Choose another --out folder (one you can write to, on a disk with "
            "room)."
        ) from exc
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders :func:`_check_out_dir` created (innermost first) while empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _stopped(exc: BaseException, target: Path, report: SegmentReport, rest: Sequence[Path]) -> str:
    """The message of a run stopped because ``target`` could not be written."""
    full = disk_full_error(exc, target)
    if full is not None:
        first = str(full).split(" Nothing partial was left behind.", 1)[0].rstrip(".")
        fix = "free some space on that disk, or choose an --out folder on another disk"
    else:
        detail = getattr(exc, "strerror", None) or str(exc)
        first = f"{target}: cannot be written ({type(exc).__name__}: {detail})"
        fix = "fix the cause above, or choose another --out folder"
    n = len(report.written)
    names = ", ".join(str(p) for p in rest[:5]) + (
        f" and {len(rest) - 5} more" if len(rest) > 5 else ""
    )
    return (
        f"{first}. The run stopped there; no partial file was left. "
        f"{n} mask{'' if n == 1 else 's'} written before {'is' if n == 1 else 'are'} complete "
        f"and kept in {report.out_dir}; {len(rest)} image{'' if len(rest) == 1 else 's'} "
        f"not segmented: {names}. To finish, {fix}, and run segment again on the images "
        "not segmented (or on all of them with --overwrite)."
    )


def segment_images(
    model_dir: Path,
    images: Sequence[str | os.PathLike],
    out_dir: Path,
    *,
    device: str = "auto",
    tile_size: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
    image_diameter: float | None = None,
) -> SegmentReport:
    """Segment new images with a trained model folder into ``out_dir``.

    Parameters
    ----------
    model_dir : path
        A folder written by the train stage (:func:`cellbench.modelfolder.load_model`).
    images : sequence of path
        Image files (see :func:`expand_inputs` for folders and patterns); a file
        given twice is segmented once.
    out_dir : path
        Where the masks go, named by :func:`output_names` (``{stem}_masks.tif``
        unless stems collide); created when missing.
    image_diameter : float, optional
        Object diameter (px) of every image, for families with size normalisation;
        None: the network estimates it per image.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:1``.
    tile_size : int
        Images larger than this are predicted in overlapping tiles.
    overwrite : bool
        Replace existing output files. Input images are never replaced.
    progress : bool
        Print per-image lines and tile counts.
    stream : text stream, optional
        Where progress, skipped images and warnings go (default: ``sys.stderr``).

    Returns
    -------
    SegmentReport
        Written masks, failed images with reasons, plausibility warnings. An
        image that cannot be read, or is not one 2-D image, is reported and
        skipped; the caller decides what failures mean (the CLI exits non-zero).

    Raises
    ------
    SegmentError
        Before any work: ``out_dir`` cannot be created or written to, an output
        would replace an input image or a folder, or (without ``overwrite``) output
        files exist already; every such file is listed. During the run: a mask
        cannot be written (disk full, quota used up, another I/O error); the run
        stops there, names the mask, keeps the masks written before and lists the
        images not segmented.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SegmentError(f"--out {out_dir}: is a file; give a folder for the masks.")
    inputs = _unique_files(Path(p) for p in images)
    names = output_names(inputs)
    outputs = {path: out_dir / names[path] for path in inputs}
    _check_outputs(inputs, outputs, overwrite)
    created = _check_out_dir(out_dir)
    report = SegmentReport(n_images=len(inputs), out_dir=out_dir)
    try:
        log = _Progress(stream if stream is not None else sys.stderr, progress)
        model = load_model(model_dir, device)
        training = training_stats(model.config)
        if training is None:
            log.info(
                f"note: {Path(model_dir) / 'config.json'} has no train_label_stats (a model folder "
                "from an older cellbench): the plausibility check of object counts and sizes is "
                "skipped."
            )
        total = len(inputs)
        for index, path in enumerate(inputs, start=1):
            label = f"[{index}/{total}] {path}"
            t0 = time.monotonic()
            try:
                image = _load(path)
                h, w = image.shape[:2]
                log.info(f"{label}: {w} x {h} px ...")
                try:
                    result = segment_array(
                        model,
                        image,
                        image_diameter=image_diameter,
                        tile_size=tile_size,
                        progress=log.tiles(label),
                    )
                except SegmentError as exc:
                    raise _Skip(str(exc)) from None
                labels, scale = result.labels, result.scale
                if scale.diameter is not None and (scale.factor != 1.0 or not scale.given):
                    how = "given" if scale.given else f"estimated in {scale.passes} passes"
                    log.info(
                        f"{label}: object diameter {scale.diameter:.1f} px ({how}), "
                        f"rescaled by {scale.factor:.2f}"
                    )
                target = outputs[path]
                if target.exists() and not overwrite:
                    raise _Skip(f"{target} appeared during the run; not replaced (use --overwrite)")
                try:
                    write_labels(target, labels)
                except (DiskFullError, OSError) as exc:
                    raise SegmentError(_stopped(exc, target, report, inputs[index - 1 :])) from exc
            except _Skip as skip:
                reason = str(skip)
                report.failed.append((path, reason))
                log.say(f"{label}: skipped: {reason}")
                continue
            report.written.append(target)
            n_objects = label_stats(labels)[0]
            log.info(f"{label}: {n_objects} objects in {time.monotonic() - t0:.1f} s -> {target}")
            warning = plausibility_warning(str(path), labels, training)
            if warning:
                report.warnings.append((path, warning))
                log.say(f"warning: {warning}")
    finally:
        if not report.written:  # nothing to show for the run: no empty --out folder
            _remove_empty(created)
    report.seconds = time.monotonic() - started
    return report
