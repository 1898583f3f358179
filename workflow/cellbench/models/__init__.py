"""Model families (registry). Importing this package is light: no torch, no scikit-image."""

from cellbench.models.registry import MODEL_FAMILIES, FamilyEntry, family_entry, get_family

__all__ = ["MODEL_FAMILIES", "FamilyEntry", "family_entry", "get_family"]
