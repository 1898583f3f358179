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


def write_tiny_dataset(root):
    """Four 80 x 96 synthetic nuclei images (2 train, 1 val, 1 test) in the common format.

    Writes ``root/data/converted/synthetic`` and ``root/data/splits/synthetic.csv`` and
    returns their paths (the layout of a real run, so model folders go under
    ``root/results``).
    """
    import pandas as pd
    from cellbench.datasets.base import ConvertedWriter
    from cellbench.datasets.options import SyntheticOptions
    from cellbench.synthetic import generate_image

    converted = root / "data" / "converted" / "synthetic"
    writer = ConvertedWriter(converted)
    spec = SyntheticOptions(height=80, width=96, n_cells=(4, 8), radius=(6, 9))
    rows = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        image, labels = generate_image(i, "fluorescent", spec)
        writer.add(f"img{i}", image, labels, cell_type="nuc", source="synthetic:fluorescent")
        rows.append({"id": f"img{i}", "split": split})
    writer.finish()
    split_csv = root / "data" / "splits" / "synthetic.csv"
    split_csv.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(split_csv, index=False)
    return converted, split_csv
