# The cross-dataset matrix (params.yaml run.cross) and the union training set (run.union),
# both off by default: the model trained on `train` (a dataset, or the union) predicts the
# test split of dataset `test` (images read the way the model reads any image: its
# in_channels decide grey or colour), post-processes with its own tuned thresholds and is
# scored against `test`'s labels. The diagonal is the main run. Paths: cellbench.studies.


# data/converted/union + data/splits/union.csv: every run dataset's images, ids prefixed
# with the dataset name, the split the members' splits concatenated (so the union's test
# images are exactly the members' test images). results/models/union/{model} is then
# trained by rules/models.smk's train_model like any dataset.
rule build_union:
    input:
        converted=expand("data/converted/{dataset}", dataset=DATASETS),
        splits=expand("data/splits/{dataset}.csv", dataset=DATASETS),
    output:
        converted=directory("data/converted/union"),
        split="data/splits/union.csv",
    params:
        cfg=lambda wildcards: as_json(DATASETS),
        file=PARAMS_FILE,
    log:
        "results/logs/build_union/union.log",
    benchmark:
        "results/benchmarks/build_union/union.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench union --params {params.file} --out {output.converted} "
        "--out-split {output.split} > {log} 2>&1"


rule predict_cross_images:
    input:
        model="results/models/{train}/{model}",
        converted="data/converted/{test}",
        split="data/splits/{test}.csv",
    output:
        directory("results/cross/{model}/{train}__on__{test}/predictions"),
    params:
        file=PARAMS_FILE,
    threads: TORCH_THREADS
    log:
        "results/logs/predict_cross_images/{model}/{train}__on__{test}.log",
    benchmark:
        "results/benchmarks/predict_cross_images/{model}/{train}__on__{test}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench predict --params {params.file} --dataset {wildcards.test} "
        "--model {wildcards.model} --model-dir {input.model} --converted {input.converted} "
        "--split {input.split} --out {output} --threads {threads} > {log} 2>&1"


rule postprocess_cross_predictions:
    input:
        model="results/models/{train}/{model}",
        predictions="results/cross/{model}/{train}__on__{test}/predictions",
    output:
        directory("results/cross/{model}/{train}__on__{test}/masks"),
    params:
        file=PARAMS_FILE,
    log:
        "results/logs/postprocess_cross_predictions/{model}/{train}__on__{test}.log",
    benchmark:
        "results/benchmarks/postprocess_cross_predictions/{model}/{train}__on__{test}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench postprocess --params {params.file} --dataset {wildcards.test} "
        "--model {wildcards.model} --model-dir {input.model} "
        "--predictions {input.predictions} --out {output} > {log} 2>&1"


rule score_cross_masks:
    input:
        masks="results/cross/{model}/{train}__on__{test}/masks",
        converted="data/converted/{test}",
        split="data/splits/{test}.csv",
        model="results/models/{train}/{model}",
        predictions="results/cross/{model}/{train}__on__{test}/predictions",
    output:
        directory("results/cross/{model}/{train}__on__{test}/scores"),
    params:
        cfg=lambda wildcards: as_json(config["score"]),
        file=PARAMS_FILE,
    log:
        "results/logs/score_cross_masks/{model}/{train}__on__{test}.log",
    benchmark:
        "results/benchmarks/score_cross_masks/{model}/{train}__on__{test}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench score --params {params.file} --dataset {wildcards.test} "
        "--model {wildcards.model} --masks {input.masks} --converted {input.converted} "
        "--split {input.split} --model-dir {input.model} --predictions {input.predictions} "
        "--out {output} > {log} 2>&1"
