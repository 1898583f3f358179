"""Snakefile parse time: ``snakemake -n results/report.html`` here and at a git revision.

The dry run parses the Snakefile (which validates params.yaml) and builds the DAG;
with nothing run yet it does no other work, so its wall time is what every
``snakemake -n``, ``--lint`` and job submission pays before anything happens. The
peer is the same command on an earlier revision of this repository (a temporary
``git worktree`` whose ``workflow/`` is put first on PYTHONPATH), run in the same
process run, alternating, so both see the same machine load.

    python benchmarks/bench_parse.py --baseline 6c1a9e9 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FILES = ("Snakefile", "params.yaml", "workflow")


def stage(src: Path, dst: Path) -> Path:
    """A project folder with the workflow files of ``src`` and no results."""
    dst.mkdir(parents=True)
    for name in FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src / name, dst / name)
    return dst


def dry_run(project: Path) -> tuple[float, bool]:
    """Seconds of one ``snakemake -n`` and whether its Python imported torch."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project / "workflow"),
    }
    probe = (
        "import runpy, sys; sys.argv = ['snakemake', '-n', 'results/report.html'];\n"
        "import atexit; atexit.register(lambda: print('TORCH', 'torch' in sys.modules, "
        "file=sys.stderr));\n"
        "from snakemake.cli import main; main()"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=project, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed in {project}:\n{proc.stderr[-3000:]}")
    return seconds, "TORCH True" in proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        projects = {"this tree": stage(REPO, tmp / "current")}
        worktree = None
        if args.baseline:
            worktree = tmp / "baseline_src"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(worktree), args.baseline],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            projects[f"baseline {args.baseline}"] = stage(worktree, tmp / "baseline")
        try:
            times: dict[str, list[float]] = {k: [] for k in projects}
            torch: dict[str, bool] = {}
            for p in projects.values():  # warm the file cache once, untimed
                dry_run(p)
            for _ in range(args.repeats):
                for k, p in projects.items():
                    seconds, imported = dry_run(p)
                    times[k].append(seconds)
                    torch[k] = imported
        finally:
            if worktree is not None:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(worktree)],
                    cwd=REPO,
                    check=False,
                    capture_output=True,
                )
    print(f"snakemake -n results/report.html, {args.repeats} runs each (seconds)")
    print(f"{'tree':28s} {'median':>7s} {'min':>7s} {'max':>7s}  imports torch")
    for k, values in times.items():
        print(
            f"{k:28s} {statistics.median(values):7.2f} {min(values):7.2f} {max(values):7.2f}"
            f"  {'yes' if torch[k] else 'no'}"
        )


if __name__ == "__main__":
    main()
