"""Post-processing: network maps -> instance labels (pure functions, arrays in, arrays out).

- :mod:`~cellbench.postprocess.watershed`: seeded / distance watershed, closing + area opening;
- :mod:`~cellbench.postprocess.flows`: Cellpose-style flow tracking;
- :mod:`~cellbench.postprocess.clustering`: pixel-embedding clustering (fast, agglomerative).
"""

from cellbench.postprocess.watershed import (
    clean_labels,
    close_and_open,
    distance_watershed,
    seeded_watershed,
)

__all__ = ["clean_labels", "close_and_open", "distance_watershed", "seeded_watershed"]
