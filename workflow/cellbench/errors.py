"""Exceptions with messages meant for the user (they name the file or key and the fix)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration (params.yaml, a model folder's config.json) is invalid.

    The message names the file, the key, the allowed values and the fix.
    """
