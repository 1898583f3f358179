# train -> predict -> postprocess -> score, per dataset x model.
# GPUs, threads and partitions are runtime settings: see workflow/profiles/.


rule train_model:
    input:
        converted="data/converted/{dataset}",
        split="data/splits/{dataset}.csv",
    output:
        directory("results/models/{dataset}/{model}"),
    params:
        cfg=model_params,
        file=PARAMS_FILE,
    threads: TORCH_THREADS
    log:
        "results/logs/train_model/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/train_model/{dataset}/{model}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench train --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --converted {input.converted} --split {input.split} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule predict_images:
    input:
        model="results/models/{dataset}/{model}",
        converted="data/converted/{dataset}",
        split="data/splits/{dataset}.csv",
    output:
        directory("results/predictions/{dataset}/{model}"),
    params:
        file=PARAMS_FILE,
    threads: TORCH_THREADS
    log:
        "results/logs/predict_images/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/predict_images/{dataset}/{model}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench predict --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --model-dir {input.model} --converted {input.converted} "
        "--split {input.split} --out {output} --threads {threads} > {log} 2>&1"


rule postprocess_predictions:
    input:
        model="results/models/{dataset}/{model}",
        predictions="results/predictions/{dataset}/{model}",
    output:
        directory("results/masks/{dataset}/{model}"),
    params:
        file=PARAMS_FILE,
    log:
        "results/logs/postprocess_predictions/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/postprocess_predictions/{dataset}/{model}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench postprocess --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --model-dir {input.model} "
        "--predictions {input.predictions} --out {output} > {log} 2>&1"


rule score_masks:
    input:
        masks="results/masks/{dataset}/{model}",
        converted="data/converted/{dataset}",
        split="data/splits/{dataset}.csv",
        # only for metrics.json (training / prediction times) and training.csv
        model="results/models/{dataset}/{model}",
        predictions="results/predictions/{dataset}/{model}",
    output:
        directory("results/scores/{dataset}/{model}"),
    params:
        cfg=lambda wildcards: as_json(config["score"]),
        file=PARAMS_FILE,
    log:
        "results/logs/score_masks/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/score_masks/{dataset}/{model}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench score --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --masks {input.masks} --converted {input.converted} "
        "--split {input.split} --model-dir {input.model} --predictions {input.predictions} "
        "--out {output} > {log} 2>&1"
