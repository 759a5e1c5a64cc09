"""Checks run while Snakemake parses the workflow, so that every mistake that can be known before
training stops the run in one line, within seconds, before any job starts.

`check_workflow` takes the validated config (regmix.workflow.config: types, ranges, enums,
defaults) and checks what the schema cannot: the corpus and its domains (listed, never read),
the target, the tokenizer, the model shapes, how batches split over the devices, the regression
and simulation sizes, and, when the token counts of the configured corpus are already on disk,
whether the repetition caps can meet the final budget. Without those counts the caps are
checked by the mixture rules, which every training job waits for.

It imports no torch: the parse runs again inside every cluster job.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from regmix.errors import RegmixError, suggestion
from regmix.workflow.training_checks import (
    check_compiler,
    check_device_split,
    check_training_settings,
)

DATA = Path("results/data")
SYNTHETIC_CORPUS = Path("results/corpus")
TRAINING_SECTIONS = ("proxy", "final")
NO_VALIDATION = (
    "config key target: the corpus has no validation data (no folder or file named val, "
    "valid, validation or dev; or set corpus.valid_fraction to hold train documents out)"
)
MAX_BPE_VOCAB = 1_000_000
MIN_BPE_VOCAB = 258  # 256 bytes, the end-of-text token, and at least one merge


@dataclass(frozen=True)
class CorpusDomains:
    """The domains the prepared data will hold (after `corpus.domains`), by split."""

    train: list[str]
    valid: list[str]
    files: list[Path]
    """The corpus files listed (empty for the synthetic corpus, which a rule generates)."""
    known: bool = True
    """False when the records name their domains (corpus.domain_field): the domains are known
    only once the data is prepared, and the fan-in checks them (regmix collect-shards)."""


def check_workflow(config: Mapping, workdir: str | os.PathLike) -> None:
    """Raise RegmixError (one line naming the key or file) on the first problem found.

    `config` is the validated config (regmix.workflow.config.validate); its relative paths are
    relative to `workdir`, Snakemake's working directory, as in the rules.
    """
    workdir = Path(workdir)
    check_corpus_reading(config["corpus"])
    corpus = corpus_domains(config["corpus"], workdir)
    check_tokenizer(config["corpus"]["tokenizer"], workdir)
    if corpus.known:
        check_target(config["target"], corpus.valid)
    for section in TRAINING_SECTIONS:
        check_training_settings(config[section], section)
        check_device_split(config[section], section)
        check_compiler(config[section], section)
    check_sampler(config["mixtures"])
    check_regression(config["regression"], config["mixtures"]["rounds"])
    check_simulation(config["simulation"])
    check_evaluation(config.get("evaluation", {}), workdir)
    stats = current_stats(config["corpus"], workdir, corpus)
    if stats is not None and not corpus.known:  # records name their domains: as prepared
        names = _prepared_names(workdir / DATA)
        if config["corpus"]["domains"]:
            check_domain_names(config["corpus"]["domains"], names)
        check_target(config["target"], _shard_domains(workdir / DATA / "valid"), names)
    if stats is not None:
        check_caps(config, stats)
        check_windows(config, stats)


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a RegmixError into `regmix: error: <line>` on stderr and exit status 1.

    For the Snakefile: Snakemake lets a SystemExit raised while it parses the workflow end the
    process as it is (no traceback, in dry and real runs, with or without --profile), whereas
    any other exception is printed as a WorkflowError with its file, line and stack.
    """
    try:
        yield
    except RegmixError as error:
        print(f"regmix: error: {one_line(str(error))}", file=sys.stderr)
        raise SystemExit(1) from None


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- the corpus ---------------------------------------------------------------------------------


def corpus_domains(corpus: Mapping, workdir: Path) -> CorpusDomains:
    """The train and valid domains of the configured corpus after `corpus.domains`.

    The synthetic corpus is not generated here: its domains are fixed by regmix.data.synth. A
    user's corpus is listed (file names only) with the reader's own naming rules.
    """
    if corpus["path"] is None:
        from regmix.data.synth import DOMAINS, TARGET

        train = [spec.name for spec in DOMAINS]
        found = CorpusDomains(train, [*train, TARGET], [])
        where = "the synthetic corpus"
    else:
        found = list_corpus(workdir / corpus["path"], corpus)
        where = corpus["path"]
    return restrict_domains(found, corpus["domains"], where)


