# Corpus → token shards: a tokenizer once, one job per group of corpus files, a fan-in.


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


rule train_tokenizer:
    input:
        tokenizer_corpus,
    output:
        f"{DATA}/tokenizer.json",
    log:
        "logs/data/train_tokenizer.log",
    benchmark:
        "results/benchmarks/data/train_tokenizer.tsv"
    conda:
        "../environment.yml"
    threads: config["corpus"]["resources"]["threads"]
    resources:
        mem_mb=config["corpus"]["resources"]["mem_mb"],
        runtime=60,
    params:
        reading=reading_arguments(),
        tokenizer=config["corpus"]["tokenizer"],
        sample=config["corpus"]["sample_bytes"],
        code=source_hash(
            "data.corpus", "data.readers", "data.tokenize", "data.prepare", "data.survey"
        ),
    shell:
        "regmix train-tokenizer {params.reading} --tokenizer {params.tokenizer}"
        " --sample-bytes {params.sample} --out {output} --threads {threads} > {log} 2>&1"


rule survey_corpus:
    input:
        corpus=survey_corpus_input(),
        tokenizer=group_tokenizer,
    output:
        f"{DATA}/survey.json",
    log:
        "logs/data/survey_corpus.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=config["corpus"]["resources"]["mem_mb"],
        runtime=60,
    params:
        reading=reading_arguments(),
        tokenizer=tokenizer_argument,
        max_tokens=max_tokens(),
        sample=config["corpus"]["sample_bytes"],
        code=source_hash("data.corpus", "data.readers", "data.survey", "data.groups"),
    shell:
        "regmix survey-corpus {params.reading} --tokenizer {params.tokenizer}"
        " --max-tokens {params.max_tokens} --sample-bytes {params.sample} --out {output}"
        " > {log} 2>&1"


rule prepare_group:
    input:
        files=group_files,
        tokenizer=group_tokenizer,
        survey=group_survey,  # ancient: a survey run again for a new file re-runs no old job
    output:
        directory(f"{DATA}/shards/{{group}}"),
    log:
        "logs/data/prepare/{group}.log",
    benchmark:
        "results/benchmarks/data/prepare/{group}.tsv"
    conda:
        "../environment.yml"
    threads: config["corpus"]["resources"]["threads"]
    resources:
        mem_mb=config["corpus"]["resources"]["mem_mb"],
        runtime=group_runtime,
    params:
        reading=reading_arguments(),
        files=files_argument,
        tokenizer=tokenizer_argument,
        survey=survey_argument,
        max_tokens=max_tokens(),
        code=source_hash(
            "data.corpus",
            "data.readers",
            "data.domains",
            "data.tokenize",
            "data.shards",
            "data.fingerprint",
            "data.progress",
        ),
    shell:
        "regmix prepare-group {params.reading} {params.files} --out {output}"
        " --tokenizer {params.tokenizer} {params.survey} --threads {threads} > {log} 2>&1"


rule collect_shards:
    input:
        all_groups(),
    output:
        stats=f"{DATA}/stats.parquet",
        names=f"{DATA}/domains.json",
        train=directory(f"{DATA}/train"),
        valid=directory(f"{DATA}/valid"),
    log:
        "logs/data/collect_shards.log",
    conda:
        "../environment.yml"
    params:
        out=output_folder,
        target=Unrecorded(config["target"]),
        domains=Unrecorded(",".join(config["corpus"]["domains"] or [])),
        max_tokens=max_tokens_argument(),
        code=source_hash("data.collect", "data.fingerprint", "data.stats", "data.domains"),
    shell:
        "regmix collect-shards --groups {input} --out {params.out} --target '{params.target}'"
        " --domains '{params.domains}' {params.max_tokens} > {log} 2>&1"
