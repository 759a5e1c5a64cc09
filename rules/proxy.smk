# Proxy training: one small LM per mixture, per-domain validation losses, then the fan-in.
# A job's params carry what its runs will be (`state`, regmix.training.reuse): after a corpus
# change it runs only when one of its runs is re-trained, measured again or new.
#
# One job trains a batch: `proxy.proxies_per_job` consecutive runs of one round, back to back
# in one process, so the ~5 s of torch + Lightning start-up is paid once per batch (1 = one
# job per mixture, as in the paper). The batch is the wildcard; its declared output is its
# rows of the runs table. Each run's losses.parquet and run.json are published as soon as
# that run finishes, so a failed batch never loses the runs it completed. The round is a
# wildcard too: under SLURM the profile bundles batches by group, and a group must not span
# rounds (round 2's mixtures wait on round 1's runs).


rule train_proxy:
    input:
        stats=data_stats,
        mixtures=batch_mixtures,
    output:
        batch_table("{round}", "{batch}"),
    log:
        batch_log("{round}", "{batch}"),
    benchmark:
        "results/benchmarks/proxy/round{round}/{batch}.tsv"
    priority: 10
    group:
        "proxy-round{round}"
    conda:
        "../environment.yml"
    threads: config["proxy"]["resources"]["threads"]
    resources:
        mem_mb=config["proxy"]["resources"]["mem_mb"],
        runtime=config["proxy"]["resources"]["runtime"],
        gpu=config["proxy"]["resources"]["gpu"],
    params:
        runs=batch_runs,
        data=DATA,
        settings=as_json(train_settings("proxy")),
        state=batch_state,
        reuse=reuse_argument(),
        tracking=tracking_argument(),
        code=source_hash(*TRAINING_MODULES),
    shell:
        "regmix train-proxy --data {params.data} --mixtures {input.mixtures}"
        " --runs {params.runs} --settings {params.settings:q} --tracking {params.tracking:q}"
        " --reuse {params.reuse:q}"
        " --threads {threads}"
        " --gpus {resources.gpu} --out results/proxy --work results/checkpoints/proxy"
        " --table {output} > {log} 2>&1"


rule collect_proxies:
    input:
        batches=all_batch_tables(),
        data=data_stats,
    output:
        runs_table(),
    log:
        "logs/collect_proxies.log",
    priority: 10
    conda:
        "../environment.yml"
    params:
        code=source_hash("workflow.collect", "search.runs"),
    shell:
        "regmix collect-proxies --batches {input.batches} --out {output} > {log} 2>&1"


rule train_optimum_proxy:
    input:
        stats=data_stats,
        mixtures=final_mixture_path(OPTIMUM),
    output:
        losses=f"{optimum_proxy_dir()}/losses.parquet",
        record=f"{optimum_proxy_dir()}/run.json",
    log:
        "logs/optimal/proxy.log",
    priority: 5
    conda:
        "../environment.yml"
    threads: config["proxy"]["resources"]["threads"]
    resources:
        mem_mb=config["proxy"]["resources"]["mem_mb"],
        runtime=config["proxy"]["resources"]["runtime"],
        gpu=config["proxy"]["resources"]["gpu"],
    params:
        data=DATA,
        out=Path(optimum_proxy_dir()).parent,
        run=OPTIMUM,
        settings=as_json(train_settings("proxy")),
        state=optimum_state,
        reuse=reuse_argument(),
        tracking=tracking_argument(),
        code=source_hash(*TRAINING_MODULES),
    shell:
        "regmix train-proxy --data {params.data} --mixtures {input.mixtures} --runs {params.run}"
        " --settings {params.settings:q} --tracking {params.tracking:q} --reuse {params.reuse:q}"
        " --threads {threads} --gpus {resources.gpu}"
        " --out {params.out} --work results/checkpoints/optimum > {log} 2>&1"
