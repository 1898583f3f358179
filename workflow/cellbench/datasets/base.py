"""The dataset-source interface, its registry, and the writer of the common format.

A *dataset source* knows one public dataset's original layout: how to fetch
its original files (``download``) and how to turn them into the common format
(``convert``, DESIGN.md section 2)::

    data/converted/{dataset}/
      images/{id}.tif     (H, W) or (H, W, C), original dtype kept
      labels/{id}.tif     (H, W) instance labels, 0 = background, 1..N, no overlaps
      index.csv           one row per image, columns INDEX_COLUMNS

Sources are listed in :mod:`cellbench.datasets.registry` (with their options
class); instantiate them with :func:`cellbench.datasets.get_dataset`.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from cellbench.config import DatasetConfig
from cellbench.datasets._common import LABEL_FIX, log
from cellbench.io import CellbenchIOError, write_csv, write_image, write_labels
from cellbench.options import Options

__all__ = [
    "INDEX_COLUMNS",
    "ConvertedWriter",
    "convert_dataset",
    "download_dataset",
    "DatasetSource",
    "LOCAL_MARKER",
    "raw_root",
    "read_index",
    "masks_to_labels",
    "safe_image_id",
    "TRAIN_LABELS",
    "train_label_ids",
]

#: What a source file reference may be (a path, or a text such as ``"train.csv, rows of X"``).
Origin = str | os.PathLike | None

#: Columns of ``index.csv``. ``official_split`` is ``test`` for images the source itself
#: designates as its test set (DSB stage-1 test), else empty. ``contested_pixels`` counts
#: pixels claimed by more than one source annotation before overlaps were resolved.
INDEX_COLUMNS = (
    "id",
    "height",
    "width",
    "channels",
    "dtype",
    "n_instances",
    "cell_type",
    "group",
    "sequence",
    "frame",
    "annotation",
    "source",
    "official_split",
    "contested_pixels",
)

ANNOTATION_LEVELS = ("full", "partial", "none")

#: Optional folder of a converted dataset: complete labels from a second truth that
#: networks train on instead of ``labels/`` (which stay what is scored).
TRAIN_LABELS = "train_labels"


def train_label_ids(converted_dir: Path) -> set[str]:
    """Ids of the images that have train labels (``train_labels/{id}.tif``)."""
    folder = Path(converted_dir) / TRAIN_LABELS
    return {p.stem for p in folder.glob("*.tif")} if folder.is_dir() else set()


#: File written into ``data/raw/{dataset}/`` when the originals live elsewhere (``source: local``).
LOCAL_MARKER = "LOCAL_SOURCE.json"


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class DatasetSource(ABC):
    """One public dataset (or the user's own folder): download + convert.

    Subclasses set ``kind`` (the params.yaml ``kind:`` value) and implement
    :meth:`convert`; sources that can be fetched implement :meth:`download`.
    """

    kind: ClassVar[str]

    def __init__(self, cfg: DatasetConfig, options: Options, seed: int = 0) -> None:
        self.cfg = cfg
        #: the kind's options (:mod:`cellbench.datasets.options`), every default filled in
        self.options = options
        #: the run's global seed (params.yaml ``seed``), for sources that generate data
        self.seed = seed

    def prepare_raw(self, raw_dir: Path) -> None:
        """Fill the (new, empty) raw folder: download or generate the originals, or, for
        ``source: local``, write a pointer (:data:`LOCAL_MARKER`) to the user's folder.

        Raises
        ------
        FileNotFoundError
            When ``path:`` of a local dataset is not a folder.
        """
        if self.cfg.source != "local":
            self.download(raw_dir)
            return
        path = Path(self.cfg.path).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(
                f"datasets.{self.cfg.name}.path: {path} is not a folder. Point 'path:' in "
                "params.yaml at the folder that holds the original files."
            )
        (Path(raw_dir) / LOCAL_MARKER).write_text(
            json.dumps({"path": str(path), "kind": self.kind}, indent=2) + "\n"
        )

    def download(self, raw_dir: Path) -> None:
        """Put the dataset's original files into ``raw_dir`` (which exists and is empty)."""
        raise NotImplementedError(
            f"dataset kind '{self.kind}' cannot be downloaded automatically; set "
            f"'source: local' and 'path:' for datasets.{self.cfg.name} in params.yaml"
        )

    @abstractmethod
    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Read the originals under ``raw_dir`` and ``writer.add`` every image."""


def raw_root(raw_dir: Path, cfg: DatasetConfig | None = None) -> Path:
    """The folder that really holds the originals of a dataset.

    Parameters
    ----------
    raw_dir : the dataset's ``data/raw/{dataset}`` folder.
    cfg : the dataset's params.yaml entry. For ``source: local`` the originals are read
        from ``cfg.path``, whether or not the download stage wrote its pointer file
        (:data:`LOCAL_MARKER`) into ``raw_dir``; a pointer that is there must agree.
        Without ``cfg`` the pointer, if any, decides.

    Returns
    -------
    pathlib.Path
        ``cfg.path`` (local), the folder the pointer names, or ``raw_dir``.

    Raises
    ------
    FileNotFoundError
        The local folder does not exist (the message names ``datasets.<name>.path``).
    ValueError
        The pointer file names another folder than ``datasets.<name>.path``, or is unreadable.
    """
    raw_dir = Path(raw_dir)
    marker = raw_dir / LOCAL_MARKER
    pointed: Path | None = None
    if marker.is_file():
        try:
            pointed = Path(json.loads(marker.read_text())["path"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{marker}: unreadable pointer to the local originals ({type(exc).__name__}: "
                f"{exc}). Delete {raw_dir} and re-run the download stage."
            ) from None
    if cfg is not None and cfg.source == "local":
        key = f"datasets.{cfg.name}.path"
        if not cfg.path:
            raise FileNotFoundError(
                f"{key} is not set: 'source: local' reads the original files from the folder "
                "named by 'path:'. Add it to this dataset in params.yaml."
            )
        target = Path(cfg.path).expanduser().resolve()
        if pointed is not None and pointed.expanduser().resolve() != target:
            raise ValueError(
                f"{marker} points at {pointed}, but {key} is {target}. The raw folder was "
                f"made for an earlier 'path:'; delete {raw_dir} (or re-run the download stage "
                f"for '{cfg.name}') so that it points at {target}, or set 'path:' back."
            )
        if not target.is_dir():
            raise FileNotFoundError(
                f"{key}: {target} is not a folder ('source: local' reads the original files "
                "from there). Point 'path:' in params.yaml at the folder that holds them."
            )
        return target
    if pointed is not None:
        if not pointed.is_dir():
            raise FileNotFoundError(
                f"{marker} points at {pointed}, which is not a folder. Fix 'path:' for this "
                "dataset in params.yaml and re-run the download stage."
            )
        return pointed
    return raw_dir


def _where(image_id: str, origin: Origin) -> str:
    return f"image {image_id} (from {origin})" if origin else f"image {image_id}"


class ConvertedWriter:
    """Write images and labels of one dataset in the common format, then ``index.csv``.

    Use inside :func:`cellbench.io.atomic_dir` so a failed conversion leaves no
    partial dataset behind.

    Parameters
    ----------
    out_dir : the (temporary) ``data/converted/{dataset}`` folder.
    source : a short description of where the data came from, stored per row.

    Attributes
    ----------
    skipped : list of (file, reason)
        Source files left out by :meth:`skip` (e.g. a label file with no image).
    """

    def __init__(self, out_dir: Path, source: str = "") -> None:
        self.out_dir = Path(out_dir)
        self.source = source
        self.rows: list[dict] = []
        self.skipped: list[tuple[str, str]] = []
        self._id_set: set[str] = set()
        (self.out_dir / "images").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "labels").mkdir(parents=True, exist_ok=True)

    def skip(self, path: Origin, reason: str) -> None:
        """Record (and log as a warning) a source file that is left out, and why.

        Parameters
        ----------
        path : the file (or a description of it) that is not converted.
        reason : what is wrong, e.g. ``"no image with this name in images/"``.
        """
        log.warning("%s: %s; skipped", path, reason)
        self.skipped.append((str(path), reason))

    def add(
        self,
        image_id: str,
        image: np.ndarray,
        labels: np.ndarray | None,
        *,
        cell_type: str = "unknown",
        group: str | None = None,
        sequence: str = "",
        frame: int = -1,
        annotation: str = "full",
        official_split: str = "",
        contested_pixels: int = 0,
        source: str | None = None,
        origin: Origin = None,
        label_origin: Origin = None,
        train_labels: np.ndarray | None = None,
    ) -> None:
        """Add one image.

        Parameters
        ----------
        image_id : unique id, letters/digits/``_.+-`` (used as the file name).
        image : ``(H, W)`` or ``(H, W, C)``, any dtype; stored unchanged. NaN or
            infinite pixels are refused.
        labels : ``(H, W)`` non-negative integer instance labels, 0 = background, no
            overlaps; ``None`` when the image has no annotation (``annotation='none'``).
        group : unit that must never straddle train and test (default: the id).
        annotation : ``full`` (every cell labelled), ``partial`` (only some) or ``none``.
        origin : the source file of the image, named in error messages.
        label_origin : the source file of the labels (default: ``origin``), named in
            error messages.
        train_labels : optional ``(H, W)`` complete instance labels from a second truth
            that networks train on instead of ``labels`` (CTC: train on silver truth,
            score on gold truth); written to ``train_labels/{id}.tif``. An image with
            train labels is trainable even when ``annotation`` is ``none``.

        Raises
        ------
        cellbench.io.CellbenchIOError
            Non-finite pixels, or labels that are not non-negative integers of the
            image's height and width; the message names the image, its source file
            and the fix.
        ValueError
            A malformed or repeated id, an unknown annotation level, or an image that
            is not 2-D/3-D.
        """
        if not _ID_RE.match(image_id):
            raise ValueError(f"image id {image_id!r} must match {_ID_RE.pattern}")
        if image_id in self._id_set:
            raise ValueError(f"image id {image_id!r} is added twice")
        if annotation not in ANNOTATION_LEVELS:
            raise ValueError(f"annotation must be one of {ANNOTATION_LEVELS}, got {annotation!r}")
        where = _where(image_id, origin)
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ValueError(f"{where}: expected (H, W) or (H, W, C), got {image.shape}")
        _check_finite(image, where)
        h, w = image.shape[:2]
        n_instances = 0
        if labels is not None:
            labels = _checked_labels(
                labels, (h, w), "labels of " + _where(image_id, label_origin or origin)
            )
            n_instances = int(len(np.unique(labels[labels > 0])))
            write_labels(self.out_dir / "labels" / f"{image_id}.tif", labels)
        elif annotation != "none":
            raise ValueError(f"{where}: labels missing but annotation={annotation!r}")
        if train_labels is not None:
            train_labels = _checked_labels(
                train_labels, (h, w), "train labels of " + _where(image_id, origin)
            )
            write_labels(self.out_dir / TRAIN_LABELS / f"{image_id}.tif", train_labels)
        write_image(self.out_dir / "images" / f"{image_id}.tif", image)
        self.rows.append(
            {
                "id": image_id,
                "height": h,
                "width": w,
                "channels": 1 if image.ndim == 2 else image.shape[2],
                "dtype": str(image.dtype),
                "n_instances": n_instances,
                "cell_type": cell_type,
                "group": group if group is not None else image_id,
                "sequence": sequence,
                "frame": frame,
                "annotation": annotation,
                "source": source if source is not None else self.source,
                "official_split": official_split,
                "contested_pixels": int(contested_pixels),
            }
        )
        self._id_set.add(image_id)

    def finish(self) -> pd.DataFrame:
        """Write ``index.csv`` (sorted by id) and return it.

        The number of skipped source files is logged and kept in
        ``index.attrs["skipped_files"]``.
        """
        if not self.rows:
            skipped = f" ({len(self.skipped)} source file(s) were skipped, see the warnings)"
            raise ValueError(
                f"no images were converted into {self.out_dir}{skipped if self.skipped else ''}; "
                "check the source files"
            )
        index = pd.DataFrame(self.rows, columns=list(INDEX_COLUMNS)).sort_values("id")
        write_csv(self.out_dir / "index.csv", index)
        if self.skipped:
            log.warning(
                "converted %d image(s); %d source file(s) skipped: %s",
                len(index),
                len(self.skipped),
                ", ".join(Path(p).name or p for p, _ in self.skipped[:10])
                + (" ..." if len(self.skipped) > 10 else ""),
            )
        index.attrs["skipped_files"] = len(self.skipped)
        return index


def _check_finite(image: np.ndarray, where: str) -> None:
    """Refuse NaN / infinite pixels (they would stop training much later, naming no file)."""
    if image.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(image)
    if not bad.any():
        return
    n_nan = int(np.isnan(image).sum())
    raise CellbenchIOError(
        f"{where}: {int(bad.sum())} of {image.size} pixel values are not finite ({n_nan} NaN, "
        f"{int(bad.sum()) - n_nan} infinite). Replace them in the source file (e.g. with 0 or "
        "the image's minimum) and save it again, or remove this image from the dataset."
    )


def _checked_labels(labels: np.ndarray, shape: tuple[int, int], where: str) -> np.ndarray:
    """Labels as a non-negative integer ``(H, W)`` array, or an error naming ``where`` and the fix."""
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise CellbenchIOError(
            f"{where}: shape {labels.shape} differs from the image's {tuple(shape)}. Check that "
            "the label file belongs to this image (same name, same size)."
        )
    if labels.dtype == bool:
        raise CellbenchIOError(f"{where}: a yes/no mask, not instance labels. {LABEL_FIX}")
    if not np.issubdtype(labels.dtype, np.integer):
        if labels.dtype.kind in "fc" and not np.isfinite(labels).all():
            raise CellbenchIOError(f"{where}: NaN or infinite values. {LABEL_FIX}")
        raise CellbenchIOError(f"{where}: {labels.dtype} values, not integers. {LABEL_FIX}")
    if labels.size and int(labels.min()) < 0:
        raise CellbenchIOError(
            f"{where}: negative values (minimum {int(labels.min())}). {LABEL_FIX}"
        )
    return labels


def read_index(converted_dir: Path) -> pd.DataFrame:
    """Read ``index.csv`` of a converted dataset, with string columns kept as strings."""
    path = Path(converted_dir) / "index.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing. Run the convert stage for this dataset first.")
    return pd.read_csv(
        path,
        dtype={
            "id": str,
            "cell_type": str,
            "group": str,
            "sequence": str,
            "source": str,
            "official_split": str,
            "annotation": str,
        },
        keep_default_na=False,
    )


# --------------------------------------------------------------------------------------
# Generic helpers shared by the dataset sources
# --------------------------------------------------------------------------------------


def masks_to_labels(
    masks: Iterable[np.ndarray] | np.ndarray, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, int]:
    """Merge per-instance masks, which may overlap, into one label image.

    **The overlap rule (used by every source):** a pixel claimed by more than one
    instance goes to the *smallest* of the claiming instances (fewest pixels in its
    source mask; ties go to the instance that comes first in ``masks``). A small cell
    lying on a large one therefore keeps its full shape and the large one loses the
    covered part, instead of the small cell vanishing. Instances left with no pixel
    (fully covered by smaller ones) and empty masks are dropped. Surviving instances
    are numbered ``1..N`` in input order.

    Parameters
    ----------
    masks : an ``(N, H, W)`` array, or an iterable of boolean ``(H, W)`` masks, or an
        iterable of 1-D integer arrays of flat (row-major) pixel indices into ``shape``.
    shape : ``(H, W)``; required when ``masks`` holds flat indices or is empty.

    Returns
    -------
    labels : numpy.ndarray
        ``(H, W)`` int32 instance labels, 0 = background.
    contested_pixels : int
        Number of pixels claimed by two or more instances before the rule was applied.
    """
    flat: list[np.ndarray] = []
    for mask in masks:
        mask = np.asarray(mask)
        if mask.ndim == 2:
            if shape is None:
                shape = mask.shape
            elif tuple(mask.shape) != tuple(shape):
                raise ValueError(f"mask shape {mask.shape} differs from {tuple(shape)}")
            flat.append(np.flatnonzero(mask))
        elif mask.ndim == 1:
            if shape is None:
                raise ValueError("shape is required when masks are given as flat indices")
            flat.append(np.unique(mask.astype(np.int64, copy=False)))
        else:
            raise ValueError(f"each mask must be (H, W) or flat indices, got shape {mask.shape}")
    if shape is None:
        raise ValueError("shape is required when there are no masks")
    h, w = int(shape[0]), int(shape[1])
    labels = np.zeros(h * w, dtype=np.int32)
    if not flat:
        return labels.reshape(h, w), 0
    for idx in flat:
        if idx.size and (idx[0] < 0 or idx[-1] >= h * w):
            raise ValueError(f"mask pixel index out of range for shape {(h, w)}")
    coverage = np.bincount(np.concatenate(flat), minlength=h * w)
    contested = int(np.count_nonzero(coverage > 1))
    # Paint largest first, smallest last, so the smallest claimant wins; among equal
    # sizes the earlier instance is painted last and wins.
    order = sorted(range(len(flat)), key=lambda i: (-flat[i].size, -i))
    for i in order:
        labels[flat[i]] = i + 1
    labels = labels.reshape(h, w)
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(len(flat) + 1, dtype=np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels], contested


_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_.+-]+")


def safe_image_id(text: str) -> str:
    """Turn a source file name into an image id accepted by :class:`ConvertedWriter`.

    Runs of characters other than letters, digits and ``_.+-`` become ``_``; a leading
    character that is not a letter or digit is prefixed with ``x``.
    """
    out = _UNSAFE_ID_CHARS.sub("_", str(text)).strip("_")
    if not out:
        raise ValueError(f"cannot make an image id from {text!r}")
    if not out[0].isalnum():
        out = "x" + out
    return out


def download_dataset(source: DatasetSource, out: Path) -> Path:
    """The download stage: fill ``out`` (atomically) with the originals or a local pointer."""
    from cellbench.io import atomic_dir

    with atomic_dir(out) as tmp:
        source.prepare_raw(tmp)
    return Path(out)


def convert_dataset(source: DatasetSource, raw: Path, out: Path) -> pd.DataFrame:
    """The convert stage: originals -> the common format in ``out`` (atomically).

    Parameters
    ----------
    source : the dataset source (its ``cfg`` decides where the originals are).
    raw : the dataset's ``data/raw/{dataset}`` folder. For ``source: local`` the
        originals are read from ``datasets.<name>.path`` (see :func:`raw_root`), so the
        download stage need not have run.
    out : ``data/converted/{dataset}``.

    Returns
    -------
    pandas.DataFrame
        The written ``index.csv``; ``attrs["skipped_files"]`` counts the source files
        left out (each one was logged as a warning).
    """
    from cellbench.io import atomic_dir

    root = raw_root(raw, source.cfg)
    if not root.is_dir():
        name = source.cfg.name
        raise FileNotFoundError(
            f"{root}: no such folder, so dataset '{name}' has no original files to convert. "
            f"Run the download stage first (cellbench download --dataset {name}), or, if the "
            f"files are already on this machine, set 'source: local' and 'path:' for "
            f"datasets.{name} in params.yaml."
        )
    with atomic_dir(out) as tmp:
        writer = ConvertedWriter(tmp, source=source.kind)
        source.convert(root, writer)
        return writer.finish()
