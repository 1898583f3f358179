"""Helpers shared by the end-to-end tests: copy the workflow, shrink params, run commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
# envs/: the rules' conda files, which Snakemake reads even without --software-deployment-method
WORKFLOW_FILES = (
    "Snakefile",
    "dvc.yaml",
    "params.yaml",
    "envs",
    "workflow/rules",
    "workflow/report",
)


def copy_workflow(repo_root: Path, dst: Path) -> Path:
    """Copy the files a user runs the pipeline with into ``dst``."""
    for name in WORKFLOW_FILES:
        src, target = repo_root / name, dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copy(src, target)
    return dst


def tiny_params(path: Path) -> dict:
    """The project's params.yaml with small images and 2 training epochs for every network."""
    params = yaml.safe_load(path.read_text())
    params["datasets"]["synthetic"]["options"].update(
        n_images=12, height=96, width=96, n_cells=[4, 10], radius=[6.0, 10.0]
    )
    params["models"]["classical"].update(threshold_scale=[1.0], min_distance=[4, 6])
    # every network: 2 epochs of 8 small crops; one threshold choice (two for flow QC)
    tiny = dict(
        epochs=2, batch_size=4, patch_size=64, samples_per_epoch=8, decoder_channels=[16] * 4
    )
    thresholds = {
        "unet": dict(seed_threshold=[0.5], mask_threshold=[0.5], split_h=[1.0]),
        "flow": dict(cellprob_threshold=[0.5], flow_threshold=[0.4, 0]),
    }
    for model in params["models"].values():
        if model["family"] in thresholds:
            model.update(tiny, **thresholds[model["family"]])
    return params


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 1200):
    """Run a command with the venv's tools first on PATH; on failure show every job log."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(cwd.glob("results/logs/**/*.log"))
        )
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}")
    return proc
