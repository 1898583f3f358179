"""Training throughput (crops per second) of the network families, by training setting.

One process, one family and one set of training images (a converted dataset's train
split). Each row runs the same number of
optimiser steps of the real training loop pieces (:func:`cellbench.train._batches`
for the crops and augmentation, the family's ``training_loss``, AdamW) with one
setting changed, side by side:

- ``fp32`` : the plain loop (crops made between the steps, NCHW, fp32);
- ``+prefetch`` : crops made in a background thread while the network steps;
- ``+channels_last`` : NHWC tensors and weights;
- ``+bf16`` : bf16 autocast for the network (the loss stays fp32);
- ``+compile`` : the network's training forward through ``torch.compile`` (inductor; its
  compile time is spent in the warm-up steps and printed apart).

``--model NAME ...`` measures models of ``--params`` (params.yaml) with all their options
(a recipe's network, e.g. ``flow_real_size``'s wider decoder), each with every row, in one
table; without it, the family's defaults with ``--encoder`` / ``--patch-size`` /
``--batch-size``. ``--channels`` is the input channels (3 for DSB's colour recipes).

The header names the CPU's capability and whether it computes bf16 natively (where it
does not, the bf16 rows are emulated and slow, and ``precision: auto`` trains in fp32).

Printed per row: crops/s (after ``--warmup`` steps), seconds per step, the share of
the plain loop's time spent making crops, and the speed-up over ``fp32``.

Usage::

    python benchmarks/bench_train_speed.py --family flow --converted data/converted/dsb2018_full \\
        --split data/splits/dsb2018_full.csv --threads 2
    python benchmarks/bench_train_speed.py --model flow_real_size --channels 3 \\
        --converted data/converted/dsb2018_full --split data/splits/dsb2018_full.csv --threads 2
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cellbench.config import ModelConfig, load_params
from cellbench.device import native_bf16, resolve_precision
from cellbench.models import get_family
from cellbench.train import (
    Sample,
    _autocast,
    _batches,
    _IntensityAugmenter,
    _prefetched,
    load_split,
)

ROWS = {
    "fp32": {},
    "+prefetch": {"prefetch": True},
    "+prefetch +channels_last": {"prefetch": True, "channels_last": True},
    "+prefetch +bf16": {"prefetch": True, "precision": "bf16"},
    "+prefetch +channels_last +bf16": {
        "prefetch": True,
        "channels_last": True,
        "precision": "bf16",
    },
    "+prefetch +compile": {"prefetch": True, "compile": True},
}


def _samples(args) -> list[Sample]:
    split = pd.read_csv(args.split, dtype={"id": str}, keep_default_na=False)
    return load_split(Path(args.converted), split, "train", args.channels, frames=1)


def _run(family, samples, settings, row: dict, steps: int, warmup: int, device) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    augment = _IntensityAugmenter(0)
    net = family.build_network().to(device)
    channels_last = row.get("channels_last", False)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    forward = torch.compile(net) if row.get("compile") else net
    options = settings.model_copy(
        update={
            "samples_per_epoch": (steps + warmup) * settings.batch_size,
            "precision": row.get("precision", "fp32"),
        }
    )
    autocast = _autocast(options, device)
    batches = _batches(samples, family, options, rng, augment)
    if row.get("prefetch"):
        batches = _prefetched(batches)
    net.train()
    data_s, started = 0.0, None
    t = first = time.perf_counter()
    for step, (xb, yb) in enumerate(batches):
        data_s += time.perf_counter() - t if step >= warmup else 0.0
        if step == warmup:
            started = time.perf_counter()
            warmup_s = started - first
        x = torch.from_numpy(xb).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = family.training_loss(forward, x, torch.from_numpy(yb).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t = time.perf_counter()
    elapsed = time.perf_counter() - started
    return {
        "crops/s": steps * settings.batch_size / elapsed,
        "s/step": elapsed / steps,
        "waiting for crops": data_s / elapsed,
        "warm-up s": warmup_s,
        "loss": float(loss.detach()),
    }


def _network(opts) -> str:
    """The encoder and the decoder widths in use, e.g. ``resnet18, decoder [128, 64, 32, 16]``."""
    decoder = getattr(opts, "decoder_channels", None)
    depth = getattr(opts, "encoder_depth", None)
    widths = f", decoder {list(decoder)[:depth]}" if decoder and depth else ""
    return f"{getattr(opts, 'encoder', '?')}{widths}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="unet", choices=["unet", "flow", "embedding"])
    parser.add_argument(
        "--model",
        nargs="+",
        help="models of --params, each with its family and all its options (a recipe)",
    )
    parser.add_argument("--params", default="params.yaml", help="params.yaml for --model")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--converted", required=True, help="converted dataset folder")
    parser.add_argument("--split", required=True, help="its split CSV")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    samples = _samples(args)
    print(
        f"{args.steps} steps after {args.warmup} warm-up, {args.threads} threads, "
        f"{len(samples)} training images; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}; CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {native_bf16(device)} (what precision: auto picks: "
        f"{resolve_precision('auto', device)})"
    )
    header = (
        f"| {'network':<64} | {'setting':<32} | crops/s | s/step | waiting for crops "
        "| speed-up | warm-up s |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    base = None  # the first row: every speed-up is against it
    for family in _families(args):
        opts = family.options
        for s in samples:
            s.target = family.make_target(s.labels)
        network = f"{family.name}: {_network(opts)}, {opts.batch_size} x {opts.patch_size} px"
        for name in args.rows:
            result = _run(family, samples, opts, ROWS[name], args.steps, args.warmup, device)
            base = base or result["crops/s"]
            print(
                f"| {network:<64} | {name:<32} | {result['crops/s']:7.1f} | "
                f"{result['s/step']:6.3f} | {result['waiting for crops']:17.0%} | "
                f"{result['crops/s'] / base:7.2f}x | {result['warm-up s']:9.1f} |",
                flush=True,
            )


def _families(args) -> list:
    """The networks to measure: each ``--model`` of ``--params``, else ``--family``'s defaults."""
    if not args.model:
        cfg = ModelConfig(
            name=f"{args.family} defaults",
            family=args.family,
            options={
                "encoder": args.encoder,
                "in_channels": args.channels,
                "patch_size": args.patch_size,
                "batch_size": args.batch_size,
            },
        )
        return [get_family(cfg)]
    params = load_params(args.params)
    out = []
    for name in args.model:
        recipe = params.model(name)
        options = {**recipe.options, "in_channels": args.channels}
        out.append(get_family(ModelConfig(name=name, family=recipe.family, options=options)))
    return out


if __name__ == "__main__":
    main()
