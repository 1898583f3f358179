"""Post-processing: network maps -> instance labels (pure functions, arrays in, arrays out)."""

from cellbench.postprocess.watershed import (
    clean_labels,
    distance_watershed,
    seeded_watershed,
)

__all__ = ["clean_labels", "distance_watershed", "seeded_watershed"]
