# Helpers shared by the rules: config access, paths, code fingerprints, the final targets.

import hashlib
import json
import sys
from pathlib import Path

from regmix.workflow.config import RENAMED, SCHEMA, read_renamed, read_schema, validate
from regmix.data.groups import corpus_groups, runtime_minutes
from regmix.workflow.preflight import check_workflow, exit_on_error, resolve_domain_names
from regmix.workflow.reuse_plan import planned_sweep, reuse_plan
from regmix.workflow.sweep import (
    OPTIMUM,
    Sweep,
    batch_log,
    batch_table,
    final_mixture_path,
    intervals_path,
    mixtures_path,
    optimum_proxy_dir,
    run_settings,
    runs_table,
)
from regmix.workflow.sweep import final_tokens as sweep_final_tokens
from regmix.training.tracking import tracking_settings
from regmix.training.train_config import TRAINING_MODULES


def validate_config():
    """Coerce, validate and fill defaults (regmix.workflow.config), then check everything that
    can be known before training (regmix.workflow.preflight). A problem ends the run before any
    job starts, as one line naming the key or file (`regmix: error: ...`) and exit status 1.

    Snakemake's own validate prints the whole schema; a user needs the key and the problem.
    """
    with exit_on_error():
        basedir = Path(workflow.basedir)
        validate(config, read_schema(basedir / SCHEMA), read_renamed(basedir / RENAMED))
        resolve_domain_names(config)
        check_workflow(config, Path.cwd())


validate_config()


wildcard_constraints:
    model=r"[a-z]+",
    name=r"[A-Za-z0-9_]+",
    round=r"[0-9]+",
    batch=r"run[0-9]+(-run[0-9]+)?",
    group=r"[A-Za-z0-9_]+-[0-9a-f]{6}|synthetic",


SRC = Path(workflow.basedir) / "src" / "regmix"
DATA = "results/data"
STATS = f"{DATA}/stats.parquet"
"""The token counts: rules below the data stage name them in params, not through their
input, which stays to be decided while the data stage (a checkpoint) has not run."""
CORPUS = config["corpus"]["path"] or "results/corpus"


def source_hash(*modules):
    """A fingerprint of the package modules a rule runs, so that editing them re-runs the rule.

    Snakemake's code trigger only sees a rule's own shell text; the work happens in
    src/regmix, so its hash enters through params. Only the modules that do a stage's work
    count: shared plumbing (the CLI parser, file helpers) would re-run every stage on any edit.
    """
    digest = hashlib.sha256()
    for module in modules:  # dotted below regmix: "search.regression"
        digest.update((SRC / f"{module.replace('.', '/')}.py").read_bytes())
    return digest.hexdigest()[:16]


def as_json(mapping):
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"))


class Unrecorded:
    """A rule parameter that Snakemake does not record, so that changing it re-runs nothing.

    The params trigger compares only values Snakemake can serialize (builtins, pandas objects)
    and skips any other object; the shell command gets str(value). A global in the shell text
    would do the same but fails `snakemake --lint`.
    """

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text

    def __repr__(self):
        return "Unrecorded()"  # constant, should a Snakemake ever record the repr


def tracking_argument():
    """The training rules' --tracking JSON: the experiment tracker never re-runs a job (nor
    changes a run's fingerprint), so a tracker switched on after a sweep retrains nothing."""
    return Unrecorded(as_json(tracking_settings(config)))


# --- the data stage: one job per group of corpus files (regmix.data.groups) ---


CORPUS_SETTINGS = config["corpus"]
SYNTHETIC_GROUP = "synthetic"


def data_groups():
    """The data-stage jobs by name. A user's corpus is listed now, while Snakemake parses, so
    that the DAG has one job per group of files; the synthetic corpus, which a rule
    generates, is one small job."""
    if not config["corpus"]["path"]:
        return {SYNTHETIC_GROUP: None}
    with exit_on_error():
        return corpus_groups(CORPUS_SETTINGS, Path(CORPUS))


DATA_GROUPS = data_groups()


def group_files(wildcards):
    """A data job's input: its corpus files, or the synthetic corpus folder."""
    group = DATA_GROUPS[wildcards.group]
    return CORPUS if group is None else [str(f.path) for f in group[0].files]


