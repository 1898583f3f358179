"""Generic training and threshold tuning for every model family.

``train_model`` reads the train / val images of one dataset, trains the family's
network (if it has one), tunes the family's post-processing thresholds on the
validation split by mean AP (by CTC SEG where that ground truth is partial), and
writes a self-describing model folder (DESIGN.md section 1, StarDist-style)::

    results/models/{dataset}/{model}/
      weights.pt        network state_dict (trainable families only)
      config.json       family, options, input channels, seed, data, timing, versions
      thresholds.json   the tuned post-processing settings and the whole tuning grid
      history.csv       epoch, train_loss, val_loss, lr, seconds

Augmentation: random crops and the 8 flips / 90-degree rotations (done here, so
vector-field targets such as flows can be rotated with the image), then
albumentations intensity transforms (brightness / contrast, blur, noise) on the
image only. One seed drives the crops, albumentations, the network's
initialisation and the batch order.
"""

from __future__ import annotations

import contextlib
import copy
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellbench.config import ModelConfig
from cellbench.io import atomic_dir, read_image, read_labels, write_csv, write_json
from cellbench.models import ModelFamily, get_family
from cellbench.transforms import to_model_input

__all__ = [
    "TrainSettings",
    "load_split",
    "random_dihedral",
    "train_model",
    "tune_thresholds",
]


@dataclass(frozen=True)
class TrainSettings:
    """Training settings read from a model's params.yaml entry (defaults in brackets).

    epochs [30], batch_size [8], patch_size [128], samples_per_epoch [256],
    learning_rate [2e-3], weight_decay [1e-4], val_every [1], patience [0 = off].
    """

    epochs: int = 30
    batch_size: int = 8
    patch_size: int = 128
    samples_per_epoch: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_every: int = 1
    patience: int = 0

    @classmethod
    def from_model(cls, cfg: ModelConfig) -> TrainSettings:
        fields = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls, k))(cfg.options[k]) for k in fields if k in cfg.options})


@dataclass
class Sample:
    """One image of a split: normalised input ``(C, H, W)``, labels ``(H, W)``, target ``(K, H, W)``."""

    id: str
    image: np.ndarray
    labels: np.ndarray
    target: np.ndarray | None = None
    annotation: str = "full"


