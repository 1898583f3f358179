"""End-to-end: the real Snakefile and dvc.yaml on a tiny synthetic config.

Each test copies the workflow files into a fresh folder, shrinks params.yaml
(small images, 2 epochs) and runs the same commands a user runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("Snakefile", "dvc.yaml", "params.yaml", "workflow/rules", "workflow/report")


def tiny_params(path: Path) -> dict:
    params = yaml.safe_load(path.read_text())
    params["datasets"]["synthetic"]["options"].update(
        n_images=12, height=96, width=96, n_cells=[4, 10], radius=[6.0, 10.0]
    )
    params["models"]["classical"].update(threshold_scale=[1.0], min_distance=[4, 6])
    params["models"]["unet"].update(
        epochs=2,
        batch_size=4,
        patch_size=64,
        samples_per_epoch=8,
        decoder_channels=[16, 16, 16, 16],
        seed_threshold=[0.5],
        mask_threshold=[0.5],
    )
    return params


@pytest.fixture()
def project(tmp_path: Path, repo_root: Path) -> Path:
    for name in WORKFLOW_FILES:
        src, dst = repo_root / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    params = tiny_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(cwd.glob("results/logs/**/*.log"))
        )
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}")
    return proc


def set_unet_epochs(project: Path, epochs: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["unet"]["epochs"] = epochs
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_snakemake_end_to_end_and_incremental(project: Path) -> None:
    smk = str(BIN / "snakemake")
    run([smk, "--cores", "2", "results/report.html"], project)
    report = (project / "results/report.html").read_text()
    assert "Leaderboard" in report and "classical" in report and "unet" in report
    assert report.count("data:image/png;base64,") == 2  # one overlay per model
    for model in ("classical", "unet"):
        model_dir = project / "results/models/synthetic" / model
        assert (model_dir / "config.json").is_file() and (model_dir / "thresholds.json").is_file()
        assert (project / "results/scores/synthetic" / model / "summary.json").is_file()
    assert (project / "results/models/synthetic/unet/weights.pt").is_file()
    assert (
        len((project / "results/models/synthetic/unet/history.csv").read_text().splitlines()) == 3
    )

    again = run([smk, "--cores", "2", "-n", "results/report.html"], project)
    assert "Nothing to be done" in again.stdout + again.stderr

    set_unet_epochs(project, 3)
    dry = run([smk, "--cores", "2", "-n", "-p", "results/report.html"], project)
    out = dry.stdout + dry.stderr
    assert "--model unet" in out and "cellbench train" in out
    assert "--model classical" not in out
    for rule in ("download_dataset", "convert_dataset", "split_dataset"):
        assert f"rule {rule}:" not in out, out
    classical_cfg = project / "results/models/synthetic/classical/config.json"
    before = classical_cfg.stat().st_mtime_ns
    run([smk, "--cores", "2", "results/report.html"], project)
    assert classical_cfg.stat().st_mtime_ns == before
    assert (
        len((project / "results/models/synthetic/unet/history.csv").read_text().splitlines()) == 4
    )


def test_dvc_repro_end_to_end_and_incremental(project: Path) -> None:
    dvc = str(BIN / "dvc")
    run(["git", "init", "-q"], project)
    run([dvc, "init", "-q"], project)
    run([dvc, "repro"], project)
    assert (project / "results/report.html").is_file()
    status = run([dvc, "status"], project)
    assert "up to date" in status.stdout.lower()

    set_unet_epochs(project, 3)
    status = run([dvc, "status"], project).stdout
    assert "train_model@synthetic-unet" in status
    assert "synthetic-classical" not in status
    assert "download_dataset" not in status and "convert_dataset" not in status
    out = run([dvc, "repro"], project).stdout
    assert "Running stage 'train_model@synthetic-unet'" in out
    assert "Running stage 'train_model@synthetic-classical'" not in out
    assert "Running stage 'download_dataset@synthetic'" not in out


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["run"].update(models=["classical", "unett"]), "run.models: 'unett'"),
        (lambda p: p["models"]["unet"].update(epochs=-1), "models.unet.epochs: -1"),
        (
            lambda p: p.update(modles=p.pop("models")),
            "unknown key 'modles' (did you mean 'models'?)",
        ),
    ],
)
def test_invalid_params_stop_snakemake_before_any_work(project: Path, edit, expected) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(
        [str(BIN / "snakemake"), "--cores", "1", "results/report.html"], project, check=False
    )
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (project / "data").exists() and not (project / "results").exists()
