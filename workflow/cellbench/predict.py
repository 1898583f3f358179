"""The predict and postprocess stages: a model folder + test images -> maps -> labels.

Maps are saved as float32 TIFF ``(M, H, W)`` (axes ``CYX``, opens in Fiji and
napari) under ``results/predictions/{dataset}/{model}/{id}.tif``; the
post-processed labels as uint16/uint32 TIFF under ``results/masks/...``.
Images larger than ``tile_size`` are predicted in overlapping tiles whose
outputs are blended with a smooth window, so any image size fits in memory.
Segmenting new images (the ``segment`` command) is :mod:`cellbench.segment`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellbench.inference import predict_image
from cellbench.io import atomic_dir, read_image, write_csv, write_labels
from cellbench.modelfolder import load_model
from cellbench.transforms import to_model_input

#: written by predict next to the maps: the scale each test image was predicted at
DIAMETERS_CSV = "diameters.csv"
DIAMETER_COLUMNS = ("id", "factor", "estimated_diameter", "passes", "given")

__all__ = ["DIAMETERS_CSV", "postprocess_dir", "predict_dir"]


def _test_ids(split_csv: Path, which: str = "test") -> list[str]:
    split = pd.read_csv(split_csv, dtype={"id": str}, keep_default_na=False)
    return list(split.loc[split["split"] == which, "id"])


def predict_dir(
    model_dir: Path,
    converted: Path,
    split_csv: Path,
    out_dir: Path,
    *,
    device: str = "auto",
    tile_size: int = 1024,
    image_diameter: float | None = None,
) -> int:
    """Predict maps for every test image of a dataset; returns the number of images.

    Besides one maps TIFF per image, writes ``diameters.csv`` (id, factor,
    estimated_diameter, passes, given): the scale each image was predicted at, for
    families with size normalisation (the ``diameter`` option); ``image_diameter`` (px)
    overrides the estimate for every image.
    """
    import tifffile
    from tqdm.auto import tqdm

    model = load_model(model_dir, device)
    ids = _test_ids(split_csv)
    rows = []
    with atomic_dir(out_dir) as tmp:
        for image_id in tqdm(ids, desc="predict", mininterval=2.0):
            image = to_model_input(
                read_image(converted / "images" / f"{image_id}.tif"), model.family.in_channels
            )
            maps, scale = predict_image(
                model.family,
                model.net,
                image,
                model.device,
                thresholds=model.thresholds,
                image_diameter=image_diameter,
                tile_size=tile_size,
            )
            rows.append(
                {
                    "id": image_id,
                    "factor": scale.factor,
                    "estimated_diameter": scale.diameter,
                    "passes": scale.passes,
                    "given": scale.given,
                }
            )
            tifffile.imwrite(
                tmp / f"{image_id}.tif",
                maps.astype(np.float32),
                compression="zlib",
                photometric="minisblack",
                metadata={"axes": "CYX", "Labels": list(model.family.map_names)},
            )
        write_csv(tmp / DIAMETERS_CSV, pd.DataFrame(rows, columns=list(DIAMETER_COLUMNS)))
    return len(ids)


def postprocess_dir(model_dir: Path, predictions: Path, out_dir: Path) -> int:
    """Turn every saved map of a model into instance labels with its tuned thresholds."""
    import tifffile

    model = load_model(model_dir, device="cpu")
    files = sorted(Path(predictions).glob("*.tif"))
    with atomic_dir(out_dir) as tmp:
        scales = Path(predictions) / DIAMETERS_CSV
        if scales.is_file():  # the scale of each image travels with its mask, for scoring
            write_csv(tmp / DIAMETERS_CSV, pd.read_csv(scales, dtype={"id": str}))
        for f in files:
            maps = tifffile.imread(f)
            if maps.ndim == 2:
                maps = maps[None]
            write_labels(tmp / f.name, model.family.postprocess(maps, model.thresholds))
    return len(files)
