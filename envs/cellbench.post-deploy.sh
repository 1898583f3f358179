#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment of envs/cellbench.yaml, from the
# workflow's working directory (the repository root): installs this checkout's cellbench
# package, editable, so every rule runs the code of the checkout. The pinned dependencies
# are already installed, so pip adds nothing else unless pyproject.toml gained one.
set -euo pipefail
if ! grep -q '^name = "cellbench"' pyproject.toml 2>/dev/null; then
    echo "envs/cellbench.post-deploy.sh: run snakemake from the cellbench repository root" \
        "(no cellbench pyproject.toml in $PWD)" >&2
    exit 1
fi
python -m pip install --no-build-isolation --editable .
