"""DSB 2018 conversion time: the thread pool against one thread, in one process.

Converts a local copy of DSB 2018 (``stage1_train`` with its mask PNGs, and
``stage1_test`` + ``stage1_solution.csv``) into a temporary folder, once per
thread count, and prints seconds, images and mask files per second.

Usage::

    python benchmarks/bench_convert.py data/local/dsb2018-full --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cellbench.config import DatasetConfig
from cellbench.datasets import dsb2018, get_dataset
from cellbench.datasets.base import ConvertedWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="folder with stage1_train/ (and stage1_test/)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = parser.parse_args()
    n_masks = sum(1 for _ in args.raw.glob("stage1_train/*/masks/*.png"))
    print(f"{args.raw}: {n_masks} mask PNGs; {os.cpu_count()} CPUs")
    print("| threads | seconds | images | masks / s |")
    print("|--:|--:|--:|--:|")
    for threads in args.threads:
        dsb2018.WORKERS = threads
        cfg = DatasetConfig(name="dsb", kind="dsb2018", source="local", path=str(args.raw))
        source = get_dataset(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            writer = ConvertedWriter(Path(tmp) / "out", "dsb")
            source.convert(args.raw, writer)
            writer.finish()
            seconds = time.perf_counter() - started
            n_images = len(writer.rows)
        print(f"| {threads} | {seconds:.1f} | {n_images} | {n_masks / seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
