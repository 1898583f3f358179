"""The self-describing model folder: writing it after training, loading it for inference.

::

    results/models/{dataset}/{model}/
      config.json       family, the fully resolved options (every default filled in),
                        cellbench version, params hash, seed, data, timing, versions
      thresholds.json   the tuned post-processing setting ("selected") and the grid
      weights.pt        network state_dict (trainable families only)
      history.csv       epoch, train_loss, val_loss, val_mean_ap, lr, seconds
      size_model.json   the size model of a size-normalised network (cellbench.sizemodel)

``predict``, ``postprocess`` and ``segment`` read the folder alone: nothing in it
depends on params.yaml or on the code's defaults on the day it is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cellbench.errors import ConfigError
from cellbench.io import CellbenchIOError, atomic_dir, read_json, write_csv, write_json
from cellbench.models.base import ModelFamily
from cellbench.models.registry import family_entry
from cellbench.options import Options
from cellbench.sizemodel import SIZE_MODEL_FILE, SizeModel

__all__ = [
    "HISTORY_COLUMNS",
    "LoadedModel",
    "check_model_folder",
    "load_model",
    "load_network",
    "load_size_model",
    "load_thresholds",
    "params_hash",
    "write_model_folder",
]

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_mean_ap", "lr", "seconds")


def params_hash(section: Mapping[str, Any]) -> str:
    """SHA-256 of a params section as canonical JSON (sorted keys): what the folder was built from."""
    text = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_model_folder(
    out_dir: Path,
    *,
    config: Mapping[str, Any],
    tuned: Mapping[str, Any],
    history: list[dict[str, Any]],
    net=None,
    size_model: SizeModel | None = None,
) -> Path:
    """Write the model folder atomically (a failed write leaves the old folder intact)."""
    with atomic_dir(out_dir) as tmp:
        if net is not None:
            import torch

            torch.save(
                {
                    "state_dict": net.state_dict(),
                    "family": config["family"],
                    "options": config["options"],
                },
                tmp / "weights.pt",
            )
        write_json(tmp / "config.json", dict(config))
        write_json(tmp / "thresholds.json", dict(tuned))
        if size_model is not None:
            write_json(tmp / SIZE_MODEL_FILE, size_model.to_dict())
        write_csv(tmp / "history.csv", pd.DataFrame(history, columns=list(HISTORY_COLUMNS)))
    return Path(out_dir)


@dataclass
class LoadedModel:
    """A model folder loaded for inference: family (typed options), network, tuned thresholds."""

    family: ModelFamily
    net: Any
    config: dict
    thresholds: Any
    device: Any
    #: the size model (``size_model.json``) of a size-normalised network, when it has one
    size_model: SizeModel | None = None
    #: contrast floor of the input normalisation, in noise sigma
    #: (:func:`cellbench.transforms.normalize_percentile`; 0.0 = off)
    min_contrast: float = 0.0


def read_min_contrast(config: Mapping[str, Any], path: Path) -> float:
    """``config.json``'s ``normalisation.min_contrast`` (0.0 for folders from before it).

    Raises
    ------
    ConfigError
        Naming the file when the entry is not a finite number >= 0.
    """
    record = config.get("normalisation")
    if record is None:
        return 0.0
    value = record.get("min_contrast", 0.0) if isinstance(record, Mapping) else None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value < float("inf")
    ):
        raise ConfigError(
            f"{path}: normalisation.min_contrast must be a number >= 0, got {value!r}. "
            "The folder was edited or damaged; re-run the train stage."
        )
    return float(value)


def _family_from_config(config: Mapping[str, Any], path: Path) -> ModelFamily:
    if not isinstance(config, Mapping):
        raise ConfigError(f"{path}: must hold a JSON object. Re-run the train stage.")
    for key in ("family", "options", "model"):
        if key not in config:
            raise ConfigError(
                f"{path}: no '{key}' entry; this is not a cellbench model folder's config.json "
                "(or it was written by a version before 0.2). Re-run the train stage."
            )
    entry = family_entry(config["family"], f"{path}: family")
    options = entry.options.from_mapping(config["options"], "options", str(path))
    return entry.load()(config["model"], options)


def check_model_folder(model_dir: Path) -> Path:
    """Raise a ConfigError naming the folder when it is not a model folder; return it.

    A model folder is what the train stage writes: ``config.json`` and
    ``thresholds.json`` (plus ``weights.pt`` for families with a network).
    """
    model_dir = Path(model_dir)
    hint = (
        "--model-dir takes a folder written by the train stage, e.g. results/models/synthetic/unet"
    )
    if not model_dir.exists():
        raise ConfigError(f"{model_dir}: no such folder. {hint}.")
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: is a file, not a model folder. {hint}.")
    missing = [n for n in ("config.json", "thresholds.json") if not (model_dir / n).is_file()]
    if missing:
        present = sorted(p.name for p in model_dir.iterdir())[:8]
        raise ConfigError(
            f"{model_dir}: not a cellbench model folder ({' and '.join(missing)} missing; "
            f"it holds: {', '.join(present) or 'nothing'}). {hint}, or re-run the train stage."
        )
    return model_dir


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except CellbenchIOError as exc:
        raise ConfigError(f"{exc} (in a model folder: re-run the train stage)") from None


def load_thresholds(family: ModelFamily, path: Path) -> Options:
    """The tuned setting ("selected") of ``thresholds.json``, validated with the family's class."""
    tuned = _read_json(path)
    if not isinstance(tuned, Mapping) or not isinstance(tuned.get("selected"), Mapping):
        raise ConfigError(
            f"{path}: no 'selected' setting (the tuned post-processing thresholds). "
            "Re-run the train stage for this model."
        )
    return family.thresholds_class.from_mapping(tuned["selected"], "selected", str(path))


