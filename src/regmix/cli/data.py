"""Commands for the data: the demo corpus, token shards, proxy mixtures and model presets."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from regmix.cli.args import add_threads_argument, dataclass_from, json_object, name_list
from regmix.errors import RegmixError


def add_synth_corpus(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "synth-corpus",
        help="generate the synthetic multi-domain demo corpus with a planted answer",
        description="Write a deterministic artificial corpus in RegMix's layout "
        "(train/ and valid/ JSONL per domain) plus planted.yaml, the blend of source domains "
        "that the valid-only target domain was drawn from.",
    )
    p.add_argument("--out", type=Path, required=True, help="corpus folder to create")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every domain's size")
    p.set_defaults(handler=_synth_corpus)


def _synth_corpus(args: argparse.Namespace) -> None:
    from regmix.data.synth import SynthConfig, write_corpus

    write_corpus(args.out, SynthConfig(seed=args.seed, scale=args.scale))


def add_reading_arguments(p: argparse.ArgumentParser) -> None:
    """How documents get their split and domain (the corpus.* keys of the same names)."""
    p.add_argument("--corpus", type=Path, required=True, help="the corpus folder")
    p.add_argument(
        "--domains",
        type=name_list,
        default=None,
        help="comma-separated domains to prepare (each must have files); empty or absent: all",
    )
    p.add_argument(
        "--domain-field",
        default=None,
        help="take the domain from this field (dotted path, e.g. meta.pile_set_name) "
        "instead of the file name",
    )
    p.add_argument("--missing-domain", choices=["error", "skip"], default="error")
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=0.0,
        help="where the corpus has no validation file, hold out this share of the train "
        "documents (by a hash of the text)",
    )


def reading_options(args: argparse.Namespace):
    """The ReadOptions of the reading flags: the same function as for the config's keys."""
    from regmix.data.corpus import read_options

    return read_options(
        {
            "domain_field": args.domain_field,
            "missing_domain": args.missing_domain,
            "valid_fraction": args.valid_fraction,
            "domains": args.domains,
        }
    )


