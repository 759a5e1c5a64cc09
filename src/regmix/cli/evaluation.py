"""Commands for downstream evaluation: the target domain's continuation task, lm-eval on one
final model, and the table of every model's scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from regmix.cli.args import add_threads_argument, dataclass_from, json_object
from regmix.cli.data import add_reading_arguments, reading_options


def add_continuation_task(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "continuation-task",
        help="an lm-eval task (YAML + JSON lines) from the target domains' held-out documents",
        description="Cut the target domains' test documents (where the corpus has a test split "
        "holding them, read with the data stage's reading flags) or else their validation "
        "documents (decoded from the data stage's token shards in --data) into a context and "
        "its true continuation, set among --choices - 1 continuations of other documents, and "
        "write an lm-eval multiple-choice task: <out-dir>/task.yaml and data.jsonl.",
    )
    add_reading_arguments(p)
    p.add_argument("--data", type=Path, required=True, help="the prepared data (results/data)")
    p.add_argument(
        "--tokenizer", default="byte", help="'byte' or the tokenizer.json the shards were made with"
    )
    p.add_argument("--target", required=True, help="a domain, mean, or a:0.5,b:0.5")
    p.add_argument("--examples", type=int, default=200, help="at most this many (default 200)")
    p.add_argument("--choices", type=int, default=4, help="choices per example (default 4)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=128,
        help="the evaluated models' length (final.seq_len): an example fits in 3/4 of it",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, required=True)
    p.set_defaults(handler=_continuation_task)


def _continuation_task(args: argparse.Namespace) -> None:
    from regmix.evaluation.continuation import write_continuation_task

    write_continuation_task(
        args.corpus,
        reading_options(args),
        args.data,
        args.tokenizer,
        args.target,
        args.out_dir,
        args.examples,
        args.choices,
        args.max_tokens,
        args.seed,
    )


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate",
        help="run lm-eval-harness on an exported model folder (needs regmix[eval])",
        description="Score --model (a Hugging Face folder, e.g. results/final/<name>/hf) with "
        "lm-eval's hf model on the tasks in --settings, offline; write lm-eval's results.json "
        "and per-example samples.jsonl to --out-dir.",
    )
    p.add_argument("--model", type=Path, required=True, help="the exported model folder")
    p.add_argument(
        "--settings",
        type=json_object,
        required=True,
        help='EvalSettings fields (JSON): {"tasks": [...], "num_fewshot", "limit", ...}',
    )
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument(
        "--gpus",
        type=int,
        choices=[0, 1],
        default=0,
        help="0: CPU; 1: a GPU taken from the lease training jobs share (CUDA_VISIBLE_DEVICES)",
    )
    add_threads_argument(p)
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> None:
    from regmix.evaluation.harness import EvalSettings, evaluate_model, granted_device

    settings = dataclass_from(EvalSettings, args.settings, "--settings")
    with granted_device(args.gpus) as device:
        evaluate_model(args.model, settings, args.out_dir, threads=args.threads, device=device)


def add_collect_downstream(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "collect-downstream",
        help="one table of every final model's downstream scores",
        description="Read <model>/eval/results.json for each --eval folder and write one row "
        "per (model, task, metric): value, stderr, samples. The model is the folder's parent.",
    )
    p.add_argument("--eval", type=Path, nargs="+", required=True, help="results/final/*/eval")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_collect_downstream)


def _collect_downstream(args: argparse.Namespace) -> None:
    from regmix.evaluation.downstream import collect_downstream

    collect_downstream(args.eval, args.out)