def load_network(family: ModelFamily, weights: Path, device) -> Any:
    """Build the family's network and load ``weights.pt`` into it, with messages naming the file.

    Raises
    ------
    ConfigError
        When the file is missing, unreadable, written for another family, or its tensors
        do not fit the network that ``config.json`` describes.
    """
    import torch

    if not weights.is_file():
        raise ConfigError(f"{weights}: missing. Re-run the train stage for this model.")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle that would run code
        raise ConfigError(
            f"{weights}: cannot be read as network weights ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). The file is damaged or not a cellbench "
            "weights file; re-run the train stage for this model."
        ) from None
    if not isinstance(state, Mapping) or not isinstance(state.get("state_dict"), Mapping):
        raise ConfigError(
            f"{weights}: not a cellbench weights file (no 'state_dict'). Re-run the train stage."
        )
    if state.get("family") not in (None, family.family):
        raise ConfigError(
            f"{weights}: holds a '{state['family']}' network but config.json says "
            f"'{family.family}': the folder mixes files of different models. Re-run the train stage."
        )
    net = family.build_network(load_weights=False).to(device)  # the saved weights replace them
    expected = net.state_dict()
    given = state["state_dict"]
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        first = (shapes or missing or unexpected)[0]
        described = ", ".join(
            f"{k} {getattr(family.options, k)}"
            for k in ("encoder", "encoder_depth", "decoder_channels", "in_channels")
            if hasattr(family.options, k)
        )
        raise ConfigError(
            f"{weights}: the weights do not fit the network config.json describes ({described}): "
            f"{len(missing)} tensors missing, {len(unexpected)} unexpected, {len(shapes)} of "
            f"another shape (first: {first}). The folder mixes files of different trainings; "
            "re-run the train stage for this model."
        )
    net.load_state_dict(given)
    net.eval()
    return net


def load_model(model_dir: Path, device: str = "auto") -> LoadedModel:
    """Load and validate a model folder as a whole.

    The options come from ``config.json`` alone (validated with the family's options
    class), the tuned setting from ``thresholds.json`` ("selected", validated with the
    family's thresholds class: missing, NaN or out-of-range entries are refused), the
    network from ``weights.pt`` (checked tensor by tensor against the network that the
    options describe). Every error is a :class:`~cellbench.errors.ConfigError` naming
    the file in the folder and the fix.
    """
    from cellbench.device import resolve_device

    model_dir = check_model_folder(Path(model_dir))
    config_path = model_dir / "config.json"
    config = _read_json(config_path)
    family = _family_from_config(config, config_path)
    thresholds = load_thresholds(family, model_dir / "thresholds.json")
    dev = resolve_device(device)
    net = load_network(family, model_dir / "weights.pt", dev) if family.trainable else None
    return LoadedModel(
        family,
        net,
        dict(config),
        thresholds,
        dev,
        load_size_model(model_dir),
        read_min_contrast(config, config_path),
    )


def load_size_model(model_dir: Path) -> SizeModel | None:
    """The folder's ``size_model.json`` (None when there is none), with a message naming it."""
    path = Path(model_dir) / SIZE_MODEL_FILE
    if not path.is_file():
        return None
    try:
        return SizeModel.from_dict(_read_json(path))
    except ValueError as exc:
        raise ConfigError(
            f"{path}: not a size model this cellbench can read ({exc}); re-run the train stage "
            "for this model, or delete the file to estimate diameters by segmentation"
        ) from exc
