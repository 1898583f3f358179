"""`snakemake --lint` is clean, and every rule's conda environment pins the dependencies.

Conda itself is not needed (nor installed here): the lint and the pins are the checks.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from workflow_helpers import BIN, copy_workflow, run


def test_snakemake_lint_is_clean(tmp_path: Path, repo_root: Path) -> None:
    copy_workflow(repo_root, tmp_path)
    proc = run([str(BIN / "snakemake"), "--lint"], tmp_path, check=False)
    out = proc.stdout + proc.stderr
    # every lint is a "Lints for ..." block; --lint exits 1 when it prints any
    assert "Lints for" not in out and proc.returncode == 0, out


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_conda_environment_pins_every_dependency(repo_root: Path) -> None:
    env = yaml.safe_load((repo_root / "envs/cellbench.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {_name(r): r for r in pip}
    assert all("==" in r for r in pip), pip
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    missing = {_name(r) for r in project["dependencies"]} - set(pinned)
    assert not missing, f"pin these in envs/cellbench.yaml too: {sorted(missing)}"
    # every rule points at that file (relative to workflow/rules/)
    for smk in sorted((repo_root / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        rules = len(re.findall(r"^(?:rule|checkpoint) \w+:", text, flags=re.M))
        assert text.count('conda:\n        "../../envs/cellbench.yaml"') == rules, smk.name
