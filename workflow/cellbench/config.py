"""Load and validate ``params.yaml`` into typed, immutable config objects.

``params.yaml`` is the single configuration for Snakemake, DVC and the CLI. It is
validated in two steps, both before any work:

1. :func:`load_params` / :func:`validate_params`: the whole file against the JSON
   schema ``schemas/params.schema.yaml``, which is *generated* from the registries'
   options classes (:mod:`cellbench.contract`), plus the cross-references of
   ``run:``. This module imports no registry (and so no model code).
2. :func:`cellbench.contract.check_params`: every dataset and model entry against
   its registry's options class (what JSON Schema cannot say, e.g. that
   ``decoder_channels`` covers ``encoder_depth``).

The top-level sections that are not entries of a registry (``run:``, ``split:`` of a
dataset, ``score:``, ``report:``) have their options classes here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from cellbench.errors import ConfigError
from cellbench.options import Options

__all__ = [
    "ConfigError",
    "DatasetConfig",
    "ModelConfig",
    "Params",
    "ReportOptions",
    "RunOptions",
    "ScoreOptions",
    "SplitOptions",
    "UNION",
    "load_params",
    "config_differences",
    "params_from_mapping",
    "read_params_file",
    "schema_path",
    "validate_params",
]

IoU = Annotated[float, Field(gt=0, le=1)]

UNION = "union"
"""Name of the training set made of every run dataset's splits (``run.union``): used in
paths like a dataset key (``data/converted/union``, ``results/models/union/{model}``)."""

TrainSize = Annotated[int, Field(ge=1)] | Literal["all"]


class RunOptions(Options):
    """What the pipeline runs (``run:``): datasets x models, learning curves, cross-dataset.

    Everything beyond ``datasets`` and ``models`` is off by default, so a ``run:`` with
    only those two keys runs exactly the main benchmark.
    """

    datasets: tuple[str, ...] = Field(
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="keys of 'datasets:' to run (every dataset x every model)",
    )
    models: tuple[str, ...] = Field(
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="keys of 'models:' to run",
    )
    train_sizes: tuple[TrainSize, ...] = Field(
        (),
        json_schema_extra={"uniqueItems": True},
        description="learning curves: train every model on this many training images "
        "(nested, stratified subsamples of the train split; 'all' = the whole split), "
        "e.g. [30, 100, 300, all]; empty = no learning curves",
    )
    curve_datasets: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="learning curves: only on these run datasets (null = on every run "
        "dataset); a curve costs sizes x seeds trainings per model, so a large dataset can "
        "keep its main run and cross-dataset cells without one",
    )
    seeds: tuple[Annotated[int, Field(ge=0)], ...] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="learning curves: one subsample and one training per seed and size "
        "(null = just the top-level seed); use at least 3 for intervals over seeds",
    )
    cross: bool = Field(
        False,
        description="cross-dataset matrix: every model trained on each run dataset is "
        "scored on the test split of every other run dataset",
    )
    union: bool = Field(
        False,
        description="also train every model on the union of the run datasets' splits and "
        "score it on each dataset's test split (needs two or more datasets)",
    )


class SplitOptions(Options):
    """How a dataset is split into train / val / test (``datasets.<name>.split``)."""

    val_fraction: float = Field(0.15, ge=0, le=0.9, description="share of groups for validation")
    test_fraction: float = Field(0.2, ge=0, le=0.9, description="share of groups for test")
    stratify_by: Literal["cell_type"] = Field(
        "cell_type", description="column whose values every split should contain"
    )
    use_official_test: bool = Field(
        True, description="the source's own test images (e.g. DSB stage-1 test) form the test split"
    )


class ScoreOptions(Options):
    """How masks are scored (``score:``)."""

    iou_thresholds: tuple[IoU, ...] = Field(
        (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95),
        min_length=1,
        description="IoU thresholds averaged into mean AP",
    )
    extra_thresholds: tuple[IoU, ...] = Field(
        (0.25, 0.75), description="further IoU thresholds reported (not averaged)"
    )


class ReportOptions(Options):
    """The HTML report (``report:``)."""

    title: str = Field("cellbench report", description="title of results/report.html")


@dataclass(frozen=True)
class DatasetConfig:
    """One entry of ``datasets:`` in params.yaml.

    Attributes
    ----------
    name : the params.yaml key, used in every path (``data/converted/{name}``).
    kind : the dataset registry key (``synthetic``, ``dsb2018``, ``ctc``, ``folder``, ...).
    source : ``download`` (fetch the originals), ``local`` (read originals from ``path``),
        or ``generate`` (the offline synthetic default).
    path : folder holding the original files when ``source == "local"``.
    options : the kind's options as written; typed by
        :func:`cellbench.datasets.get_dataset` with the kind's options class.
    split : the split settings.
    """

    name: str
    kind: str
    source: str = "download"
    path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    split: SplitOptions = field(default_factory=SplitOptions)


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``models:`` in params.yaml.

    ``family`` is the model registry key (``classical``, ``unet``, ``flow``, ...);
    ``options`` holds everything else of the entry as written, typed by
    :func:`cellbench.models.get_family` with the family's options class.
    """

    name: str
    family: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    """The whole validated params.yaml."""

    seed: int
    datasets: Mapping[str, DatasetConfig]
    models: Mapping[str, ModelConfig]
    run_datasets: tuple[str, ...]
    run_models: tuple[str, ...]
    score: ScoreOptions
    report: ReportOptions
    raw: Mapping[str, Any]
    path: Path | None = None
    run: RunOptions | None = None

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The learning curves' seeds: ``run.seeds``, else just the top-level ``seed``."""
        seeds = self.run.seeds if self.run is not None else None
        return tuple(seeds) if seeds else (self.seed,)

    @property
    def train_sizes(self) -> tuple[int | str, ...]:
        """``run.train_sizes`` (empty: no learning curves)."""
        return tuple(self.run.train_sizes) if self.run is not None else ()

    @property
    def curve_datasets(self) -> tuple[str, ...]:
        """The run datasets with learning curves, in ``run.datasets`` order.

        Empty without ``run.train_sizes``; else ``run.curve_datasets`` (default: all of them).
        """
        if not self.train_sizes:
            return ()
        chosen = self.run.curve_datasets if self.run is not None else None
        return tuple(d for d in self.run_datasets if chosen is None or d in chosen)

    @property
    def cross(self) -> bool:
        """Whether the cross-dataset matrix is on (``run.cross``)."""
        return bool(self.run is not None and self.run.cross)

    @property
    def union(self) -> bool:
        """Whether every model is also trained on the union of the datasets (``run.union``)."""
        return bool(self.run is not None and self.run.union)

    def training_sets(self) -> tuple[str, ...]:
        """What models are trained on: the run datasets, then ``union`` when it is on."""
        return self.run_datasets + ((UNION,) if self.union else ())

    def check_training_set(self, name: str) -> None:
        """Raise :class:`ConfigError` unless ``name`` is a dataset, or the union when it is on."""
        if name == UNION and self.union:
            return
        self.dataset(name)

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(_unknown("dataset", name, self.datasets, self.path))
        return self.datasets[name]

    def model(self, name: str) -> ModelConfig:
        if name not in self.models:
            raise ConfigError(_unknown("model", name, self.models, self.path))
        return self.models[name]


