"""The predict and postprocess stages: a model folder + test images -> maps -> labels.

Maps are saved as float32 TIFF ``(M, H, W)`` (axes ``CYX``, opens in Fiji and
napari) under ``results/predictions/{dataset}/{model}/{id}.tif``; the
post-processed labels as uint16/uint32 TIFF under ``results/masks/...``.
Images larger than ``tile_size`` are predicted in overlapping tiles whose
outputs are cut at the middle of each overlap (no seams), so any image size fits in memory.
Segmenting new images (the ``segment`` command) is :mod:`cellbench.segment`.

Both stages also record their cost for the report: ``timings.csv`` (per image: id,
height, width, seconds; in the predictions folder the network time including
test-time augmentation and size estimation, in the masks folder the post-processing
time) and ``resources.json`` (the device, the process's peak resident memory and,
on a GPU, the peak memory torch allocated there).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellbench.inference import predict_image
from cellbench.io import atomic_dir, read_image, write_csv, write_json, write_labels
from cellbench.modelfolder import load_model
from cellbench.skip import read_skipped, write_skipped
from cellbench.transforms import to_model_input

#: written by predict next to the maps: the scale each test image was predicted at
DIAMETERS_CSV = "diameters.csv"
DIAMETER_COLUMNS = ("id", "factor", "estimated_diameter", "regressed_diameter", "passes", "given")
#: written by predict (network seconds) and by postprocess (post-processing seconds)
TIMINGS_CSV = "timings.csv"
TIMING_COLUMNS = ("id", "height", "width", "seconds")
#: written by predict and by postprocess: device and peak memory of the stage
RESOURCES_JSON = "resources.json"

__all__ = [
    "DIAMETERS_CSV",
    "RESOURCES_JSON",
    "TIMINGS_CSV",
    "peak_memory",
    "postprocess_dir",
    "predict_dir",
]


def peak_memory(device: Any = None) -> dict[str, Any]:
    """Peak memory of this process so far: resident set size, and GPU memory on CUDA.

    Parameters
    ----------
    device : torch.device or str, optional
        The device the stage ran on; ``cuda_max_memory_allocated_bytes`` is read only
        when it is a CUDA device (or CUDA was initialised by the stage).

    Returns
    -------
    dict
        ``device`` (str), ``peak_rss_bytes`` (``getrusage`` maxrss; None where the
        platform has no ``resource`` module) and ``cuda_max_memory_allocated_bytes``
        (None off the GPU).
    """
    rss = None
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024  # Linux: KiB
    except ImportError:  # Windows
        pass
    cuda = None
    torch = sys.modules.get("torch")  # never import torch just to ask
    on_cuda = device is not None and str(device).startswith("cuda")
    if torch is not None and (on_cuda or torch.cuda.is_initialized()):
        cuda = int(torch.cuda.max_memory_allocated())
    return {
        "device": str(device) if device is not None else "cpu",
        "peak_rss_bytes": rss,
        "cuda_max_memory_allocated_bytes": cuda,
    }


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
    estimated_diameter, regressed_diameter (the size model's first estimate), passes,
    given): the scale each image was predicted at, for
    families with size normalisation (the ``diameter`` option); ``image_diameter`` (px)
    overrides the estimate for every image.
    """
    import tifffile
    from tqdm.auto import tqdm

    skipped = read_skipped(model_dir)
    if skipped is not None:  # the model does not apply to this dataset: pass the reason on
        write_skipped(out_dir, skipped)
        return 0
    model = load_model(model_dir, device)
    ids = _test_ids(split_csv)
    windows = None
    if model.family.frames > 1:  # time windows: each test frame with its predecessors
        from cellbench.sequences import load_window_inputs

        split = pd.read_csv(split_csv, dtype={"id": str}, keep_default_na=False)
        assigned = dict(zip(split["id"], split["split"], strict=True))
        windows = load_window_inputs(
            converted,
            ids,
            model.family.in_channels,
            model.family.frames,
            assigned,
            min_contrast=model.min_contrast,
        )
    rows, timings = [], []
    with atomic_dir(out_dir) as tmp:
        # a bar on a terminal only: the rule log gets the one summary line
        bar = tqdm(ids, desc="predict", mininterval=2.0, disable=not sys.stderr.isatty())
        for image_id in bar:
            image = (
                windows.pop(image_id)
                if windows is not None
                else to_model_input(
                    read_image(converted / "images" / f"{image_id}.tif"),
                    model.family.in_channels,
                    model.min_contrast,
                )
            )
            start = time.perf_counter()
            maps, scale = predict_image(
                model.family,
                model.net,
                image,
                model.device,
                image_diameter=image_diameter,
                size_model=model.size_model,
                tile_size=tile_size,
            )
            seconds = time.perf_counter() - start  # maps are numpy: the device is done
            timings.append(_timing(image_id, image.shape[-2:], seconds))
            rows.append(
                {
                    "id": image_id,
                    "factor": scale.factor,
                    "estimated_diameter": scale.diameter,
                    "regressed_diameter": scale.regressed,
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
        write_csv(tmp / TIMINGS_CSV, pd.DataFrame(timings, columns=list(TIMING_COLUMNS)))
        write_json(tmp / RESOURCES_JSON, peak_memory(model.device))
    return len(ids)


def _timing(image_id: str, shape: tuple[int, ...], seconds: float) -> dict[str, Any]:
    return {
        "id": image_id,
        "height": int(shape[0]),
        "width": int(shape[1]),
        "seconds": round(seconds, 6),
    }


def postprocess_dir(model_dir: Path, predictions: Path, out_dir: Path) -> int:
    """Turn every saved map of a model into instance labels with its tuned thresholds."""
    import tifffile

    skipped = read_skipped(model_dir)
    if skipped is not None:
        write_skipped(out_dir, skipped)
        return 0
    model = load_model(model_dir, device="cpu")
    files = sorted(Path(predictions).glob("*.tif"))
    timings = []
    with atomic_dir(out_dir) as tmp:
        scales = Path(predictions) / DIAMETERS_CSV
        if scales.is_file():  # the scale of each image travels with its mask, for scoring
            write_csv(tmp / DIAMETERS_CSV, pd.read_csv(scales, dtype={"id": str}))
        for f in files:
            maps = tifffile.imread(f)
            if maps.ndim == 2:
                maps = maps[None]
            start = time.perf_counter()
            labels = model.family.postprocess(maps, model.thresholds)
            timings.append(_timing(f.stem, maps.shape[-2:], time.perf_counter() - start))
            write_labels(tmp / f.name, labels)
        write_csv(tmp / TIMINGS_CSV, pd.DataFrame(timings, columns=list(TIMING_COLUMNS)))
        write_json(tmp / RESOURCES_JSON, peak_memory(_postprocess_device(model)))
    return len(files)


def _postprocess_device(model) -> str:
    """Where post-processing ran: the family's ``postprocess_device`` option, else the CPU."""
    wanted = str(getattr(model.family.options, "postprocess_device", "cpu") or "cpu")
    if wanted == "auto":
        torch = sys.modules.get("torch")
        return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    return wanted
