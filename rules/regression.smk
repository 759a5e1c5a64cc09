# Regression from mixture weights to the target loss, then the simulated optimum.
# Their plots are drawn by the report stage, so restyling a figure re-runs no fit.


rule fit:
    input:
        runs=runs_table(),
        data=data_stats,
        checks=interval_records(),
    output:
        model="results/regression/{model}/model.joblib",
        spec="results/regression/{model}/model.json",
        train="results/regression/{model}/train.parquet",
        cv="results/regression/{model}/cv.parquet",
        metrics="results/regression/{model}/metrics.json",
    log:
        "logs/regression/{model}.log",
    benchmark:
        "results/benchmarks/regression/{model}.tsv"
    priority: 10
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        target=config["target"],
        folds=config["regression"]["folds"],
        seed=config["regression"]["seed"],
        out=output_folder,
        code=source_hash(
            "search.regression",
            "search.regressors",
            "search.calibration",
            "search.runs",
            "search.mixtures",
        ),
    shell:
        "regmix fit --runs {input.runs} --target {params.target:q} --model {wildcards.model}"
        " --folds {params.folds} --seed {params.seed} --checks {input.checks}"
        " --threads {threads} --out {params.out}"
        " > {log} 2>&1"


rule simulate:
    input:
        model=f"results/regression/{config['regression']['model']}/model.joblib",
        stats=data_stats,
    output:
        mixture="results/optimal/mixture.yaml",
        top="results/optimal/top.parquet",
    log:
        "logs/simulate.log",
    benchmark:
        "results/benchmarks/simulate.tsv"
    priority: 10
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stats=STATS,
        model=input_folder("model"),
        domains=train_domains,
        final_tokens=final_tokens(),
        sampler=as_json(sampler_settings()),
        candidates=config["simulation"]["candidates"],
        top_k=config["simulation"]["top_k"],
        seed=config["simulation"]["seed"],
        bootstrap=config["simulation"]["bootstrap"],
        local_share=config["simulation"]["local_share"],
        caution=config["simulation"]["caution"],
        guard="" if config["simulation"]["guard"] else "--no-guard",
        code=source_hash(
            "search.simulate",
            "search.support",
            "search.regression",
            "search.regressors",
            "search.mixtures",
            "search.runs",
            "data.stats",
        ),
    shell:
        "regmix simulate --model {params.model} --stats {params.stats}"
        " --final-tokens {params.final_tokens} --sampler {params.sampler:q}"
        " --candidates {params.candidates} --top-k {params.top_k} --seed {params.seed}"
        " --bootstrap {params.bootstrap} --local-share {params.local_share}"
        " --caution {params.caution} {params.guard}"
        " --threads {threads}"
        " --out {output.mixture} --top-out {output.top} --keep results/checkpoints/optimal"
        " > {log} 2>&1"
