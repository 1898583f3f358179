# The README's commands. Each target sets everything up first (idempotent), then runs.
#   make run    set up, then the main job: snakemake --cores 8 results/report.html
#   make test   set up, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 8

.PHONY: setup system-packages slurm run test test-fast lint bench clean

setup: $(VENV)/.installed system-packages

# best effort (root + apt-get): chromium for the browser tests; says what is missing otherwise
system-packages:
	@tools/install-system-packages.sh

# a single-node SLURM cluster on this machine (root + apt-get, no systemd needed): the one
# tests/workflow/test_slurm.py uses; `tools/slurm-local.sh stop` stops it. Where SLURM cannot
# be installed (exit 3: no apt-get, not root) it says why and the SLURM tests skip, saying so;
# a cluster that is installed but does not start fails.
slurm:
	@tools/slurm-local.sh start || [ $$? -eq 3 ]

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test,slurm,serve]"
	touch $@

run: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --cores $(CORES) results/report.html

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" pytest

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" pytest -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf results data/raw data/converted data/splits .snakemake
