"""Typed option classes: the one home of every option and its default.

Each model family and each dataset source declares one subclass of
:class:`Options` (owned by its registry entry, see :mod:`cellbench.models.registry`
and :mod:`cellbench.datasets.registry`). A field states the option's type, its
default, its allowed range or choices (pydantic ``Field`` constraints, ``Literal``)
and a one-line description. Nothing else in the package holds a default for an
option: code reads ``options.name``, never ``mapping.get(name, default)``.

Why pydantic (v2): the classes validate (types, ranges, choices, unknown keys),
produce JSON Schema (so ``params.schema.yaml`` is generated from them, see
:mod:`cellbench.schema`) and serialise the fully resolved options into a model
folder's ``config.json``, from one declaration. It is already a dependency of
albumentations and DVC, and imports in a fraction of a second (no torch).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cellbench.errors import ConfigError

__all__ = [
    "OptionDoc",
    "Options",
    "check_all",
    "format_validation_error",
    "load_implementation",
    "registry_lookup",
]

E = TypeVar("E")


@dataclass(frozen=True)
class OptionDoc:
    """One option as ``cellbench options`` prints it."""

    name: str
    type: str
    default: Any
    required: bool
    description: str


class Options(BaseModel):
    """Base of every options class: immutable, unknown keys refused, NaN / inf refused."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )

    #: short name shown in messages ("model family 'unet'", "dataset kind 'ctc'").
    what: ClassVar[str] = "options"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str, source: str) -> Self:
        """Validate ``raw`` into an instance.

        Parameters
        ----------
        raw : the option mapping as written by the user (``None`` = all defaults).
        where : the dotted key of the mapping, e.g. ``models.unet``.
        source : the file it came from, e.g. ``params.yaml``.

        Raises
        ------
        ConfigError
            Naming each offending key, the allowed values and the file.
        """
        try:
            return cls.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise ConfigError(
                f"{source} is invalid:\n{format_validation_error(exc, cls, where)}"
            ) from None

    def resolved(self) -> dict[str, Any]:
        """Every option with its value (defaults filled in), as JSON-compatible data."""
        return self.model_dump(mode="json")

    @classmethod
    def describe(cls) -> list[OptionDoc]:
        """Every option: name, type (with range / choices), default and description."""
        schema = cls.model_json_schema()
        docs = []
        for name, info in cls.model_fields.items():
            prop = schema["properties"][name]
            required = info.is_required()
            docs.append(
                OptionDoc(
                    name=name,
                    type=type_text(prop),
                    default=None if required else prop.get("default"),
                    required=required,
                    description=info.description or "",
                )
            )
        return docs


def type_text(prop: Mapping[str, Any]) -> str:
    """A JSON-schema property as short text: ``integer >= 1``, ``list of number in [0, 1]``."""
    if "anyOf" in prop:
        parts = [type_text(p) for p in prop["anyOf"]]
        return " | ".join(dict.fromkeys(p for p in parts if p))
    if "enum" in prop:
        values = [v for v in prop["enum"]]
        if len(values) > 12:
            return f"one of {len(values)} names (see the schema)"
        return "one of: " + ", ".join("null" if v is None else str(v) for v in values)
    if "const" in prop:
        return f"{prop['const']!r}"
    kind = prop.get("type", "any")
    if isinstance(kind, list):
        kind = " | ".join(kind)
    if kind == "array":
        item = type_text(prop.get("items", {}))
        size = ""
        lo, hi = prop.get("minItems"), prop.get("maxItems")
        if lo is not None and lo == hi:
            size = f" of length {lo}"
        elif lo:
            size = f" (at least {lo})"
        return f"list{size} of {item}"
    bounds = []
    if "minimum" in prop and "maximum" in prop:
        bounds.append(f"in [{prop['minimum']}, {prop['maximum']}]")
    else:
        if "minimum" in prop:
            bounds.append(f">= {prop['minimum']}")
        if "exclusiveMinimum" in prop:
            bounds.append(f"> {prop['exclusiveMinimum']}")
        if "maximum" in prop:
            bounds.append(f"<= {prop['maximum']}")
    if "exclusiveMaximum" in prop:
        bounds.append(f"< {prop['exclusiveMaximum']}")
    if "multipleOf" in prop:
        bounds.append(f"multiple of {prop['multipleOf']}")
    if "pattern" in prop:
        bounds.append(f"matching {prop['pattern']}")
    return " ".join([kind, *bounds])


def format_validation_error(exc: ValidationError, cls: type[Options], where: str) -> str:
    """One ``  - key: problem`` line per pydantic error, with allowed keys and did-you-mean."""
    allowed = sorted(cls.model_fields)
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in (where, *err["loc"]) if p != "")
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            parent = ".".join(str(p) for p in (where, *err["loc"][:-1]) if p != "")
            lines.append(
                f"  - {parent}: unknown key '{key}'{hint}; allowed keys: {', '.join(allowed)}"
            )
        elif kind == "missing":
            lines.append(f"  - {loc}: required; {cls.model_fields[err['loc'][0]].description}")
        else:
            value = err.get("input")
            lines.append(f"  - {loc}: {value!r}: {err['msg']}")
    return "\n".join(lines)


def registry_lookup(registry: Mapping[str, E], key: str, where: str, noun: str) -> E:
    """``registry[key]``, or a ConfigError naming ``where``, the closest key and every key.

    ``noun`` is what a key is called, e.g. ``model family``.
    """
    try:
        return registry[key]
    except KeyError:
        close = difflib.get_close_matches(str(key), list(registry), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{where}: '{key}' is not a {noun}.{hint} Valid: {', '.join(sorted(registry))}."
        ) from None


def load_implementation(path: str, attribute: str, key: str) -> type:
    """Import ``module:Class`` and check that its ``attribute`` (family / kind) is ``key``."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if getattr(cls, attribute) != key:
        raise RuntimeError(f"{path} declares {attribute} {getattr(cls, attribute)!r}, not {key!r}")
    return cls


def check_all(checks: Iterable[Callable[[], object]], source: object) -> None:
    """Run every check; raise one ConfigError listing the problems of all of them."""
    problems: list[str] = []
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            problems.extend(str(exc).splitlines()[1:] or [f"  - {exc}"])
    if problems:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(problems))
