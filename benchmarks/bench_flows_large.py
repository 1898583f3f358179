"""Flow tracking on large images: time and peak memory, ours beside Cellpose's.

For each square size (default 2048, 4096 and 8000 px) a mosaic of real label images
(BBBC039 and DSB 2018 stage-1 train masks, as in ``bench_flows.py``) gets flows from
:func:`cellbench.targets.labels_to_flows` and a cell probability of 1 inside cells. Each
method then runs alone in a fresh process (spawned, so one's memory cannot hide the
other's), quality control on (``flow_threshold`` 0.4), Cellpose's defaults otherwise:

- ours: :func:`cellbench.postprocess.flows.flows_to_labels` (torch, CPU);
- Cellpose: ``cellpose.dynamics.compute_masks`` (torch, CPU), skipped with
  ``--no-cellpose`` or past ``--cellpose-max`` px.

Printed per size and method: wall time, the process's resident memory before the call
(inputs loaded) and its peak during the call (sampled every 5 ms from /proc), the peak
growth, instances found, and the agreement of ours with Cellpose (AP at IoU 0.5) and of
each with the labels.

Usage::

    python benchmarks/bench_flows_large.py [--sizes 2048 4096 8000] [--threads 2]

Needs ``cellpose`` (test-only dependency) and the shared data (``--data`` or
``CELLBENCH_SHARED_DATA``; default ``../shared/data`` next to the checkout).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flows import (  # noqa: E402
    MIN_SIZE,
    NITER,
    QC_THRESHOLD,
    label_mosaic,
    real_labels,
    shared_data,
)

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Samples this process's resident memory every 5 ms while in the ``with`` block."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def run_method(method: str, inputs: str, out: str, threads: int) -> None:
    """Child process: load the flows, run one method, save masks and measurements."""
    import torch

    torch.set_num_threads(threads)
    data = np.load(inputs)
    flows, prob = data["flows"], data["prob"]
    if method == "ours":
        from cellbench.postprocess.flows import flows_to_labels

        def call():
            return flows_to_labels(
                flows,
                prob,
                cellprob_threshold=0.5,
                flow_threshold=QC_THRESHOLD,
                min_size=MIN_SIZE,
                niter=NITER,
            )
    else:
        from cellpose.dynamics import compute_masks

        dp = (flows * 5.0).astype(np.float32)
        logits = np.where(prob > 0.5, 10.0, -10.0).astype(np.float32)

        def call():
            return compute_masks(
                dp,
                logits,
                niter=NITER,
                cellprob_threshold=0.0,
                flow_threshold=QC_THRESHOLD,
                min_size=MIN_SIZE,
                device=torch.device("cpu"),
            )

    with PeakRSS() as mem:
        started = time.perf_counter()
        masks = call()
        wall = time.perf_counter() - started
    np.savez(out, masks=np.asarray(masks, np.int32), wall=wall, start=mem.start, peak=mem.peak)


def measure(method: str, inputs: Path, work: Path, threads: int) -> dict | None:
    out = work / f"{method}.npz"
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=run_method, args=(method, str(inputs), str(out), threads))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        print(f"  {method}: child process failed (exit {proc.exitcode})", flush=True)
        return None
    res = np.load(out)
    return {k: res[k] for k in ("masks", "wall", "start", "peak")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8000])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--data", help="shared data folder [../shared/data]")
    parser.add_argument("--no-cellpose", action="store_true", help="run ours only")
    parser.add_argument(
        "--cellpose-max", type=int, default=100_000, help="largest size Cellpose runs at [all]"
    )
    args = parser.parse_args(argv)

    import pandas as pd
    from cellbench.metrics import score_image
    from cellbench.targets import labels_to_flows

    root = shared_data(args.data)
    labels = real_labels(root)
    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"torch threads {args.threads}; QC flow_threshold {QC_THRESHOLD}, niter {NITER}\n",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-flows-large-") as tmp:
        work = Path(tmp)
        for size in args.sizes:
            truth = label_mosaic(labels, size)
            started = time.perf_counter()
            maps = labels_to_flows(truth)  # (dy, dx, foreground)
            t_flows = time.perf_counter() - started
            flows, prob = maps[:2].astype(np.float32), maps[2].astype(np.float32)
            del maps
            inputs = work / "inputs.npz"
            np.savez(inputs, flows=flows, prob=prob)
            del flows, prob
            print(
                f"{size} px: {int(truth.max())} cells, labels_to_flows {t_flows:.1f} s",
                flush=True,
            )
            methods = ["ours"]
            if not args.no_cellpose and size <= args.cellpose_max:
                methods.append("cellpose")
            results = {m: measure(m, inputs, work, args.threads) for m in methods}
            for method, res in results.items():
                if res is None:
                    continue
                row = {
                    "size (px)": size,
                    "cells": int(truth.max()),
                    "method": method,
                    "wall (s)": float(res["wall"]),
                    "RSS before (MB)": float(res["start"]) / 2**20,
                    "peak RSS (MB)": float(res["peak"]) / 2**20,
                    "peak growth (MB)": float(res["peak"] - res["start"]) / 2**20,
                    "instances": int(res["masks"].max()),
                    "AP@0.5 vs labels": score_image(truth, res["masks"], extra_thresholds=())
                    .matching(0.5)
                    .ap,
                }
                if method == "ours" and results.get("cellpose") is not None:
                    row["AP@0.5 vs Cellpose"] = (
                        score_image(results["cellpose"]["masks"], res["masks"], extra_thresholds=())
                        .matching(0.5)
                        .ap
                    )
                rows.append(row)
                print(f"  {method}: {row['wall (s)']:.1f} s", flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