def group_tokenizer(wildcards):
    """The tokenizer.json a data job reads (trained or copied once, by train_tokenizer)."""
    return [] if CORPUS_SETTINGS["tokenizer"] == "byte" else f"{DATA}/tokenizer.json"


def tokenizer_argument(wildcards, input):
    return input.tokenizer if input.tokenizer else "byte"


def files_argument(wildcards, input):
    return "" if DATA_GROUPS[wildcards.group] is None else "--files " + " ".join(input.files)


def group_runtime(wildcards, threads, attempt):
    """A data job's time limit in minutes; a retry (a job killed at its limit) asks for more."""
    group = DATA_GROUPS[wildcards.group]
    return attempt * (10 if group is None else runtime_minutes(group[1], threads))


def reading_arguments():
    """How documents get their split and domain: the corpus.* keys as regmix flags."""
    corpus = CORPUS_SETTINGS
    flags = [
        f"--corpus {CORPUS}",
        f"--domains '{','.join(corpus['domains'] or [])}'",
        f"--missing-domain {corpus['missing_domain']}",
        f"--valid-fraction {corpus['valid_fraction']}",
    ]
    if corpus["domain_field"]:
        flags.append(f"--domain-field '{corpus['domain_field']}'")
    return " ".join(flags)


def tokenizer_corpus(wildcards):
    """The tokenizer job reads the synthetic corpus once a rule made it; a user's corpus is
    listed by the job itself, so that adding a file never re-trains the tokenizer (and with
    it every data job). A given tokenizer.json is copied: its file is the input."""
    spec = CORPUS_SETTINGS["tokenizer"]
    if not spec.startswith("bpe:"):
        return spec
    return CORPUS if not config["corpus"]["path"] else []


def all_groups():
    return expand(f"{DATA}/shards/{{group}}", group=sorted(DATA_GROUPS))


def max_tokens():
    """corpus.max_tokens as a number, or None for `all`. `auto` is the most tokens any model
    can read of one domain (a weight of 1 at the final budget, or at the proxies' if larger)."""
    setting = CORPUS_SETTINGS["max_tokens"]
    if setting == "all":
        return None
    if setting == "auto":
        proxy = config["proxy"]
        return max(final_tokens(), proxy["steps"] * proxy["batch_size"] * proxy["seq_len"])
    return int(setting)


def group_survey(wildcards):
    """The survey that says which share of each domain to tokenize (with max_tokens). Its
    time is ignored (ancient): the fan-in cuts every domain to max_tokens from exact counts,
    so a survey that ran again (for a new file) needs no old data job to run again."""
    return [] if max_tokens() is None else ancient(f"{DATA}/survey.json")


def survey_corpus_input():
    """The survey reads a user's corpus without listing its files as input, so that adding a
    file does not run it (and every data job) again; the synthetic corpus is a rule's output."""
    return [] if config["corpus"]["path"] else CORPUS


def max_tokens_argument():
    setting = max_tokens()
    return "" if setting is None else f"--max-tokens {setting}"


def survey_argument(wildcards, input):
    return f"--survey {input.survey}" if input.survey else ""


def input_folder(name):
    """A params function: the folder holding the rule's input `name` (shards, a model, ...)."""

    def folder(wildcards, input):
        return str(Path(input[name]).parent)

    return folder


def output_folder(wildcards, output):
    """The folder holding the rule's first output."""
    return str(Path(output[0]).parent)


def has_planted_answer():
    """The synthetic corpus (generated here, or given as corpus.path) records its answer."""
    return not config["corpus"]["path"] or (Path(CORPUS) / "planted.yaml").is_file()


def planted_argument(wildcards, input):
    """`--planted <corpus>/planted.yaml` when the corpus has a planted answer, else nothing."""
    return f"--planted {Path(input.corpus) / 'planted.yaml'}" if has_planted_answer() else ""


def reuse_of_earlier_runs():
    """The sweep (with an extra round for each set of new domains) and what this run does with
    the runs trained before (regmix.workflow.reuse_plan), printed by reason before anything
    runs whenever something is not simply kept."""
    with exit_on_error():
        sweep = planned_sweep(config, Path.cwd(), has_planted_answer())
        plan = reuse_plan(config, Path.cwd(), sweep)
        lines = plan.table_lines() if workflow.is_main_process else []
    if lines:
        print("\n".join(lines), file=sys.stderr)
    return sweep, plan


