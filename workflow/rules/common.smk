# Config validation, helpers and wildcard constraints shared by every rule.

import json
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from cellbench.config import params_from_mapping, validate_params
from cellbench.contract import check_params

# The file every `cellbench` call reads: the last --configfile given, else params.yaml.
PARAMS_FILE = str(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "params.yaml"

# Validate at parse time, before any job runs (names the key and the allowed values).
validate_params(config, PARAMS_FILE)
if config != yaml.safe_load(Path(PARAMS_FILE).read_text()):
    raise ValueError(
        f"--config overrides differ from {PARAMS_FILE}: the cellbench stages read the params "
        "file, so put the change in a copy of params.yaml and pass it with --configfile."
    )
PARAMS = params_from_mapping(config, Path(PARAMS_FILE))
check_params(PARAMS)  # every entry against its registry's options class (no torch imported)
DATASETS = list(PARAMS.run_datasets)
MODELS = list(PARAMS.run_models)

# Training and prediction ask for every core Snakemake was given, so on one machine
# they run one at a time (two torch jobs sharing the CPUs run many times slower);
# the CLI caps torch's threads at the CPUs that really exist. Cluster executors have
# no --cores: there the profile sets the threads (and so the CPUs) per rule (set-threads).
try:
    TORCH_THREADS = workflow.cores
except WorkflowError:
    TORCH_THREADS = 1


wildcard_constraints:
    dataset="|".join(sorted(PARAMS.datasets)),
    model="|".join(sorted(PARAMS.models)),


def as_json(value):
    """Stable JSON of a config section: a rule's params, so editing it reruns that rule only."""
    return json.dumps(value, sort_keys=True)


def dataset_params(wildcards):
    return as_json({"seed": config["seed"], "dataset": config["datasets"][wildcards.dataset]})


def split_params(wildcards):
    entry = config["datasets"][wildcards.dataset]
    return as_json({"seed": config["seed"], "split": entry.get("split", {})})


def model_params(wildcards):
    return as_json({"seed": config["seed"], "model": config["models"][wildcards.model]})


def all_scores():
    return expand("results/scores/{dataset}/{model}", dataset=DATASETS, model=MODELS)
