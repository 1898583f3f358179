# The self-contained HTML report over every dataset x model of params.yaml's `run:`
# (with its learning curves and cross-dataset matrix when `run:` asks for them),
# plus the files `snakemake --report` shows with captions (workflow/report/*.rst):
# the page, each dataset's leaderboard table, each model's scores and training curves.


rule render_report:
    input:
        scores=all_scores(),
        models=expand("results/models/{dataset}/{model}", dataset=DATASETS, model=MODELS),
        # timings.csv + resources.json: network and post-processing cost per image
        predictions=expand(
            "results/predictions/{dataset}/{model}", dataset=DATASETS, model=MODELS
        ),
        masks=expand("results/masks/{dataset}/{model}", dataset=DATASETS, model=MODELS),
        converted=expand("data/converted/{dataset}", dataset=DATASETS),
        splits=expand("data/splits/{dataset}.csv", dataset=DATASETS),
        # learning curves and the cross-dataset matrix: nothing unless run: turns them on
        curves=curve_scores,
        cross=cross_scores(),
    output:
        page=report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
            labels={"file": "report.html"},
        ),
        leaderboards=[
            flag_for_report(
                f"results/report/scores/{d}.csv",
                caption="../report/leaderboard.rst",
                category="Scores",
                subcategory=d,
                labels={"dataset": d, "model": "all", "table": "leaderboard"},
            )
            for d in DATASETS
        ],
        per_image=report_files(
            "results/report/scores/{dataset}/{model}/per_image.csv",
            "../report/per_image.rst",
            "Scores",
            "per image",
        ),
        summaries=report_files(
            "results/report/scores/{dataset}/{model}/summary.json",
            "../report/summary.rst",
            "Scores",
            "summary",
        ),
        training=report_files(
            "results/report/training/{dataset}/{model}.svg",
            "../report/training.rst",
            "Training",
        ),
    params:
        cfg=lambda wildcards: as_json(
            {
                "run": config["run"],
                "report": config["report"],
                "score": config["score"],
                "seed": config["seed"],
            }
        ),
        file=PARAMS_FILE,
        # the files for snakemake --report: the page's path without .html, results/report/
        assets=lambda wildcards, output: str(Path(output.page).with_suffix("")),
    log:
        "results/logs/render_report/report.log",
    benchmark:
        "results/benchmarks/render_report/report.tsv"
    conda:
        "../../envs/cellbench.yaml"
    shell:
        "cellbench report --params {params.file} --out {output.page} "
        "--assets {params.assets} > {log} 2>&1"