SWEEP, REUSE = reuse_of_earlier_runs()


def round_size(wildcards):
    """How many mixtures the round proposes."""
    return SWEEP.rounds[int(wildcards.round) - 1]


def optimum_in_round(wildcards):
    """The last round also trains the mixture the runs so far recommend."""
    return "--with-optimum" if int(wildcards.round) == SWEEP.configured_rounds else ""


def explore_argument(wildcards):
    """An extra round explores the domains new to the sweep (regmix propose --explore)."""
    explored = SWEEP.explored(int(wildcards.round))
    return f"--explore {','.join(explored)}" if explored else ""


def rounds_before(wildcards):
    """The design of the rounds a proposal builds on: their sizes (their own settings are in
    the proxy and sampler params), not their losses, which the data may refresh."""
    return list(SWEEP.rounds[: int(wildcards.round) - 1])


def runs_before_round(wildcards):
    """The batch tables of every round before this one: what its proposal is fitted on."""
    return [
        batch_table(r, b.name) for r in range(1, int(wildcards.round)) for b in SWEEP.batches(r)
    ]


PROPOSE_MODULES = (
    "search.propose",
    "search.calibration",
    "search.explore",
    "search.regression",
    "search.regressors",
    "search.mixtures",
    "search.runs",
    "data.stats",
)


def design_key(wildcards):
    """What a proposed round is drawn from: its settings, the proxies' and the sizes of the
    rounds before it, not their losses. The proposal is kept under this key
    (regmix propose --keep): runs before it trained or measured again on changed data re-run the
    proposal job, which re-publishes the round as drawn unless this key changed."""
    design = {
        "n": round_size(wildcards),
        "optimum": optimum_in_round(wildcards),
        "explore": explore_argument(wildcards),
        "before": rounds_before(wildcards),
        "proxy": train_settings("proxy"),
        "target": config["target"],
        "seed": config["mixtures"]["seed"],
        "final_tokens": final_tokens(),
        "sampler": sampler_settings(),
        "acquisition": config["acquisition"],
        "code": source_hash(*PROPOSE_MODULES),
    }
    return hashlib.sha256(as_json(design).encode()).hexdigest()[:16]


def intervals_before_round(wildcards):
    """The interval records of the later rounds before this one: its proposal checks them."""
    return [intervals_path(r) for r in range(2, int(wildcards.round))]


def interval_records():
    """Every later round's interval record: the fitted regressor is calibrated on them."""
    return [intervals_path(r) for r in range(2, SWEEP.n_rounds + 1)]


def batch_mixtures(wildcards):
    """The mixture table of the round a batch belongs to."""
    return mixtures_path(wildcards.round)


def batch_runs(wildcards):
    """The runs a batch trains, space-separated for the command line."""
    return " ".join(SWEEP.batch(wildcards.batch).runs)


def all_batch_tables():
    return [batch_table(b.round, b.name) for b in SWEEP.batches()]


def all_round_mixtures():
    return [mixtures_path(r) for r in range(1, SWEEP.n_rounds + 1)]


def final_mixture_inputs(wildcards):
    """What one final model's mixture is made from besides the token counts (prior, caps): the
    optimum for `regmix`, the corpus's planted answer for `planted`."""
    inputs = {}
    if wildcards.name == OPTIMUM:
        inputs["optimum"] = "results/optimal/mixture.yaml"
    elif wildcards.name == "planted":
        inputs["corpus"] = CORPUS
    return inputs


def final_mixture_source(wildcards):
    """The command-line flags that say where a final model's mixture comes from (the files of
    final_mixture_inputs; a function of the name alone, so that a held-out mixture's design is
    recorded: its seed and sampler re-draw it)."""
    name = wildcards.name
    if name == OPTIMUM:
        return "--optimum results/optimal/mixture.yaml"
    if name == "planted":
        return f"--planted {Path(CORPUS) / 'planted.yaml'}"
    if name.startswith("heldout"):
        sampler = as_json(sampler_settings())
        return f"--heldout-seed {config['mixtures']['seed'] + 1000} --sampler '{sampler}'"
    return ""