def list_corpus(path: Path, corpus: Mapping) -> CorpusDomains:
    from regmix.data.corpus import discover

    try:
        files = discover(path, None, corpus["domain_field"])
    except RegmixError as error:
        raise RegmixError(f"config key corpus.path: {error}") from None
    if corpus["domain_field"] is not None:
        if not any(f.split == "valid" for f in files) and not corpus["valid_fraction"]:
            raise RegmixError(NO_VALIDATION)
        return CorpusDomains([], [], [f.path for f in files], known=False)
    train = sorted({f.domain for f in files if f.split == "train"})
    valid = sorted({f.domain for f in files if f.split == "valid"})
    if corpus["valid_fraction"] > 0 and not valid:  # only where the corpus has no valid files
        valid = train
    return CorpusDomains(train, valid, [f.path for f in files])


def check_corpus_reading(corpus: Mapping) -> None:
    """Keys about how the corpus is read that only make sense with a user's corpus."""
    if corpus["path"] is None and corpus["domain_field"] is not None:
        raise RegmixError(
            "config key corpus.domain_field: set corpus.path too (the synthetic demo corpus "
            "names its domains by file)"
        )


def resolve_domain_names(config: dict) -> None:
    """Let `target` and `corpus.domains` use the corpus's own spelling (`Wikipedia (en)`) as
    well as the identifier the prepared data uses (`wikipedia_en`), when records name their
    domains; the rest of the workflow sees identifiers only."""
    from regmix.data.domains import resolve, resolve_target

    corpus = config["corpus"]
    normalised = corpus.get("domain_field") is not None
    config["target"] = resolve_target(config["target"], normalised)
    if corpus.get("domains") is not None:
        corpus["domains"] = [resolve(d, normalised) for d in corpus["domains"]]


def restrict_domains(found: CorpusDomains, domains: list[str] | None, where: str) -> CorpusDomains:
    """`corpus.domains` keeps only the listed domains, in both splits (as `regmix prepare`)."""
    if domains is None or not found.known:
        return found
    known = sorted({*found.train, *found.valid})
    for domain in domains:
        if domain not in known:
            raise RegmixError(
                f"config key corpus.domains: {where} has no files for domain {domain!r} "
                f"(domains: {', '.join(known)}){suggestion(domain, known)}"
            )
    kept = CorpusDomains(
        [d for d in found.train if d in domains],
        [d for d in found.valid if d in domains],
        found.files,
    )
    if not kept.train:
        raise RegmixError(
            f"config key corpus.domains: none of {', '.join(domains)} has train data in {where} "
            f"(train domains: {', '.join(found.train)})"
        )
    return kept


def check_domain_names(domains: list[str], names: Mapping[str, str]) -> None:
    """Every `corpus.domains` entry (an identifier) is a domain the corpus holds: `names` maps
    the corpus's own names, as its records spell them, to identifiers (domains.json). A
    misspelt entry would silently drop a domain."""
    if not names:
        return  # RegMix's layout: the file names were checked while Snakemake parsed
    spelling = {ident: raw for raw, ident in names.items()}
    known = sorted(spelling)
    for domain in domains:
        if domain not in spelling:
            listed = ", ".join(repr(spelling[k]) for k in known)
            raise RegmixError(
                f"config key corpus.domains: no domain {domain!r} in the corpus (its domains: "
                f"{listed}){suggestion(domain, known, spelling)}"
            )


# --- the tokenizer and the target ---------------------------------------------------------------


