"""Bad configuration stops `snakemake -n` at parse time with a message that names the fix.

Fast (a dry run parses the Snakefile and imports no torch), so not marked slow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from workflow_helpers import BIN, copy_workflow, run  # noqa: E402


@pytest.fixture()
def project(tmp_path: Path, repo_root: Path) -> Path:
    return copy_workflow(repo_root, tmp_path)


def dry_run(project: Path, *extra: str) -> str:
    proc = run([str(BIN / "snakemake"), "-n", "results/report.html", *extra], project, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert not (project / "results").exists() and not (project / "data").exists()
    return proc.stdout + proc.stderr


def test_yaml_syntax_error_names_the_line(project: Path) -> None:
    text = (project / "params.yaml").read_text().replace("seed: 42", "seed: [42", 1)
    (project / "params.yaml").write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("seed:"))
    out = dry_run(project)
    assert "params.yaml: not valid YAML at line" in out
    assert f"flow sequence that starts at line {line}" in out


def test_incomplete_configfile_is_named_not_blamed_on_config(project: Path) -> None:
    (project / "mine.yaml").write_text("seed: 1\nrun: {datasets: [synthetic], models: [unet]}\n")
    out = dry_run(project, "--configfile", "mine.yaml")
    assert "mine.yaml is not a complete params file" in out
    assert "datasets (not in the file)" in out and "--config " not in out


def test_config_overrides_are_refused_by_name(project: Path) -> None:
    out = dry_run(project, "--config", "seed=3")
    assert "--config seed: overrides are refused" in out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda p: p["models"]["unet"].update(encoder="resnet1"),
            "models.unet.encoder: 'resnet1' is not allowed (did you mean 'resnet18'",
        ),
        (
            lambda p: p["datasets"].update(mine={"kind": "folder", "source": "local"}),
            "datasets.mine: 'path' is a required property",
        ),
        (
            lambda p: (
                p["datasets"].update(
                    mine={"kind": "folder", "source": "local", "path": "/no/such"}
                ),
                p["run"]["datasets"].append("mine"),
            ),
            "datasets.mine.path: /no/such does not exist",
        ),
        (
            lambda p: p["models"]["unet"].update(encoder_depth=5, decoder_channels=[8, 8, 8]),
            "decoder_channels has 3 entries but encoder_depth is 5",
        ),
    ],
)
def test_late_errors_now_come_at_parse_time(project: Path, edit, message) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert message in dry_run(project)
