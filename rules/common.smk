# Helpers shared by the rules: config access, paths, code fingerprints, the final targets.

import hashlib
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def validate_config():
    """Validate against config/schema.yaml (filling defaults), failing in one readable line.

    Snakemake's own message prints the whole schema; a user needs the key and the problem.
    """
    try:
        validate(config, schema="../config/schema.yaml", set_default=True)
    except WorkflowError as error:
        cause = error.__context__
        if not hasattr(cause, "absolute_path"):
            raise
        key = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
        raise WorkflowError(f"config key {key}: {cause.message}") from None


validate_config()


wildcard_constraints:
    run=r"[A-Za-z0-9_]+",


SRC = Path(workflow.basedir) / "src" / "regmix"
DATA = "results/data"
CORPUS = config["corpus"]["path"] or "results/corpus"


def source_hash(*modules):
    """A fingerprint of the package modules a rule runs, so that editing them re-runs the rule.

    Snakemake's code trigger only sees a rule's own shell text; the work happens in
    src/regmix, so its hash enters through params. Only the modules that do a stage's work
    count: shared plumbing (the CLI parser, file helpers) would re-run every stage on any edit.
    """
    digest = hashlib.sha256()
    for module in modules:
        digest.update((SRC / f"{module}.py").read_bytes())
    return digest.hexdigest()[:16]


def as_json(mapping):
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"))


def corpus_input():
    """The synthetic corpus folder (built by a rule), or the user's corpus files."""
    if not config["corpus"]["path"]:
        return CORPUS
    files = sorted(
        str(p)
        for split in ("train", "valid")
        for p in (Path(CORPUS) / split).glob("*")
        if p.name.endswith((".jsonl", ".jsonl.gz", ".parquet"))
    )
    return files or CORPUS


def corpus_folder(wildcards, input):
    """The corpus root: the synthetic corpus folder itself, or <root>/<split>/<file>."""
    first = Path(input[0])
    return str(first if not config["corpus"]["path"] else first.parent.parent)


def stats_folder(wildcards, output):
    return str(Path(output.stats).parent)


def sampler_settings():
    """The mixtures section minus what the CLI takes as its own flags."""
    return {k: v for k, v in config["mixtures"].items() if k not in ("n", "seed")}


def final_tokens():
    """The final model's token budget: it sets how often a domain may be repeated."""
    final = config["final"]
    return final["steps"] * final["batch_size"] * final["seq_len"]


def get_final_output():
    return [
        f"{DATA}/stats.parquet",
        "results/mixtures/proxy.parquet",
    ]
