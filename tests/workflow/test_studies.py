"""Learning curves, the cross-dataset matrix and the union, through the real Snakefile.

The dry runs (seconds) check that the report depends on the new targets only when
params.yaml's `run:` turns them on. The slow test runs the whole tiny pipeline on two
synthetic datasets with classical + a tiny unet, train_sizes [4, all], seeds [1, 2],
cross and union on, and checks the files and the report's two sections.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import BIN, copy_workflow, run, tiny_params, write_params

NEW_RULES = (
    "plan_learning_curve",
    "subsample_split",
    "train_curve_model",
    "score_curve_masks",
    "build_union",
    "predict_cross_images",
    "score_cross_masks",
)


def studies_params(project: Path) -> dict:
    """Two tiny synthetic datasets (the second: phase contrast only), every option on."""
    params = tiny_params(project / "params.yaml")
    params["seed"] = 1  # so seed 1 of the curve is the main run: ('all', 1) is not retrained
    other = copy.deepcopy(params["datasets"]["synthetic"])
    other["options"].update(looks=["phase"], n_images=10)
    params["datasets"]["synthetic_b"] = other
    params["run"] = {
        "datasets": ["synthetic", "synthetic_b"],
        "models": ["classical", "unet"],
        "train_sizes": [4, "all"],
        "seeds": [1, 2],
        "cross": True,
        "union": True,
    }
    return params


def dry_run(project: Path) -> str:
    proc = run([str(BIN / "snakemake"), "-n", "--cores", "2", "results/report.html"], project)
    return proc.stdout + proc.stderr


def test_report_depends_on_the_new_targets_only_when_they_are_on(
    tmp_path: Path, repo_root: Path
) -> None:
    off, on = tmp_path / "off", tmp_path / "on"
    for project in (off, on):
        copy_workflow(repo_root, project)
    write_params(off, tiny_params(off / "params.yaml"))
    write_params(on, studies_params(on))
    plain = dry_run(off)
    for rule in NEW_RULES:
        assert f"rule {rule}:" not in plain and f"checkpoint {rule}:" not in plain, rule
    full = dry_run(on)
    assert "plan_learning_curve" in full and "rule build_union:" in full
    assert "results/cross/unet/union__on__synthetic_b/scores" in full
    assert "results/cross/classical/synthetic__on__synthetic_b/scores" in full
    assert "__on__synthetic/scores" in full and "synthetic__on__synthetic/" not in full
    assert "results/models/union/unet" in full


def test_curve_datasets_limit_the_learning_curve_targets(tmp_path: Path, repo_root: Path) -> None:
    project = tmp_path / "b_only"
    copy_workflow(repo_root, project)
    params = studies_params(project)
    params["run"]["curve_datasets"] = ["synthetic_b"]
    write_params(project, params)
    out = dry_run(project)
    assert "data/splits/synthetic_b/learning_curve.json" in out
    assert "data/splits/synthetic/learning_curve.json" not in out
    # the main runs and the whole matrix are still there
    assert "results/cross/unet/synthetic__on__synthetic_b/scores" in out
    assert "results/models/synthetic/unet" in out


@pytest.mark.slow
def test_learning_curves_cross_and_union_end_to_end(tmp_path: Path, repo_root: Path) -> None:
    project = copy_workflow(repo_root, tmp_path)
    write_params(project, studies_params(project))
    smk = str(BIN / "snakemake")
    run([smk, "--cores", "2", "results/report.html"], project)

    # learning curves: the subsampled splits, nested within a seed, val / test unchanged
    splits = project / "data/splits"
    plan = json.loads((splits / "synthetic/learning_curve.json").read_text())
    assert plan["labels"] == ["4", "all"] and plan["n_train"] > 4
    full = pd.read_csv(splits / "synthetic.csv", dtype=str)
    for seed in (1, 2):
        sub = pd.read_csv(splits / f"synthetic/n4_s{seed}.csv", dtype=str)
        assert (sub["split"] == "train").sum() == 4
        assert (sub["split"] == "unused").sum() == plan["n_train"] - 4
        for part in ("val", "test"):
            assert sub.loc[sub["split"] == part, "id"].tolist() == (
                full.loc[full["split"] == part, "id"].tolist()
            )
    assert not (splits / "synthetic/nall_s1.csv").exists()  # the main run is that point
    curves = project / "results/curves"
    for dataset in ("synthetic", "synthetic_b"):
        for model in ("classical", "unet"):
            for point in ("n4_s1", "n4_s2", "nall_s2"):
                for stage in ("models", "predictions", "masks", "scores"):
                    assert (curves / stage / dataset / model / point).is_dir(), (stage, point)
            assert not (curves / "models" / dataset / model / "nall_s1").exists()
    config = json.loads((curves / "models/synthetic/unet/n4_s2/config.json").read_text())
    assert config["seed"] == 2 and config["n_train_images"] == 4
    main = json.loads((project / "results/models/synthetic/unet/config.json").read_text())
    assert main["seed"] == 1 and config["params_sha256"] != main["params_sha256"]

    # the union: every member's images under prefixed ids, its test split the members' tests
    union = pd.read_csv(splits / "union.csv", dtype=str)
    for dataset in ("synthetic", "synthetic_b"):
        own = pd.read_csv(splits / f"{dataset}.csv", dtype=str)
        mine = union[union["id"].str.startswith(f"{dataset}--")]
        for part in ("train", "val", "test"):
            assert sorted(mine.loc[mine["split"] == part, "id"]) == sorted(
                f"{dataset}--{i}" for i in own.loc[own["split"] == part, "id"]
            )
    union_model = json.loads((project / "results/models/union/unet/config.json").read_text())
    assert union_model["dataset"] == "union"

    # the matrix: every off-diagonal pair and the union row, per model
    for model in ("classical", "unet"):
        for cell in (
            "synthetic__on__synthetic_b",
            "synthetic_b__on__synthetic",
            "union__on__synthetic",
            "union__on__synthetic_b",
        ):
            summary = project / "results/cross" / model / cell / "scores/summary.json"
            assert json.loads(summary.read_text())["n_images"] > 0, (model, cell)

    report = (project / "results/report.html").read_text()
    assert 'id="learning-curves"' in report and 'id="cross-dataset"' in report
    assert report.count('class="learning-curve"') == 2  # one table per dataset
    assert report.count('class="matrix"') == 2  # one heat map per model
    assert "training images (log scale)" in report and ">union<" in report

    again = run([smk, "--cores", "2", "-n", "results/report.html"], project)
    assert "Nothing to be done" in again.stdout + again.stderr