def check_tokenizer(spec: str, workdir: Path) -> None:
    """`byte`, `bpe:<vocab>` with a sane vocabulary, or a loadable tokenizer.json."""
    if spec == "byte":
        return
    if spec.startswith("bpe:"):
        vocab = spec.removeprefix("bpe:")
        if not vocab.isdigit() or not MIN_BPE_VOCAB <= int(vocab) <= MAX_BPE_VOCAB:
            raise RegmixError(
                f"config key corpus.tokenizer: {spec!r}: expected bpe:<vocab size> with "
                f"{MIN_BPE_VOCAB} <= vocab size <= {MAX_BPE_VOCAB:,}, e.g. bpe:8192"
            )
        return
    path = workdir / spec
    if not path.is_file():
        raise RegmixError(
            f"config key corpus.tokenizer: {spec}: tokenizer file does not exist (expected "
            "byte, bpe:<vocab size> or the path of a tokenizer.json)"
        )
    from regmix.data.tokenize import HFTokenizer

    try:
        HFTokenizer(path)
    except RegmixError as error:
        raise RegmixError(f"config key corpus.tokenizer: {error}") from None


def check_target(target: str, valid: list[str], names: Mapping[str, str] | None = None) -> None:
    """Every domain a (plain or weighted) target names has validation data (`names`: the
    corpus's own names → identifiers, to suggest the corpus's spelling)."""
    from regmix.search.runs import LOSS, parse_target

    if not valid:
        raise RegmixError(NO_VALIDATION)
    if target.strip() != "mean":
        for part in target.split(","):
            name = part.partition(":")[0].strip().removeprefix(LOSS)
            if name not in valid:
                where = "" if name == target.strip() else f"{target!r}: "
                raise RegmixError(
                    f"config key target: {where}domain {name!r} has no validation data in the "
                    f"corpus (validation domains: {', '.join(valid)})"
                    f"{suggestion(name, valid, {i: r for r, i in (names or {}).items()})}"
                )
    try:
        parse_target(target, valid)
    except RegmixError as error:
        raise RegmixError(f"config key target: {str(error).removeprefix('target ')}") from None


# --- sampler, regression, simulation ------------------------------------------------------------


def check_sampler(mixtures: Mapping) -> None:
    from regmix.search.mixtures import SamplerConfig

    names = {f.name for f in fields(SamplerConfig)}
    try:
        SamplerConfig(**{k: v for k, v in mixtures.items() if k in names})
    except RegmixError as error:
        raise RegmixError(f"config key {error}") from None


def check_regression(regression: Mapping, rounds: list[int]) -> None:
    """Cross-validation needs at least as many proxy runs as folds."""
    runs = sum(rounds)
    if regression["folds"] > runs:
        raise RegmixError(
            f"config key regression.folds: {regression['folds']} folds need at least "
            f"{regression['folds']} proxy runs (mixtures.rounds gives {runs})"
        )


def check_simulation(simulation: Mapping) -> None:
    if simulation["top_k"] > simulation["candidates"]:
        raise RegmixError(
            f"config key simulation.top_k: {simulation['top_k']} is more than the "
            f"{simulation['candidates']} candidates (simulation.candidates)"
        )


# --- checks on the token counts, when they are on disk ------------------------------------------


def check_evaluation(evaluation: Mapping, workdir: Path) -> None:
    """lm-eval is installed and every task resolves with its data offline (tasks are found by
    a text search of lm-eval's task files, not its index: about a second, not ten)."""
    if not evaluation.get("enabled"):
        return
    import importlib.util

    from regmix.evaluation.tasks import check_tasks, is_path

    if importlib.util.find_spec("lm_eval") is None:
        raise RegmixError(
            "config key evaluation.enabled: lm-eval is not installed (pip install 'regmix[eval]',"
            " or set evaluation.enabled: false)"
        )
    tasks = evaluation.get("tasks", [])
    if not tasks and evaluation.get("continuation", {}).get("examples", 0) == 0:
        raise RegmixError(
            "config key evaluation.tasks: no task to run (list lm-eval tasks or set "
            "evaluation.continuation.examples > 0)"
        )
    check_tasks([str(workdir / t) if is_path(t) else t for t in tasks])


