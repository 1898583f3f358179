"""The SLURM profile, run for real against a SLURM cluster reachable from this machine.

Skipped (with the reason) where no cluster answers ``sinfo``: CI machines have none. On a
workstation, a single-node cluster from Debian's packages (slurmctld, slurmd, munge;
README "GPUs and clusters") is enough.

The committed profile is written for a GPU cluster (a ``gres`` GPU per training job,
32 GB). The test keeps everything else and adapts the cluster-specific values to the
cluster it finds, the edit the profile's header asks users to make: the first partition
that is up, memory and threads that fit its nodes, and no GPU request where the cluster
has no GPUs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_helpers import BIN, copy_workflow, run, tiny_params, write_params

pytestmark = pytest.mark.slow

RULES = (
    "download_dataset",
    "convert_dataset",
    "split_dataset",
    "train_model",
    "predict_images",
    "postprocess_predictions",
    "score_masks",
    "render_report",
)


def _cluster() -> dict:
    """The first partition that is up, with its nodes' CPUs, memory (MB) and GPUs."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here (sinfo not found)")
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--format=%P|%a|%c|%m|%G"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"no SLURM controller answers sinfo: {err}")
    for line in out.splitlines():
        partition, avail, cpus, mem, gres = line.split("|")
        if avail == "up":
            return {
                "partition": partition.rstrip("*"),
                "cpus": int(cpus.rstrip("+")),
                "mem_mb": int(mem.rstrip("+")),
                "gpu": "gpu" in gres,
            }
    pytest.skip(f"no SLURM partition is up:\n{out}")


def test_profile_gives_resources_the_plugin_accepts(repo_root: Path) -> None:
    profile = yaml.safe_load((repo_root / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    resources = [profile["default-resources"], *profile["set-resources"].values()]
    # the plugin refuses --gres/--mem/--cpus-per-task/--partition inside slurm_extra
    assert not any("slurm_extra" in r for r in resources)
    assert profile["set-resources"]["train_model"]["gres"].startswith("gpu")
    assert set(profile["set-threads"]) <= set(RULES)


def test_workflow_runs_on_slurm(tmp_path: Path, repo_root: Path) -> None:
    cluster = _cluster()
    project = copy_workflow(repo_root, tmp_path)
    shutil.copytree(repo_root / "workflow/profiles", project / "workflow/profiles")
    write_params(project, tiny_params(project / "params.yaml"))

    path = project / "workflow/profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    mem = min(2000, cluster["mem_mb"] // 2)
    profile["default-resources"].update(slurm_partition=cluster["partition"], mem_mb=mem)
    profile["set-threads"] = {r: min(n, cluster["cpus"]) for r, n in profile["set-threads"].items()}
    for resources in profile["set-resources"].values():
        resources["mem_mb"] = mem
        if not cluster["gpu"]:
            resources.pop("gres", None)
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["seconds-between-status-checks"] = 5
    profile["slurm-keep-successful-logs"] = True
    profile["latency-wait"] = 10
    path.write_text(yaml.safe_dump(profile, sort_keys=False))

    run(
        [str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm", "results/report.html"],
        project,
        timeout=1800,
    )
    report = (project / "results/report.html").read_text()
    assert "Leaderboard" in report and "unet" in report
    # every job but the local download ran as a SLURM job, with its own SLURM log
    log = next((project / ".snakemake/log").glob("*.snakemake.log")).read_text()
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (.+?)\)", log)
    assert "localrule download_dataset:" in log
    jobs = 1 + 1 + 2 * 4 + 1  # convert, split, (train, predict, postprocess, score) x 2, report
    assert len(submitted) == jobs, log
    rules = {
        Path(path).relative_to(project / ".snakemake/slurm_logs").parts[0] for _, path in submitted
    }
    assert rules == {f"rule_{r}" for r in RULES if r != "download_dataset"}, rules
    assert all(Path(path).is_file() for _, path in submitted)
