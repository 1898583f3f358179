"""Training checkpoints: resume a killed training run where it stopped.

The train stage writes one file, ``last.pt``, after every epoch (atomically: a
temporary file in the same folder, then :func:`os.replace`, see
:func:`cellbench.io.atomic_path`). It holds everything the next epoch depends on:

- ``epoch`` (the last epoch done) and ``finished`` (the loop ended: last epoch or
  early stopping);
- the network, optimiser and learning-rate scheduler states;
- the best epoch's weights, its monitored value, the early-stopping counter and
  the history rows so far;
- every random state: the numpy generator of crops and batch order, torch's
  (CPU and, where used, CUDA), Python's ``random`` and the albumentations pipeline's;
- a fingerprint (:func:`training_fingerprint`): the hash of the model's params
  entry and seed, the dataset, a hash of the training and validation data, the
  torch and cellbench versions.

A run started again with the same fingerprint continues at the next epoch and
ends with the same weights, bit for bit, as a run that was never interrupted (on
the same device and thread count). A checkpoint with another fingerprint is
never resumed: a warning names what changed, training starts at epoch 1 and
overwrites it.

Where: checkpoints live outside the model folder, because Snakemake deletes the
output folder of a failed job. :func:`default_checkpoint_dir` maps
``results/models/{dataset}/{model}`` to ``results/checkpoints/{dataset}/{model}``
and any other ``OUT`` to ``OUT.checkpoint``. The train stage removes the
checkpoint once the model folder is written, so a finished model leaves none
behind, and a checkpoint is never a model folder (no ``config.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.io import _remove_stale_temporaries, atomic_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CheckpointStore",
    "data_hash",
    "default_checkpoint_dir",
    "training_fingerprint",
]

log = logging.getLogger(__name__)

#: The file name of the checkpoint inside its folder.
CHECKPOINT_NAME = "last.pt"
#: Bumped when the content changes shape; older checkpoints are then ignored.
CHECKPOINT_FORMAT = 1

_FINGERPRINT_MEANING = {
    "format": "the checkpoint format (another cellbench version wrote it)",
    "params_sha256": "the model's params.yaml entry or the seed",
    "dataset": "the dataset",
    "data_sha256": "the training / validation images, labels or split",
    "precision": "the training arithmetic (precision auto resolves per device)",
    "torch": "the torch version",
    "cellbench": "the cellbench version",
}


def default_checkpoint_dir(out: str | os.PathLike) -> Path:
    """The checkpoint folder of a model folder ``out``.

    ``.../models/{dataset}/{model}`` gives ``.../checkpoints/{dataset}/{model}`` (so
    ``results/models/D/M`` gives ``results/checkpoints/D/M``); any other path ``OUT``
    gives its sibling ``OUT.checkpoint``. Both are outside ``out``, which
    Snakemake deletes when a job fails.

    Parameters
    ----------
    out : str or os.PathLike
        The model folder the train stage writes.

    Returns
    -------
    pathlib.Path
    """
    out = Path(out)
    if len(out.parts) >= 3 and out.parents[1].name == "models":
        return out.parents[2] / "checkpoints" / out.parent.name / out.name
    return out.with_name(out.name + ".checkpoint")


def data_hash(samples: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """SHA-256 of ``(id, image, labels)`` triples: ids, shapes, dtypes and values, in order.

    Parameters
    ----------
    samples : iterable of (str, numpy.ndarray, numpy.ndarray)
        The training then validation images (as the network sees them) and labels.

    Returns
    -------
    str
        Hex digest; any changed id, split membership, pixel or label changes it.
    """
    digest = hashlib.sha256()
    for sample_id, image, labels in samples:
        digest.update(f"{sample_id}\0".encode())
        for array in (image, labels):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}\0".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def training_fingerprint(
    params_sha256: str, dataset: str, data_sha256: str, arithmetic: str
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed.

    Parameters
    ----------
    params_sha256 : str
        :func:`cellbench.modelfolder.params_hash` of the seed and the model's entry.
    dataset : str
        The dataset name.
    data_sha256 : str
        :func:`data_hash` of the training then validation samples.
    arithmetic : str
        The resolved training precision (``fp32`` / ``bf16``): ``precision: auto``
        gives another one on another machine, where the checkpoint is not resumed.

    Returns
    -------
    dict
        Plain data: ``format``, ``params_sha256``, ``dataset``, ``data_sha256``,
        ``precision``, ``torch`` and ``cellbench`` (versions).
    """
    import torch

    from cellbench import __version__

    return {
        "format": CHECKPOINT_FORMAT,
        "params_sha256": params_sha256,
        "dataset": dataset,
        "data_sha256": data_sha256,
        "precision": arithmetic,
        "torch": str(torch.__version__),
        "cellbench": __version__,
    }


