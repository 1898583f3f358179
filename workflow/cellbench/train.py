"""Generic training and threshold tuning for every model family (the train stage).

:func:`train_model` runs the parts, each with one job:

1. :func:`load_training_data`: the train / val images of one dataset, normalised;
2. :func:`fit_network`: the training loop with early stopping (families with a network);
3. :func:`tune_on_validation`: the post-processing thresholds with the best mean AP
   on the validation split (CTC SEG where that ground truth is partial);
4. :func:`model_record`: the ``config.json`` content, with the fully resolved options;
5. :func:`cellbench.modelfolder.write_model_folder`: the self-describing model folder
   (DESIGN.md section 1, StarDist-style).

Training is resumable: with a checkpoint folder (the CLI's default is
``results/checkpoints/{dataset}/{model}``, outside the model folder) the whole
training state is saved after every epoch, a run started again continues after
the last saved epoch with bit-identical results, and the checkpoint is removed
once the model folder is written; see :mod:`cellbench.checkpoint`.

Every training setting is an option of the family (:class:`cellbench.models.options.
TrainingOptions`): ``epochs``, ``batch_size``, ``patch_size``, ``samples_per_epoch``,
``learning_rate``, ``weight_decay``, ``val_every``, ``patience``.

Augmentation: random crops and the 8 flips / 90-degree rotations (done here, so
vector-field targets such as flows can be rotated with the image), then
albumentations intensity transforms (brightness / contrast, blur, noise) on the
image only. One seed drives the crops, albumentations, the network's
initialisation and the batch order.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellbench.checkpoint import CheckpointStore, data_hash, training_fingerprint
from cellbench.config import ModelConfig
from cellbench.datasets.base import TRAIN_LABELS, train_label_ids
from cellbench.device import resolve_channels_last, resolve_device, resolve_precision
from cellbench.inference import pad_to_multiple, predict_image, predict_maps
from cellbench.io import read_image, read_labels
from cellbench.modelfolder import params_hash, write_model_folder
from cellbench.models import get_family
from cellbench.models.base import ModelFamily
from cellbench.models.options import TrainingOptions
from cellbench.scale import (
    median_diameter,
    object_stats,
    rescale_image,
    rescale_labels,
    scale_factor,
)
from cellbench.sizemodel import SIZE_MODEL_FILE, SizeModel, fit_size_model
from cellbench.skip import skip_reason, write_skipped
from cellbench.split import read_split
from cellbench.transforms import (
    FLOOR_QUANTILE,
    HIGH_PERCENTILE,
    LOW_PERCENTILE,
    contrast,
    contrast_floor,
    to_model_input,
    to_planes,
)

__all__ = [
    "TrainingDiverged",
    "sampling_weights",
    "fit_network",
    "resolve_channels",
    "label_stats",
    "load_split",
    "load_training_data",
    "model_record",
    "random_dihedral",
    "train_model",
    "tune_on_validation",
    "tune_thresholds",
]


log = logging.getLogger(__name__)


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite; the message says where and what to change."""


@dataclass
class Sample:
    """One image of a split: normalised input ``(C, H, W)``, labels ``(H, W)``, target ``(K, H, W)``."""

    id: str
    image: np.ndarray
    labels: np.ndarray
    target: np.ndarray | None = None
    annotation: str = "full"
    #: the image's ``cell_type`` in ``index.csv`` (what ``balance_cell_types`` balances)
    stratum: str = ""


def load_split(
    converted: Path,
    split: pd.DataFrame,
    which: str,
    channels: int,
    *,
    frames: int,
    full_only: bool = True,
    min_contrast: float = 0.0,
) -> list[Sample]:
    """Load the images of one split, normalised for the network.

    ``min_contrast`` is the model's contrast floor
    (:func:`cellbench.transforms.normalize_percentile`).

    ``full_only`` skips partially annotated images (training on them would teach
    that unlabelled cells are background) unless there are no others. Images
    with train labels (``train_labels/``, e.g. CTC silver truth) are loaded with
    those, as fully annotated: in the ``train`` split all of them, in ``val`` those
    without scored labels (``annotation: none``). With
    ``frames > 1`` each image is the time window ending at it
    (:func:`cellbench.sequences.load_window_inputs`, context from the same split or
    from frames in no split); its labels are those of its own (last) frame.
    """
    index = pd.read_csv(converted / "index.csv", dtype={"id": str}, keep_default_na=False)
    annotation = dict(zip(index["id"], index["annotation"], strict=True))
    cell_types = (
        dict(zip(index["id"], index["cell_type"].astype(str), strict=True))
        if "cell_type" in index
        else {}
    )
    # train labels (complete) where the dataset has them: every train image learns from
    # them; val images use them only where there is no scored truth to tune on
    trained = set()
    if which == "train":
        trained = train_label_ids(converted)
    elif which == "val":
        trained = {i for i in train_label_ids(converted) if annotation.get(i) == "none"}
    annotation.update(dict.fromkeys(trained, "full"))
    ids = [i for i in split.loc[split["split"] == which, "id"] if annotation.get(i) != "none"]
    if full_only and any(annotation.get(i) == "full" for i in ids):
        ids = [i for i in ids if annotation.get(i) == "full"]
    if frames > 1:
        from cellbench.sequences import load_window_inputs

        assigned = dict(zip(split["id"], split["split"], strict=True))
        images = load_window_inputs(
            converted, ids, channels, frames, assigned, min_contrast=min_contrast
        )
    else:
        images = {
            i: to_model_input(read_image(converted / "images" / f"{i}.tif"), channels, min_contrast)
            for i in ids
        }
    return [
        Sample(
            id=i,
            image=images[i],
            labels=read_labels(
                converted / (TRAIN_LABELS if i in trained else "labels") / f"{i}.tif"
            ),
            annotation=annotation[i],
            stratum=cell_types.get(i, ""),
        )
        for i in ids
    ]


