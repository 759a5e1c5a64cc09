# Final models: the RegMix optimum, the baselines and held-out random mixtures, trained at
# the final scale with the same seed, data-order rules and evaluation windows. Each model has
# its own mixture file, so a change that moves only the optimum re-trains only `regmix`.


rule final_mixture:
    input:
        unpack(final_mixture_inputs),
        stats=data_stats,
    output:
        final_mixture_path("{name}"),
    log:
        "logs/mixtures/final/{name}.log",
    priority: optimum_first
    conda:
        "../environment.yml"
    params:
        stats=STATS,
        source=final_mixture_source,
        content=final_content,
        final_tokens=final_tokens(),
        max_epochs=config["mixtures"]["max_epochs"],
        code=source_hash("search.mixtures", "data.stats"),
    shell:
        "regmix final-mixtures --stats {params.stats} --name {wildcards.name} {params.source}"
        " --final-tokens {params.final_tokens} --max-epochs {params.max_epochs}"
        " --out {output} > {log} 2>&1"


rule train_final:
    input:
        stats=data_stats,
        mixtures=final_mixture_path("{name}"),
    output:
        losses="results/final/{name}/losses.parquet",
        record="results/final/{name}/run.json",
        hf_config="results/final/{name}/hf/config.json",
        hf_weights="results/final/{name}/hf/model.safetensors",
        hf_tokenizer="results/final/{name}/hf/tokenizer.json",
        hf_tokenizer_config="results/final/{name}/hf/tokenizer_config.json",
        hf_special_tokens="results/final/{name}/hf/special_tokens_map.json",
        hf_generation="results/final/{name}/hf/generation_config.json",
    log:
        "logs/final/{name}.log",
    benchmark:
        "results/benchmarks/final/{name}.tsv"
    priority: optimum_first
    conda:
        "../environment.yml"
    threads: config["final"]["resources"]["threads"]
    resources:
        **srun_resources(config["final"]["resources"]["gpu"]),
        mem_mb=config["final"]["resources"]["mem_mb"],
        runtime=config["final"]["resources"]["runtime"],
        gpu=config["final"]["resources"]["gpu"],
    params:
        data=DATA,
        settings=as_json(train_settings("final")),
        state=final_state,
        reuse=reuse_argument(),
        tracking=tracking_argument(),
        code=source_hash(*TRAINING_MODULES),
    shell:
        "regmix train-final --data {params.data} --mixtures {input.mixtures} --run {wildcards.name}"
        " --settings {params.settings:q} --tracking {params.tracking:q} --reuse {params.reuse:q}"
        " --threads {threads} --gpus {resources.gpu}"
        " --out results/final"
        " --work results/checkpoints/final > {log} 2>&1"


rule collect_final:
    input:
        mixtures=final_mixture_tables(),
        records=expand("results/final/{name}/run.json", name=SWEEP.final_names()),
        losses=expand("results/final/{name}/losses.parquet", name=SWEEP.final_names()),
        data=data_stats,
    output:
        "results/final/runs.parquet",
    log:
        "logs/collect_final.log",
    conda:
        "../environment.yml"
    params:
        code=source_hash("workflow.collect", "search.runs"),
    shell:
        "regmix collect-proxies --mixtures {input.mixtures} --proxy-dir results/final"
        " --out {output} > {log} 2>&1"


rule predict_final:
    input:
        model=f"results/regression/{config['regression']['model']}/model.joblib",
        runs="results/final/runs.parquet",
        data=data_stats,
    output:
        "results/final/predictions.parquet",
    log:
        "logs/predict_final.log",
    conda:
        "../environment.yml"
    params:
        model=input_folder("model"),
        code=source_hash(
            "search.predict",
            "search.regression",
            "search.regressors",
            "search.simulate",
            "search.support",
            "search.mixtures",
            "search.runs",
        ),
    shell:
        "regmix predict --model {params.model} --mixtures {input.runs} --out {output}"
        " > {log} 2>&1"
