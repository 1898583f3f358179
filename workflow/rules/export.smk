# Exports, on demand only (not part of the default target results/report.html):
#   snakemake --cores 2 results/exports/synthetic/unet/roi      # masks in another format
#   snakemake --cores 2 results/bioimageio/synthetic.zip        # best network as bioimage.io
# Formats and layouts: docs/exports.md and `cellbench export --help`.

from cellbench.export import FORMATS as EXPORT_FORMATS


rule export_masks:
    input:
        masks="results/masks/{dataset}/{model}",
        converted="data/converted/{dataset}",
    output:
        directory("results/exports/{dataset}/{model}/{format}"),
    wildcard_constraints:
        format="|".join(EXPORT_FORMATS),
    log:
        "results/logs/export_masks/{dataset}/{model}/{format}.log",
    benchmark:
        "results/benchmarks/export_masks/{dataset}/{model}/{format}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench export --masks {input.masks} --format {wildcards.format} --out {output} "
        "--images {input.converted}/images --index {input.converted}/index.csv > {log} 2>&1"


rule export_bioimageio:
    input:
        scores=lambda wildcards: expand(
            "results/scores/{dataset}/{model}", dataset=wildcards.dataset, model=MODELS
        ),
        models=lambda wildcards: expand(
            "results/models/{dataset}/{model}", dataset=wildcards.dataset, model=MODELS
        ),
        converted="data/converted/{dataset}",
        split="data/splits/{dataset}.csv",
    output:
        "results/bioimageio/{dataset}.zip",
    params:
        file=PARAMS_FILE,
        models=",".join(MODELS),
    log:
        "results/logs/export_bioimageio/{dataset}.log",
    benchmark:
        "results/benchmarks/export_bioimageio/{dataset}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench export-bioimageio --params {params.file} --dataset {wildcards.dataset} "
        "--models {params.models} --results results --converted {input.converted} "
        "--split {input.split} --out {output} > {log} 2>&1"
