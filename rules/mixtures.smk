# Proxy mixtures, round by round. Round 1 is RegMix's Dirichlet sampler around the token prior;
# each later round is proposed by a regressor fitted on every run of the rounds before it. A
# round is a design: drawn once and kept under the key of its settings (propose --keep),
# it stays when the data changes.


rule sample_mixtures:
    input:
        stats=data_stats,
    output:
        mixtures_path(1),
    log:
        "logs/mixtures/round1.log",
    priority: 10
    conda:
        "../environment.yml"
    params:
        stats=STATS,
        n=SWEEP.rounds[0],
        seed=config["mixtures"]["seed"],
        final_tokens=final_tokens(),
        sampler=as_json(sampler_settings()),
        code=source_hash("search.mixtures", "data.stats"),
    shell:
        "regmix sample-mixtures --stats {params.stats} --n {params.n} --seed {params.seed}"
        " --final-tokens {params.final_tokens} --sampler {params.sampler:q}"
        " --out {output} > {log} 2>&1"


rule propose_mixtures:
    input:
        stats=data_stats,
        runs=runs_before_round,
        checks=intervals_before_round,
    output:
        mixtures="results/mixtures/round{round}.parquet",
        intervals="results/mixtures/intervals/round{round}.parquet",
    log:
        "logs/mixtures/round{round}.log",
    benchmark:
        "results/benchmarks/mixtures/round{round}.tsv"
    wildcard_constraints:
        round=r"[2-9]|[1-9][0-9]+",
    priority: 10
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stats=STATS,
        n=round_size,
        with_optimum=optimum_in_round,
        explore=explore_argument,
        before=rounds_before,
        proxy=as_json(train_settings("proxy")),
        target=config["target"],
        seed=config["mixtures"]["seed"],
        final_tokens=final_tokens(),
        sampler=as_json(sampler_settings()),
        acquisition=as_json(config["acquisition"]),
        design=design_key,
        code=source_hash(*PROPOSE_MODULES),
    shell:
        "regmix propose --runs {input.runs} --stats {params.stats} --target {params.target:q}"
        " --n {params.n} --round {wildcards.round} {params.with_optimum} {params.explore}"
        " --seed {params.seed}"
        " --final-tokens {params.final_tokens} --sampler {params.sampler:q}"
        " --acquisition {params.acquisition:q} --threads {threads}"
        " --checks {input.checks} --intervals-out {output.intervals} --out {output.mixtures}"
        " --keep results/checkpoints/mixtures/round{wildcards.round} --design {params.design}"
        " > {log} 2>&1"
