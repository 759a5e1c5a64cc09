"""`regmix <command>`: the command line the workflow's rules call.

Each command parses its arguments and calls one library function. Library modules are
imported inside the handlers so that `regmix --help` and light commands do not pay for
importing torch or Lightning.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from regmix import __version__
from regmix.errors import RegmixError

Handler = Callable[[argparse.Namespace], None]


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


# --- data -----------------------------------------------------------------------------------


def _add_synth_corpus(commands: argparse._SubParsersAction) -> None:
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
    from regmix.synth import SynthConfig, write_corpus

    write_corpus(args.out, SynthConfig(seed=args.seed, scale=args.scale))


def _add_prepare(commands: argparse._SubParsersAction) -> None:
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
        type=_name_list,
        default=None,
        help="comma-separated domains to prepare (each must have files); empty or absent: all",
    )
    p.set_defaults(handler=_prepare)


def _name_list(text: str) -> list[str] | None:
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names or None


def _prepare(args: argparse.Namespace) -> None:
    from regmix.prepare import prepare_corpus

    prepare_corpus(args.corpus, args.out, args.tokenizer, args.workers, args.domains)


def _add_sample_mixtures(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument("--sampler", type=_json_object, default={}, help="SamplerConfig fields (JSON)")
    p.add_argument("--out", type=Path, required=True, help="mixture table (.parquet)")
    p.add_argument("--yaml-dir", type=Path, help="folder for one <run>.yaml per mixture")
    p.set_defaults(handler=_sample_mixtures)


def _sample_mixtures(args: argparse.Namespace) -> None:
    from regmix.mixtures import SamplerConfig, write_proxy_mixtures

    config = _dataclass_from(SamplerConfig, args.sampler, "--sampler")
    write_proxy_mixtures(
        args.stats, args.n, args.final_tokens, config, args.seed, args.out, args.yaml_dir
    )


# --- plumbing -------------------------------------------------------------------------------


def _dataclass_from(cls: type, values: dict, source: str):
    """Build a config dataclass, naming the unknown key instead of raising a TypeError."""
    fields = cls.__dataclass_fields__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        expected = ", ".join(sorted(fields))
        raise RegmixError(f"{source}: unknown key {unknown[0]!r} (expected one of: {expected})")
    return cls(**values)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth_corpus,
    _add_prepare,
    _add_sample_mixtures,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regmix",
        description="RegMix: choose a pre-training data mixture by regression on proxy runs.",
    )
    parser.add_argument("--version", action="version", version=f"regmix {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="<command>", required=True)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except RegmixError as exc:
        print(f"regmix: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("regmix: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