def load_split(
    converted: Path, split: pd.DataFrame, which: str, channels: int, full_only: bool = True
) -> list[Sample]:
    """Load the images of one split, normalised for the network.

    ``full_only`` skips partially annotated images (training on them would teach
    that unlabelled cells are background) unless there are no others.
    """
    index = pd.read_csv(converted / "index.csv", dtype={"id": str}, keep_default_na=False)
    annotation = dict(zip(index["id"], index["annotation"], strict=True))
    ids = [i for i in split.loc[split["split"] == which, "id"] if annotation.get(i) != "none"]
    if full_only and any(annotation.get(i) == "full" for i in ids):
        ids = [i for i in ids if annotation.get(i) == "full"]
    return [
        Sample(
            id=i,
            image=to_model_input(read_image(converted / "images" / f"{i}.tif"), channels),
            labels=read_labels(converted / "labels" / f"{i}.tif"),
            annotation=annotation[i],
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
    rng: np.random.Generator, image: np.ndarray, target: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``size x size`` at a random position; zero-pad images smaller than that."""
    _, h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        pad = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image, target = np.pad(image, pad), np.pad(target, pad)
        _, h, w = image.shape
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[:, y : y + size, x : x + size], target[:, y : y + size, x : x + size]


def _intensity_augmenter(seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """albumentations pipeline for ``(C, H, W)`` float32 images (intensity only)."""
    import albumentations as A

    pipeline = A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=0.7),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2), p=0.2),
            A.GaussNoise(std_range=(0.0, 0.05), p=0.3),
        ],
        seed=seed,
    )

    def apply(image: np.ndarray) -> np.ndarray:
        out = pipeline(image=np.ascontiguousarray(image.transpose(1, 2, 0)))["image"]
        if out.ndim == 2:
            out = out[:, :, None]
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)

    return apply


def _batches(
    samples: list[Sample],
    family: ModelFamily,
    settings: TrainSettings,
    rng: np.random.Generator,
    augment: Callable[[np.ndarray], np.ndarray],
):
    """Yield ``(images, targets)`` float32 batches for one epoch."""
    areas = np.array([s.image.shape[1] * s.image.shape[2] for s in samples], float)
    weights = areas / areas.sum()  # large images are sampled more often
    n_steps = max(1, settings.samples_per_epoch // settings.batch_size)
    for _ in range(n_steps):
        xs, ys = [], []
        for k in rng.choice(len(samples), size=settings.batch_size, p=weights):
            s = samples[k]
            x, y = _random_crop(rng, s.image, s.target, settings.patch_size)
            x, y = random_dihedral(rng, x, y, family.vector_pairs)
            xs.append(augment(x))
            ys.append(y)
        yield np.stack(xs), np.stack(ys)


def _validation_loss(net, family: ModelFamily, samples: list[Sample], device) -> float:
    import torch

    from cellbench.predict import pad_to_multiple

    if not samples:
        return float("nan")
    net.eval()
    total, weight = 0.0, 0
    with torch.no_grad():
        for s in samples:
            x, (h, w) = pad_to_multiple(s.image, 32)
            logits = net(torch.from_numpy(x[None]).to(device))[:, :, :h, :w]
            target = torch.from_numpy(s.target[None]).to(device)
            n = h * w
            total += float(family.loss(logits, target)) * n
            weight += n
    return total / weight


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
        ``selected`` (the chosen setting), ``metric``, ``val_score``, ``n_val_images``
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
        scores = [row[metric] for row in scored]
        rows.append({**cand, column: float(np.mean(scores)) if scores else float("nan")})
    scores = np.array([r[column] for r in rows], dtype=float)
    best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
    return {
        "selected": candidates[best],
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


def resolve_device(device: str = "auto"):
    """``auto`` -> CUDA when available, else CPU; otherwise the named torch device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
) -> dict[str, Any]:
    """Train (if the family has a network), tune thresholds on val, write the model folder.

    Returns
    -------
    dict
        The ``config.json`` content.
    """
    import torch
    from tqdm.auto import tqdm

    from cellbench.predict import predict_maps

    family = get_family(cfg)
    split = pd.read_csv(split_csv, dtype={"id": str}, keep_default_na=False)
    train = load_split(converted, split, "train", family.in_channels)
    val = load_split(converted, split, "val", family.in_channels)
    if family.trainable and not train:
        raise ValueError(
            f"{split_csv}: no annotated training images for dataset '{dataset}'; "
            "check the split fractions in params.yaml"
        )
    settings = TrainSettings.from_model(cfg)
    dev = resolve_device(device)
    started = time.time()
    history: list[dict[str, Any]] = []
    net = None
    if family.trainable:
        torch.manual_seed(seed)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7EA1]))
        for s in train + val:
            s.target = family.make_target(s.labels)
        net = family.build_network().to(dev)
        opt = torch.optim.AdamW(
            net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        steps = max(1, settings.samples_per_epoch // settings.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=settings.learning_rate, total_steps=settings.epochs * steps, pct_start=0.15
        )
        augment = _intensity_augmenter(seed)
        best_loss, best_state, stale = math.inf, None, 0
        bar = tqdm(
            total=settings.epochs * steps,
            desc=f"train {dataset}/{cfg.name}",
            disable=not progress,
            mininterval=2.0,
            unit="batch",
        )
        for epoch in range(1, settings.epochs + 1):
            net.train()
            t0, losses = time.time(), []
            for xb, yb in _batches(train, family, settings, rng, augment):
                loss = family.loss(net(torch.from_numpy(xb).to(dev)), torch.from_numpy(yb).to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses):.4f}")
            val_loss = float("nan")
            if val and (epoch % settings.val_every == 0 or epoch == settings.epochs):
                val_loss = _validation_loss(net, family, val, dev)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)),
                    "val_loss": val_loss,
                    "lr": float(sched.get_last_lr()[0]),
                    "seconds": round(time.time() - t0, 3),
                }
            )
            monitored = val_loss if not math.isnan(val_loss) else history[-1]["train_loss"]
            if monitored < best_loss:
                best_loss, best_state, stale = monitored, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                if settings.patience and stale >= settings.patience:
                    break
        bar.close()
        net.load_state_dict(best_state)
    train_seconds = time.time() - started

    val_maps = [predict_maps(family, net, s.image, dev) for s in val]
    # AP is undefined on sparse ground truth: val images that are all partial tune by SEG
    metric = "seg" if val and all(s.annotation == "partial" for s in val) else "mean_ap"
    tuned = tune_thresholds(family, val_maps, [s.labels for s in val], metric=metric)
    config = {
        "model": cfg.name,
        "family": cfg.family,
        "options": dict(cfg.options),
        "dataset": dataset,
        "in_channels": family.in_channels,
        "map_names": list(family.map_names),
        "seed": seed,
        "trainable": family.trainable,
        "n_train_images": len(train),
        "n_val_images": len(val),
        "epochs_run": len(history),
        "best_monitored_loss": None
        if not history
        else min(
            (h["val_loss"] if not math.isnan(h["val_loss"]) else h["train_loss"]) for h in history
        ),
        "device": str(dev),
        "train_seconds": round(train_seconds, 2),
        "tune_seconds": round(time.time() - started - train_seconds, 2),
        "versions": _versions(),
    }
    with atomic_dir(out_dir) as tmp:
        if net is not None:
            torch.save(
                {
                    "state_dict": net.state_dict(),
                    "family": cfg.family,
                    "options": dict(cfg.options),
                },
                tmp / "weights.pt",
            )
        write_json(tmp / "config.json", config)
        write_json(tmp / "thresholds.json", tuned)
        write_csv(
            tmp / "history.csv",
            pd.DataFrame(history, columns=["epoch", "train_loss", "val_loss", "lr", "seconds"]),
        )
    return config
