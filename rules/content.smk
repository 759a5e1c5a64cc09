# Helpers of the rules below the data stage (with rules/common.smk): content, not timestamps,
# decides what runs after the corpus changed (regmix.workflow.reuse_plan).


def data_stats(wildcards):
    """The prepared data as an input of every rule below the data stage. collect_shards is a
    checkpoint and this input is ancient: a data stage that ran again re-runs only the jobs
    whose params (the content they depend on, read once it finished) changed.

    Every step below the data stage takes it, even one that reads no data; Snakemake builds
    the jobs that wait on a checkpoint again once it has run, and a job it does not build
    again keeps the reason to run it was given while the checkpoint's output was unknown."""
    checkpoints.collect_shards.get()
    return ancient(STATS)


def data_valid(wildcards):
    """The prepared validation data, as data_stats: its content is in valid_fingerprints."""
    checkpoints.collect_shards.get()
    return ancient(f"{DATA}/valid")


def valid_fingerprints(wildcards):
    """The content of every prepared validation domain (a task made from them re-runs when it
    changes, not when the data stage ran again to the same tokens)."""
    checkpoints.collect_shards.get()
    from regmix.data.fingerprint import read_fingerprints

    found = read_fingerprints(DATA)
    return as_json({domain: fp for (split, domain), fp in found.items() if split == "valid"})


def train_domains(wildcards):
    """The prepared train domains (a simulation searches over them)."""
    checkpoints.collect_shards.get()
    return ",".join(sorted(p.stem for p in Path(f"{DATA}/train").glob("*.json")))


def batch_state(wildcards):
    """What a proxy batch's runs will be once its job ran (regmix.training.reuse): the job
    runs exactly when one of them is re-trained, re-evaluated or new."""
    checkpoints.collect_shards.get()
    return REUSE.batch_state(int(wildcards.round), SWEEP.batch(wildcards.batch).runs)


def optimum_state(wildcards):
    checkpoints.collect_shards.get()
    return REUSE.optimum_state()


def final_state(wildcards):
    checkpoints.collect_shards.get()
    return REUSE.final_state(wildcards.name)


def final_content(wildcards):
    """What a final model's mixture is made of besides its own inputs: the prior follows the
    token counts, uniform and planted the domains; held-out mixtures are designs, drawn once."""
    checkpoints.collect_shards.get()
    if wildcards.name in ("prior", "uniform", "planted"):
        from regmix.data.stats import full_train_tokens, read_stats

        tokens = full_train_tokens(read_stats(STATS))
        return as_json(tokens.to_dict() if wildcards.name == "prior" else sorted(tokens.index))
    return ""


def reuse_argument():
    """The training jobs' --reuse policy: the decisions it makes are in their params already."""
    return Unrecorded(as_json(config["reuse"]))
