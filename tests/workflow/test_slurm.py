"""The SLURM profile, run for real against a SLURM cluster on this machine.

Where no cluster answers ``sinfo``, the tests start a single-node one with
``tools/slurm-local.sh start`` (Debian's slurmctld, slurmd and munge: it installs them when
missing, writes /etc/slurm/slurm.conf and starts the daemons without systemd). They skip,
saying why, only where that script reports that this machine cannot have one (exit 3: no
apt-get, or not root); ``CELLBENCH_REQUIRE_SLURM`` (set on CI) turns that skip into a failure.

The committed profile is written for a GPU cluster (a ``gres`` GPU per training job,
32 GB). The tests keep everything else and adapt the cluster-specific values to the
cluster they find, the edit the profile's header asks users to make: the first partition
that is up, memory and threads that fit its nodes, and no GPU request where the cluster
has no GPUs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
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


SLURM_SCRIPT = Path(__file__).resolve().parents[2] / "tools/slurm-local.sh"
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (.+?)\)")


def _partitions() -> str | None:
    """``sinfo``'s partitions as ``name|avail|cpus|mem|gres`` lines; None when none answers."""
    if shutil.which("sinfo") is None:
        return None
    try:
        return subprocess.run(
            ["sinfo", "--noheader", "--format=%P|%a|%c|%m|%G"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def _start_local_cluster() -> None:
    """Start this machine's single-node cluster; skip where it cannot have one."""
    proc = subprocess.run([str(SLURM_SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        reason = f"no SLURM cluster answers sinfo, and {proc.stderr.strip()}"
        if os.environ.get("CELLBENCH_REQUIRE_SLURM"):
            pytest.fail(f"{reason} (CELLBENCH_REQUIRE_SLURM is set)")
        pytest.skip(reason)
    assert proc.returncode == 0, f"{SLURM_SCRIPT} start failed:\n{proc.stdout}\n{proc.stderr}"


def _cluster() -> dict:
    """The first partition that is up, with its nodes' CPUs, memory (MB) and GPUs."""
    out = _partitions()
    if not out or "|up|" not in out:
        _start_local_cluster()
        out = _partitions()
    assert out is not None, "the cluster was started, but sinfo does not answer"
    for line in out.splitlines():
        partition, avail, cpus, mem, gres = line.split("|")
        if avail == "up":
            return {
                "partition": partition.rstrip("*"),
                "cpus": int(cpus.rstrip("+")),
                "mem_mb": int(mem.rstrip("+")),
                "gpu": "gpu" in gres,
            }
    pytest.fail(f"no SLURM partition is up:\n{out}")


def _project(tmp_path: Path, repo_root: Path, cluster: dict, **unet) -> Path:
    """The workflow with tiny params (``unet`` overrides its entry) and the SLURM profile
    adapted to ``cluster``, polling often so that the tests stay short."""
    project = copy_workflow(repo_root, tmp_path)
    shutil.copytree(repo_root / "workflow/profiles", project / "workflow/profiles")
    params = tiny_params(project / "params.yaml")
    params["models"]["unet"].update(unet)
    write_params(project, params)

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
    profile["seconds-between-status-checks"] = 2
    profile["slurm-keep-successful-logs"] = True
    profile["latency-wait"] = 10
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return project


def _submitted(project: Path) -> list[tuple[str, Path]]:
    """(SLURM job id, SLURM log) of every job the runs in ``project`` submitted."""
    logs = sorted((project / ".snakemake/log").glob("*.snakemake.log"))
    return [(i, Path(p)) for log in logs for i, p in SUBMITTED.findall(log.read_text())]


def _slurm_states() -> dict[str, tuple[str, str]]:
    """SLURM job id -> (state, comment) of the jobs the controller still knows (the local
    cluster keeps finished ones for MinJobAge=600 s; the plugin's comment names the rule)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%T|%k"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    return {
        i: (state, comment)
        for i, state, comment in (line.split("|", 2) for line in out.splitlines())
    }


def test_a_machine_without_slurm_skips_or_fails_where_required(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "slurm-local.sh"  # what the script says where SLURM cannot be installed
    fake.write_text(
        "#!/bin/sh\necho 'slurm-local: cannot set up SLURM here: no apt-get' >&2\nexit 3\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(f"{__name__}.SLURM_SCRIPT", fake)
    monkeypatch.delenv("CELLBENCH_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no SLURM cluster answers sinfo.*no apt-get"):
        _start_local_cluster()
    monkeypatch.setenv("CELLBENCH_REQUIRE_SLURM", "1")
    with pytest.raises(
        pytest.fail.Exception, match=r"no apt-get \(CELLBENCH_REQUIRE_SLURM is set\)"
    ):
        _start_local_cluster()


def test_ci_requires_slurm_and_the_browser(repo_root: Path) -> None:
    """CI sets both variables before the tests, so neither kind of test can skip silently."""
    lines = [line.strip() for line in (repo_root / ".ci/run").read_text().splitlines()]
    before_tests = lines[: lines.index("make test")]
    for variable in ("CELLBENCH_REQUIRE_SLURM", "CELLBENCH_REQUIRE_BROWSER"):
        assert f"export {variable}=1" in before_tests, variable


def test_profile_gives_resources_the_plugin_accepts(repo_root: Path) -> None:
    profile = yaml.safe_load((repo_root / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    resources = [profile["default-resources"], *profile["set-resources"].values()]
    # the plugin refuses --gres/--mem/--cpus-per-task/--partition inside slurm_extra
    assert not any("slurm_extra" in r for r in resources)
    assert profile["set-resources"]["train_model"]["gres"].startswith("gpu")
    # besides the default run's rules: learning curves and the cross-dataset matrix (run:)
    optional = {"train_curve_model", "predict_curve_images", "predict_cross_images"}
    assert set(profile["set-threads"]) <= set(RULES) | optional


def test_workflow_runs_on_slurm(tmp_path: Path, repo_root: Path) -> None:
    project = _project(tmp_path, repo_root, _cluster())

    run(
        [str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm", "results/report.html"],
        project,
        timeout=1800,
    )
    report = (project / "results/report.html").read_text()
    assert "Leaderboard" in report and "unet" in report
    # every job but the local download ran as a SLURM job, with its own SLURM log
    log = next((project / ".snakemake/log").glob("*.snakemake.log")).read_text()
    submitted = _submitted(project)
    assert "localrule download_dataset:" in log
    jobs = 1 + 1 + 2 * 4 + 1  # convert, split, (train, predict, postprocess, score) x 2, report
    assert len(submitted) == jobs, log
    # without an accounting database the status checks use squeue, never sacct
    assert "Falling back to 'sacct'" not in log, log
    rules = {path.relative_to(project / ".snakemake/slurm_logs").parts[0] for _, path in submitted}
    assert rules == {f"rule_{r}" for r in RULES if r != "download_dataset"}, rules
    # each job's log is named by SLURM after its job id (%j) and holds the job's own
    # Snakemake run; the controller knows each id as a finished job of that rule
    states = _slurm_states()
    for jobid, path in submitted:
        assert path.name == f"{jobid}.log" and path.is_file(), path
        assert "--executor slurm-jobstep" in path.read_text(), path.read_text()[-2000:]
        assert states.get(jobid, ("", ""))[0] == "COMPLETED", (jobid, states.get(jobid))
        rule = path.relative_to(project / ".snakemake/slurm_logs").parts[0]
        comment = states[jobid][1]
        assert comment == rule or comment.startswith(f"{rule}_wildcards_"), (jobid, comment)


def test_job_cancelled_by_slurm_resumes_from_checkpoint(tmp_path: Path, repo_root: Path) -> None:
    """scancel a training job after its second epoch: the run fails without any output that
    looks complete, the checkpoint survives, and the rerun continues from it."""
    cluster = _cluster()
    # 25 tiny epochs (0.1-2 s each): the job is still training when it is cancelled
    project = _project(tmp_path, repo_root, cluster, epochs=25)
    target = "results/models/synthetic/unet"
    train_log = project / "results/logs/train_model/synthetic/unet.log"
    cmd = [str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm", target]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(tmp_path / "first-run.txt", "w") as out:
        first = subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (train_log.is_file() and "epoch 2/25" in train_log.read_text()):
            assert first.poll() is None, (tmp_path / "first-run.txt").read_text()[-4000:]
            assert time.monotonic() < deadline, "training never reached epoch 2"
            time.sleep(0.2)
        submitted = SUBMITTED.findall((tmp_path / "first-run.txt").read_text())
        jobid = next(i for i, path in submitted if "/rule_train_model/" in path)
        subprocess.run(["scancel", jobid], check=True, timeout=20)
        first.wait(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
    output = (tmp_path / "first-run.txt").read_text()
    assert first.returncode != 0, output[-4000:]
    assert f"SLURM-job '{jobid}' failed" in output, output[-4000:]
    assert _slurm_states()[jobid][0] == "CANCELLED", _slurm_states().get(jobid)
    # nothing looks like a finished model; the checkpoint of the epochs done is kept
    assert not (project / target / "config.json").exists()
    assert not list((project / "results/models").rglob("config.json"))
    assert (project / "results/checkpoints/synthetic/unet/last.pt").is_file()

    run(cmd, project, timeout=600)
    log = train_log.read_text()
    assert "resuming from epoch" in log, log
    assert "epoch 1/25" not in log, log  # the epochs done before the kill are not redone
    assert (project / target / "config.json").is_file()
    rerun = [i for i, path in _submitted(project) if "rule_train_model" in path.parts]
    assert len(rerun) == 2 and rerun[0] == jobid, rerun  # the cancelled job, then the rerun
    assert _slurm_states()[rerun[1]][0] == "COMPLETED"
