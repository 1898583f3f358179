"""The self-describing model folder: writing it after training, loading it for inference.

::

    results/models/{dataset}/{model}/
      config.json       family, the fully resolved options (every default filled in),
                        cellbench version, params hash, seed, data, timing, versions
      thresholds.json   the tuned post-processing setting ("selected") and the grid
      weights.pt        network state_dict (trainable families only)
      history.csv       epoch, train_loss, val_loss, lr, seconds

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
from cellbench.io import atomic_dir, read_json, write_csv, write_json
from cellbench.models.base import ModelFamily
from cellbench.models.registry import family_entry

__all__ = [
    "HISTORY_COLUMNS",
    "LoadedModel",
    "load_model",
    "params_hash",
    "write_model_folder",
]

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds")


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


def _family_from_config(config: Mapping[str, Any], path: Path) -> ModelFamily:
    for key in ("family", "options", "model"):
        if key not in config:
            raise ConfigError(
                f"{path}: no '{key}' entry; this is not a cellbench model folder's config.json "
                "(or it was written by a version before 0.2). Re-run the train stage."
            )
    entry = family_entry(config["family"], f"{path}: family")
    options = entry.options.from_mapping(config["options"], "options", str(path))
    return entry.load()(config["model"], options)


def load_model(model_dir: Path, device: str = "auto") -> LoadedModel:
    """Load ``config.json``, ``thresholds.json`` and (for networks) ``weights.pt``.

    The options come from ``config.json`` alone (validated with the family's
    options class); the tuned setting from ``thresholds.json`` ("selected",
    validated with the family's thresholds class).
    """
    import torch

    from cellbench.device import resolve_device

    model_dir = Path(model_dir)
    config_path, thresholds_path = model_dir / "config.json", model_dir / "thresholds.json"
    config = read_json(config_path)
    family = _family_from_config(config, config_path)
    tuned = read_json(thresholds_path)
    if "selected" not in tuned:
        raise ConfigError(
            f"{thresholds_path}: no 'selected' entry. Re-run the train stage for this model."
        )
    thresholds = family.thresholds_class.from_mapping(
        tuned["selected"], "selected", str(thresholds_path)
    )
    dev = resolve_device(device)
    net = None
    if family.trainable:
        weights = model_dir / "weights.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing. Re-run the train stage for this model.")
        state = torch.load(weights, map_location=dev, weights_only=True)
        net = family.build_network().to(dev)
        net.load_state_dict(state["state_dict"])
        net.eval()
    return LoadedModel(family, net, config, thresholds, dev)
