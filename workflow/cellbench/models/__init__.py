"""Model families (registry). Importing this package registers every family."""

from cellbench.models import classical, flow, unet  # noqa: F401  (registration side effect)
from cellbench.models.base import MODEL_FAMILIES, ModelFamily, get_family, grid, register_family

__all__ = ["MODEL_FAMILIES", "ModelFamily", "get_family", "grid", "register_family"]
