"""DVC: the same commands as Snakemake, and the README's DVC workflow on a fresh clone.

`test_dvc_and_snakemake_run_the_same_commands` is a dry run (seconds). The slow test runs
the tiny pipeline once with `dvc exp run -S ...` in a fresh git repository, then checks
metrics, plots, and a push to a local-folder remote pulled back into a fresh clone.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from workflow_helpers import BIN, copy_workflow, run, tiny_params, write_params

# What a clone has besides the workflow files: DVC's config and ignore files, .gitignore.
DVC_FILES = (".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore")

# The parts of a command allowed to differ, and why:
# - Snakemake sends each job's output to its log (`> LOG 2>&1`); `dvc repro` shows it.
# - Snakemake passes `--threads N` (its --cores or the profile's threads, so parallel jobs
#   share the CPUs); DVC runs one stage at a time and the CLI's default is every CPU.
# Everything that defines the work (params file, dataset, model, every path) must match.
SNAKEMAKE_ONLY = (re.compile(r"\s*>\s*\S+\s+2>&1\s*$"), re.compile(r"\s--threads\s+\d+"))


def _normalise(cmd: str, allowed=()) -> str:
    for pattern in allowed:
        cmd = pattern.sub("", cmd)
    return " ".join(cmd.split())


def snakemake_commands(project: Path) -> dict[str, list[str]]:
    """Rule name -> the shell commands of `snakemake -n -p --forceall results/report.html`."""
    proc = run(
        [str(BIN / "snakemake"), "-n", "-p", "--forceall", "--cores", "4", "results/report.html"],
        project,
    )
    commands, rule = defaultdict(list), None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif line.startswith("Shell command: "):
            commands[rule].append(_normalise(line.removeprefix("Shell command: "), SNAKEMAKE_ONLY))
    return {k: sorted(v) for k, v in commands.items()}


def dvc_commands(project: Path) -> dict[str, list[str]]:
    """Stage name (foreach / matrix resolved with the project's params.yaml) -> commands."""
    from dvc.repo import Repo

    commands = defaultdict(list)
    with Repo(str(project), uninitialized=True) as repo:
        for stage in repo.index.stages:
            commands[stage.name.split("@")[0]].append(_normalise(stage.cmd))
    return {k: sorted(v) for k, v in commands.items()}


def test_dvc_and_snakemake_run_the_same_commands(tmp_path: Path, repo_root: Path) -> None:
    copy_workflow(repo_root, tmp_path)
    params = tiny_params(tmp_path / "params.yaml")
    params["run"]["models"] = sorted(params["models"])  # every model of params.yaml
    write_params(tmp_path, params)
    smk, dvc = snakemake_commands(tmp_path), dvc_commands(tmp_path)
    assert set(smk) == set(dvc), (sorted(smk), sorted(dvc))
    for rule in smk:
        assert smk[rule] == dvc[rule], rule
    assert len(smk["score_masks"]) == len(params["models"])


@pytest.fixture()
def git_project(tmp_path: Path, repo_root: Path) -> Path:
    """The tiny workflow as a committed git repository: what `git clone` gives a user."""
    project = tmp_path / "project"
    copy_workflow(repo_root, project)
    for name in DVC_FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo_root / name, project / name)
    write_params(project, tiny_params(project / "params.yaml"))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "clone")
    return project


def git(project: Path, *args: str):
    ident = ["-c", "user.name=test", "-c", "user.email=test@example.org"]
    return run(["git", *ident, *args], project)


@pytest.mark.slow
def test_dvc_on_a_fresh_clone_push_pull(git_project: Path, tmp_path: Path) -> None:
    dvc, smk = str(BIN / "dvc"), str(BIN / "snakemake")
    # the README: nothing to init on a clone; an experiment with a changed parameter
    run([dvc, "exp", "run", "-S", "models.unet.epochs=1"], git_project)
    assert (git_project / "results/report.html").is_file()
    assert (git_project / "results/report/scores/synthetic.csv").is_file()

    # small headline metrics per dataset x model
    metrics = json.loads((git_project / "results/scores/synthetic/unet/metrics.json").read_text())
    assert {"mean_ap", "f1@0.50", "pq", "aji", "seg", "n_images"} <= set(metrics)
    assert {"train_seconds", "predict_seconds_per_image"} <= set(metrics)
    assert len(metrics) <= 12
    shown = run([dvc, "metrics", "show", "--json"], git_project).stdout
    (workspace,) = json.loads(shown).values()  # one revision: the workspace
    per_file = workspace["data"]
    assert "results/scores/synthetic/unet/metrics.json" in per_file
    assert "summary.json" not in shown
    out = tmp_path / "plots"
    run([dvc, "plots", "show", "-o", str(out)], git_project)
    page = (out / "index.html").read_text()
    assert "ap_vs_iou" in page and "training" in page and "val_loss" in page

    # commit the lock file, push data + weights to a local-folder remote
    remote = tmp_path / "remote"
    run([dvc, "remote", "add", "-d", "local", str(remote)], git_project)
    git(git_project, "add", "-A")
    git(git_project, "commit", "-q", "-m", "results")
    run([dvc, "push"], git_project)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(git_project), str(clone)], tmp_path)
    run([dvc, "pull"], clone)
    assert (clone / "results/models/synthetic/unet/weights.pt").is_file()
    # DVC keeps no timestamps: mark Snakemake's outputs up to date, in DAG order
    run([smk, "--cores", "1", "--touch", "results/report.html"], clone)
    dry = run([smk, "--cores", "1", "-n", "results/report.html"], clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout
    status = run([dvc, "status"], clone).stdout
    assert "up to date" in status.lower(), status
