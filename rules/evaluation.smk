# Downstream evaluation: lm-eval-harness on every final model's exported folder (one job per
# model), then one table of all scores. Only the `evaluation` section and the evaluation code
# enter these rules' params, so changing them re-runs evaluation, never training.


rule continuation_task:
    input:
        corpus=CORPUS,
        valid=f"{DATA}/valid",
        tokenizer=group_tokenizer,
    output:
        task=f"{CONTINUATION_TASK}/task.yaml",
        data=f"{CONTINUATION_TASK}/data.jsonl",
    log:
        "logs/evaluation/continuation_task.log",
    conda:
        "../environment.yml"
    params:
        reading=reading_arguments(),
        data=input_folder("valid"),
        tokenizer=tokenizer_argument,
        target=config["target"],
        examples=config["evaluation"]["continuation"]["examples"],
        choices=config["evaluation"]["continuation"]["choices"],
        seed=config["evaluation"]["continuation"]["seed"],
        max_tokens=config["final"]["seq_len"],
        out=output_folder,
        code=source_hash(
            "evaluation.continuation",
            "data.corpus",
            "data.readers",
            "data.domains",
            "data.loader",
            "data.tokenize",
        ),
    shell:
        "regmix continuation-task {params.reading} --data {params.data}"
        " --tokenizer {params.tokenizer} --target {params.target:q}"
        " --examples {params.examples} --choices {params.choices} --seed {params.seed}"
        " --max-tokens {params.max_tokens} --out-dir {params.out} > {log} 2>&1"


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        results="results/final/{name}/eval/results.json",
        samples="results/final/{name}/eval/samples.jsonl",
    log:
        "logs/evaluation/{name}.log",
    benchmark:
        "results/benchmarks/evaluate/{name}.tsv"
    conda:
        "../environment.yml"
    threads: config["evaluation"]["resources"]["threads"]
    resources:
        mem_mb=config["evaluation"]["resources"]["mem_mb"],
        runtime=config["evaluation"]["resources"]["runtime"],
        gpu=config["evaluation"]["resources"]["gpu"],
    params:
        model=input_folder("config"),
        settings=as_json(evaluation_settings()),
        out=output_folder,
        code=source_hash(*EVALUATION_MODULES),
    shell:
        "regmix evaluate --model {params.model} --settings {params.settings:q}"
        " --threads {threads} --gpus {resources.gpu} --out-dir {params.out} > {log} 2>&1"


rule collect_downstream:
    input:
        expand("results/final/{name}/eval/results.json", name=SWEEP.final_names()),
    output:
        "results/final/downstream.parquet",
    log:
        "logs/evaluation/collect_downstream.log",
    conda:
        "../environment.yml"
    params:
        folders=evaluation_folders,
        code=source_hash("evaluation.downstream"),
    shell:
        "regmix collect-downstream --eval {params.folders} --out {output} > {log} 2>&1"
