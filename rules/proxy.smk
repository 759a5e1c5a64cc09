# Proxy training: one small LM per mixture, per-domain validation losses, then the fan-in.
#
# A job trains a batch of `proxy.proxies_per_job` mixtures back to back in one process, so
# the ~5 s of torch + Lightning start-up is paid once per batch (1 = one job per mixture, as
# in the paper). Snakemake cannot bundle local jobs into one process and a rule's outputs
# cannot vary with its wildcards, so each batch is its own rule, defined in this loop; all
# carry the group "proxy" so a cluster profile can submit many of them per allocation.

for batch in proxy_batches():

    rule:
        name:
            f"train_proxy_{batch.name}"
        input:
            stats=f"{DATA}/stats.parquet",
            mixtures="results/mixtures/proxy.parquet",
        output:
            losses=[f"results/proxy/{run}/losses.parquet" for run in batch.runs],
            records=[f"results/proxy/{run}/run.json" for run in batch.runs],
        params:
            runs=batch.runs,
            data=input_folder("stats"),
            settings=as_json(train_settings("proxy")),
            code=source_hash(*TRAINING_MODULES),
        log:
            f"logs/proxy/{batch.name}.log",
        benchmark:
            f"results/benchmarks/proxy/{batch.name}.tsv"
        group:
            "proxy"
        threads: config["proxy"]["resources"]["threads"]
        resources:
            mem_mb=config["proxy"]["resources"]["mem_mb"],
            runtime=config["proxy"]["resources"]["runtime"],
            gpu=config["proxy"]["resources"]["gpu"],
        conda:
            "../environment.yml"
        shell:
            "regmix train-proxy --data {params.data} --mixtures {input.mixtures}"
            " --runs {params.runs} --settings {params.settings:q} --threads {threads}"
            " --gpus {resources.gpu}"
            " --out results/proxy --work results/checkpoints/proxy > {log} 2>&1"


rule collect_proxies:
    input:
        mixtures="results/mixtures/proxy.parquet",
        records=expand("results/proxy/{run}/run.json", run=proxy_runs()),
        losses=expand("results/proxy/{run}/losses.parquet", run=proxy_runs()),
    output:
        "results/proxy/runs.parquet",
    params:
        code=source_hash("collect", "runs"),
    log:
        "logs/collect_proxies.log",
    conda:
        "../environment.yml"
    shell:
        "regmix collect-proxies --mixtures {input.mixtures} --proxy-dir results/proxy"
        " --out {output} > {log} 2>&1"
