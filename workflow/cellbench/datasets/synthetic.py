"""The offline default dataset ``synthetic``: generated, not downloaded.

``download`` generates the "original" files (Cellpose-style pairs
``{id}_img.tif`` / ``{id}_masks.tif`` plus ``metadata.csv``) from the run's seed;
``convert`` turns them into the common format. Options (params.yaml
``datasets.<name>.options``): ``n_images``, ``height``, ``width``, ``looks``,
``n_cells`` [min, max], ``radius`` [min, max], ``cluster_fraction``, ``noise``.
Every image is its own group (an independent field of view).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellbench.datasets.base import ConvertedWriter, DatasetSource
from cellbench.io import read_image, read_labels, write_csv, write_image, write_labels
from cellbench.synthetic import CELL_TYPES, generate_image


class SyntheticSource(DatasetSource):
    kind = "synthetic"

    def download(self, raw_dir: Path) -> None:
        """Generate ``n_images`` images, alternating through ``looks``, seeded by the run seed."""
        n_images, looks, spec = self.options.n_images, self.options.looks, self.options
        seeds = np.random.SeedSequence([self.seed, 0x5E17]).spawn(n_images)
        rows = []
        for i, seq in enumerate(seeds):
            look = looks[i % len(looks)]
            image, labels = generate_image(seq, look, spec)
            image_id = f"synth_{i:04d}"
            write_image(raw_dir / f"{image_id}_img.tif", image)
            write_labels(raw_dir / f"{image_id}_masks.tif", labels)
            rows.append({"id": image_id, "look": look, "cell_type": CELL_TYPES[look]})
        write_csv(raw_dir / "metadata.csv", pd.DataFrame(rows))

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        meta_path = raw_dir / "metadata.csv"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path}: missing. Re-run the download stage for dataset '{self.cfg.name}'."
            )
        meta = pd.read_csv(meta_path, dtype=str)
        for row in meta.itertuples():
            writer.add(
                row.id,
                read_image(raw_dir / f"{row.id}_img.tif"),
                read_labels(raw_dir / f"{row.id}_masks.tif"),
                cell_type=row.cell_type,
                group=row.id,
                annotation="full",
                source=f"synthetic:{row.look}",
            )
