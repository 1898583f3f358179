"""End-to-end: the real Snakefile and dvc.yaml on a tiny synthetic config.

Each test copies the workflow files into a fresh folder, shrinks params.yaml
(small images, 2 epochs) and runs the same commands a user runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from workflow_helpers import BIN, copy_workflow, run, tiny_params, write_params

pytestmark = pytest.mark.slow


@pytest.fixture()
def project(tmp_path: Path, repo_root: Path) -> Path:
    copy_workflow(repo_root, tmp_path)
    write_params(tmp_path, tiny_params(tmp_path / "params.yaml"))
    return tmp_path


def set_unet_epochs(project: Path, epochs: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["unet"]["epochs"] = epochs
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_snakemake_end_to_end_and_incremental(project: Path) -> None:
    smk = str(BIN / "snakemake")
    run([smk, "--cores", "2", "results/report.html"], project)
    report = (project / "results/report.html").read_text()
    assert "Leaderboard" in report and "classical" in report and "unet" in report
    assert 'id="leaderboard-0"' in report and report.count("data:image/png;base64,") >= 2
    from cellbench import __version__
    from cellbench.models import MODEL_FAMILIES

    for model in ("classical", "unet"):
        model_dir = project / "results/models/synthetic" / model
        assert (model_dir / "config.json").is_file() and (model_dir / "thresholds.json").is_file()
        # the folder describes itself: every option of its family, resolved
        config = json.loads((model_dir / "config.json").read_text())
        assert set(config["options"]) == set(MODEL_FAMILIES[model].options.model_fields)
        assert config["cellbench_version"] == __version__ and len(config["params_sha256"]) == 64
        assert (project / "results/scores/synthetic" / model / "summary.json").is_file()
    assert (project / "results/models/synthetic/unet/weights.pt").is_file()
    assert (
        len((project / "results/models/synthetic/unet/history.csv").read_text().splitlines()) == 3
    )

    # the rule log: one line per epoch, no progress-bar redraws (stderr is not a terminal)
    train_log = (project / "results/logs/train_model/synthetic/unet.log").read_text()
    assert "epoch 1/2  train_loss" in train_log and "epoch 2/2  train_loss" in train_log
    assert "\r" not in train_log and "batch/s" not in train_log
    predict_log = (project / "results/logs/predict_images/synthetic/unet.log").read_text()
    assert "\r" not in predict_log and "it/s" not in predict_log
    for rule in (
        "split_dataset/synthetic",
        "score_masks/synthetic/unet",
        "train_model/synthetic/unet",
    ):
        assert (project / "results/benchmarks" / f"{rule}.tsv").is_file(), rule

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