def current_stats(corpus: Mapping, workdir: Path, domains: CorpusDomains) -> Path | None:
    """`results/data/stats.parquet` when it was prepared from the corpus, domains and
    tokenizer now configured (else None: the prepare rule will write new counts).

    Stale counts must never fail a run that the next `prepare` would make feasible, so any
    doubt means None: a corpus file newer than the counts, other domains, another tokenizer,
    or a synthetic corpus whose recorded seed and scale differ from the config (or are not
    recorded).
    """
    stats = workdir / DATA / "stats.parquet"
    if not stats.is_file():
        return None
    made = stats.stat().st_mtime
    if any(path.stat().st_mtime > made for path in domains.files):
        return None
    if corpus["path"] is None and not _synthetic_corpus_matches(corpus, workdir, made):
        return None
    prepared = {split: _shard_domains(workdir / DATA / split) for split in ("train", "valid")}
    if not prepared["train"]:
        return None
    expected = {"train": sorted(domains.train), "valid": sorted(domains.valid)}
    if domains.known and prepared != expected:
        return None
    sidecar = workdir / DATA / "train" / f"{prepared['train'][0]}.json"
    if not _same_tokenizer(corpus["tokenizer"], sidecar, workdir):
        return None
    return stats


def _prepared_names(data: Path) -> dict[str, str]:
    """The corpus's domain names → identifiers, as the last prepare found them."""
    try:
        return json.loads((data / "domains.json").read_text())
    except (OSError, ValueError):
        return {}


def _shard_domains(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json"))


def _synthetic_corpus_matches(corpus: Mapping, workdir: Path, made: float) -> bool:
    from regmix.files import read_yaml

    planted = workdir / SYNTHETIC_CORPUS / "planted.yaml"
    if not planted.is_file() or planted.stat().st_mtime > made:
        return False
    recorded = read_yaml(planted) or {}
    synthetic = corpus["synthetic"]
    return recorded.get("seed") == synthetic["seed"] and recorded.get("scale") == float(
        synthetic["scale"]
    )


def _same_tokenizer(spec: str, sidecar: Path, workdir: Path) -> bool:
    """Whether the shards were tokenized with `spec` (their sidecar records its fingerprint)."""
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    if spec == "byte":
        return recorded.get("tokenizer") == "byte-v1"
    if spec.startswith("bpe:"):
        trained = str(recorded.get("tokenizer", "")).startswith("sha256:")
        return trained and recorded.get("vocab_size") == int(spec.removeprefix("bpe:"))
    digest = hashlib.sha256((workdir / spec).read_bytes()).hexdigest()[:16]
    return recorded.get("tokenizer") == f"sha256:{digest}"


def check_caps(config: Mapping, stats: Path) -> None:
    """The per-domain repetition caps leave room for the final model's token budget."""
    from regmix.data.stats import read_stats, train_tokens
    from regmix.search.mixtures import domain_caps

    final = config["final"]
    final_tokens = final["steps"] * final["batch_size"] * final["seq_len"]
    try:
        domain_caps(train_tokens(read_stats(stats)), final_tokens, config["mixtures"]["max_epochs"])
    except RegmixError as error:
        message = str(error).removeprefix("mixtures: ")
        raise RegmixError(
            f"config key mixtures.max_epochs: {message} (final.steps × final.batch_size × "
            f"final.seq_len; token counts from {DATA / 'stats.parquet'})"
        ) from None


def check_windows(config: Mapping, stats: Path) -> None:
    """Every domain holds at least one window of each training section's seq_len + 1 tokens:
    validation windows for every valid domain, training windows for every train domain."""
    from regmix.data.stats import read_stats

    table = read_stats(stats)
    for section in TRAINING_SECTIONS:
        window = config[section]["seq_len"] + 1
        short = table[table["tokens"] < window]
        if not short.empty:
            row = short.sort_values(["split", "domain"]).iloc[0]
            raise RegmixError(
                f"config key {section}.seq_len: {row['split']} domain {row['domain']!r} has "
                f"{row['tokens']:,} tokens, fewer than one window of {window} "
                f"(token counts from {DATA / 'stats.parquet'})"
            )
