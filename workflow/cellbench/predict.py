"""Inference: a trained model folder + images -> raw maps, and maps -> instance labels.

Maps are saved as float32 TIFF ``(M, H, W)`` (axes ``CYX``, opens in Fiji and
napari) under ``results/predictions/{dataset}/{model}/{id}.tif``; the
post-processed labels as uint16/uint32 TIFF under ``results/masks/...``.
Images larger than ``tile_size`` are predicted in overlapping tiles whose
outputs are blended with a smooth window, so any image size fits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellbench.config import ModelConfig
from cellbench.io import atomic_dir, read_image, read_json, write_labels
from cellbench.models import ModelFamily, get_family
from cellbench.transforms import to_model_input

__all__ = [
    "LoadedModel",
    "load_model",
    "pad_to_multiple",
    "postprocess_dir",
    "predict_dir",
    "predict_maps",
    "segment_images",
]


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad ``(C, H, W)`` at the bottom/right to a multiple of ``multiple``.

    Returns the padded array and the original ``(H, W)``.
    """
    _, h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode=mode), (h, w)


def _window(size: int) -> np.ndarray:
    ramp = np.hanning(size + 2)[1:-1].astype(np.float32) + 1e-3
    return np.outer(ramp, ramp)


def predict_maps(
    family: ModelFamily,
    net,
    image: np.ndarray,
    device=None,
    tile_size: int = 1024,
    overlap: int = 64,
) -> np.ndarray:
    """Maps ``(M, H, W)`` float32 for one normalised image ``(C, H, W)``.

    Families without a network compute their maps directly; networks run on
    the whole (padded) image when it fits in ``tile_size``, else tile by tile.
    """
    if not family.trainable:
        return family.image_to_maps(image)
    import torch

    net.eval()
    _, h, w = image.shape
    with torch.no_grad():
        if h <= tile_size and w <= tile_size:
            x, _ = pad_to_multiple(image, 32)
            out = family.activate(net(torch.from_numpy(x[None]).to(device)))
            return out[0, :, :h, :w].float().cpu().numpy()
        tile = tile_size
        step = tile - overlap
        padded, _ = pad_to_multiple(image, 32)
        padded = np.pad(
            padded,
            ((0, 0), (0, max(0, tile - padded.shape[1])), (0, max(0, tile - padded.shape[2]))),
            mode="edge",
        )
        ph, pw = padded.shape[1:]
        acc, norm = None, np.zeros((ph, pw), np.float32)
        win = _window(tile)
        ys = sorted({*range(0, ph - tile, step), ph - tile})
        xs = sorted({*range(0, pw - tile, step), pw - tile})
        for y in ys:
            for x in xs:
                crop = padded[None, :, y : y + tile, x : x + tile]
                res = family.activate(net(torch.from_numpy(np.ascontiguousarray(crop)).to(device)))
                res = res[0].float().cpu().numpy()
                if acc is None:
                    acc = np.zeros((res.shape[0], ph, pw), np.float32)
                acc[:, y : y + tile, x : x + tile] += res * win
                norm[y : y + tile, x : x + tile] += win
        return (acc / norm)[:, :h, :w]


@dataclass
class LoadedModel:
    """A model folder loaded for inference."""

    family: ModelFamily
    net: Any
    config: dict
    thresholds: dict
    device: Any


def load_model(model_dir: Path, device: str = "auto") -> LoadedModel:
    """Load ``config.json``, ``thresholds.json`` and (for networks) ``weights.pt``."""
    import torch

    from cellbench.train import resolve_device

    model_dir = Path(model_dir)
    config = read_json(model_dir / "config.json")
    thresholds = read_json(model_dir / "thresholds.json")["selected"]
    family = get_family(ModelConfig(config["model"], config["family"], config["options"]))
    dev = resolve_device(device)
    net = None
    if family.trainable:
        weights = model_dir / "weights.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing. Re-run the train stage for this model.")
        state = torch.load(weights, map_location=dev, weights_only=True)
        net = family.build_network().to(dev)
        net.load_state_dict(state["state_dict"])
        net.eval()
    return LoadedModel(family, net, config, thresholds, dev)


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
) -> int:
    """Predict maps for every test image of a dataset; returns the number of images."""
    import tifffile
    from tqdm.auto import tqdm

    model = load_model(model_dir, device)
    ids = _test_ids(split_csv)
    with atomic_dir(out_dir) as tmp:
        for image_id in tqdm(ids, desc="predict", mininterval=2.0):
            image = to_model_input(
                read_image(converted / "images" / f"{image_id}.tif"), model.family.in_channels
            )
            maps = predict_maps(model.family, model.net, image, model.device, tile_size)
            tifffile.imwrite(
                tmp / f"{image_id}.tif",
                maps.astype(np.float32),
                compression="zlib",
                photometric="minisblack",
                metadata={"axes": "CYX", "Labels": list(model.family.map_names)},
            )
    return len(ids)


def postprocess_dir(model_dir: Path, predictions: Path, out_dir: Path) -> int:
    """Turn every saved map of a model into instance labels with its tuned thresholds."""
    import tifffile

    model = load_model(model_dir, device="cpu")
    files = sorted(Path(predictions).glob("*.tif"))
    with atomic_dir(out_dir) as tmp:
        for f in files:
            maps = tifffile.imread(f)
            if maps.ndim == 2:
                maps = maps[None]
            write_labels(tmp / f.name, model.family.postprocess(maps, model.thresholds))
    return len(files)


def segment_images(
    model_dir: Path,
    images: list[Path],
    out_dir: Path,
    *,
    device: str = "auto",
    tile_size: int = 1024,
) -> list[Path]:
    """Segment new images with a trained model folder: ``{stem}_masks.tif`` per image."""
    model = load_model(model_dir, device)
    out_dir = Path(out_dir)
    written = []
    for path in images:
        image = to_model_input(read_image(path), model.family.in_channels)
        maps = predict_maps(model.family, model.net, image, model.device, tile_size)
        labels = model.family.postprocess(maps, model.thresholds)
        written.append(write_labels(out_dir / f"{Path(path).stem}_masks.tif", labels))
    return written