def schema_path() -> Path:
    """Path of the JSON schema (YAML) that params.yaml must satisfy (generated, committed)."""
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
    problems = []
    for key, defined in (("datasets", raw["datasets"]), ("models", raw["models"])):
        for name in raw["run"][key]:
            if name not in defined:
                problems.append(
                    f"run.{key}: '{name}' is not defined under '{key}:'; "
                    f"allowed: {', '.join(sorted(defined))}"
                )
    problems += _run_problems(raw)
    if problems:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


def _run_problems(raw: Mapping[str, Any]) -> list[str]:
    """What the schema cannot say about ``run``: curve datasets among the run datasets (and
    only with train sizes); for ``union`` two or more datasets and no name clash.

    ``run.cross`` with one dataset is allowed: its matrix is the diagonal (the main run).
    """
    run = raw["run"]
    problems = []
    for name in run.get("curve_datasets") or ():
        if name not in run["datasets"]:
            problems.append(
                f"run.curve_datasets: '{name}' is not in run.datasets; learning curves are "
                f"drawn on run datasets only: {', '.join(run['datasets'])}"
            )
    if run.get("curve_datasets") and not run.get("train_sizes"):
        problems.append(
            "run.curve_datasets: there are no learning curves without run.train_sizes; "
            "set e.g. 'train_sizes: [30, 100, all]', or leave curve_datasets out"
        )
    if run.get("union"):
        if len(run["datasets"]) < 2:
            problems.append(
                "run.union: the union of one dataset is that dataset; list two or more "
                "datasets in run.datasets, or set 'union: false'"
            )
        if UNION in raw["datasets"]:
            problems.append(
                f"run.union: '{UNION}' names the union training set in every path, but it is "
                "also a key of 'datasets:'; rename that dataset, or set 'union: false'"
            )
    return problems


