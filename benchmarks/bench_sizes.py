"""Size estimation of a size-normalised model: size model against segmented passes, by scale.

One process, one trained model folder (``diameter`` > 0; a ``size_model.json`` for the
regression rows), its dataset's converted test images shown at several scales
(``--scales``, default 0.5, 1 and 2: images resized with area / bilinear
interpolation, the truth with centre-aligned nearest neighbour). Each image is
segmented as ``cellbench segment`` does (``segment_array``) with the diameter
estimated in three ways, side by side:

- ``segmentation``: the network segments at the original size, the objects found are
  measured and the image rescaled, up to 3 passes (the estimator before the size
  model; ``size_estimate: segmentation``, ``diameter_passes: 3``);
- ``size model``: the size model's regression alone (``diameter_passes: 1``);
- ``size model + 1 pass``: the regression, refined by one segmented pass (the
  default, ``diameter_passes: 2``);
- ``1 pass from 1x/2x/3x``: as the previous, but the first pass tries 1x, 2x and 3x
  the regressed diameter and refines the start whose objects measure closest to the
  standard size (``diameter_starts: [1, 2, 3]``).

Printed per estimator and scale: mean AP over the images (the paired difference to
scale 1 in brackets), the median estimated / true diameter ratio, the share of images
within 20 % of the true diameter, and seconds per image. The ``--diameter-given``
row segments at the true diameter (an upper bound for any estimator).

Usage::

    python benchmarks/bench_sizes.py --model-dir results/models/dsb2018/unet_size \\
        --converted data/converted/dsb2018 --split data/splits/dsb2018.csv
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from cellbench.io import read_image, read_labels
from cellbench.metrics import score_image
from cellbench.modelfolder import load_model
from cellbench.models.registry import family_entry
from cellbench.scale import median_diameter
from cellbench.segment import segment_array

ESTIMATORS = {
    "segmentation": {"size_estimate": "segmentation", "diameter_passes": 3},
    "size model": {"size_estimate": "regression", "diameter_passes": 1},
    "size model + 1 pass": {"size_estimate": "regression", "diameter_passes": 2},
    "1 pass from 1x/2x/3x": {
        "size_estimate": "regression",
        "diameter_passes": 2,
        "diameter_starts": (1.0, 2.0, 3.0),
    },
}


def _resize(array: np.ndarray, factor: float, labels: bool) -> np.ndarray:
    if factor == 1.0:
        return array
    h, w = array.shape[:2]
    size = (round(w * factor), round(h * factor))
    if labels:
        out = cv2.resize(array.astype(np.float32), size, interpolation=cv2.INTER_NEAREST_EXACT)
        return out.astype(np.int32)
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def _with_options(model, **update):
    """The loaded model with some options changed (validated), sharing its network."""
    family = model.family
    options = family_entry(family.family).options.model_validate(
        {**family.options.model_dump(), **update}
    )
    return replace(model, family=type(family)(family.name, options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--converted", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--which", default="test", help="split to use (default: test)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--estimators",
        nargs="+",
        choices=list(ESTIMATORS),
        default=list(ESTIMATORS),
        help="estimators to run (default: all)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = load_model(args.model_dir, "cpu")
    if not getattr(base.family.options, "diameter", 0):
        raise SystemExit(f"{args.model_dir}: not a size-normalised model (diameter is 0)")
    split = pd.read_csv(args.split, dtype={"id": str})
    ids = list(split.loc[split["split"] == args.which, "id"])
    variants = {
        name: _with_options(base, **opts)
        for name, opts in ESTIMATORS.items()
        if name in args.estimators
        and (base.size_model is not None or opts["size_estimate"] == "segmentation")
    }
    rows = []
    for image_id in ids:
        image = np.asarray(read_image(args.converted / "images" / f"{image_id}.tif"))
        truth = np.asarray(read_labels(args.converted / "labels" / f"{image_id}.tif"))
        for factor in args.scales:
            x, y = _resize(image, factor, False), _resize(truth, factor, True)
            true_d = median_diameter(y)
            runs = [(name, model, None) for name, model in variants.items()]
            runs.append(("diameter given", base, true_d))
            for name, model, given in runs:
                start = time.perf_counter()
                seg = segment_array(model, x, image_diameter=given)
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "estimator": name,
                        "scale": factor,
                        "id": image_id,
                        "mean_ap": score_image(y, seg.labels).mean_ap,
                        "ratio": (seg.scale.diameter or np.nan) / true_d if true_d else np.nan,
                        "seconds": seconds,
                    }
                )
    df = pd.DataFrame(rows)
    print(
        f"model {args.model_dir} ({base.family.family}, standard {base.family.options.diameter} px"
        f", size model: {'yes' if base.size_model else 'no'}), {len(ids)} {args.which} images"
    )
    print(
        f"{'estimator':22s} {'scale':>5s} {'mean AP':>8s} {'vs 1x':>7s} {'ratio':>6s} "
        f"{'±20 %':>6s} {'s/img':>6s}"
    )
    for name in [*variants, "diameter given"]:
        own = df[df["estimator"] == name]
        ref = own[own["scale"] == 1.0].set_index("id")["mean_ap"]
        for factor in args.scales:
            part = own[own["scale"] == factor].set_index("id")
            diff = (part["mean_ap"] - ref).mean() if len(ref) else np.nan
            within = (abs(part["ratio"] - 1) <= 0.2).mean()
            print(
                f"{name:22s} {factor:5.2f} {part['mean_ap'].mean():8.3f} {diff:+7.3f} "
                f"{part['ratio'].median():6.2f} {within:6.2f} {part['seconds'].mean():6.2f}"
            )


if __name__ == "__main__":
    main()