def pin_tokenizer_threads(threads: int) -> None:
    """The Rust tokenizer sizes its thread pool from these on first use: pin it to the job's
    threads, so that N jobs on N cores do not each start one thread per core."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"


def add_prepare(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "prepare",
        help="tokenize a corpus into packed per-domain token shards (the whole data stage)",
        description="Read a corpus (RegMix's <corpus>/{train,valid}/<domain>-<k>.<ext>, or any "
        ".jsonl[.gz,.zst]/.json.gz/.parquet files with --domain-field), tokenize, and write "
        "<out>/shards/<group>/{split}/{domain}.bin, the per-domain indexes "
        "<out>/{split}/{domain}.json and <out>/stats.parquet. The workflow runs the same steps "
        "as separate jobs (train-tokenizer, prepare-group, collect-shards).",
    )
    add_reading_arguments(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--tokenizer",
        default="byte",
        help="'byte' (256 bytes + EOS), 'bpe:<vocab size>' (trained on the train split), "
        "or the path of a Hugging Face tokenizer.json",
    )
    p.add_argument("--workers", type=int, default=1, help="groups of files tokenized at once")
    p.add_argument("--bytes-per-job", type=int, default=1_000_000_000)
    p.add_argument(
        "--max-tokens", type=int, default=None, help="tokenize about this many per train domain"
    )
    p.add_argument("--sample-bytes", type=int, default=100_000_000)
    p.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> None:
    from regmix.data.prepare import prepare_corpus

    pin_tokenizer_threads(1)
    options = reading_options(args)
    prepare_corpus(
        args.corpus,
        args.out,
        args.tokenizer,
        args.workers,
        args.domains,
        options,
        args.bytes_per_job,
        args.max_tokens,
        args.sample_bytes,
    )


def add_train_tokenizer(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train-tokenizer",
        help="train a BPE on a sample of the corpus (or copy a tokenizer.json) for prepare-group",
    )
    add_reading_arguments(p)
    p.add_argument("--tokenizer", required=True, help="bpe:<vocab size> or a tokenizer.json")
    p.add_argument("--out", type=Path, required=True, help="the tokenizer.json to write")
    p.add_argument("--sample-bytes", type=int, default=100_000_000)
    add_threads_argument(p)
    p.set_defaults(handler=_train_tokenizer)


def _train_tokenizer(args: argparse.Namespace) -> None:
    from regmix.data.prepare import make_tokenizer

    pin_tokenizer_threads(args.threads or os.cpu_count() or 1)
    make_tokenizer(args.corpus, args.tokenizer, args.out, reading_options(args), args.sample_bytes)


def add_prepare_group(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "prepare-group",
        help="tokenize some files of a corpus into their own token shards (one data job)",
        description="Stream the given files (default: every file of the corpus) and write "
        "<out>/{split}/{domain}.bin + .json and <out>/group.json; logs progress every 30 s.",
    )
    add_reading_arguments(p)
    p.add_argument("--files", type=Path, nargs="*", default=None, help="files of the corpus")
    p.add_argument("--out", type=Path, required=True, help="the group's folder")
    p.add_argument("--tokenizer", default="byte", help="'byte' or a tokenizer.json")
    p.add_argument(
        "--survey", type=Path, default=None, help="survey.json: tokenize only a sample per domain"
    )
    add_threads_argument(p)
    p.set_defaults(handler=_prepare_group)


def _prepare_group(args: argparse.Namespace) -> None:
    from regmix.data.corpus import open_corpus
    from regmix.data.shards import prepare_group

    pin_tokenizer_threads(args.threads or 1)
    keep = None
    if args.survey is not None:
        from regmix.data.survey import keep_fractions

        keep = keep_fractions(args.survey)
    files, options = open_corpus(args.corpus, reading_options(args))
    if args.files:
        wanted = {path.resolve() for path in args.files}
        files = [f for f in files if f.path.resolve() in wanted]
        if len(files) != len(wanted):
            found = {f.path.resolve() for f in files}
            missing = sorted(str(p) for p in wanted - found)
            raise RegmixError(f"{missing[0]}: not a file of the corpus {args.corpus}")
    prepare_group(files, args.out, args.tokenizer, options, keep)


def add_survey_corpus(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "survey-corpus",
        help="estimate each domain's size from a sample of every file (for corpus.max_tokens)",
        description="Write survey.json: per train domain, its estimated text bytes and tokens "
        "and the share of its documents that --max-tokens needs (prepare-group --survey).",
    )
    add_reading_arguments(p)
    p.add_argument("--tokenizer", default="byte", help="'byte' or a tokenizer.json")
    p.add_argument("--max-tokens", type=int, required=True, help="tokens to prepare per domain")
    p.add_argument("--sample-bytes", type=int, default=100_000_000)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_survey_corpus)


def _survey_corpus(args: argparse.Namespace) -> None:
    from regmix.data.survey import survey_corpus

    pin_tokenizer_threads(1)
    survey_corpus(
        args.corpus,
        reading_options(args),
        args.tokenizer,
        args.sample_bytes,
        args.max_tokens,
        args.out,
    )


def add_collect_shards(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "collect-shards",
        help="index the groups' token shards per domain and write stats.parquet (fan-in)",
        description="Index every prepared group's per-file shards per (split, domain), cut "
        "each train domain to --max-tokens, write the domain indexes (with their fingerprints), "
        "stats.parquet and domains.json; check the target and --domains against the domains "
        "the corpus holds.",
    )
    p.add_argument("--groups", type=Path, nargs="+", required=True, help="prepared group folders")
    p.add_argument("--out", type=Path, required=True, help="the data folder")
    p.add_argument("--target", default=None, help="check that the target has validation data")
    p.add_argument(
        "--domains",
        type=name_list,
        default=None,
        help="corpus.domains: check that each is a domain of the corpus",
    )
    p.add_argument("--max-tokens", type=int, default=None, help="train tokens per domain")
    p.set_defaults(handler=_collect_shards)


def _collect_shards(args: argparse.Namespace) -> None:
    from regmix.data.collect import DOMAIN_NAMES, collect_shards
    from regmix.data.stats import valid_domains
    from regmix.workflow.preflight import check_domain_names, check_target

    stats = collect_shards(args.groups, args.out, args.max_tokens)
    train = stats[stats["split"] == "train"]
    print(
        f"collect-shards: {len(args.groups)} group(s) -> {len(train)} train and "
        f"{len(stats) - len(train)} valid domains, {stats['tokens'].sum():,} tokens "
        f"(estimated full size of train: {train['estimated_tokens'].sum():,})",
        file=sys.stderr,
    )
    names = json.loads((args.out / DOMAIN_NAMES).read_text())
    if args.domains:
        check_domain_names(args.domains, names)
    if args.target:
        check_target(args.target, valid_domains(stats), names)


def add_sample_mixtures(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "sample-mixtures",
        help="sample N proxy mixtures with RegMix's Dirichlet sampler",
        description="Write a mixture table (run + weight.<domain>) and one RegMix-style YAML "
        "per run. The prior is the train-token share from stats.parquet.",
    )
    p.add_argument("--stats", type=Path, required=True, help="stats.parquet from `prepare`")
    p.add_argument("--n", type=int, required=True, help="number of mixtures")
    p.add_argument("--final-tokens", type=float, required=True, help="final-model token budget")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sampler", type=json_object, default={}, help="SamplerConfig fields (JSON)")
    p.add_argument("--out", type=Path, required=True, help="mixture table (.parquet)")
    p.add_argument("--yaml-dir", type=Path, help="folder for one <run>.yaml per mixture")
    p.set_defaults(handler=_sample_mixtures)


def _sample_mixtures(args: argparse.Namespace) -> None:
    from regmix.search.mixtures import SamplerConfig, write_proxy_mixtures

    config = dataclass_from(SamplerConfig, args.sampler, "--sampler")
    write_proxy_mixtures(
        args.stats, args.n, args.final_tokens, config, args.seed, args.out, args.yaml_dir
    )


def add_presets(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "presets",
        help="list the model presets with their parameter counts",
        description="Shapes and parameter counts of the model presets. The paper's sizes "
        "count non-embedding parameters; the total adds the (untied) embedding and LM head.",
    )
    p.add_argument("--vocab", type=int, default=50432, help="vocabulary size for the totals")
    p.add_argument("--data", type=Path, help="take the vocabulary size from these token shards")
    p.set_defaults(handler=_presets)


def _presets(args: argparse.Namespace) -> None:
    import pandas as pd

    from regmix.data.loader import vocab_size
    from regmix.training.model_config import PRESETS, ModelConfig

    vocab = vocab_size(args.data) if args.data is not None else args.vocab
    rows = []
    for name in PRESETS:
        c = ModelConfig.from_preset(name, vocab)
        shape = (c.n_layer, c.n_head, c.n_embd, c.intermediate_size)
        rows.append((name, *shape, f"{c.non_embedding_params:,}", f"{c.total_params:,}"))
    columns = ["preset", "layers", "heads", "width", "mlp", "non-embedding", f"total@{vocab}"]
    print(pd.DataFrame(rows, columns=columns).to_string(index=False))
