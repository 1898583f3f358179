"""Load and validate ``params.yaml`` into typed, immutable config objects.

``params.yaml`` is the single configuration for Snakemake, DVC and the CLI.
It is validated against ``workflow/schemas/params.schema.yaml`` (JSON Schema),
both by the Snakefile at parse time and by every CLI call, so an invalid file
stops the run before any work with a message that names the key and the
allowed values.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DatasetConfig",
    "ModelConfig",
    "Params",
    "SplitConfig",
    "load_params",
    "schema_path",
    "validate_params",
]


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key, the allowed values and the file."""


@dataclass(frozen=True)
class SplitConfig:
    """How a dataset is split into train / val / test (grouped, stratified, seeded)."""

    val_fraction: float = 0.15
    test_fraction: float = 0.2
    stratify_by: str = "cell_type"
    use_official_test: bool = True


@dataclass(frozen=True)
class DatasetConfig:
    """One entry of ``datasets:`` in params.yaml.

    Attributes
    ----------
    name : the params.yaml key, used in every path (``data/converted/{name}``).
    kind : the converter registry key (``synthetic``, ``dsb2018``, ``ctc``, ``folder``, ...).
    source : ``download`` (fetch the originals), ``local`` (read originals from ``path``),
        or ``generate`` (the offline synthetic default).
    path : folder holding the original files when ``source == "local"``.
    options : converter-specific settings (e.g. the CTC dataset name, the synthetic size).
    """

    name: str
    kind: str
    source: str = "download"
    path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``models:`` in params.yaml.

    ``family`` is the model registry key (``classical``, ``unet``, ``flow``, ...);
    ``options`` holds everything else of the entry (training and post-processing
    settings), passed unchanged to the family.
    """

    name: str
    family: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class Params:
    """The whole validated params.yaml."""

    seed: int
    datasets: Mapping[str, DatasetConfig]
    models: Mapping[str, ModelConfig]
    run_datasets: tuple[str, ...]
    run_models: tuple[str, ...]
    score: Mapping[str, Any]
    report: Mapping[str, Any]
    raw: Mapping[str, Any]
    path: Path | None = None

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(_unknown("dataset", name, self.datasets, self.path))
        return self.datasets[name]

    def model(self, name: str) -> ModelConfig:
        if name not in self.models:
            raise ConfigError(_unknown("model", name, self.models, self.path))
        return self.models[name]


def schema_path() -> Path:
    """Path of the JSON schema (YAML) that params.yaml must satisfy."""
    return Path(__file__).resolve().parent / "schemas" / "params.schema.yaml"


def _unknown(what: str, name: str, choices: Mapping[str, Any], path: Path | None) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    where = f" in {path}" if path else ""
    return (
        f"unknown {what} '{name}'{where}.{hint} Defined {what}s: {', '.join(sorted(choices))}. "
        f"Add it under '{what}s:' or use one of those."
    )


def validate_params(raw: Mapping[str, Any], source: str | os.PathLike = "params.yaml") -> None:
    """Validate a parsed params mapping against the schema and the cross-references.

    Raises
    ------
    ConfigError
        Naming the offending key, the allowed values and the file.
    """
    import jsonschema

    schema = yaml.safe_load(schema_path().read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.path), list(e.path)))
    if errors:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(_describe(e) for e in errors[:10]))
    from cellbench.datasets import DATASET_KINDS
    from cellbench.models import MODEL_FAMILIES

    problems = []
    for name, entry in raw["datasets"].items():
        if entry["kind"] not in DATASET_KINDS:
            problems.append(
                f"datasets.{name}.kind: '{entry['kind']}' is not a dataset kind; "
                f"allowed: {', '.join(sorted(DATASET_KINDS))}"
            )
        if entry.get("source") == "local" and not entry.get("path"):
            problems.append(
                f"datasets.{name}: source 'local' needs 'path' (the folder of originals)"
            )
    for name, entry in raw["models"].items():
        if entry["family"] not in MODEL_FAMILIES:
            problems.append(
                f"models.{name}.family: '{entry['family']}' is not a model family; "
                f"allowed: {', '.join(sorted(MODEL_FAMILIES))}"
            )
    for key, defined in (("datasets", raw["datasets"]), ("models", raw["models"])):
        for name in raw["run"][key]:
            if name not in defined:
                problems.append(
                    f"run.{key}: '{name}' is not defined under '{key}:'; "
                    f"allowed: {', '.join(sorted(defined))}"
                )
    if problems:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    msg = error.message
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        hints = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        msg = f"unknown key {', '.join(hints)}; allowed keys: {', '.join(allowed)}"
    elif error.validator == "enum":
        msg = f"{error.instance!r} is not allowed; allowed values: {', '.join(map(str, error.validator_value))}"
    elif error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        msg = f"{error.instance!r} is out of range ({error.validator} {error.validator_value})"
    return f"  - {where}: {msg}"


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read, validate and type ``params.yaml``.

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, or breaks the schema.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such file. Run from the project root or pass --params."
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping (seed:, run:, datasets:, models:, ...)")
    validate_params(raw, path)
    return params_from_mapping(raw, path)


def params_from_mapping(raw: Mapping[str, Any], path: Path | None = None) -> Params:
    """Build typed :class:`Params` from an already validated mapping."""
    datasets = {}
    for name, entry in raw["datasets"].items():
        entry = dict(entry)
        split = SplitConfig(**entry.pop("split", {}))
        datasets[name] = DatasetConfig(
            name=name,
            kind=entry.pop("kind"),
            source=entry.pop("source", "download"),
            path=entry.pop("path", None),
            split=split,
            options=entry.pop("options", {}) or {},
        )
    models = {}
    for name, entry in raw["models"].items():
        entry = dict(entry)
        models[name] = ModelConfig(name=name, family=entry.pop("family"), options=entry)
    return Params(
        seed=int(raw["seed"]),
        datasets=datasets,
        models=models,
        run_datasets=tuple(raw["run"]["datasets"]),
        run_models=tuple(raw["run"]["models"]),
        score=raw.get("score", {}),
        report=raw.get("report", {}),
        raw=raw,
        path=path,
    )
