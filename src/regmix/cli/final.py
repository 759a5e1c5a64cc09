"""Commands for the final stage: its mixtures, the summary and the report's figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regmix.cli.args import dataclass_from, json_object


def add_final_mixtures(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "final-mixtures",
        help="one final model's mixture: RegMix's optimum, a baseline or a held-out mixture",
        description="Write a one-row mixture table for --name: regmix (the optimum, from "
        "--optimum), prior (token shares), uniform, planted (--planted, synthetic corpus only) or "
        "heldout<k> (the k-th fresh proxy-sampler draw of --heldout-seed, used to check that the "
        "proxies' ranking transfers to the final scale). Fails if the caps cannot be met at the "
        "final budget.",
    )
    p.add_argument("--name", required=True, help="regmix, prior, uniform, planted, heldout<k>")
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--final-tokens", type=float, required=True)
    p.add_argument("--max-epochs", type=float, default=15.0, help="repetition cap (default 15)")
    p.add_argument("--optimum", type=Path, help="mixture.yaml from `simulate` (for regmix)")
    p.add_argument("--planted", type=Path, help="planted.yaml of a synthetic corpus")
    p.add_argument("--heldout-seed", type=int, help="sampler seed of the held-out mixtures")
    p.add_argument("--sampler", type=json_object, default={}, help="SamplerConfig fields (JSON)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_final_mixtures)


def _final_mixtures(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from regmix.search.mixtures import SamplerConfig, write_final_mixture

    sampler = dataclass_from(SamplerConfig, args.sampler, "--sampler")
    write_final_mixture(
        args.name,
        args.out,
        stats_path=args.stats,
        final_tokens=args.final_tokens,
        max_epochs=args.max_epochs,
        optimum_path=args.optimum,
        planted_path=args.planted,
        heldout_seed=args.heldout_seed,
        sampler=replace(sampler, max_epochs=args.max_epochs),
    )


def add_summarize(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "summarize",
        help="compare the final models and check that the proxy ranking transferred",
        description="From the final runs table and the regressor's predictions for the final "
        "mixtures, write summary.parquet (one row per final model: target loss, prediction, "
        "every domain's loss, L1 distance to the planted blend) and summary.md.",
    )
    p.add_argument("--runs", type=Path, required=True, help="final runs table (.parquet)")
    p.add_argument("--predictions", type=Path, required=True, help="`predict` output")
    p.add_argument("--target", required=True)
    p.add_argument("--planted", type=Path, help="planted.yaml of a synthetic corpus")
    p.add_argument("--metrics", type=Path, help="the regressor's metrics.json (CV figures)")
    p.add_argument("--optimum", type=Path, help="mixture.yaml from `simulate` (its prediction)")
    p.add_argument(
        "--optimum-proxy", type=Path, help="folder of the optimum trained as a proxy (losses)"
    )
    p.add_argument("--downstream", type=Path, help="downstream.parquet (lm-eval scores)")
    p.add_argument(
        "--samples", type=Path, nargs="*", default=[], help="<model>/eval/samples.jsonl files"
    )
    p.add_argument(
        "--proxy-runs",
        type=Path,
        help="the proxy runs table: lists the runs from an earlier corpus",
    )
    p.add_argument("--out", type=Path, required=True, help="summary table (.parquet)")
    p.add_argument("--markdown", type=Path, required=True, help="summary page (.md)")
    p.set_defaults(handler=_summarize)


def _summarize(args: argparse.Namespace) -> None:
    from regmix.report.summary import summarize_final

    verdict = summarize_final(
        args.runs,
        args.predictions,
        args.target,
        args.out,
        args.markdown,
        args.planted,
        args.metrics,
        args.optimum,
        args.optimum_proxy,
        args.downstream,
        args.samples,
        args.proxy_runs,
    )
    wins = ", ".join(
        f"{'beats' if won else 'LOSES TO'} {name}" for name, won in verdict.beats.items()
    )
    print(f"regmix summarize: RegMix {wins}; summary: {args.markdown}", file=sys.stderr)


def add_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="draw the report's figures",
        description="Proxy weight distributions, out-of-fold predicted vs actual loss, the "
        "optimum vs the prior (and planted blend), final models' target losses, and their "
        "validation-loss curves, as PNGs in --out-dir.",
    )
    p.add_argument("--proxy-mixtures", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--fit", type=Path, required=True, help="the chosen regressor's folder")
    p.add_argument("--optimum", type=Path, required=True, help="mixture.yaml from `simulate`")
    p.add_argument("--summary", type=Path, required=True, help="summary.parquet")
    p.add_argument("--final-losses", type=Path, nargs="+", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--planted", type=Path)
    p.add_argument("--out-dir", type=Path, required=True)
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> None:
    from regmix.report.figures import write_report_figures

    write_report_figures(
        args.proxy_mixtures,
        args.stats,
        args.fit,
        args.optimum,
        args.summary,
        args.final_losses,
        args.target,
        args.out_dir,
        args.planted,
    )


def add_report_downstream(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report-downstream",
        help="draw the downstream figure: scores per final model, and against target loss",
        description="From downstream.parquet, each model's samples.jsonl and summary.parquet, "
        "draw each final model's downstream average ± stderr and its target loss against it.",
    )
    p.add_argument("--downstream", type=Path, required=True)
    p.add_argument("--samples", type=Path, nargs="+", required=True)
    p.add_argument("--summary", type=Path, required=True, help="summary.parquet")
    p.add_argument("--out", type=Path, required=True, help="the figure (.png)")
    p.set_defaults(handler=_report_downstream)


def _report_downstream(args: argparse.Namespace) -> None:
    from regmix.files import read_table
    from regmix.report.downstream import plot_downstream, read_downstream

    summary = read_table(args.summary)
    plot_downstream(read_downstream(args.downstream, args.samples, summary), summary, args.out)
