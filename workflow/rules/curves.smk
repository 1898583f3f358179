# Learning curves (params.yaml run.train_sizes x run.seeds; off when train_sizes is empty):
# split -> subsampled split -> train -> predict -> postprocess -> score, per dataset x
# model x size x seed, with the same cellbench calls as rules/models.smk. Paths and the
# reuse of the main run for ('all', top-level seed): cellbench.studies.


# The sizes a dataset trains, known once its split exists (sizes at or above its number
# of train images collapse to 'all', so nothing is trained twice); see curve_scores().
checkpoint plan_learning_curve:
    input:
        "data/splits/{dataset}.csv",
    output:
        "data/splits/{dataset}/learning_curve.json",
    params:
        cfg=lambda wildcards: as_json(TRAIN_SIZES),
        file=PARAMS_FILE,
    log:
        "results/logs/plan_learning_curve/{dataset}.log",
    benchmark:
        "results/benchmarks/plan_learning_curve/{dataset}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench curve-sizes --params {params.file} --dataset {wildcards.dataset} "
        "--split {input} --out {output} > {log} 2>&1"


rule subsample_split:
    input:
        "data/splits/{dataset}.csv",
    output:
        "data/splits/{dataset}/n{size}_s{seed}.csv",
    log:
        "results/logs/subsample_split/{dataset}/n{size}_s{seed}.log",
    benchmark:
        "results/benchmarks/subsample_split/{dataset}/n{size}_s{seed}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench subsample --split {input} --size {wildcards.size} --seed {wildcards.seed} "
        "--out {output} > {log} 2>&1"


rule train_curve_model:
    input:
        converted="data/converted/{dataset}",
        split="data/splits/{dataset}/n{size}_s{seed}.csv",
    output:
        directory("results/curves/models/{dataset}/{model}/n{size}_s{seed}"),
    params:
        cfg=curve_model_params,
        file=PARAMS_FILE,
        checkpoints="results/curves/checkpoints/{dataset}/{model}/n{size}_s{seed}",
    threads: TORCH_THREADS
    log:
        "results/logs/train_curve_model/{dataset}/{model}/n{size}_s{seed}.log",
    benchmark:
        "results/benchmarks/train_curve_model/{dataset}/{model}/n{size}_s{seed}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench train --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --converted {input.converted} --split {input.split} "
        "--out {output} --seed {wildcards.seed} --checkpoint-dir {params.checkpoints} "
        "--threads {threads} > {log} 2>&1"


rule predict_curve_images:
    input:
        model="results/curves/models/{dataset}/{model}/n{size}_s{seed}",
        converted="data/converted/{dataset}",
        split="data/splits/{dataset}/n{size}_s{seed}.csv",
    output:
        directory("results/curves/predictions/{dataset}/{model}/n{size}_s{seed}"),
    params:
        file=PARAMS_FILE,
    threads: TORCH_THREADS
    log:
        "results/logs/predict_curve_images/{dataset}/{model}/n{size}_s{seed}.log",
    benchmark:
        "results/benchmarks/predict_curve_images/{dataset}/{model}/n{size}_s{seed}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench predict --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --model-dir {input.model} --converted {input.converted} "
        "--split {input.split} --out {output} --threads {threads} > {log} 2>&1"


rule postprocess_curve_predictions:
    input:
        model="results/curves/models/{dataset}/{model}/n{size}_s{seed}",
        predictions="results/curves/predictions/{dataset}/{model}/n{size}_s{seed}",
    output:
        directory("results/curves/masks/{dataset}/{model}/n{size}_s{seed}"),
    params:
        file=PARAMS_FILE,
    log:
        "results/logs/postprocess_curve_predictions/{dataset}/{model}/n{size}_s{seed}.log",
    benchmark:
        "results/benchmarks/postprocess_curve_predictions/{dataset}/{model}/n{size}_s{seed}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench postprocess --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --model-dir {input.model} "
        "--predictions {input.predictions} --out {output} > {log} 2>&1"


rule score_curve_masks:
    input:
        masks="results/curves/masks/{dataset}/{model}/n{size}_s{seed}",
        converted="data/converted/{dataset}",
        split="data/splits/{dataset}/n{size}_s{seed}.csv",
        model="results/curves/models/{dataset}/{model}/n{size}_s{seed}",
        predictions="results/curves/predictions/{dataset}/{model}/n{size}_s{seed}",
    output:
        directory("results/curves/scores/{dataset}/{model}/n{size}_s{seed}"),
    params:
        cfg=lambda wildcards: as_json(config["score"]),
        file=PARAMS_FILE,
    log:
        "results/logs/score_curve_masks/{dataset}/{model}/n{size}_s{seed}.log",
    benchmark:
        "results/benchmarks/score_curve_masks/{dataset}/{model}/n{size}_s{seed}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench score --params {params.file} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --masks {input.masks} --converted {input.converted} "
        "--split {input.split} --model-dir {input.model} --predictions {input.predictions} "
        "--out {output} > {log} 2>&1"
