"""A trained model folder -> a bioimage.io model package; the best model of a dataset.

The package (a zip, bioimage.io model format 0.5, written with
:func:`bioimageio.spec.save_bioimageio_package`) holds the trained **network** of a
``unet`` or ``flow`` model folder, so that bioimage.io consumers (Fiji with
deepImageJ, ilastik, QuPath, ``bioimageio.core`` in Python) can run it:

- weights as **TorchScript** (``torch.jit.trace`` on the CPU; what deepImageJ,
  QuPath and ilastik load) and as a **PyTorch state dict** with its architecture
  file ``cellbench_network.py`` (a ``segmentation_models_pytorch`` U-Net);
- input ``(batch, channel, y, x)``, float32, the image's raw intensities; ``y`` and
  ``x`` at least 128 and multiples of ``2 ** encoder_depth`` (the U-Net halves the
  image ``encoder_depth`` times);
- preprocessing ``scale_range`` per channel and image, percentiles 1 and 99.8,
  ``eps`` 1e-6: cellbench's :func:`cellbench.transforms.normalize_percentile`;
- output ``(batch, channel, y, x)``, float32, the maps cellbench's predict stage
  saves (``unet``: background / interior / boundary probabilities; ``flow``:
  ``flow_y``, ``flow_x`` (unit scale) and the cell probability), with a halo of 32
  pixels that tiled prediction should discard;
- test input / output tensors (``.npy``) from a real image of the dataset, a cover
  image, ``documentation.md`` (what the package does and does not do), the
  licence of the training data where cellbench knows it, citations, and the
  model folder's ``config.json`` / ``thresholds.json`` under ``config.cellbench``.

Not in the package: the **post-processing** that turns maps into instance labels
(seeded watershed, flow tracking) with the tuned thresholds, size normalisation
(the ``diameter`` option), the contrast floor of the input normalisation (the
``contrast_floor`` option) and test-time augmentation; ``cellbench segment`` with the
model folder does those. :func:`best_model` picks the model a dataset's package is
made of (also used to serve the best model).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellbench.errors import ConfigError
from cellbench.io import CellbenchIOError, atomic_path, read_image, read_json

__all__ = [
    "HALO",
    "MIN_TILE",
    "PackageReport",
    "RankedModel",
    "best_model",
    "model_channels",
    "package_model",
    "rank_models",
    "test_package",
]

log = logging.getLogger(__name__)

#: Families whose network can be packaged (a segmentation_models_pytorch U-Net).
PACKAGED_FAMILIES = ("unet", "flow")
#: Pixels at each border of an output tile that tiled prediction should discard.
HALO = 32
#: Smallest input tile (y and x); a multiple of every 2 ** encoder_depth up to 128.
MIN_TILE = 128
#: Largest side of the test tensors (a centre crop of the chosen image).
TEST_TILE = 256
NETWORK_FILE = "cellbench_network.py"

# ----------------------------------------------------------------------------- best model


@dataclass(frozen=True)
class RankedModel:
    """One model's score on a dataset's test split.

    Attributes
    ----------
    model : the params.yaml model key.
    metric : ``"mean_ap"`` (per-image mean of the mean AP over IoU thresholds) or
        ``"seg"`` (CTC SEG, pooled over reference objects), the same for every model
        of one ranking.
    score : the value (higher is better).
    summary : the ``summary.json`` it was read from.
    model_dir : ``results/models/{dataset}/{model}``.
    """

    model: str
    metric: str
    score: float
    summary: Path
    model_dir: Path


def _score(summary: dict[str, Any], metric: str) -> float | None:
    if metric == "mean_ap":
        value = summary.get("per_image_mean", {}).get("mean_ap")
    else:
        value = summary.get("pooled", {}).get("seg")
        if value is None:
            value = summary.get("per_image_mean", {}).get("seg")
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _packageable(model_dir: Path) -> bool:
    """Whether the model folder holds a network a package can describe (PACKAGED_FAMILIES)."""
    config = model_dir / "config.json"
    return config.is_file() and str(read_json(config).get("family")) in PACKAGED_FAMILIES


def rank_models(
    results_dir: Path, dataset: str, models: Sequence[str], *, network_only: bool = False
) -> list[RankedModel]:
    """Rank the models of a dataset by their test score, best first.

    Parameters
    ----------
    results_dir : pathlib.Path
        The results root (``results``): reads
        ``scores/{dataset}/{model}/summary.json`` and, with ``network_only``,
        ``models/{dataset}/{model}/config.json``.
    dataset : str
        The dataset key.
    models : sequence of str
        The candidates (e.g. params.yaml's ``run.models``); ties keep this order.
    network_only : bool
        Keep only models whose network a package can hold (:data:`PACKAGED_FAMILIES`);
        ``classical`` has none, and the other families' outputs are not covered.

    Returns
    -------
    list of RankedModel
        Scored by ``per_image_mean.mean_ap`` when every candidate has it, else by
        CTC SEG (datasets with partial annotation have no AP).

    Raises
    ------
    CellbenchIOError
        A ``summary.json`` is missing or broken, or no metric is available for
        every candidate; the message names the file and the stage to run.
    ConfigError
        No candidate is left (no models, or none with a network).
    """
    results_dir = Path(results_dir)
    candidates = []
    for model in models:
        model_dir = results_dir / "models" / dataset / model
        if network_only and not _packageable(model_dir):
            continue
        path = results_dir / "scores" / dataset / model / "summary.json"
        if not path.is_file():
            raise CellbenchIOError(
                f"{path}: missing, so model '{model}' cannot be compared on '{dataset}'. Run "
                f"the score stage first (snakemake results/scores/{dataset}/{model})."
            )
        candidates.append((model, path, read_json(path), model_dir))
    if not candidates:
        what = "with a trained network " if network_only else ""
        raise ConfigError(
            f"no model {what}to choose from for dataset '{dataset}' (candidates: "
            f"{', '.join(models) or 'none'}). Add a unet or flow model to run.models in "
            "params.yaml."
        )
    for metric in ("mean_ap", "seg"):
        scores = [_score(summary, metric) for _, _, summary, _ in candidates]
        if all(s is not None for s in scores):
            ranked = [
                RankedModel(model, metric, float(score), path, model_dir)
                for (model, path, _, model_dir), score in zip(candidates, scores, strict=True)
            ]
            order = sorted(range(len(ranked)), key=lambda k: (-ranked[k].score, k))
            return [ranked[k] for k in order]
    raise CellbenchIOError(
        f"the scores of dataset '{dataset}' ({', '.join(str(c[1]) for c in candidates)}) do not "
        "all have a mean AP or a CTC SEG; re-run the score stage for these models."
    )


def best_model(
    results_dir: Path, dataset: str, models: Sequence[str], *, network_only: bool = False
) -> RankedModel:
    """The best model of a dataset (first of :func:`rank_models`; same parameters)."""
    return rank_models(results_dir, dataset, models, network_only=network_only)[0]


# ----------------------------------------------------------------------------- inputs


def model_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A stored image -> the ``(channels, H, W)`` float32 planes the network reads, unnormalised.

    :func:`cellbench.transforms.to_planes`: the channel handling of
    :func:`cellbench.transforms.to_model_input` without its percentile normalisation
    (which the package's preprocessing does).
    """
    from cellbench.transforms import to_planes

    return to_planes(image, channels)


def _test_crop(planes: np.ndarray, step: int) -> np.ndarray:
    """Centre crop (reflect-pad when small) to sides in ``[MIN_TILE, TEST_TILE]``, multiples of step."""
    out = planes
    for axis in (1, 2):
        size = out.shape[axis]
        target = min(TEST_TILE, max(MIN_TILE, size // step * step))
        if size < target:
            pad = [(0, 0)] * 3
            pad[axis] = (0, target - size)
            out = np.pad(out, pad, mode="reflect" if size > target - size else "symmetric")
        start = (out.shape[axis] - target) // 2
        out = np.take(out, np.arange(start, start + target), axis=axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def _pick_image(converted: Path, image_id: str | None, split_csv: Path | None) -> str:
    from cellbench.datasets.base import read_index

    index = read_index(converted)
    ids = list(index["id"])
    if image_id is not None:
        if image_id not in ids:
            raise CellbenchIOError(
                f"{converted / 'index.csv'}: no image '{image_id}' (--image-id); it lists "
                f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}."
            )
        return image_id
    if split_csv is not None and Path(split_csv).is_file():
        split = pd.read_csv(split_csv, dtype={"id": str}, keep_default_na=False)
        test = [i for i in split.loc[split["split"] == "test", "id"] if i in ids]
        if test:
            return test[0]
    if not ids:
        raise CellbenchIOError(f"{converted / 'index.csv'}: lists no image; re-run convert.")
    return ids[0]


# ----------------------------------------------------------------------------- licences

_DEFAULT_LICENSE = "CC-BY-4.0"

_FAMILY_CITE = {
    "unet": (
        "Ronneberger, Fischer and Brox (2015) U-Net: convolutional networks for biomedical "
        "image segmentation. MICCAI 2015",
        "10.1007/978-3-319-24574-4_28",
    ),
    "flow": (
        "Stringer, Wang, Michaelos and Pachitariu (2021) Cellpose: a generalist algorithm "
        "for cellular segmentation. Nature Methods 18, 100-106",
        "10.1038/s41592-020-01018-x",
    ),
}


def _training_sources(converted: Path) -> list[str]:
    from cellbench.datasets.base import read_index

    index = read_index(converted)
    return sorted({str(s) for s in index.get("source", pd.Series(dtype=str)) if str(s)})


def _licence_and_citations(sources: list[str]) -> tuple[str, str, list[tuple[str, str | None]]]:
    """The package licence, a note on how it was chosen, and the data's citations."""
    from cellbench.datasets.registry import kind_of_source

    licences, cites = set(), []
    unknown = []
    for source in sources:
        entry = kind_of_source(source)
        if entry is None or entry.spdx is None:
            unknown.append(source)
        else:
            licences.add(entry.spdx)
        # bioimage.io cites need a DOI or URL: a kind without one (synthetic) is not cited
        if entry is not None and entry.doi and (entry.citation, entry.doi) not in cites:
            cites.append((entry.citation, entry.doi))
    if len(licences) == 1 and not unknown:
        licence = licences.pop()
        return (
            licence,
            f"{licence}: the licence of the training data ({', '.join(sources)}).",
            cites,
        )
    note = (
        f"{_DEFAULT_LICENSE}: the bioimage.io default, because cellbench does not know one "
        f"licence for all the training data ({', '.join(sources) or 'no source recorded'}). "
        "Check the data's terms (the Cell Tracking Challenge's conditions of use, for example) "
        "before sharing, and pass --license to set another."
    )
    return _DEFAULT_LICENSE, note, cites


# ----------------------------------------------------------------------------- the network

_NETWORK_SOURCE = '''\
"""The network of a cellbench model, for bioimage.io (pytorch_state_dict architecture).

A segmentation_models_pytorch U-Net followed by cellbench's output activation:
(B, C, H, W) -> (B, 3, H, W), H and W multiples of 2 ** encoder_depth.
activation "softmax" (family unet): background / interior / boundary probabilities.
activation "flow" (family flow): flow_y / flow_scale, flow_x / flow_scale,
sigmoid(cell probability logit).
"""

import segmentation_models_pytorch as smp
import torch


class CellbenchNetwork(torch.nn.Module):
    def __init__(self, activation, flow_scale=5.0, **unet_kwargs):
        super().__init__()
        if activation not in ("softmax", "flow"):
            raise ValueError(f"activation must be 'softmax' or 'flow', got {activation!r}")
        self.activation = activation
        self.flow_scale = float(flow_scale)
        self.net = smp.Unet(**unet_kwargs)

    def forward(self, x):
        y = self.net(x)
        if self.activation == "softmax":
            return torch.softmax(y, dim=1)
        return torch.cat([y[:, :2] / self.flow_scale, torch.sigmoid(y[:, 2:3])], dim=1)
'''


def _network_class(folder: Path):
    """Import ``CellbenchNetwork`` from the architecture file written into ``folder``."""
    path = folder / NETWORK_FILE
    path.write_text(_NETWORK_SOURCE)
    spec = importlib.util.spec_from_file_location(f"_cellbench_network_{id(folder)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CellbenchNetwork


def _architecture_kwargs(family) -> dict[str, Any]:
    """``CellbenchNetwork`` kwargs rebuilding the family's network (see ``build_smp_unet``)."""
    from cellbench.targets import FLOW_SCALE

    options = family.options
    depth = int(options.encoder_depth)
    return {
        "activation": "softmax" if family.family == "unet" else "flow",
        "flow_scale": float(FLOW_SCALE),
        "encoder_name": str(options.encoder),
        "encoder_weights": None,
        "encoder_depth": depth,
        "decoder_channels": [int(c) for c in options.decoder_channels[:depth]],
        "decoder_attention_type": None if options.attention == "none" else str(options.attention),
        "in_channels": int(family.in_channels),
        "classes": 3,
    }


# ----------------------------------------------------------------------------- package


@dataclass
class PackageReport:
    """What :func:`package_model` wrote and what the bioimage.io test found.

    Attributes
    ----------
    path : the zip.
    model_dir : the packaged model folder.
    image_id : the image the test tensors come from.
    weight_formats : packaged weight formats.
    status : bioimage.io validation status (``"passed"``, ``"valid-format"``,
        ``"failed"``), or ``"not tested"``.
    checks : ``(name, status)`` of every check the test ran.
    """

    path: Path
    model_dir: Path
    image_id: str
    weight_formats: list[str]
    status: str
    checks: list[tuple[str, str]]

    def summary(self) -> str:
        failed = [name for name, status in self.checks if status == "failed"]
        text = (
            f"{self.path}: bioimage.io model package of {self.model_dir} "
            f"({', '.join(self.weight_formats)}; test image '{self.image_id}'); "
            f"bioimage.io test: {self.status}, {len(self.checks)} checks"
        )
        return text + (f", failed: {'; '.join(failed)}" if failed else "")


def _cover(image: np.ndarray, maps: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the normalised input (grey) next to the output maps as RGB."""
    from PIL import Image

    grey = np.clip(image[0], 0.0, 1.0)
    if maps.min() < 0:  # flows in [-1, 1]
        rgb = np.stack([(maps[0] + 1) / 2, (maps[1] + 1) / 2, maps[2]], axis=-1)
    else:
        rgb = np.moveaxis(maps[:3], 0, -1)
    left = np.repeat(grey[..., None], 3, axis=-1)
    both = np.concatenate([left, np.clip(rgb, 0.0, 1.0)], axis=1)
    Image.fromarray((both * 255).round().astype(np.uint8)).save(path)


@dataclass(frozen=True)
class _PackageFacts:
    """What the documentation and the description of one package both state.

    Attributes
    ----------
    name : the package name.
    config, thresholds : the model folder's config.json and thresholds.json.
    kwargs : the network's architecture arguments (see :func:`_architecture_kwargs`).
    channels, outputs : input channel and output map names.
    step : tile sizes are multiples of this (``2 ** encoder_depth``).
    """

    name: str
    config: dict[str, Any]
    thresholds: dict[str, Any]
    kwargs: dict[str, Any]
    channels: list[str]
    outputs: list[str]
    step: int


def _documentation(
    facts: _PackageFacts,
    *,
    licence_note: str,
    image_id: str,
    scores: RankedModel | None,
    diameter: float,
) -> str:
    name, config, thresholds, kwargs = facts.name, facts.config, facts.thresholds, facts.kwargs
    channels, outputs, step = facts.channels, facts.outputs, facts.step
    family = config["family"]
    maps = {
        "unet": "softmax probabilities of background, cell interior and cell boundary",
        "flow": "Cellpose-style flows towards each cell's centre (y, x; unit length) and "
        "the cell probability",
    }[family]
    post = {
        "unet": "seeded watershed: seeds = interior probability > seed_threshold, mask = "
        "1 - background probability > mask_threshold, pinched seeds split at "
        "distance-transform maxima of depth split_h",
        "flow": "flow tracking (Cellpose's dynamics): pixels with cell probability > "
        "cellprob_threshold follow the flows to their sinks; masks whose flows disagree "
        "with the predicted flows by more than flow_threshold are dropped",
    }[family]
    lines = [
        f"# {name}",
        "",
        f"A `{family}` network trained by cellbench on the dataset "
        f"`{config.get('dataset')}` (training images: {config.get('n_train_images')}, "
        f"epochs: {config.get('epochs_run')}). It predicts {maps}.",
        "",
        "## Input",
        "",
        f"- Axes `batch, channel, y, x`; channels: {', '.join(channels)}; float32 raw "
        "intensities (any range).",
        f"- `y` and `x`: at least {MIN_TILE} and a multiple of {step} (the U-Net halves "
        f"the image {kwargs['encoder_depth']} times). Pad larger images, or predict in "
        f"tiles and drop {HALO} pixels at each tile border (the output halo).",
        "- Colour images: the model reads "
        + (
            "one channel: convert RGB to grey as the unweighted channel mean (Fiji's "
            "Image > Type > 8-bit does, unless 'Weighted RGB conversions' is ticked in "
            "Edit > Options > Conversions) and drop an alpha channel."
            if len(channels) == 1
            else f"{len(channels)} channels in the stored order (an alpha channel dropped)."
        ),
        "- Preprocessing (in the package): per channel and image, the 1st and 99.8th "
        "percentiles are mapped to 0 and 1 (`scale_range`, eps 1e-6), as cellbench does. "
        "Compute them over the whole image, not per tile, to get cellbench's result.",
        "",
        "## Output",
        "",
        f"Axes `batch, channel, y, x`, same `y, x` as the input; channels: {', '.join(outputs)}.",
        "",
        "## Not in this package",
        "",
        f"- The post-processing that turns the maps into instance labels: {post}. The "
        "thresholds tuned on the validation images: "
        + ", ".join(f"`{k}` = {v}" for k, v in thresholds.get("selected", {}).items())
        + ". `cellbench segment --model-dir <model folder> <images>` runs the whole "
        "pipeline.",
        "- Test-time augmentation and tiling as cellbench does them.",
    ]
    floor = float((config.get("normalisation") or {}).get("min_contrast") or 0.0)
    if floor > 0:
        lines.append(
            f"- The contrast floor: cellbench never stretches an image's percentile range "
            f"beyond {floor:g} times its noise standard deviation (the median absolute "
            "deviation of horizontal neighbour differences x 1.4826 / sqrt 2), so empty "
            "fields stay dim and get no objects; `scale_range` has no such floor, so the "
            "package stretches the noise of an empty field to the full range."
        )
    if diameter > 0:
        lines.append(
            f"- Size normalisation: the network was trained on images rescaled so objects "
            f"measure {diameter:g} pixels across; rescale your images the same way first."
        )
    else:
        lines.append(
            "- Size normalisation: none was used; the images must have the training data's "
            f"pixel size (median object diameter in training: "
            f"{config.get('train_diameters', {}).get('median', float('nan')):.1f} px)."
        )
    lines += ["", "## Validation", ""]
    if scores is not None:
        lines.append(
            f"Chosen as the best model of `{config.get('dataset')}` by test-split "
            f"{scores.metric} = {scores.score:.4f} ({scores.summary})."
        )
    lines += [
        f"The test tensors are a centre crop of image `{image_id}` of the dataset; the "
        "expected output was computed with cellbench's own preprocessing and network.",
        "",
        "## Licence",
        "",
        licence_note,
        "",
    ]
    return "\n".join(lines)


def package_model(
    model_dir: Path,
    converted: Path,
    out: Path,
    *,
    split_csv: Path | None = None,
    image_id: str | None = None,
    authors: Sequence[str] = (),
    license: str | None = None,
    ranked: RankedModel | None = None,
    test: bool = True,
) -> PackageReport:
    """Write a model folder's network as a bioimage.io model package (zip), and test it.

    Parameters
    ----------
    model_dir : pathlib.Path
        A ``unet`` or ``flow`` model folder (``results/models/{dataset}/{model}``).
    converted : pathlib.Path
        The dataset it was trained on (``data/converted/{dataset}``): the test image,
        the licence and the citations come from it.
    out : pathlib.Path
        The zip to write; refused when it exists. Written atomically, and only when
        the bioimage.io test passes (with ``test``).
    split_csv : pathlib.Path, optional
        The dataset's split: the test image is its first test image.
    image_id : str, optional
        The test image (default: the split's first test image, else the first image).
    authors : sequence of str
        Author names (default: ``cellbench``; set real names before sharing).
    license : str, optional
        SPDX licence id overriding the one derived from the training data.
    ranked : RankedModel, optional
        The model's ranking (from :func:`best_model`), recorded in the documentation.
    test : bool
        Run ``bioimageio.core``'s model test (every weight format reproduces the test
        output; inference at several tile sizes and batch sizes).

    Returns
    -------
    PackageReport

    Raises
    ------
    ConfigError
        The folder is not a ``unet`` / ``flow`` model, bioimage.io packages cannot be
        written (``bioimageio.spec`` / ``bioimageio.core`` not installed), or the
        packaged network does not reproduce cellbench's maps.
    CellbenchIOError
        ``out`` exists, or the test failed (the failing checks are named).
    """
    import torch

    from cellbench.modelfolder import load_model
    from cellbench.transforms import normalize_percentile

    out = Path(out)
    if out.exists() or out.is_symlink():
        raise CellbenchIOError(
            f"{out}: exists; a package is never replaced. Nothing was written. Choose another "
            f"--out, or delete the old package first (rm {out})."
        )
    if out.suffix != ".zip":
        raise CellbenchIOError(f"{out}: a bioimage.io package is a .zip file; end --out in .zip")
    model_dir = Path(model_dir)
    model = load_model(model_dir, device="cpu")
    family = model.family
    if family.family not in PACKAGED_FAMILIES:
        raise ConfigError(
            f"{model_dir}: a '{family.family}' model "
            + (
                "has no network to package"
                if not family.trainable
                else "cannot be packaged (its outputs are not among those the package's "
                "post-processing description covers)"
            )
            + f"; bioimage.io packages are made of {' or '.join(PACKAGED_FAMILIES)} models. "
            "Pick one of those."
        )
    spec = _import_spec()
    config = dict(model.config)
    thresholds = read_json(model_dir / "thresholds.json")
    kwargs = _architecture_kwargs(family)
    step = 2 ** kwargs["encoder_depth"]
    converted = Path(converted)
    image_id = _pick_image(converted, image_id, split_csv)
    planes = model_channels(
        read_image(converted / "images" / f"{image_id}.tif"), family.in_channels
    )
    test_input = _test_crop(planes, step)[None]  # (1, C, h, w)
    sources = _training_sources(converted)
    licence, licence_note, data_cites = _licence_and_citations(sources)
    if license:
        licence, licence_note = license, f"{license}: set by the user (--license)."

    with tempfile.TemporaryDirectory(prefix="cellbench-bioimageio-") as tmp_name:
        tmp = Path(tmp_name)
        network_class = _network_class(tmp)
        wrapped = network_class(**kwargs).eval()
        try:
            wrapped.net.load_state_dict(model.net.state_dict(), strict=True)
        except RuntimeError as exc:
            raise ConfigError(
                f"{model_dir}: the packaged architecture does not match the trained network "
                f"({str(exc).splitlines()[0]}); cellbench's build_smp_unet and "
                "export/bioimageio.py disagree. Please report this."
            ) from None
        normalised = normalize_percentile(test_input[0])[None]
        with torch.no_grad():
            x = torch.from_numpy(normalised)
            test_output = wrapped(x).numpy()
            reference = family.activate(model.net(x)).numpy()
        if not np.allclose(test_output, reference, atol=1e-5):
            raise ConfigError(
                f"{model_dir}: the packaged network's output differs from cellbench's maps "
                f"(max difference {np.abs(test_output - reference).max():.3g}); the activation "
                "in export/bioimageio.py is out of date. Please report this."
            )
        torch.save(wrapped.state_dict(), tmp / "weights.pt")
        with torch.no_grad(), warnings.catch_warnings():
            # TorchScript is what deepImageJ, QuPath and ilastik load, deprecated or not
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(wrapped, x, check_trace=False)  # the test reruns it
        traced.save(str(tmp / "weights_torchscript.pt"))
        np.save(tmp / "test_input.npy", test_input.astype(np.float32))
        np.save(tmp / "test_output.npy", test_output.astype(np.float32))
        _cover(normalised[0], test_output[0], tmp / "cover.png")
        name = f"cellbench {config.get('model', family.family)} {config.get('dataset', '')}".strip()
        name = "".join(c if c.isalnum() or c in "_+- ()" else "-" for c in name)[:64]
        channels = [f"channel{k}" for k in range(family.in_channels)]
        if family.in_channels == 1:
            channels = ["intensity"]
        facts = _PackageFacts(
            name, config, thresholds, kwargs, channels, list(family.map_names), step
        )
        (tmp / "documentation.md").write_text(
            _documentation(
                facts,
                licence_note=licence_note,
                image_id=image_id,
                scores=ranked,
                diameter=float(family.options.diameter),
            )
        )
        (tmp / "environment.yaml").write_text(_environment())
        descr = _describe(
            spec,
            tmp,
            facts,
            licence=licence,
            cites=[_FAMILY_CITE[family.family], *data_cites],
            authors=list(authors) or ["cellbench"],
            ranked=ranked,
        )
        built = tmp / "package.zip"
        spec.save_bioimageio_package(descr, output_path=built)
        status, checks = ("not tested", [])
        if test:
            status, checks = test_package(built)
            if status not in ("passed", "valid-format"):
                failed = [f"{n}: {s}" for n, s in checks if s == "failed"]
                raise CellbenchIOError(
                    f"{out}: not written, the bioimage.io test failed ({'; '.join(failed[:5])}). "
                    "Run `bioimageio test` on a package written with --no-test for the details."
                )
        with atomic_path(out) as target:
            shutil.copyfile(built, target)
    return PackageReport(
        out, model_dir, image_id, ["pytorch_state_dict", "torchscript"], status, checks
    )


def _environment() -> str:
    import torch

    torch_version = torch.__version__.split("+")[0]
    return (
        "name: cellbench-network\n"
        "channels: [conda-forge, nodefaults]\n"
        "dependencies:\n"
        "  - python>=3.10\n"
        f"  - pytorch>={torch_version}\n"
        "  - pip\n"
        "  - pip:\n"
        f"    - segmentation-models-pytorch=={_version('segmentation_models_pytorch')}\n"
    )


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module.replace("_", "-"))


def _import_spec():
    """``bioimageio.spec``, after checking it can write packages in this environment."""
    from importlib.metadata import version

    from packaging.version import Version

    try:
        import bioimageio.core  # noqa: F401  (tested right after writing)
        import bioimageio.spec as spec
    except ImportError as exc:
        raise ConfigError(
            "bioimage.io packages need bioimageio.spec and bioimageio.core: "
            "pip install 'cellbench[bioimageio]'"
        ) from exc
    spec_version, pydantic_version = (
        Version(version("bioimageio.spec")),
        Version(version("pydantic")),
    )
    if spec_version < Version("0.5.14") and pydantic_version >= Version("2.14"):
        # bioimageio.spec < 0.5.14 calls a pydantic serializer handler with two arguments,
        # which pydantic >= 2.14 refuses ("'index_key' is expected to be an integer or a
        # string"); bioimageio.core 0.11 pins bioimageio.spec 0.5.12.
        raise ConfigError(
            f"bioimageio.spec {spec_version} cannot write packages with pydantic "
            f"{pydantic_version} (fixed in bioimageio.spec 0.5.14). Install an older pydantic: "
            "pip install 'pydantic>=2.10,<2.14'"
        )
    return spec


def _describe(
    spec,
    root: Path,
    facts: _PackageFacts,
    *,
    licence: str,
    cites: list[tuple[str, str | None]],
    authors: list[str],
    ranked: RankedModel | None,
):
    """The bioimage.io model description (format 0.5) of the files in ``root``."""
    name, config, thresholds, kwargs = facts.name, facts.config, facts.thresholds, facts.kwargs
    channels, outputs, step = facts.channels, facts.outputs, facts.step
    import torch
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5

    family = config["family"]
    torch_version = torch.__version__.split("+")[0]
    with ValidationContext(root=root, perform_io_checks=True):
        input_axes = [
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channels]),
            v0_5.SpaceInputAxis(
                id=v0_5.AxisId("y"), size=v0_5.ParameterizedSize(min=MIN_TILE, step=step)
            ),
            v0_5.SpaceInputAxis(
                id=v0_5.AxisId("x"), size=v0_5.ParameterizedSize(min=MIN_TILE, step=step)
            ),
        ]
        input_descr = v0_5.InputTensorDescr(
            id=v0_5.TensorId("raw"),
            description="image, raw intensities (float32)",
            axes=input_axes,
            test_tensor=v0_5.FileDescr(source=root / "test_input.npy"),
            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[
                v0_5.ScaleRangeDescr(
                    kwargs=v0_5.ScaleRangeKwargs(
                        axes=[v0_5.AxisId("y"), v0_5.AxisId("x")],
                        min_percentile=1.0,
                        max_percentile=99.8,
                        eps=1e-6,
                    )
                )
            ],
        )
        output_axes = [
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in outputs]),
            *(
                v0_5.SpaceOutputAxisWithHalo(
                    id=v0_5.AxisId(a),
                    size=v0_5.SizeReference(tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(a)),
                    halo=HALO,
                )
                for a in ("y", "x")
            ),
        ]
        described = {
            "unet": "probabilities of background, cell interior and cell boundary (sum 1)",
            "flow": "flow_y and flow_x towards each cell's centre (unit length) and the cell "
            "probability",
        }[family]
        output_descr = v0_5.OutputTensorDescr(
            id=v0_5.TensorId("maps"),
            description=described,
            axes=output_axes,
            test_tensor=v0_5.FileDescr(source=root / "test_output.npy"),
            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        )
        architecture = v0_5.ArchitectureFromFileDescr(
            source=root / NETWORK_FILE, callable=v0_5.Identifier("CellbenchNetwork"), kwargs=kwargs
        )
        weights = v0_5.WeightsDescr(
            pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                source=root / "weights.pt",
                architecture=architecture,
                pytorch_version=v0_5.Version(torch_version),
                dependencies=v0_5.FileDescr(source=root / "environment.yaml"),
            ),
            torchscript=v0_5.TorchscriptWeightsDescr(
                source=root / "weights_torchscript.pt",
                pytorch_version=v0_5.Version(torch_version),
                parent="pytorch_state_dict",
            ),
        )
        options = config.get("options", {})
        training = v0_5.TrainingDetails(
            training_epochs=config.get("epochs_run"),
            training_batch_size=options.get("batch_size"),
            initial_learning_rate=options.get("learning_rate"),
            optimizer="AdamW",
            optimizer_kwargs={"weight_decay": options.get("weight_decay")},
            learning_rate_schedule="one-cycle (torch OneCycleLR)",
            loss_function={
                "unet": "class-weighted cross-entropy + soft Dice",
                "flow": "MSE(flows) / 2 + BCE(cell probability)",
            }[family],
            training_duration=config.get("train_seconds"),
        )
        cellbench_config = {
            "model": config.get("model"),
            "family": family,
            "dataset": config.get("dataset"),
            "options": options,
            "thresholds": thresholds.get("selected"),
            "train_diameters": config.get("train_diameters"),
            "cellbench_version": config.get("cellbench_version"),
            "params_sha256": config.get("params_sha256"),
        }
        if ranked is not None:
            cellbench_config["test_score"] = {"metric": ranked.metric, "value": ranked.score}
        return v0_5.ModelDescr(
            name=name,
            description=(
                f"cellbench {family} network for 2-D cell / nucleus instance segmentation, "
                f"trained on {config.get('dataset')}; outputs maps, not labels "
                "(post-processing: see the documentation)."
            )[:1024],
            authors=[v0_5.Author(name=a) for a in authors],
            cite=[
                v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) if doi else v0_5.CiteEntry(text=text)
                for text, doi in cites
            ],
            license=licence,
            documentation=v0_5.FileDescr(source=root / "documentation.md"),
            covers=[v0_5.FileDescr(source=root / "cover.png")],
            tags=[
                "cellbench",
                "instance-segmentation",
                "2d",
                "pytorch",
                "unet",
                "cells",
                "nuclei",
                *(["cellpose-flows"] if family == "flow" else []),
            ],
            inputs=[input_descr],
            outputs=[output_descr],
            weights=weights,
            config=v0_5.Config(
                bioimageio=v0_5.BioimageioConfig(training=training),
                cellbench=json.loads(json.dumps(cellbench_config, default=str)),
            ),
        )


def test_package(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """Run ``bioimageio.core``'s model test on a package.

    It loads the package, validates the description, recreates the test output
    from the test input with every weight format, and runs inference at several
    tile and batch sizes.

    Returns
    -------
    status : ``"passed"``, ``"valid-format"`` or ``"failed"``.
    checks : ``(name, status)`` of every check.
    """
    from bioimageio.core import test_model

    with warnings.catch_warnings():  # bioimageio.core loads TorchScript with torch.jit.load
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        summary = test_model(str(path))
    checks = [(d.name, d.status) for d in summary.details]
    return summary.status, checks