def random_dihedral(
    rng: np.random.Generator,
    image: np.ndarray,
    target: np.ndarray,
    vector_pairs: Sequence[tuple[int, int]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one of the 8 flips / 90-degree rotations to ``(C, H, W)`` arrays.

    Target channels listed in ``vector_pairs`` as ``(dy, dx)`` are vector fields:
    their components are swapped and negated so the vectors turn with the image.
    """
    target = target.copy()
    if rng.random() < 0.5:  # transpose: swap axes, swap vector components
        image, target = image.transpose(0, 2, 1), target.transpose(0, 2, 1).copy()
        for dy, dx in vector_pairs:
            target[[dy, dx]] = target[[dx, dy]]
    if rng.random() < 0.5:  # flip rows: negate dy
        image, target = image[:, ::-1], target[:, ::-1].copy()
        for dy, _ in vector_pairs:
            target[dy] *= -1
    if rng.random() < 0.5:  # flip columns: negate dx
        image, target = image[:, :, ::-1], target[:, :, ::-1].copy()
        for _, dx in vector_pairs:
            target[dx] *= -1
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def _random_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    target: np.ndarray,
    size: int,
    centre: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``size x size`` at a random position; zero-pad images smaller than that.

    ``centre`` ``(y, x)`` (a pixel of the unpadded image): the crop is centred on it
    instead, shifted inside the image where it would cross the border.
    """
    _, h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        pad = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image, target = np.pad(image, pad), np.pad(target, pad)
        if centre is not None:
            centre = (centre[0] + ph // 2, centre[1] + pw // 2)
        _, h, w = image.shape
    if centre is None:
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    else:
        y = min(max(0, centre[0] - size // 2), h - size)
        x = min(max(0, centre[1] - size // 2), w - size)
    return image[:, y : y + size, x : x + size], target[:, y : y + size, x : x + size]


def _crop_centre(
    rng: np.random.Generator, labels: np.ndarray, probability: float
) -> tuple[int, int] | None:
    """With ``probability``, a random object pixel ``(y, x)`` of ``labels`` to centre a crop on.

    None (a uniform crop) otherwise, and for images without objects. Draws nothing
    from ``rng`` when ``probability`` is 0, so runs without the option are unchanged.
    """
    if not probability or rng.random() >= probability:
        return None
    flat = np.flatnonzero(labels)
    if not flat.size:
        return None
    y, x = np.unravel_index(int(flat[rng.integers(flat.size)]), labels.shape)
    return int(y), int(x)


def _scaled_crop(
    rng: np.random.Generator,
    sample: Sample,
    family: ModelFamily,
    size: int,
    jitter: float,
    centre: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size x size`` crop of the sample seen at a random scale in [1/(1+j), 1+j].

    The crop is taken at ``size / factor`` px and resized to ``size``: the image
    bilinearly, the target bilinearly except the family's categorical channels
    (nearest). Vector targets keep their values (flows are unit directions).
    """
    import cv2

    factor = float(np.exp(rng.uniform(-np.log1p(jitter), np.log1p(jitter))))
    source = max(8, round(size / factor))
    x, y = _random_crop(rng, sample.image, sample.target, source, centre)
    if source == size:
        return x, y

    def resize(planes: np.ndarray, nearest: tuple[int, ...] = ()) -> np.ndarray:
        return np.stack(
            [
                cv2.resize(
                    np.ascontiguousarray(p, dtype=np.float32),
                    (size, size),
                    interpolation=cv2.INTER_NEAREST_EXACT if i in nearest else cv2.INTER_LINEAR,
                )
                for i, p in enumerate(planes)
            ]
        )

    return resize(x), resize(y, family.categorical_targets)


def random_gamma(rng: np.random.Generator, image: np.ndarray, jitter: float) -> np.ndarray:
    """Apply a random gamma in [1-j, 1+j] to ``(C, H, W)``, within the image's own range."""
    gamma = float(rng.uniform(1.0 - jitter, 1.0 + jitter))
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return image
    return (lo + (hi - lo) * ((image - lo) / (hi - lo)) ** gamma).astype(np.float32)


class _IntensityAugmenter:
    """albumentations pipeline for ``(C, H, W)`` float32 images (intensity only).

    Seeded with ``seed``; :meth:`get_state` / :meth:`set_state` save and restore the
    random state of the pipeline and of each of its transforms (albumentations gives
    every transform its own generators), so a resumed training draws what an
    uninterrupted one would.
    """

    def __init__(self, seed: int) -> None:
        import albumentations as A

        self.pipeline = A.Compose(
            [
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=0.7),
                A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2), p=0.2),
                A.GaussNoise(std_range=(0.0, 0.05), p=0.3),
            ],
            seed=seed,
        )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = self.pipeline(image=np.ascontiguousarray(image.transpose(1, 2, 0)))["image"]
        if out.ndim == 2:
            out = out[:, :, None]
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)

    def _parts(self) -> list[Any]:
        parts, todo = [], [self.pipeline]
        while todo:
            part = todo.pop(0)
            parts.append(part)
            todo.extend(getattr(part, "transforms", []))
        return parts

    def get_state(self) -> list[dict[str, Any]]:
        """The numpy and Python random states of the pipeline and each transform, in order."""
        return [
            {"numpy": p.random_generator.bit_generator.state, "python": p.py_random.getstate()}
            for p in self._parts()
        ]

    def set_state(self, state: list[dict[str, Any]]) -> None:
        """Restore what :meth:`get_state` returned."""
        parts = self._parts()
        if len(parts) != len(state):
            raise ValueError(
                f"augmentation state for {len(state)} transforms, the pipeline has {len(parts)}"
            )
        for part, saved in zip(parts, state, strict=True):
            part.random_generator.bit_generator.state = saved["numpy"]
            part.py_random.setstate(saved["python"])


def sampling_weights(samples: Sequence[Sample], balance: float) -> np.ndarray:
    """Probability of drawing each sample for a training crop, ``(N,)`` summing to 1.

    Within a cell type images are drawn in proportion to their area (a crop is a
    uniform share of the pixels). Each cell type's total share is proportional to
    its total area to the power ``1 - balance``: 0 draws every pixel equally often
    (a type with few images is rarely seen), 1 gives every type the same share.
    """
    areas = np.array([s.image.shape[-2] * s.image.shape[-1] for s in samples], float)
    if not balance:  # by area, computed as before the option existed (same draws, same crops)
        return areas / areas.sum()
    types = np.array([s.stratum for s in samples], dtype=object)
    weights = np.empty_like(areas)
    for kind in dict.fromkeys(types):
        members = types == kind
        total = areas[members].sum()
        weights[members] = areas[members] / total * total ** (1.0 - balance)
    return weights / weights.sum()


def _prefetched(batches, depth: int = 2):
    """Iterate ``batches`` with the next ``depth`` items made in a background thread.

    Crops and augmentation (numpy / OpenCV, which release the GIL) then overlap the
    network's step. Items come in the same order from the same random draws, so
    results are unchanged; the thread has finished (and drawn exactly what the
    plain loop would) when the iteration ends. An error in the thread is raised here.
    """
    import queue
    import threading

    done, items, stop = object(), queue.Queue(maxsize=depth), threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # handed to the consumer
            items.put(exc)

    worker = threading.Thread(target=produce, name="cellbench-batches", daemon=True)
    worker.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _batches(
    samples: list[Sample],
    family: ModelFamily,
    settings: TrainingOptions,
    rng: np.random.Generator,
    augment: Callable[[np.ndarray], np.ndarray],
):
    """Yield ``(images, targets)`` float32 batches for one epoch."""
    weights = sampling_weights(samples, settings.balance_cell_types)
    n_steps = max(1, settings.samples_per_epoch // settings.batch_size)
    for _ in range(n_steps):
        xs, ys = [], []
        for k in rng.choice(len(samples), size=settings.batch_size, p=weights):
            s = samples[k]
            centre = _crop_centre(rng, s.labels, settings.foreground_crop)
            if settings.scale_jitter:
                x, y = _scaled_crop(
                    rng, s, family, settings.patch_size, settings.scale_jitter, centre
                )
            else:
                x, y = _random_crop(rng, s.image, s.target, settings.patch_size, centre)
            x, y = random_dihedral(rng, x, y, family.vector_pairs)
            x = augment(x)
            if settings.gamma_jitter:
                x = random_gamma(rng, x, settings.gamma_jitter)
            xs.append(x)
            ys.append(y)
        yield np.stack(xs), np.stack(ys)


def _validation_loss(net, family: ModelFamily, samples: list[Sample], device) -> float:
    import torch

    if not samples:
        return float("nan")
    net.eval()
    total, weight = 0.0, 0
    with torch.no_grad():
        for s in samples:
            x, (h, w) = pad_to_multiple(s.image, 32)
            loss = family.validation_loss(
                net,
                torch.from_numpy(x[None]).to(device),
                torch.from_numpy(s.target[None]).to(device),
                (h, w),
            )
            n = h * w
            total += float(loss) * n
            weight += n
    return total / weight


def _validation_score(net, family: ModelFamily, samples: list[Sample], device) -> float:
    """Mean AP of the val images after post-processing with the default (first) thresholds."""
    from cellbench.metrics import score_image

    default = family.threshold_grid()[0]
    scores = [
        score_image(
            s.labels,
            family.postprocess(predict_maps(family, net, s.image, device, tta=False), default),
            extra_thresholds=(),
        ).mean_ap
        for s in samples
    ]
    return float(np.mean(scores)) if scores else float("nan")


def tune_thresholds(
    family: ModelFamily,
    maps: list[np.ndarray],
    labels: list[np.ndarray],
    metric: str = "mean_ap",
) -> dict[str, Any]:
    """Pick the post-processing setting with the best mean AP (or SEG) on validation images.

    Parameters
    ----------
    maps : per validation image, the family's maps ``(M, H, W)``.
    labels : the matching ground-truth labels ``(H, W)``.
    metric : ``mean_ap``, or ``seg`` for partially annotated ground truth (where AP
        would punish every correctly found but unlabelled cell).

    Returns
    -------
    dict
        ``selected`` (the chosen setting, as plain data), ``metric``, ``val_score``, ``n_val_images``
        and ``grid`` (every candidate with its score). With no validation images
        the family's default (first) candidate is selected.
    """
    from cellbench.metrics import score_image

    if metric not in ("mean_ap", "seg"):
        raise ValueError(f"tuning metric must be 'mean_ap' or 'seg', got {metric!r}")
    annotation = "partial" if metric == "seg" else "full"
    column = f"val_{metric}"
    candidates = family.threshold_grid()
    rows = []
    for cand in candidates:
        scored = (
            score_image(y, family.postprocess(m, cand), extra_thresholds=(), annotation=annotation)
            for m, y in zip(maps, labels, strict=True)
        )
        scores = [getattr(score, metric) for score in scored]
        rows.append({**cand.resolved(), column: float(np.mean(scores)) if scores else float("nan")})
    scores = np.array([r[column] for r in rows], dtype=float)
    best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
    return {
        "selected": candidates[best].resolved(),
        "metric": metric,
        "val_score": rows[best][column],
        "n_val_images": len(maps),
        "grid": rows,
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("cellbench", "torch", "segmentation-models-pytorch", "albumentations", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def training_contrast(
    converted: Path, split: pd.DataFrame, channels: int, fraction: float
) -> dict[str, float | int | None]:
    """The contrast floor of a model, from its training images (raw, before normalisation).

    Every plane of every ``train`` image (as the network reads it, :func:`to_planes`) gets
    its :func:`cellbench.transforms.contrast`; the floor is ``fraction`` of their 2nd
    percentile (:func:`cellbench.transforms.contrast_floor`). Returns the record stored
    as ``config.json``'s ``normalisation``: ``min_contrast`` (0.0 = off) and the
    training planes' 2nd percentile and median contrast.
    """
    record: dict[str, float | int | None] = {
        "low_percentile": LOW_PERCENTILE,
        "high_percentile": HIGH_PERCENTILE,
        "min_contrast": 0.0,
        "train_contrast_p2": None,
        "train_contrast_median": None,
        "n_planes": 0,
    }
    if fraction <= 0:
        return record
    ids = split.loc[split["split"] == "train", "id"]
    values = [
        contrast(plane)
        for i in ids
        if (converted / "images" / f"{i}.tif").is_file()
        for plane in to_planes(read_image(converted / "images" / f"{i}.tif"), channels)
    ]
    finite = [v for v in values if math.isfinite(v)]
    record["n_planes"] = len(values)
    if finite:
        record["train_contrast_p2"] = round(float(np.percentile(finite, FLOOR_QUANTILE)), 3)
        record["train_contrast_median"] = round(float(np.median(finite)), 3)
    record["min_contrast"] = round(contrast_floor(values, fraction), 3)
    return record


def load_training_data(
    family: ModelFamily, converted: Path, split_csv: Path, min_contrast: float = 0.0
) -> tuple[list[Sample], list[Sample]]:
    """The train and val samples of a converted dataset (targets made for networks).

    ``min_contrast``: the model's contrast floor (:func:`training_contrast`).

    Raises
    ------
    ValueError
        When a family with a network gets no annotated training image.
    """
    split = pd.read_csv(split_csv, dtype={"id": str}, keep_default_na=False)
    kw = {"frames": family.frames, "min_contrast": min_contrast}
    train = load_split(converted, split, "train", family.in_channels, **kw)
    val = load_split(converted, split, "val", family.in_channels, **kw)
    if family.trainable and not train:
        counts = split["split"].value_counts().to_dict() if "split" in split else {}
        official = (
            " Every image is in the source's official test set: set the dataset's "
            "'split: {use_official_test: false}' in params.yaml to split them by the fractions"
            if counts and set(counts) == {"test"}
            else ""
        )
        raise ValueError(
            f"{split_csv}: no annotated training images (split sizes: {counts or 'none'}); "
            f"check the split fractions in params.yaml.{official}"
        )
    warn_uninformative(converted, train + val)
    return train, val


def warn_uninformative(converted: Path, samples: list[Sample]) -> list[str]:
    """Log a warning for constant images and images without objects; return the messages.

    A constant image teaches nothing and an image without a single object teaches
    "everything is background": both are usually conversion mistakes (a wrong channel,
    a mask that did not match), not data.
    """
    messages = []
    for s in samples:
        if s.image.size and float(np.ptp(s.image)) == 0.0:
            messages.append(
                f"{Path(converted) / 'images' / f'{s.id}.tif'}: the image is constant (every "
                "pixel the same value); check the source file and its channel"
            )
        if s.annotation == "full" and not s.labels.any():
            messages.append(
                f"{Path(converted) / 'labels' / f'{s.id}.tif'}: no annotated object in a fully "
                "annotated image (it trains as all background); check that its mask matched"
            )
    for message in messages:
        log.warning(message)
    return messages


def label_stats(samples: list[Sample]) -> dict[str, float | None]:
    """Objects per megapixel and median object area (px) of the fully annotated samples.

    Stored in ``config.json`` as ``train_label_stats`` so that ``segment`` can warn when a
    new image's result looks nothing like the training data.
    """
    stats = object_stats([s.labels for s in samples if s.annotation == "full"])
    return {
        "objects_per_megapixel": stats.objects_per_megapixel,
        "median_area": stats.median_area,
    }


def _random_states(rng: np.random.Generator, augment: _IntensityAugmenter) -> dict[str, Any]:
    """Every random state training draws from: numpy, torch (CPU, CUDA), Python, albumentations."""
    import random

    import torch

    return {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "augment": augment.get_state(),
    }


def _set_random_states(
    states: Mapping[str, Any], rng: np.random.Generator, augment: _IntensityAugmenter
) -> None:
    import random

    import torch

    rng.bit_generator.state = states["numpy"]
    torch.set_rng_state(states["torch"].cpu())
    if states["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["torch_cuda"]])
    random.setstate(_as_tuples(states["python"]))
    augment.set_state(states["augment"])


def _as_tuples(value: Any) -> Any:
    """Lists back to tuples, as ``random.setstate`` wants them."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def remaining_time(history: Sequence[Mapping[str, Any]], epochs: int) -> str:
    """The projected time left of a training, e.g. ``1 h 05 min``; empty once it has ended.

    The mean ``seconds`` of the epochs in ``history`` (validation included) times the
    epochs left of ``epochs``; ``<1 min`` below a minute.
    """
    left = epochs - len(history)
    if left <= 0 or not history:
        return ""
    minutes = round(left * float(np.mean([row["seconds"] for row in history])) / 60.0)
    if minutes < 1:
        return "<1 min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _autocast(settings: TrainingOptions, device, arithmetic: str | None = None):
    """The training step's autocast context: bf16 when the resolved precision is bf16.

    ``arithmetic`` is the resolved precision (``fp32`` / ``bf16``); None resolves
    ``settings.precision`` on ``device`` (:func:`cellbench.device.resolve_precision`).
    """
    import torch

    if arithmetic is None:
        arithmetic = resolve_precision(settings.precision, device)
    device_type = getattr(device, "type", str(device)).split(":")[0]
    return torch.autocast(
        device_type=device_type, dtype=torch.bfloat16, enabled=arithmetic == "bf16"
    )


def fit_network(
    family: ModelFamily,
    train: list[Sample],
    val: list[Sample],
    *,
    seed: int,
    device,
    progress: bool = True,
    label: str = "",
    checkpoint: CheckpointStore | None = None,
    arithmetic: str | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train the family's network; return it (best epoch's weights) and the history rows.

    One seed drives the initialisation, the crops, the augmentation and the batch
    order. The kept weights are those of the epoch with the lowest validation loss
    (training loss when there is no validation image). ``history`` rows have the
    :data:`cellbench.modelfolder.HISTORY_COLUMNS`.

    With a ``checkpoint`` store, the whole training state (network, optimiser,
    scheduler, best weights, early-stopping counter, history and every random
    state) is saved atomically after every epoch, and a checkpoint that the store
    accepts (same fingerprint) is resumed at its next epoch: the result is
    bit-identical to an uninterrupted run on the same device. The checkpoint is
    left in place; :func:`train_model` removes it once the model folder is written.

    ``arithmetic`` is the resolved training precision (``fp32`` / ``bf16``); None
    resolves the family's ``precision`` option on ``device``
    (:func:`cellbench.device.resolve_precision`). The ``channels_last`` option is
    resolved with it (:func:`cellbench.device.resolve_channels_last`).
    """
    import torch
    from tqdm.auto import tqdm

    settings: TrainingOptions = family.options
    torch.manual_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7EA1]))
    for s in train + val:
        s.target = family.make_target(s.labels)
    net = family.build_network().to(device)
    if arithmetic is None:
        arithmetic = resolve_precision(settings.precision, device)
    nhwc = resolve_channels_last(settings.channels_last, arithmetic)
    if nhwc:
        net = net.to(memory_format=torch.channels_last)
    autocast = _autocast(settings, device, arithmetic)
    opt = torch.optim.AdamW(
        net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    steps = max(1, settings.samples_per_epoch // settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.learning_rate, total_steps=settings.epochs * steps, pct_start=0.15
    )
    augment = _IntensityAugmenter(seed)
    history: list[dict[str, Any]] = []
    best_loss, best_state, stale = math.inf, None, 0
    done, finished = 0, False
    saved = checkpoint.load(map_location=device) if checkpoint is not None else None
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        best_loss, best_state, stale = saved["best_loss"], saved["best_state"], saved["stale"]
        history = [dict(row) for row in saved["history"]]
        _set_random_states(saved["random"], rng, augment)
        done, finished = int(saved["epoch"]), bool(saved["finished"])
        log.info(
            "resuming from epoch %d/%d: checkpoint %s holds epochs 1-%d%s",
            done + 1,
            settings.epochs,
            checkpoint.path,
            done,
            " (training had ended)" if finished else "",
        )
    # keep the epoch with the best validation mean AP after the real post-processing
    # (default thresholds), or the lowest validation loss
    by_score = settings.select_by == "val_mean_ap" and bool(val)
    bar = tqdm(
        total=settings.epochs * steps,
        initial=done * steps,
        desc=f"train {label}",
        disable=not progress,
        mininterval=2.0,
        unit="batch",
    )
    for epoch in range(done + 1, settings.epochs + 1):
        if finished:
            break
        net.train()
        t0, losses = time.time(), []
        batches = _prefetched(_batches(train, family, settings, rng, augment))
        for step, (xb, yb) in enumerate(batches):
            xt = torch.from_numpy(xb).to(device)
            if nhwc:
                xt = xt.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = family.training_loss(net, xt, torch.from_numpy(yb).to(device))
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training {label}: the loss became {float(loss.detach())} at epoch {epoch}, batch "
                    f"{step + 1}. The inputs are checked finite, so the optimisation diverged: "
                    f"lower learning_rate (now {settings.learning_rate}) for this model in "
                    "params.yaml."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses):.4f}")
        last = epoch == settings.epochs
        val_loss = val_score = float("nan")
        crops_per_s = len(losses) * settings.batch_size / max(time.time() - t0, 1e-9)
        if val and (epoch % settings.val_every == 0 or last):
            val_loss = _validation_loss(net, family, val, device)
        if by_score and (epoch % settings.select_every == 0 or last):
            val_score = _validation_score(net, family, val, device)
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "val_loss": val_loss,
                "val_mean_ap": val_score,
                "lr": float(sched.get_last_lr()[0]),
                "seconds": round(time.time() - t0, 3),
            }
        )
        # with select_by val_mean_ap, selection happens at the epochs that have a score
        if not (by_score and math.isnan(val_score)):
            monitored = (
                -val_score
                if by_score
                else (val_loss if not math.isnan(val_loss) else history[-1]["train_loss"])
            )
            if monitored < best_loss:
                best_loss, best_state, stale = monitored, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                finished = bool(settings.patience and stale >= settings.patience)
        finished = finished or last
        if checkpoint is not None:
            checkpoint.save(
                {
                    "epoch": epoch,
                    "finished": finished,
                    "net": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "best_loss": best_loss,
                    "best_state": best_state,
                    "stale": stale,
                    "history": history,
                    "random": _random_states(rng, augment),
                }
            )
        # logged after the checkpoint is saved: a log that shows epoch N has its checkpoint
        log.info(
            "epoch %d/%d  train_loss %.4f  val_loss %s  val_mean_ap %s  lr %.2e  %.1f s  "
            "%.1f crops/s%s",
            epoch,
            settings.epochs,
            history[-1]["train_loss"],
            "-" if math.isnan(val_loss) else f"{val_loss:.4f}",
            "-" if math.isnan(val_score) else f"{val_score:.4f}",
            history[-1]["lr"],
            history[-1]["seconds"],
            crops_per_s,
            "" if finished else f"  about {remaining_time(history, settings.epochs)} left",
        )
    bar.close()
    net.load_state_dict(best_state)
    return net, history


def tune_on_validation(
    family: ModelFamily, net, val: list[Sample], device, size_model: SizeModel | None = None
) -> dict[str, Any]:
    """Predict the val images as at test time and tune the thresholds on the original grid.

    With size normalisation each image's diameter is estimated (with ``size_model``
    when given, as for test images); the default thresholds serve the estimation.
    SEG replaces mean AP when all val ground truth is partial.
    """
    val_maps = [predict_image(family, net, s.image, device, size_model=size_model)[0] for s in val]
    # AP is undefined on sparse ground truth: val images that are all partial tune by SEG
    metric = "seg" if val and all(s.annotation == "partial" for s in val) else "mean_ap"
    return tune_thresholds(family, val_maps, [s.labels for s in val], metric=metric)


def resolve_channels(family: ModelFamily, converted: Path) -> ModelFamily:
    """The family with ``in_channels: auto`` resolved from the dataset's ``index.csv``.

    3 when any image has colour (3 or 4 channels; an alpha channel is dropped), else 1.
    The resolved number is what ``config.json`` records, so the model folder describes
    itself. Families with a number already are returned unchanged.
    """
    if getattr(family.options, "in_channels", None) != "auto":
        return family
    from cellbench.datasets.base import read_index

    colour = bool((read_index(converted)["channels"] >= 3).any())
    options = family.options.model_copy(update={"in_channels": 3 if colour else 1})
    log.info("model %s: in_channels auto -> %d", family.name, options.in_channels)
    return type(family)(family.name, options)


def normalise_sizes(family: ModelFamily, samples: list[Sample]) -> list[Sample]:
    """Copies of labelled samples rescaled so objects measure the family's ``diameter``.

    Each image is rescaled by ``diameter / median_diameter(labels)`` (its own objects'
    size; images without objects keep their size). Unchanged when the family has no
    ``diameter`` option or it is 0.
    """
    standard = getattr(family.options, "diameter", 0.0)
    if not standard:
        return samples
    out = []
    for s in samples:
        factor = scale_factor(standard, median_diameter(s.labels), s.labels.shape)
        out.append(
            Sample(
                s.id,
                rescale_image(s.image, factor),
                rescale_labels(s.labels, factor),
                annotation=s.annotation,
                stratum=s.stratum,
            )
        )
    return out


def fit_sizes(family: ModelFamily, train: list[Sample], seed: int) -> SizeModel | None:
    """The size model of a size-normalised network family (None when it needs none).

    Fitted on the training images at their own size (:func:`cellbench.sizemodel.fit_size_model`);
    None, with a warning, when fewer than 2 training images have objects (diameters
    are then estimated by segmentation).
    """
    options = family.options
    standard = float(getattr(options, "diameter", 0.0) or 0.0)
    if not family.trainable or not standard or options.size_estimate != "regression":
        return None
    try:
        model = fit_size_model(
            [s.image for s in train], [s.labels for s in train], standard, seed=seed
        )
    except ValueError as exc:
        log.warning(
            "model %s: no size model (%s); diameters estimated by segmentation", family.name, exc
        )
        return None
    log.info(
        "model %s: size model fitted on %d images (%d samples), cross-validated log error %.3f",
        family.name,
        model.n_images,
        model.n_samples,
        model.cv_log_error,
    )
    return model


def _size_model_record(model: SizeModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {
        "file": SIZE_MODEL_FILE,
        "n_images": model.n_images,
        "n_samples": model.n_samples,
        "ridge": model.ridge,
        "cv_log_error": round(model.cv_log_error, 4),
    }


def _diameter_stats(samples: list[Sample]) -> dict[str, float | None]:
    """Median, 10th and 90th percentile of the training images' object diameters (px)."""
    diameters = [d for s in samples if (d := median_diameter(s.labels)) is not None]
    if not diameters:
        return {"median": None, "p10": None, "p90": None}
    p10, median, p90 = np.percentile(diameters, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90)}


@dataclass(frozen=True)
class _Timing:
    train_seconds: float
    tune_seconds: float


def model_record(
    family: ModelFamily,
    params_section: Mapping[str, Any],
    *,
    dataset: str,
    seed: int,
    train: list[Sample],
    val: list[Sample],
    history: list[dict[str, Any]],
    device,
    timing: _Timing,
    size_model: SizeModel | None = None,
    normalisation: Mapping[str, Any] | None = None,
    arithmetic: str | None = None,
    nhwc: bool | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of a model folder.

    ``options`` holds every option of the family with its value (defaults filled
    in), so the folder means the same whatever the code's defaults when it is
    loaded; ``params_sha256`` is :func:`cellbench.modelfolder.params_hash` of
    ``params_section`` (the seed and the model's params.yaml entry as written);
    ``arithmetic`` the training precision used, recorded as ``precision``, and
    ``nhwc`` whether tensors were channels-last, recorded as ``channels_last``
    (``auto`` resolved; None for a family without a network).
    """
    from cellbench import __version__

    monitored = [
        h["val_loss"] if not math.isnan(h["val_loss"]) else h["train_loss"] for h in history
    ]
    return {
        "model": family.name,
        "family": family.family,
        "options": family.options.resolved(),
        "cellbench_version": __version__,
        "params_sha256": params_hash(params_section),
        "dataset": dataset,
        "in_channels": family.in_channels,
        "map_names": list(family.map_names),
        "seed": seed,
        "trainable": family.trainable,
        "n_train_images": len(train),
        "n_val_images": len(val),
        "train_label_stats": label_stats(train),
        "train_diameters": _diameter_stats(train),
        "size_model": _size_model_record(size_model),
        "normalisation": dict(normalisation or {"min_contrast": 0.0}),
        "epochs_run": len(history),
        "best_monitored_loss": min(monitored) if monitored else None,
        "device": str(device),
        "precision": arithmetic,
        "channels_last": nhwc,
        "train_seconds": round(timing.train_seconds, 2),
        "tune_seconds": round(timing.tune_seconds, 2),
        "versions": _versions(),
    }


def train_model(
    cfg: ModelConfig,
    dataset: str,
    converted: Path,
    split_csv: Path,
    out_dir: Path,
    *,
    seed: int,
    device: str = "auto",
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Train (if the family has a network), tune thresholds on val, write the model folder.

    Parameters
    ----------
    checkpoint_dir : pathlib.Path, optional
        Where the training checkpoint ``last.pt`` is written after every epoch and
        resumed from (see :mod:`cellbench.checkpoint`; the CLI's default is
        :func:`cellbench.checkpoint.default_checkpoint_dir` of ``out_dir``). It must
        lie outside ``out_dir``. ``None``: no checkpoints. Once the model folder is
        written (atomically, as the last step) the checkpoint is removed, so a
        finished model leaves none behind; a killed run leaves the checkpoint and
        no model folder.
    resume : bool
        ``False`` ignores and removes an existing checkpoint: training starts at epoch 1.

    Returns
    -------
    dict
        The ``config.json`` content; for a family that does not apply to the dataset
        (:func:`cellbench.skip.skip_reason`), the skip record written instead
        (``SKIPPED.json``, key ``reason``).
    """
    family = resolve_channels(get_family(cfg), converted)
    reason = skip_reason(family, converted, dataset)
    if reason is not None:
        return write_skipped(
            out_dir,
            {"dataset": dataset, "model": cfg.name, "family": family.family, "reason": reason},
        )
    normalisation = training_contrast(
        converted,
        read_split(split_csv),
        family.in_channels,
        float(getattr(family.options, "contrast_floor", 0.0)) if family.trainable else 0.0,
    )
    if normalisation["min_contrast"]:
        log.info(
            "model %s: contrast floor %.1f noise sigma (training planes: 2nd percentile %.1f)",
            family.name,
            normalisation["min_contrast"],
            normalisation["train_contrast_p2"],
        )
    train, val = load_training_data(
        family, converted, split_csv, float(normalisation["min_contrast"])
    )
    dev = resolve_device(device)
    arithmetic = resolve_precision(family.options.precision, dev) if family.trainable else None
    nhwc = (
        resolve_channels_last(family.options.channels_last, arithmetic)
        if family.trainable
        else None
    )
    if family.trainable and "auto" in (family.options.precision, family.options.channels_last):
        log.info(
            "model %s: precision %s -> %s, channels_last %s -> %s on %s",
            family.name,
            family.options.precision,
            arithmetic,
            family.options.channels_last,
            nhwc,
            dev,
        )
    params_section = {"seed": seed, "model": {"family": cfg.family, **cfg.options}}
    store = None
    if checkpoint_dir is not None and Path(out_dir).resolve() in (
        Path(checkpoint_dir).resolve(),
        *Path(checkpoint_dir).resolve().parents,
    ):
        raise ValueError(
            f"checkpoint folder {checkpoint_dir} is inside the model folder {out_dir}, which "
            "is replaced at the end and deleted by Snakemake when a job fails: choose "
            "another --checkpoint-dir (the default is outside)"
        )
    if family.trainable and checkpoint_dir is not None:
        fingerprint = training_fingerprint(
            params_hash(params_section),
            dataset,
            data_hash(
                [(f"train/{s.id}", s.image, s.labels) for s in train]
                + [(f"val/{s.id}", s.image, s.labels) for s in val]
            ),
            arithmetic,
        )
        store = CheckpointStore(Path(checkpoint_dir), fingerprint, resume=resume)
    started = time.time()
    net, history = None, []
    if family.trainable:
        net, history = fit_network(
            family,
            normalise_sizes(family, train),
            normalise_sizes(family, val),
            seed=seed,
            device=dev,
            progress=progress,
            label=f"{dataset}/{cfg.name}",
            checkpoint=store,
            arithmetic=arithmetic,
        )
    sizes = fit_sizes(family, train, seed)
    trained = time.time()
    tuned = tune_on_validation(family, net, val, dev, sizes)
    config = model_record(
        family,
        params_section,
        dataset=dataset,
        seed=seed,
        train=train,
        val=val,
        history=history,
        device=dev,
        timing=_Timing(trained - started, time.time() - trained),
        size_model=sizes,
        normalisation=normalisation,
        arithmetic=arithmetic,
        nhwc=nhwc,
    )
    write_model_folder(
        out_dir, config=config, tuned=tuned, history=history, net=net, size_model=sizes
    )
    if store is not None:
        store.clear()
    return config
