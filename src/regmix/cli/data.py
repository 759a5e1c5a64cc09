"""Commands for the data: the demo corpus, token shards, proxy mixtures and model presets."""

from __future__ import annotations

import argparse
from pathlib import Path

from regmix.cli.args import dataclass_from, json_object, name_list


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


def add_prepare(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "prepare",
        help="tokenize a corpus into packed per-domain token shards",
        description="Read <corpus>/{train,valid}/<domain>-<k>.{jsonl,jsonl.gz,parquet}, tokenize, "
        "and write <out>/{split}/{domain}.bin with JSON sidecars and <out>/stats.parquet.",
    )
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--tokenizer",
        default="byte",
        help="'byte' (256 bytes + EOS), 'bpe:<vocab size>' (trained on the train split), "
        "or the path of a Hugging Face tokenizer.json",
    )
    p.add_argument("--workers", type=int, default=1, help="processes used for tokenizing")
    p.add_argument(
        "--domains",
        type=name_list,
        default=None,
        help="comma-separated domains to prepare (each must have files); empty or absent: all",
    )
    p.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> None:
    from regmix.data.prepare import prepare_corpus

    prepare_corpus(args.corpus, args.out, args.tokenizer, args.workers, args.domains)


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
