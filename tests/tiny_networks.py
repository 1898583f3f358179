"""The smallest network settings the unit and integration tests train (seconds on a CPU).

Each test adds what it is about: ``{**TINY_NETWORK, "epochs": 4, ...}``.
"""

TINY_NETWORK = {
    "encoder": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [16, 16, 16],
    "epochs": 2,
    "batch_size": 2,
    "patch_size": 64,
    "samples_per_epoch": 4,
}


def write_tiny_dataset(
    converted,
    split_csv,
    *,
    splits=("train", "train", "val", "test"),
    height=80,
    width=96,
    n_cells=(4, 8),
    radius=(6, 9),
    source=None,
):
    """Synthetic nuclei images ``img0``, ``img1``, ... in the common format, one per split entry.

    Writes the converted folder and a split CSV (id, split, group, cell_type: what the
    split stage writes) and returns both paths.
    """
    import pandas as pd
    from cellbench.datasets.base import ConvertedWriter
    from cellbench.datasets.options import SyntheticOptions
    from cellbench.synthetic import generate_image

    writer = ConvertedWriter(converted)
    spec = SyntheticOptions(height=height, width=width, n_cells=n_cells, radius=radius)
    rows = []
    for i, split in enumerate(splits):
        image, labels = generate_image(i, "fluorescent", spec)
        writer.add(f"img{i}", image, labels, cell_type="nuc", source=source)
        rows.append({"id": f"img{i}", "split": split, "group": f"img{i}", "cell_type": "nuc"})
    writer.finish()
    split_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(split_csv, index=False)
    return converted, split_csv