def optimum_first(wildcards):
    """Scheduling priority: the recommended mixture's final model is on the critical path
    (it waits for every round); the baselines and held-out models fill the gaps."""
    return 10 if wildcards.name == OPTIMUM else 0


def final_mixture_tables():
    return [final_mixture_path(name) for name in SWEEP.final_names()]


def train_settings(section):
    """A training section's TrainConfig fields (regmix.workflow.sweep.run_settings)."""
    return run_settings(config, section)


def srun_resources(gpus):
    """A multi-GPU job runs one task per GPU (started by srun, as Lightning expects on SLURM)."""
    return {"mpi": "srun", "tasks_per_node": gpus} if gpus > 1 else {}


def sampler_settings():
    """The mixtures section minus what the CLI takes as its own flags."""
    return {k: v for k, v in config["mixtures"].items() if k not in ("rounds", "seed")}


def final_tokens():
    """The final model's token budget: it sets how often a domain may be repeated."""
    return sweep_final_tokens(config)


def regression_models():
    """The regressor the optimum comes from, then the others fitted for comparison."""
    chosen = config["regression"]["model"]
    return [chosen, *(m for m in config["regression"]["compare"] if m != chosen)]


def optimum_proxy_outputs():
    """The recommended mixture's proxy-scale check, when the config asks for it."""
    folder = optimum_proxy_dir()
    if not SWEEP.check_optimum:
        return {}
    return {"optimum_losses": f"{folder}/losses.parquet", "optimum_record": f"{folder}/run.json"}


def optimum_proxy_argument(wildcards, input):
    """`--optimum-proxy <folder>` when the recommended mixture was also trained as a proxy."""
    return f"--optimum-proxy {Path(input.optimum_record).parent}" if SWEEP.check_optimum else ""


# --- downstream evaluation (rules/evaluation.smk) ---

CONTINUATION_TASK = "results/evaluation/continuation"
EVALUATION_MODULES = ("evaluation.harness", "evaluation.tasks")


def evaluating():
    return config["evaluation"]["enabled"]


def evaluation_task_entries():
    """The tasks lm-eval runs: the configured ones, then the target's continuation task."""
    tasks = list(config["evaluation"]["tasks"])
    if config["evaluation"]["continuation"]["examples"] > 0:
        tasks.append(f"{CONTINUATION_TASK}/task.yaml")
    return tasks


def evaluation_settings():
    """The evaluate rule's --settings (EvalSettings): every field changes a score."""
    evaluation = config["evaluation"]
    keys = ("num_fewshot", "limit", "batch_size", "seed")
    return {"tasks": evaluation_task_entries(), **{k: evaluation[k] for k in keys}}


def evaluation_inputs(wildcards):
    """One final model's exported folder (the files lm-eval reads) and the generated task."""
    folder = f"results/final/{wildcards.name}/hf"
    inputs = {
        "config": f"{folder}/config.json",
        "weights": f"{folder}/model.safetensors",
        "tokenizer": f"{folder}/tokenizer.json",
        "tokenizer_config": f"{folder}/tokenizer_config.json",
    }
    if config["evaluation"]["continuation"]["examples"] > 0:
        inputs["task"] = f"{CONTINUATION_TASK}/task.yaml"
        inputs["task_data"] = f"{CONTINUATION_TASK}/data.jsonl"
    return inputs


def evaluation_folders(wildcards, input):
    return " ".join(str(Path(path).parent) for path in input.results)


def downstream_inputs():
    """The downstream scores and every model's per-example records, when evaluating."""
    if not evaluating():
        return {}
    return {
        "downstream": "results/final/downstream.parquet",
        "samples": expand("results/final/{name}/eval/samples.jsonl", name=SWEEP.final_names()),
    }


def downstream_argument(wildcards, input):
    """`--downstream <table> --samples <files>` for the summary, when evaluating."""
    if not evaluating():
        return ""
    return f"--downstream {input.downstream} --samples {' '.join(input.samples)}"


def get_final_output():
    """The summary, every report figure, every compared regressor's CV metrics and, when
    evaluating, the downstream scores."""
    return [
        rules.summarize.output.markdown,
        *rules.report_figures.output,
        *expand("results/regression/{model}/metrics.json", model=regression_models()),
        *(["results/report/downstream.png"] if evaluating() else []),
    ]
