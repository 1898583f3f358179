"""Benchmark the README's main command on the offline default, from scratch.

Copies the workflow into a fresh folder, runs ``snakemake --cores N results/report.html``
with the project's params.yaml, and prints (markdown):

- wall time of the whole run and of each rule (from Snakemake's benchmark files);
- every model's test scores beside an *empty prediction* baseline, scored by the
  same code in the same process.

Usage: python benchmarks/bench_default_run.py [--cores 8] [--keep DIR] [--models M ...]
       [--local KEY KIND PATH ...]

``--local dsb2018 dsb2018 /data/dsb2018`` adds a dataset read in place (``source: local``)
under the key ``dsb2018`` and runs it beside ``synthetic``: the same models, the same
params, one report. Repeat it for more datasets.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FILES = ("Snakefile", "dvc.yaml", "params.yaml", "workflow/rules", "workflow/report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--keep", type=Path, default=None, help="run here and keep the results")
    parser.add_argument("--models", nargs="+", default=None, help="override params run.models")
    parser.add_argument(
        "--local",
        nargs=3,
        action="append",
        default=[],
        metavar=("KEY", "KIND", "PATH"),
        help="also run dataset KEY of KIND read in place from PATH (source: local)",
    )
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="cellbench-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        src, dst = REPO / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, dirs_exist_ok=True) if src.is_dir() else shutil.copy(src, dst)
    if args.models or args.local:
        import yaml

        params = yaml.safe_load((work / "params.yaml").read_text())
        if args.models:
            params["run"]["models"] = args.models
        for key, kind, path in args.local:
            params["datasets"][key] = {
                "kind": kind,
                "source": "local",
                "path": str(Path(path).resolve()),
            }
            params["run"]["datasets"].append(key)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run(
        [str(bin_dir / "snakemake"), "--cores", str(args.cores), "results/report.html"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started

    from cellbench.config import load_params
    from cellbench.io import read_json, read_labels
    from cellbench.metrics import score_image, summarize

    params = load_params(work / "params.yaml")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}"
    )
    print(
        f"\nwall time of `snakemake --cores {args.cores} results/report.html` from scratch: "
        f"{wall:.0f} s ({wall / 60:.1f} min)\n"
    )
    rows = []
    for tsv in sorted((work / "results/benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(work / "results/benchmarks")
        rows.append(
            {"job": str(rel.with_suffix("")), "s": float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])}
        )
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))

    print("\nTest-split scores (per-image mean unless marked pooled):\n")
    table = []
    for dataset in params.run_datasets:
        split = pd.read_csv(work / f"data/splits/{dataset}.csv", dtype={"id": str})
        test = split.loc[split["split"] == "test", "id"]
        empty_rows = []
        for image_id in test:
            truth = read_labels(work / f"data/converted/{dataset}/labels/{image_id}.tif")
            empty_rows.append({"id": image_id, **score_image(truth, np.zeros_like(truth)).row()})
        baselines = {"(empty prediction)": summarize(pd.DataFrame(empty_rows))}
        for model in params.run_models:
            baselines[model] = read_json(work / f"results/scores/{dataset}/{model}/summary.json")
        for name, summary in baselines.items():
            mean, pooled = summary["per_image_mean"], summary["pooled"]
            table.append(
                {
                    "dataset": dataset,
                    "model": name,
                    "test images": summary["n_images"],
                    "mean AP": mean["mean_ap"],
                    "mean AP (pooled)": pooled["mean_ap"],
                    "AP@0.50": mean["ap@0.50"],
                    "AP@0.75": mean["ap@0.75"],
                    "F1@0.50": mean["f1@0.50"],
                    "precision@0.50": mean["precision@0.50"],
                    "recall@0.50": mean["recall@0.50"],
                }
            )
    print(pd.DataFrame(table).to_markdown(index=False, floatfmt=".3f"))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"\nresults kept in {work}")


if __name__ == "__main__":
    main()
