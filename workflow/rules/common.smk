# Config validation, helpers and wildcard constraints shared by every rule.

import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from cellbench.config import (
    config_differences,
    params_from_mapping,
    read_params_file,
    validate_params,
)
from cellbench.contract import check_params

# The file every `cellbench` call reads: the last --configfile given, else params.yaml.
PARAMS_FILE = str(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "params.yaml"

# The stages read the params file itself, so Snakemake's config must be exactly that file.
if workflow.config_settings.config:
    raise ValueError(
        f"--config {' '.join(sorted(workflow.config_settings.config))}: overrides are refused, "
        "because the cellbench stages read the params file. Put the change in a copy of "
        "params.yaml and pass it with --configfile."
    )
_written = read_params_file(PARAMS_FILE)  # names the line of a YAML syntax error
_differences = config_differences(config, _written)
if _differences:
    raise ValueError(
        f"{PARAMS_FILE} is not a complete params file: Snakemake filled in "
        f"{', '.join(_differences[:8])} from params.yaml. A --configfile must hold every "
        "section (seed, run, datasets, models, score, report): copy params.yaml and edit the copy."
    )
# Validate at parse time, before any job runs (names the key and the allowed values).
validate_params(config, PARAMS_FILE)
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


# For snakemake --report (rules/report.smk). A line may not start with `report`: it is a
# Snakefile keyword, hence the alias.
flag_for_report = report


def report_files(pattern, caption, category, table=None):
    """One report()-flagged path per dataset x model, labelled for snakemake --report."""
    return [
        flag_for_report(
            pattern.format(dataset=d, model=m),
            caption=caption,
            category=category,
            subcategory=d,
            labels={"dataset": d, "model": m, **({"table": table} if table else {})},
        )
        for d in DATASETS
        for m in MODELS
    ]
