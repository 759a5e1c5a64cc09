"""Commands for regression: importing runs, fitting, predicting, simulating the optimum and
exporting it for a training stack."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regmix.cli.args import add_threads_argument, dataclass_from, json_object, name_list
from regmix.errors import RegmixError
from regmix.files import kept_outputs


def add_import_runs(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "import-runs",
        help="import RegMix's published mixture and loss CSVs as a runs table",
        description="Join a RegMix mixture CSV (index, train_<domain>...) and loss CSV (index, "
        "metric/<domain>_val_loss...) on index into a runs table: run, weight.<domain>..., "
        "loss.<domain>..., status (ok, diverged where a loss is NaN/inf, missing where a "
        "mixture has no losses). RegMix rounds weights to 3 decimals; rows are renormalised.",
    )
    p.add_argument("--mixtures", type=Path, required=True, help="RegMix mixture CSV")
    p.add_argument("--losses", type=Path, required=True, help="RegMix loss CSV")
    p.add_argument("--out", type=Path, required=True, help="runs table (.parquet)")
    p.set_defaults(handler=_import_runs)


def _import_runs(args: argparse.Namespace) -> None:
    from regmix.search.runs import write_imported_runs

    write_imported_runs(args.mixtures, args.losses, args.out)


FIT_MODELS = {
    "gp": "Gaussian process on log-weights (ARD RBF + white noise); the default: best CV "
    "Spearman on RegMix's 512 runs",
    "lightgbm": "LightGBM with RegMix's settings (1000 trees, lr 0.01), no early stopping",
    "linear": "ridge, alpha by inner 5-fold CV from 1e-3..1e3 (RegMix's linear)",
    "mixlaw": "data-mixing law c + k*exp(sum t_j w_j) (Ye et al. 2024)",
    "ensemble": "gp + lightgbm, weighted by non-negative least squares on their CV on the "
    "training runs",
}
"""`regmix.search.regression.MODELS`, listed here so that `regmix --help` need not import it."""


def add_fit(commands: argparse._SubParsersAction) -> None:
    models = "; ".join(f"{name}: {summary}" for name, summary in FIT_MODELS.items())
    p = commands.add_parser(
        "fit",
        help="regress a target loss on mixture weights, with k-fold cross-validation",
        description="Fit a regressor on the runs with status ok and write DIR/model.joblib, "
        "model.json (target, domains, versions), train.parquet (the runs it saw), cv.parquet "
        "(out-of-fold run, fold, actual, prediction) and metrics.json (spearman, pearson, mse, "
        f"n_runs, n_excluded, ...). Models: {models}.",
    )
    p.add_argument("--runs", type=Path, required=True, help="runs table (.parquet)")
    p.add_argument(
        "--target",
        required=True,
        help="a loss domain (pile_cc for loss.pile_cc), 'mean' (all loss columns), or a "
        "weighted list a:0.5,b:0.5",
    )
    p.add_argument("--model", default="gp", choices=list(FIT_MODELS), help="default: gp")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the model")
    p.add_argument(
        "--checks",
        type=Path,
        nargs="*",
        default=[],
        help="interval records of later rounds (`propose --intervals-out`): their runs, "
        "measured in --runs, check the intervals given for them, and the fitted model's 95%% "
        "intervals are rescaled to what the checks show; with fewer than 5 checks, to what "
        "its cross-validation shows (metrics.json: calibration)",
    )
    add_threads_argument(p)
    p.add_argument("--plot", type=Path, help="also write predicted-vs-actual (out-of-fold) PNG")
    p.set_defaults(handler=_fit)


def _fit(args: argparse.Namespace) -> None:
    from regmix.search.regression import CV_FILE, fit_model
    from regmix.search.runs import status_counts

    metrics = fit_model(
        args.runs,
        args.target,
        args.model,
        args.out,
        args.folds,
        args.seed,
        args.threads,
        args.checks,
    )
    if metrics["n_excluded"]:
        print(
            f"regmix fit: excluded {metrics['n_excluded']} run(s) whose status is not ok "
            f"({status_counts(metrics['excluded'])})",
            file=sys.stderr,
        )
    figures = ", ".join(
        f"{key} {metrics[key]:.4f}" if metrics[key] is not None else f"{key} n/a"
        for key in ("spearman", "spearman_top_quarter", "regret", "pearson", "mse")
    )
    print(
        f"regmix fit: {metrics['model']} on {metrics['n_runs']} runs, target {metrics['target']}: "
        f"{metrics['folds']}-fold CV {figures}",
        file=sys.stderr,
    )
    calibration = metrics.get("calibration")
    if calibration is not None:
        print(f"regmix fit: {calibration_line(calibration)}", file=sys.stderr)
    if args.plot is not None:
        from regmix.files import read_table
        from regmix.report.figures import plot_cv

        plot_cv(read_table(args.out / CV_FILE), metrics, args.plot)


def calibration_line(report: dict) -> str:
    """What the interval checks showed, and what the intervals were rescaled on, in one line."""
    basis = report.get("basis", "checks")
    scale = report["interval_scale"]
    if report["applied"]:
        done = f"95% intervals rescaled x{scale:.2f} on the {basis}"
    else:
        done = "intervals left as fitted" + (" (too few checks)" if scale is None else "")
    if not report["checks"]:
        return f"no interval checks yet (no later round has trained); {done}"
    coverage = report["coverage_fitted"]
    return (
        f"{report['checks']} later-round runs checked the intervals given for them: "
        f"{coverage:.0%} inside as fitted, {report['coverage']:.0%} as recorded; {done}"
    )


def add_predict(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "predict",
        help="predict the target loss of mixtures with a fitted model",
        description="Write run, prediction for every mixture of a mixture/runs table (.parquet) "
        "or a RegMix mixture CSV (index, train_<domain>...). Its domains must be the model's.",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder from `fit`")
    p.add_argument("--mixtures", type=Path, required=True, help="mixtures to score")
    p.add_argument("--out", type=Path, required=True, help="predictions (.parquet)")
    add_threads_argument(p)
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> None:
    from regmix.search.predict import predict_mixtures

    predict_mixtures(args.model, args.mixtures, args.out, args.threads)


def add_simulate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "simulate",
        help="score candidate mixtures with a fitted model and average the best: the optimum",
        description="Draw candidates with the proxy sampler around the token prior, keep those "
        "within the per-domain caps (max epochs at the final budget) and inside the proxy runs' "
        "support, predict, and average the top-k. Writes RegMix's YAML (train: {domain: "
        "weight}, valid) plus predicted_loss, target, model, the support (extrapolation) report "
        "and the bootstrap stability of the optimum.",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder from `fit`")
    p.add_argument("--stats", type=Path, required=True, help="stats.parquet from `prepare`")
    p.add_argument("--final-tokens", type=float, required=True, help="final-model token budget")
    p.add_argument(
        "--max-epochs", type=float, help="cap on repetitions per domain (default: the sampler's)"
    )
    p.add_argument("--candidates", type=int, default=1_000_000, help="default 1000000")
    p.add_argument("--top-k", type=int, default=100, help="candidates averaged (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--bootstrap", type=int, default=5, help="refits for the stability figure (0: skip)"
    )
    p.add_argument(
        "--no-guard",
        action="store_true",
        help="let candidates outside the proxy runs' support compete (still reported)",
    )
    p.add_argument(
        "--caution",
        type=float,
        default=1.0,
        help="rank candidates by prediction + this many posterior standard deviations, so that "
        "an extrapolated promise loses to a supported one (0: by the prediction, as RegMix)",
    )
    p.add_argument(
        "--local-share",
        type=float,
        default=0.5,
        help="share of candidates drawn around the best runs (0: RegMix's sampler only)",
    )
    p.add_argument(
        "--support-quantile",
        type=float,
        default=1.0,
        help="support radius = this quantile of the runs' nearest-run distances (default 1)",
    )
    p.add_argument("--sampler", type=json_object, default={}, help="SamplerConfig fields (JSON)")
    add_threads_argument(p)
    p.add_argument("--out", type=Path, required=True, help="mixture.yaml to write")
    p.add_argument("--top-out", type=Path, help="top-k candidates table (.parquet)")
    p.add_argument("--plot", type=Path, help="also write the optimum-vs-prior PNG")
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the optimum in this folder by what it is searched from (the runs, settings "
        "and domains; not the token counts), and re-publish it while that is unchanged",
    )
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from regmix.search.mixtures import SamplerConfig
    from regmix.search.simulate import (
        SimulationConfig,
        simulate,
        summary_line,
        write_simulation,
    )
    from regmix.search.support import warn_if_outside

    sampler = dataclass_from(SamplerConfig, args.sampler, "--sampler")
    if args.max_epochs is not None:
        sampler = replace(sampler, max_epochs=args.max_epochs)
    config = SimulationConfig(
        candidates=args.candidates,
        top_k=args.top_k,
        seed=args.seed,
        guard=not args.no_guard,
        support_quantile=args.support_quantile,
        local_share=args.local_share,
        caution=args.caution,
        bootstrap=args.bootstrap,
    )
    results = []

    def search() -> None:
        results.append(
            simulate(args.model, args.stats, args.final_tokens, config, sampler, args.threads)
        )
        write_simulation(results[0], args.out, args.top_out)
        print(summary_line(results[0].report), file=sys.stderr)
        warn_if_outside(results[0].report)

    if args.keep is None:
        search()
    else:
        from regmix.search.simulate import evidence_key

        key = evidence_key(args.model, args.stats, args.final_tokens, config, sampler)
        outputs = [args.out, *([args.top_out] if args.top_out else [])]
        if kept_outputs(outputs, args.keep, key, search):
            print(
                "regmix simulate: the evidence is unchanged; optimum re-published", file=sys.stderr
            )
    if args.plot is not None and results:
        result = results[0]
        import pandas as pd

        from regmix.report.figures import plot_optimum

        title = f"{result.report['model']} optimum for {result.report['target']}"
        optimum = pd.Series(result.optimum, index=result.domains)
        plot_optimum(optimum, result.prior, args.plot, result.spread, title)


def add_propose(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "propose",
        help="propose the next round's mixtures from the runs so far (active rounds)",
        description="Fit a Gaussian process to the runs so far and choose the N mixtures that "
        "tell most about the optimum (batch Thompson sampling by default). Writes a mixture "
        "table (run, round, weight.<domain>...). With --pool, picks N rows of the pool (a "
        "mixture/runs table or a RegMix mixture CSV) that are not in --runs, keeping their run "
        "names: this replays the method on published runs. Without it, candidates come from "
        "RegMix's sampler and from around the best runs, within the repetition caps, and new "
        "runs continue the run numbering.",
    )
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="runs tables so far")
    p.add_argument("--target", required=True, help="as for `fit`")
    p.add_argument("--n", type=int, required=True, help="mixtures to propose")
    p.add_argument("--out", type=Path, required=True, help="mixture table to write (.parquet)")
    p.add_argument("--pool", type=Path, help="choose from these mixtures instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--round", type=int, help="write this round number in a `round` column")
    p.add_argument(
        "--with-optimum",
        action="store_true",
        help="make the first mixture the one the runs so far recommend (the workflow's last "
        "round), or from --pool the row with the lowest predicted loss",
    )
    p.add_argument(
        "--explore",
        type=name_list,
        help="domains new to the runs (comma-separated): propose a round that mixes them with "
        "the other domains frozen in the proportions the runs recommend (Olmix's virtual "
        "domain), spread from a little to a lot of the new data; needs --stats",
    )
    p.add_argument(
        "--intervals-out",
        type=Path,
        help="also write the 95%% interval the proposing regressor gives each proposed run, "
        "for later checks (run, round, prediction, lower, upper, mean, std, ...)",
    )
    p.add_argument(
        "--checks",
        type=Path,
        nargs="*",
        default=[],
        help="interval records of earlier rounds: checked against --runs, they calibrate the "
        "intervals written to --intervals-out (with fewer than 5 checks, the proposing "
        "regressor's cross-validation does)",
    )
    p.add_argument("--stats", type=Path, help="stats.parquet (needed without --pool)")
    p.add_argument("--final-tokens", type=float, help="final budget (needed without --pool)")
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the proposal in this folder under --design, and re-publish it instead of "
        "drawing again while the design key is the same (the workflow's rounds are designs)",
    )
    p.add_argument(
        "--design", default="design", help="the key of what the proposal is drawn from (--keep)"
    )
    p.add_argument("--sampler", type=json_object, default={}, help="SamplerConfig fields (JSON)")
    p.add_argument(
        "--acquisition",
        type=json_object,
        default={},
        help='AcquisitionConfig fields (JSON), e.g. {"method": "ucb"}; methods: thompson '
        "(default), ucb, greedy, random",
    )
    add_threads_argument(p)
    p.set_defaults(handler=_propose)


def _propose(args: argparse.Namespace) -> None:
    from threadpoolctl import threadpool_limits

    from regmix.parallel import available_threads
    from regmix.search.mixtures import SamplerConfig
    from regmix.search.propose import AcquisitionConfig, write_proposal

    config = dataclass_from(AcquisitionConfig, args.acquisition, "--acquisition")
    sampler = dataclass_from(SamplerConfig, args.sampler, "--sampler")
    if args.explore and (args.stats is None or args.final_tokens is None):
        raise RegmixError("propose --explore: needs --stats and --final-tokens")

    def draw():
        with threadpool_limits(args.threads or available_threads()):
            if args.explore:
                return _explore(args, sampler)
            return write_proposal(
                args.runs,
                args.target,
                args.n,
                args.out,
                config,
                args.seed,
                args.round,
                args.pool,
                args.stats,
                args.final_tokens,
                sampler,
                args.with_optimum,
                args.intervals_out,
                args.checks,
            )

    how = f"exploring {', '.join(args.explore)}" if args.explore else config.method
    # A round is a design: kept under the key of what it is drawn from, a proposal whose runs
    # before it were measured again (their losses moved with the data) is re-published as drawn.
    if args.keep is None:
        draw()
        kept = False
    else:
        outputs = [args.out] + ([args.intervals_out] if args.intervals_out else [])
        kept = kept_outputs(outputs, args.keep, args.design, draw)
    source = "kept as drawn before: its design is unchanged" if kept else how
    print(f"regmix propose: {args.n} mixtures ({source}) -> {args.out}", file=sys.stderr)


def _explore(args: argparse.Namespace, sampler):
    import pandas as pd

    from regmix.files import write_table
    from regmix.search.calibration import RECORD_COLUMNS
    from regmix.search.explore import explore_new_domains
    from regmix.workflow.collect import read_batches

    table = explore_new_domains(
        read_batches(args.runs),
        args.target,
        args.explore,
        args.n,
        args.stats,
        args.final_tokens,
        sampler,
        args.seed,
        args.round,
        ", ".join(map(str, args.runs)),
    )
    write_table(table, args.out)
    if args.intervals_out is not None:
        # An exploring round's mixtures hold domains no regressor was fitted on: it promises
        # no interval, so later rounds have nothing of it to check.
        write_table(pd.DataFrame(columns=RECORD_COLUMNS), args.intervals_out)
    return table


def add_export_mixture(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export-mixture",
        help="write the recommended mixture for a training stack (RegMix, Megatron, OLMo-core, HF)",
        description="Write a mixture (default: the optimum, results/optimal/mixture.yaml) in the "
        "shape a training stack reads. regmix: RegMix's YAML (train: {domain: weight}). "
        "megatron: Megatron-LM's --data-path list 'w1 prefix1 w2 prefix2 ...' (also a "
        "--data-args-path file). olmo-core: an OLMo-core SourceMixtureList YAML (sources with "
        "source_name, target_ratio, paths, max_repetition_ratio). hf: probabilities for "
        "datasets.interleave_datasets, with the domain order, as JSON. megatron and olmo-core "
        "need each domain's data prefix or path (--prefix, --prefix-map, --prefix-template); "
        "domains at weight 0 are left out of all but regmix. Weights are written so that they "
        "sum to exactly 1 as floats.",
    )
    p.add_argument("--format", required=True, help="regmix, megatron, olmo-core or hf")
    p.add_argument(
        "--mixture",
        type=Path,
        default=Path("results/optimal/mixture.yaml"),
        help="a RegMix-style mixture YAML or a mixture table (.parquet/.csv; default: "
        "results/optimal/mixture.yaml)",
    )
    p.add_argument("--run", help="the row of a mixture table with several mixtures")
    p.add_argument(
        "--prefix",
        action="append",
        default=[],
        metavar="DOMAIN=PATH",
        help="a domain's data prefix (Megatron) or path/glob (OLMo-core); repeat per domain",
    )
    p.add_argument("--prefix-map", type=Path, help="YAML mapping of domain: prefix")
    p.add_argument(
        "--prefix-template",
        help="a prefix for every domain, with {domain} in it, e.g. /data/{domain}_text_document",
    )
    p.add_argument(
        "--max-repetition",
        type=float,
        help="OLMo-core's max_repetition_ratio (default: the cap the mixture was chosen under, "
        "mixture.yaml's caps.max_epochs, i.e. the config's mixtures.max_epochs)",
    )
    p.add_argument(
        "--stats",
        type=Path,
        help="stats.parquet: hf probabilities per whole document instead of per token",
    )
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.set_defaults(handler=_export_mixture)


def _export_mixture(args: argparse.Namespace) -> None:
    from regmix.files import write_text
    from regmix.search.mixture_formats import (
        ExportOptions,
        PrefixOptions,
        export_mixture,
        read_mixture,
    )

    prefixes = PrefixOptions(args.prefix_template, args.prefix_map, tuple(args.prefix))
    options = ExportOptions(args.format, prefixes, args.max_repetition, args.stats)
    exported = export_mixture(read_mixture(args.mixture, args.run), options)
    if args.out is None:
        sys.stdout.write(exported.text)
    else:
        write_text(exported.text, args.out)
    where = f" -> {args.out}" if args.out is not None else ""
    print(f"regmix export-mixture: {exported.note}{where}", file=sys.stderr)
