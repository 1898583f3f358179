# The self-contained HTML report over every dataset x model of params.yaml's `run:`.


rule render_report:
    input:
        scores=all_scores(),
        models=expand("results/models/{dataset}/{model}", dataset=DATASETS, model=MODELS),
        masks=expand("results/masks/{dataset}/{model}", dataset=DATASETS, model=MODELS),
        converted=expand("data/converted/{dataset}", dataset=DATASETS),
    output:
        report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
    params:
        cfg=lambda wildcards: as_json(
            {"run": config["run"], "report": config["report"], "seed": config["seed"]}
        ),
        file=PARAMS_FILE,
    log:
        "results/logs/render_report/report.log",
    shell:
        "cellbench report --params {params.file} --out {output} > {log} 2>&1"
