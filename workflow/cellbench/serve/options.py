"""The server's options and limits: the one place their defaults live.

``cellbench serve --help`` lists them from this class (:func:`add_arguments`), and
the page and ``GET /health`` show the limits in force.
"""

from __future__ import annotations

import argparse
from typing import Any, ClassVar

from pydantic import Field

from cellbench.options import Options

__all__ = ["ServeOptions", "add_arguments", "from_arguments"]

MB = 1024 * 1024


class ServeOptions(Options):
    """Where the server listens, and the limits a shared lab server needs."""

    what: ClassVar[str] = "serve options"

    host: str = Field(
        "127.0.0.1",
        description="address to listen on; 127.0.0.1 serves this machine only (put a reverse "
        "proxy with authentication in front for others, see docs/serve.md)",
    )
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes; each loads its own copy of the model (memory x workers)",
    )
    max_upload_mb: float = Field(
        64.0, gt=0, description="largest request body (MiB); larger uploads get 413"
    )
    max_megapixels: float = Field(
        64.0, gt=0, description="largest image (H x W, millions of pixels); larger ones get 422"
    )
    timeout_s: float = Field(
        120.0,
        gt=0,
        description="per request: upload, wait for the model and segmentation together; "
        "503 when still waiting for the model, 504 when segmenting took longer",
    )
    max_queue: int = Field(
        16,
        ge=1,
        description="requests holding an upload at once (one segmented at a time, the rest "
        "waiting); more get 503 at once",
    )
    tile_size: int = Field(
        1024,
        ge=128,
        description="images larger than this (either side) are segmented in tiles (64 px overlap)",
    )
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch per worker; none: torch's choice"
    )

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * MB)

    @property
    def max_pixels(self) -> int:
        """:attr:`max_megapixels` in pixels."""
        return int(self.max_megapixels * 1_000_000)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _type(annotation: Any):
    text = str(annotation)
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One command-line option per field of :class:`ServeOptions`, its default in the help.

    The argparse defaults are ``None`` (not given): :func:`from_arguments` leaves those
    to the class, so a default is written once.
    """
    for name, info in ServeOptions.model_fields.items():
        default = info.default
        shown = "none" if default is None else default
        parser.add_argument(
            _flag(name),
            dest=f"serve_{name}",
            type=_type(info.annotation),
            default=None,
            metavar=name.upper(),
            help=f"{info.description} (default: {shown})",
        )


def from_arguments(args: argparse.Namespace, source: str = "the command line") -> ServeOptions:
    """The options given on the command line, the rest defaults; validated.

    Raises
    ------
    cellbench.errors.ConfigError
        An option out of range, naming it and the allowed values.
    """
    given = {
        name: getattr(args, f"serve_{name}")
        for name in ServeOptions.model_fields
        if getattr(args, f"serve_{name}", None) is not None
    }
    return ServeOptions.from_mapping(given, "serve", source)
