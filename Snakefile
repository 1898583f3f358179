# cellbench: benchmark cell / nucleus instance segmentation.
#
#   snakemake --cores 8 results/report.html                      # the offline default
#   snakemake --profile workflow/profiles/slurm results/report.html   # on a SLURM cluster
#
# Table of contents only: config + validation and helpers in rules/common.smk,
# one .smk per part of the DAG. Every rule is a thin call of the `cellbench` CLI,
# the same commands dvc.yaml runs.

from snakemake.utils import min_version

min_version("8.0")


# A syntax error in params.yaml is reported with its line (Snakemake's own message has none).
from cellbench.config import read_params_file

read_params_file("params.yaml")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/curves.smk"
include: "workflow/rules/cross.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


# The page and the files it registers for `snakemake --report` (captions, categories).
rule all:
    input:
        rules.render_report.output,
    default_target: True
