# What a person reads: the summary of the final models and the report's figures.


rule summarize:
    input:
        **optimum_proxy_outputs(),
        **downstream_inputs(),
        runs="results/final/runs.parquet",
        proxy_runs=runs_table(),
        predictions="results/final/predictions.parquet",
        metrics=f"results/regression/{config['regression']['model']}/metrics.json",
        optimum="results/optimal/mixture.yaml",
        corpus=CORPUS,
        data=data_stats,
    output:
        table="results/final/summary.parquet",
        markdown=report(
            "results/final/summary.md",
            caption="../report/summary.rst",
            category="1. Summary",
        ),
    log:
        "logs/summarize.log",
    conda:
        "../environment.yml"
    params:
        target=config["target"],
        planted=planted_argument,
        optimum_proxy=optimum_proxy_argument,
        downstream=downstream_argument,
        code=source_hash(
            "report.summary",
            "report.earlier_corpus",
            "search.runs",
            "search.mixtures",
            "report.downstream",
            "evaluation.downstream",
        ),
    shell:
        "regmix summarize --runs {input.runs} --predictions {input.predictions}"
        " --target {params.target:q} {params.planted} --metrics {input.metrics}"
        " --optimum {input.optimum} {params.optimum_proxy} {params.downstream}"
        " --proxy-runs {input.proxy_runs}"
        " --out {output.table} --markdown {output.markdown} > {log} 2>&1"


rule report_figures:
    input:
        runs=runs_table(),
        stats=data_stats,
        cv=f"results/regression/{config['regression']['model']}/cv.parquet",
        optimum="results/optimal/mixture.yaml",
        summary="results/final/summary.parquet",
        final_losses=expand("results/final/{name}/losses.parquet", name=SWEEP.final_names()),
        corpus=CORPUS,
    output:
        weights=report(
            "results/report/weights.png",
            caption="../report/weights.rst",
            category="2. Proxy runs",
        ),
        cv=report("results/report/cv.png", caption="../report/fit.rst", category="3. Regression"),
        optimum=report(
            "results/report/optimum.png",
            caption="../report/optimum.rst",
            category="4. Optimal mixture",
        ),
        final_losses=report(
            "results/report/final_losses.png",
            caption="../report/final_losses.rst",
            category="5. Final models",
        ),
        loss_curves=report(
            "results/report/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="5. Final models",
        ),
    log:
        "logs/report_figures.log",
    conda:
        "../environment.yml"
    params:
        stats=STATS,
        fit=input_folder("cv"),
        target=config["target"],
        planted=planted_argument,
        out=output_folder,
        code=source_hash(
            "report.figures",
            "report.summary",
            "search.regression",
            "search.mixtures",
            "search.runs",
            "data.stats",
        ),
    shell:
        "regmix report --proxy-mixtures {input.runs} --stats {params.stats}"
        " --fit {params.fit} --optimum {input.optimum} --summary {input.summary}"
        " --final-losses {input.final_losses} --target {params.target:q} {params.planted}"
        " --out-dir {params.out} > {log} 2>&1"


rule report_downstream:
    input:
        **downstream_inputs(),
        summary="results/final/summary.parquet",
        data=data_stats,
    output:
        report(
            "results/report/downstream.png",
            caption="../report/downstream.rst",
            category="6. Downstream",
        ),
    log:
        "logs/report_downstream.log",
    conda:
        "../environment.yml"
    params:
        code=source_hash("report.downstream", "evaluation.downstream"),
    shell:
        "regmix report-downstream --downstream {input.downstream} --samples {input.samples}"
        " --summary {input.summary} --out {output} > {log} 2>&1"
