# Proxy mixtures: RegMix's Dirichlet sampler around the token prior.


rule sample_mixtures:
    input:
        stats=f"{DATA}/stats.parquet",
    output:
        table="results/mixtures/proxy.parquet",
        yaml=directory("results/mixtures/proxy"),
    params:
        n=sum(config["mixtures"]["rounds"]),
        seed=config["mixtures"]["seed"],
        final_tokens=final_tokens(),
        sampler=as_json(sampler_settings()),
        code=source_hash("mixtures", "stats"),
    log:
        "logs/sample_mixtures.log",
    conda:
        "../environment.yml"
    shell:
        "regmix sample-mixtures --stats {input.stats} --n {params.n} --seed {params.seed}"
        " --final-tokens {params.final_tokens} --sampler {params.sampler:q}"
        " --out {output.table} --yaml-dir {output.yaml} > {log} 2>&1"
