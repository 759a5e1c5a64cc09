"""`regmix <command>`: the command line the workflow's rules call.

Each command parses its arguments and calls one library function. Library modules are
imported inside the handlers so that `regmix --help` and light commands do not pay for
importing torch or Lightning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
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


# --- proxies --------------------------------------------------------------------------------


def _add_train_proxy(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train-proxy",
        help="train one small LM per listed mixture, back to back in one process",
        description="Train each run of --runs on its mixture from --mixtures and write "
        "<out>/<run>/losses.parquet (run, step, tokens, domain, loss) and <out>/<run>/run.json. "
        "Checkpoints and the kept results live in <work>/<run>/, outside the outputs, so a "
        "killed run resumes and a finished one is re-published instead of retrained.",
    )
    p.add_argument("--data", type=Path, required=True, help="token shards from `prepare`")
    p.add_argument("--mixtures", type=Path, required=True, help="mixture table (.parquet)")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="runs to train")
    p.add_argument("--settings", type=_json_object, default={}, help="TrainConfig fields (JSON)")
    p.add_argument("--out", type=Path, required=True, help="folder of per-run outputs")
    p.add_argument("--work", type=Path, required=True, help="folder of per-run checkpoints")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for this process (default 1: one single-threaded worker per core "
        "beats multi-threaded workers sharing cores)",
    )
    _add_gpus_argument(p)
    p.set_defaults(handler=_train_proxy)


def _add_gpus_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpus",
        type=int,
        help="GPUs this job was granted (the workflow passes its rule's gpu resource): 0 trains "
        "on CPU even where GPUs exist; k > 0 takes k free GPU ids (locally from a lease shared "
        "by your jobs, under SLURM the job's own). Absent: whatever Lightning finds",
    )


def _train_proxy(args: argparse.Namespace) -> None:
    _use_threads(args.threads)
    from regmix.train import TrainConfig, train_proxies

    config = _dataclass_from(TrainConfig, args.settings, "--settings")
    with _granted_devices(args.gpus, config) as config:
        train_proxies(args.data, args.mixtures, args.runs, config, args.out, args.work)


@contextmanager
def _granted_devices(gpus: int | None, config):
    """Train on exactly the GPUs the job was granted (none: CPU), holding their lease."""
    from dataclasses import replace

    from regmix.devices import VISIBLE, gpu_lease

    if gpus is None:
        yield config
    elif gpus == 0:
        os.environ[VISIBLE] = ""  # a CPU job on a GPU machine must not wander onto GPU 0
        yield replace(config, accelerator="cpu")
    else:
        with gpu_lease(gpus):
            import torch

            if torch.cuda.is_available():
                yield replace(config, accelerator="gpu", devices=gpus)
            else:  # e.g. a cluster's GPU count without CUDA here: still one process per device
                print(
                    f"regmix: granted {gpus} GPU(s) but CUDA is not available; training on CPU",
                    file=sys.stderr,
                )
                yield replace(config, accelerator="cpu", devices=gpus)


def _use_threads(threads: int) -> None:
    """Fix the thread count before torch starts its thread pools (its import reads the env)."""
    if threads < 1:
        raise RegmixError(f"--threads: must be >= 1, got {threads}")
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _add_collect_proxies(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "collect-proxies",
        help="fan the proxy runs in to the runs table",
        description="One row per run of --mixtures: run, weight.<domain>..., loss.<domain>... "
        "(at the last evaluation), status, tokens, params and timings, from <proxy-dir>/<run>/.",
    )
    p.add_argument("--mixtures", type=Path, required=True, help="mixture table (.parquet)")
    p.add_argument("--proxy-dir", type=Path, required=True, help="train-proxy's --out folder")
    p.add_argument("--out", type=Path, required=True, help="runs table (.parquet)")
    p.set_defaults(handler=_collect_proxies)


def _collect_proxies(args: argparse.Namespace) -> None:
    from regmix.collect import collect_proxies

    collect_proxies(args.mixtures, args.proxy_dir, args.out)


def _add_presets(commands: argparse._SubParsersAction) -> None:
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

    from regmix.loader import vocab_size
    from regmix.model_config import PRESETS, ModelConfig

    vocab = vocab_size(args.data) if args.data is not None else args.vocab
    rows = []
    for name in PRESETS:
        c = ModelConfig.from_preset(name, vocab)
        shape = (c.n_layer, c.n_head, c.n_embd, c.intermediate_size)
        rows.append((name, *shape, f"{c.non_embedding_params:,}", f"{c.total_params:,}"))
    columns = ["preset", "layers", "heads", "width", "mlp", "non-embedding", f"total@{vocab}"]
    print(pd.DataFrame(rows, columns=columns).to_string(index=False))


def _add_final_mixtures(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "final-mixtures",
        help="the final model's mixtures: RegMix's optimum, baselines and held-out mixtures",
        description="Write a mixture table with rows regmix (the optimum), prior (token shares), "
        "uniform, planted (synthetic corpus only) and heldout<k> (fresh proxy-sampler draws, "
        "used to check that the proxies' ranking transfers to the final scale).",
    )
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--optimum", type=Path, required=True, help="mixture.yaml from `simulate`")
    p.add_argument("--planted", type=Path, help="planted.yaml of a synthetic corpus")
    p.add_argument("--heldout", type=int, default=0, help="number of held-out mixtures")
    p.add_argument("--final-tokens", type=float, required=True)
    p.add_argument("--seed", type=int, default=1042, help="sampler seed for held-out mixtures")
    p.add_argument("--sampler", type=_json_object, default={}, help="SamplerConfig fields (JSON)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_final_mixtures)


def _final_mixtures(args: argparse.Namespace) -> None:
    from regmix.mixtures import SamplerConfig, write_final_mixtures

    config = _dataclass_from(SamplerConfig, args.sampler, "--sampler")
    write_final_mixtures(
        args.stats,
        args.optimum,
        args.planted,
        args.heldout,
        args.final_tokens,
        config,
        args.seed,
        args.out,
    )


# --- regression and simulation --------------------------------------------------------------


def _add_import_runs(commands: argparse._SubParsersAction) -> None:
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
    from regmix.runs import write_imported_runs

    write_imported_runs(args.mixtures, args.losses, args.out)


def _threads(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


FIT_MODELS = {
    "gp": "Gaussian process on log-weights (ARD RBF + white noise); the default: best CV "
    "Spearman on RegMix's 512 runs",
    "lightgbm": "LightGBM with RegMix's settings (1000 trees, lr 0.01), no early stopping",
    "linear": "ridge, alpha by inner 5-fold CV from 1e-3..1e3 (RegMix's linear)",
    "mixlaw": "data-mixing law c + k*exp(sum t_j w_j) (Ye et al. 2024)",
}
"""`regmix.regression.MODELS`, listed here so that `regmix --help` need not import it."""


def _add_fit(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument("--threads", type=_threads, help="threads (default: all available cores)")
    p.add_argument("--plot", type=Path, help="also write predicted-vs-actual (out-of-fold) PNG")
    p.set_defaults(handler=_fit)


def _fit(args: argparse.Namespace) -> None:
    from regmix.regression import CV_FILE, fit_model
    from regmix.runs import status_counts

    metrics = fit_model(
        args.runs, args.target, args.model, args.out, args.folds, args.seed, args.threads
    )
    if metrics["n_excluded"]:
        print(
            f"regmix fit: excluded {metrics['n_excluded']} run(s) whose status is not ok "
            f"({status_counts(metrics['excluded'])})",
            file=sys.stderr,
        )
    figures = ", ".join(
        f"{key} {metrics[key]:.4f}" if metrics[key] is not None else f"{key} n/a"
        for key in ("spearman", "pearson", "mse")
    )
    print(
        f"regmix fit: {metrics['model']} on {metrics['n_runs']} runs, target {metrics['target']}: "
        f"{metrics['folds']}-fold CV {figures}",
        file=sys.stderr,
    )
    if args.plot is not None:
        from regmix.files import read_table
        from regmix.report import plot_cv

        plot_cv(read_table(args.out / CV_FILE), metrics, args.plot)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "predict",
        help="predict the target loss of mixtures with a fitted model",
        description="Write run, prediction for every mixture of a mixture/runs table (.parquet) "
        "or a RegMix mixture CSV (index, train_<domain>...). Its domains must be the model's.",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder from `fit`")
    p.add_argument("--mixtures", type=Path, required=True, help="mixtures to score")
    p.add_argument("--out", type=Path, required=True, help="predictions (.parquet)")
    p.add_argument("--threads", type=_threads, help="threads (default: all available cores)")
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> None:
    from regmix.regression import predict_mixtures

    predict_mixtures(args.model, args.mixtures, args.out, args.threads)


def _add_simulate(commands: argparse._SubParsersAction) -> None:
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
        "--support-quantile",
        type=float,
        default=1.0,
        help="support radius = this quantile of the runs' nearest-run distances (default 1)",
    )
    p.add_argument("--sampler", type=_json_object, default={}, help="SamplerConfig fields (JSON)")
    p.add_argument("--threads", type=_threads, help="threads (default: all available cores)")
    p.add_argument("--out", type=Path, required=True, help="mixture.yaml to write")
    p.add_argument("--top-out", type=Path, help="top-k candidates table (.parquet)")
    p.add_argument("--plot", type=Path, help="also write the optimum-vs-prior PNG")
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from regmix.mixtures import SamplerConfig
    from regmix.simulate import (
        SimulationConfig,
        simulate,
        summary_line,
        warn_if_outside,
        write_simulation,
    )

    sampler = _dataclass_from(SamplerConfig, args.sampler, "--sampler")
    if args.max_epochs is not None:
        sampler = replace(sampler, max_epochs=args.max_epochs)
    config = SimulationConfig(
        candidates=args.candidates,
        top_k=args.top_k,
        seed=args.seed,
        guard=not args.no_guard,
        support_quantile=args.support_quantile,
        bootstrap=args.bootstrap,
    )
    result = simulate(args.model, args.stats, args.final_tokens, config, sampler, args.threads)
    write_simulation(result, args.out, args.top_out)
    print(summary_line(result.report), file=sys.stderr)
    warn_if_outside(result.report)
    if args.plot is not None:
        import pandas as pd

        from regmix.report import plot_optimum

        title = f"{result.report['model']} optimum for {result.report['target']}"
        optimum = pd.Series(result.optimum, index=result.domains)
        plot_optimum(optimum, result.prior, args.plot, result.spread, title)


# --- cluster --------------------------------------------------------------------------------


def _add_install_profile(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "install-profile",
        help="install a Snakemake profile (slurm, local) where `snakemake --profile NAME` finds it",
        description="Copy one of regmix's Snakemake profiles to ~/.config/snakemake/NAME (or "
        "--dest), so that `snakemake --profile NAME` works from any folder; Snakemake does not "
        "look in the repository's profiles/. Edit the installed copy for your cluster "
        "(partition, account). An identical copy is left as it is; a different one is replaced "
        "only with --force.",
    )
    p.add_argument("name", help="profile to install: slurm or local")
    p.add_argument(
        "--dest", type=Path, help="folder to install to (default: ~/.config/snakemake/NAME)"
    )
    p.add_argument("--force", action="store_true", help="replace a different profile at --dest")
    p.set_defaults(handler=_install_profile)


def _install_profile(args: argparse.Namespace) -> None:
    from regmix.profiles import default_destination, install_profile

    dest = install_profile(args.name, args.dest, args.force)
    use = args.name if dest == default_destination(args.name) else dest
    print(f"profile {args.name!r} is at {dest}; run: snakemake --profile {use}")


# --- final models, summary and report -------------------------------------------------------


def _add_train_final(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train-final",
        help="train the final (large) model on one mixture and export it for Hugging Face",
        description="Train --run on its mixture from --mixtures with the final model's "
        "settings and write <out>/<run>/losses.parquet, run.json and hf/ (a LlamaForCausalLM "
        "folder: config.json, model.safetensors, tokenizer.json). Resumes from its checkpoint "
        "in <work>/<run>/ after an interruption.",
    )
    p.add_argument("--data", type=Path, required=True, help="token shards from `prepare`")
    p.add_argument("--mixtures", type=Path, required=True, help="mixture table (.parquet)")
    p.add_argument("--run", required=True, help="the row of --mixtures to train")
    p.add_argument("--settings", type=_json_object, default={}, help="TrainConfig fields (JSON)")
    p.add_argument("--out", type=Path, required=True, help="folder of per-run outputs")
    p.add_argument("--work", type=Path, required=True, help="folder of per-run checkpoints")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for this process")
    _add_gpus_argument(p)
    p.set_defaults(handler=_train_final)


def _train_final(args: argparse.Namespace) -> None:
    from regmix.devices import relaunch_under_srun

    # Under SLURM a multi-GPU job starts one task per GPU with srun, as Lightning expects;
    # this returns only in the process that should train.
    relaunch_under_srun(args.gpus or 0, args.threads)
    _use_threads(args.threads)
    from regmix.train import TrainConfig, train_final

    config = _dataclass_from(TrainConfig, args.settings, "--settings")
    with _granted_devices(args.gpus, config) as config:
        train_final(args.data, args.mixtures, args.run, config, args.out, args.work)


def _add_summarize(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument("--out", type=Path, required=True, help="summary table (.parquet)")
    p.add_argument("--markdown", type=Path, required=True, help="summary page (.md)")
    p.set_defaults(handler=_summarize)


def _summarize(args: argparse.Namespace) -> None:
    from regmix.summary import summarize_final

    verdict = summarize_final(
        args.runs,
        args.predictions,
        args.target,
        args.out,
        args.markdown,
        args.planted,
        args.metrics,
    )
    wins = ", ".join(
        f"{'beats' if won else 'LOSES TO'} {name}" for name, won in verdict.beats.items()
    )
    print(f"regmix summarize: RegMix {wins}; summary: {args.markdown}", file=sys.stderr)


def _add_report(commands: argparse._SubParsersAction) -> None:
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
    from regmix.report import write_report_figures

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
    # in pipeline order, as `regmix --help` lists them
    _add_synth_corpus,
    _add_prepare,
    _add_sample_mixtures,
    _add_train_proxy,
    _add_collect_proxies,
    _add_import_runs,
    _add_fit,
    _add_predict,
    _add_simulate,
    _add_final_mixtures,
    _add_train_final,
    _add_summarize,
    _add_report,
    _add_presets,
    _add_install_profile,
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
