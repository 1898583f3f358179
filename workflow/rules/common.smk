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
from cellbench.studies import cross_dirs, curve_dirs, read_curve_plan

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
# Learning curves (run.train_sizes x run.seeds) and the cross-dataset matrix (run.cross,
# run.union); all off by default. rules/curves.smk and rules/cross.smk hold their rules.
TRAIN_SIZES = [str(s) for s in PARAMS.train_sizes]
CURVE_SEEDS = list(PARAMS.run_seeds)
# what models are trained on: the datasets, and 'union' (data/converted/union) when on
TRAINING_SETS = list(PARAMS.training_sets())

# Training and prediction ask for every core Snakemake was given, so on one machine
# they run one at a time (two torch jobs sharing the CPUs run many times slower);
# the CLI caps torch's threads at the CPUs that really exist. Cluster executors have
# no --cores: there the profile sets the threads (and so the CPUs) per rule (set-threads).
try:
    TORCH_THREADS = workflow.cores
except WorkflowError:
    TORCH_THREADS = 1


# `dataset` also matches 'union' when run.union is on (it is trained like a dataset);
# the rules that make a dataset (rules/data.smk) constrain it to the real ones.
REAL_DATASET = "|".join(sorted(PARAMS.datasets))


wildcard_constraints:
    dataset="|".join(sorted({*PARAMS.datasets, *TRAINING_SETS})),
    model="|".join(sorted(PARAMS.models)),
    size=r"[1-9][0-9]*|all",
    seed=r"[0-9]+",
    train="|".join(sorted(TRAINING_SETS)),
    test="|".join(sorted(DATASETS)),


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


def curve_model_params(wildcards):
    """A learning-curve training: its seed and the model's entry (as model_params)."""
    return as_json({"seed": int(wildcards.seed), "model": config["models"][wildcards.model]})


def all_scores():
    return expand("results/scores/{dataset}/{model}", dataset=DATASETS, model=MODELS)


def curve_scores(wildcards=None):
    """Every learning-curve point's scores folder (none when run.train_sizes is empty;
    on run.curve_datasets only, when set).

    The sizes a dataset trains are known once its split exists (sizes at or above its
    number of train images collapse to 'all'): the checkpoint plan_learning_curve
    writes them. The point ('all', top-level seed) is the main run's folder.
    """
    out = []
    for d in PARAMS.curve_datasets:
        plan = read_curve_plan(Path(checkpoints.plan_learning_curve.get(dataset=d).output[0]))
        for m in MODELS:
            for size in plan.labels:
                for seed in CURVE_SEEDS:
                    out.append(str(curve_dirs("results", d, m, size, seed, PARAMS.seed)["scores"]))
    return out


def cross_scores():
    """Every off-diagonal cell of the cross-dataset matrix (run.cross), and the union row."""
    trains = (DATASETS if PARAMS.cross else []) + TRAINING_SETS[len(DATASETS) :]
    return [
        str(cross_dirs("results", m, a, b)["scores"])
        for m in MODELS
        for a in trains
        for b in DATASETS
        if a != b
    ]


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