#: what to write instead, for run keys whose schema errors read poorly on their own
_RUN_HINTS = {
    "train_sizes": "use positive whole numbers of training images and/or 'all', each once, "
    "e.g. 'train_sizes: [30, 100, 300, all]'",
    "seeds": "use whole numbers >= 0, each once, e.g. 'seeds: [1, 2, 3]' (or leave 'seeds' out "
    "for just the top-level seed)",
}


_ENUM_NOUN = {"kind": "a dataset kind", "family": "a model family"}


def _enum_message(instance: Any, allowed: list[Any], key: str) -> str:
    close = difflib.get_close_matches(str(instance), [str(v) for v in allowed], n=3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    noun = f" is not {_ENUM_NOUN[key]}" if key in _ENUM_NOUN else " is not allowed"
    shown = ", ".join("null" if v is None else str(v) for v in allowed[:12])
    more = f", ... ({len(allowed)} in all)" if len(allowed) > 12 else ""
    return f"{instance!r}{noun}{hint}; allowed values: {shown}{more}"


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    key = str(error.absolute_path[-1]) if error.absolute_path else ""
    msg = error.message
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        hints = []
        for name in extra:
            close = difflib.get_close_matches(name, allowed, n=1)
            hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        msg = f"unknown key {', '.join(hints)}; allowed keys: {', '.join(allowed)}"
    elif error.validator == "enum":
        msg = _enum_message(error.instance, list(error.validator_value), key)
    elif error.validator == "anyOf":
        enums = [v for sub in error.validator_value for v in sub.get("enum", [])]
        if enums and isinstance(error.instance, str):
            msg = _enum_message(error.instance, enums, key)
        elif error.context:
            best = min(error.context, key=lambda e: len(e.message))
            msg = f"{error.instance!r}: {best.message}"
    elif error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        msg = f"{error.instance!r} is out of range ({error.validator} {error.validator_value})"
    elif error.validator == "required":
        msg = f"{msg} (add it to the entry)"
    path = list(error.absolute_path)
    if len(path) >= 2 and path[0] == "run" and path[1] in _RUN_HINTS:
        if path[1] == "train_sizes" and len(path) == 3:  # one item: "0: 'all' was expected"
            msg = f"{error.instance!r} is neither a positive whole number nor 'all'"
        msg = f"{msg}; {_RUN_HINTS[path[1]]}"
    return f"  - {where}: {msg}"


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read, validate (schema + cross-references) and type ``params.yaml``.

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, or breaks the schema.
    """
    path = Path(path)
    raw = read_params_file(path)
    validate_params(raw, path)
    return params_from_mapping(raw, path)


def read_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a params file as YAML (no validation).

    Raises
    ------
    ConfigError
        If the file is missing, is a folder, is not YAML (the message gives the line and
        column) or is not a mapping.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such file. Run from the project root or pass --params."
        ) from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a folder; give the params YAML file.") from exc
    except yaml.YAMLError as exc:
        mark, start = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        opened = (
            f" ({exc.context} that starts at line {start.line + 1})"
            if start and getattr(exc, "context", None)
            else ""
        )
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}{opened}. "
            "Fix the syntax there (indent with spaces, close brackets and quotes)."
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping (seed:, run:, datasets:, models:, ...)")
    return raw


def config_differences(merged: Any, written: Any, prefix: str = "") -> list[str]:
    """Dotted keys where ``merged`` (Snakemake's config) differs from ``written`` (the file)."""
    if isinstance(merged, Mapping) and isinstance(written, Mapping):
        out = []
        for key in sorted(set(merged) | set(written), key=str):
            where = f"{prefix}{key}"
            if key not in written:
                out.append(f"{where} (not in the file)")
            elif key not in merged:
                out.append(f"{where} (only in the file)")
            else:
                out.extend(config_differences(merged[key], written[key], f"{where}."))
        return out
    return [] if merged == written else [prefix.rstrip(".")]


def params_from_mapping(raw: Mapping[str, Any], path: Path | None = None) -> Params:
    """Build typed :class:`Params` from an already validated mapping."""
    source = str(path or "params.yaml")
    datasets = {}
    for name, entry in raw["datasets"].items():
        entry = dict(entry)
        split = SplitOptions.from_mapping(
            entry.pop("split", None), f"datasets.{name}.split", source
        )
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
        score=ScoreOptions.from_mapping(raw.get("score"), "score", source),
        report=ReportOptions.from_mapping(raw.get("report"), "report", source),
        raw=raw,
        path=path,
        run=RunOptions.from_mapping(raw["run"], "run", source),
    )
