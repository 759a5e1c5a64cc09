"""`regmix <command>`: the command line the workflow's rules call.

Each command parses its arguments and calls one library function. The commands live in
modules by stage; library modules are imported inside the handlers so that `regmix --help`
and light commands do not pay for importing torch or Lightning.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from regmix import __version__
from regmix.cli import cluster, data, evaluation, final, plan, regression, status, training
from regmix.errors import RegmixError

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    # in pipeline order, as `regmix --help` lists them
    data.add_synth_corpus,
    data.add_prepare,
    data.add_train_tokenizer,
    data.add_survey_corpus,
    data.add_prepare_group,
    data.add_collect_shards,
    data.add_sample_mixtures,
    training.add_train_proxy,
    training.add_collect_proxies,
    regression.add_import_runs,
    regression.add_fit,
    regression.add_predict,
    regression.add_simulate,
    regression.add_propose,
    regression.add_export_mixture,
    final.add_final_mixtures,
    training.add_train_final,
    evaluation.add_continuation_task,
    evaluation.add_evaluate,
    evaluation.add_collect_downstream,
    final.add_summarize,
    final.add_report,
    final.add_report_downstream,
    plan.add_plan,
    status.add_status,
    data.add_presets,
    cluster.add_install_profile,
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
    except BrokenPipeError:  # `regmix plan | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
