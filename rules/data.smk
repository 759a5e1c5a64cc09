# Corpus → token shards.


rule synth_corpus:
    output:
        corpus=directory("results/corpus"),
    log:
        "logs/synth_corpus.log",
    conda:
        "../environment.yml"
    params:
        seed=config["corpus"]["synthetic"]["seed"],
        scale=config["corpus"]["synthetic"]["scale"],
        code=source_hash("data.synth"),
    shell:
        "regmix synth-corpus --out {output.corpus} --seed {params.seed} --scale {params.scale}"
        " > {log} 2>&1"


rule prepare:
    input:
        corpus_input(),
    output:
        stats=f"{DATA}/stats.parquet",
        train=directory(f"{DATA}/train"),
        valid=directory(f"{DATA}/valid"),
    log:
        "logs/prepare.log",
    benchmark:
        "results/benchmarks/prepare.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        corpus=corpus_folder,
        out=output_folder,
        tokenizer=config["corpus"]["tokenizer"],
        domains=",".join(config["corpus"]["domains"] or []),
        code=source_hash("data.corpus", "data.tokenize", "data.prepare", "data.stats"),
    shell:
        "regmix prepare --corpus {params.corpus} --out {params.out} --tokenizer {params.tokenizer}"
        " --workers {threads} --domains '{params.domains}'"
        " > {log} 2>&1"