@dataclass
class CheckpointStore:
    """The checkpoint of one training run: ``{directory}/last.pt``.

    Parameters
    ----------
    directory : pathlib.Path
        The checkpoint folder (see :func:`default_checkpoint_dir`).
    fingerprint : Mapping
        :func:`training_fingerprint` of this run; a checkpoint is resumed only
        when its own is equal.
    resume : bool
        ``False`` ignores an existing checkpoint (it is overwritten after the first epoch).
    """

    directory: Path
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    resume: bool = True

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    @property
    def path(self) -> Path:
        """The checkpoint file, ``{directory}/last.pt``."""
        return self.directory / CHECKPOINT_NAME

    def load(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The saved state when it can be resumed, else ``None`` (with a warning saying why).

        Parameters
        ----------
        map_location : str or torch.device
            Where the tensors are loaded.

        Returns
        -------
        dict or None
            The state given to :meth:`save` (plus ``fingerprint``); ``None`` when
            there is no checkpoint, ``resume`` is off, the file cannot be read, or
            it was written for another fingerprint.
        """
        import torch

        if not self.path.is_file():
            return None
        if not self.resume:
            log.warning(
                "%s: removed, not resumed (--no-resume); training starts at epoch 1", self.path
            )
            self.clear()
            return None
        try:
            state = torch.load(self.path, map_location=map_location, weights_only=True)
        except Exception as exc:  # truncated, not a torch file, or a pickle that would run code
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            log.warning(
                "%s: cannot be read (%s); training starts at epoch 1 and overwrites it",
                self.path,
                reason,
            )
            return None
        reason = self.mismatch(state.get("fingerprint") if isinstance(state, Mapping) else None)
        if reason:
            log.warning(
                "%s: not resumed: %s; training starts at epoch 1 and overwrites it",
                self.path,
                reason,
            )
            return None
        return state

    def mismatch(self, saved: Mapping[str, Any] | None) -> str:
        """Why a saved fingerprint does not match this run's (empty when it does)."""
        if not isinstance(saved, Mapping):
            return "it has no fingerprint (not a cellbench training checkpoint)"
        for key, meaning in _FINGERPRINT_MEANING.items():
            if saved.get(key) != self.fingerprint.get(key):
                return (
                    f"{meaning} changed since it was written ({key} {saved.get(key)!r}, "
                    f"now {self.fingerprint.get(key)!r})"
                )
        return ""

    def save(self, state: Mapping[str, Any]) -> Path:
        """Write ``state`` plus the fingerprint to ``last.pt`` atomically; return the path.

        An interrupted write (a termination signal, a full disk) leaves the previous
        checkpoint as it was.
        """
        import torch

        with atomic_path(self.path) as tmp:
            torch.save({**state, "fingerprint": dict(self.fingerprint)}, tmp)
        return self.path

    def clear(self) -> None:
        """Remove the checkpoint file, and its folder when that is then empty.

        Temporaries of writes killed with SIGKILL go too (those of live processes stay).
        """
        _remove_stale_temporaries(self.path)
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # missing, or holds something else (left alone)
            self.directory.rmdir()
