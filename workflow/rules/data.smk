# download -> convert -> split, per dataset (of params.yaml: never the union, which
# rules/cross.smk builds from these).

# On a cluster the download runs on the submitting host: compute nodes often have no internet.
localrules:
    download_dataset,


rule download_dataset:
    output:
        directory("data/raw/{dataset}"),
    params:
        cfg=dataset_params,
        file=PARAMS_FILE,
    wildcard_constraints:
        dataset=REAL_DATASET,
    log:
        "results/logs/download_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/download_dataset/{dataset}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench download --params {params.file} --dataset {wildcards.dataset} "
        "--out {output} > {log} 2>&1"


rule convert_dataset:
    input:
        "data/raw/{dataset}",
    output:
        directory("data/converted/{dataset}"),
    params:
        cfg=dataset_params,
        file=PARAMS_FILE,
    wildcard_constraints:
        dataset=REAL_DATASET,
    log:
        "results/logs/convert_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/convert_dataset/{dataset}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench convert --params {params.file} --dataset {wildcards.dataset} "
        "--raw {input} --out {output} > {log} 2>&1"


rule split_dataset:
    input:
        "data/converted/{dataset}",
    output:
        "data/splits/{dataset}.csv",
    params:
        cfg=split_params,
        file=PARAMS_FILE,
    wildcard_constraints:
        dataset=REAL_DATASET,
    log:
        "results/logs/split_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/split_dataset/{dataset}.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench split --params {params.file} --dataset {wildcards.dataset} "
        "--converted {input} --out {output} > {log} 2>&1"
