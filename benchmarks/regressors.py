"""Every regressor scored the way the method uses it: ranking mixtures at a larger scale and on
mixtures unlike the ones it was fitted on.

Figures per model (`regmix.search.regression.ranking_metrics`): Spearman over all mixtures,
Spearman within the best quarter (by actual loss, where the choice is made), and the regret of
the predicted best (its actual loss minus the best actual loss). Scenarios:

1. `published`: RegMix's 512 training runs (1M parameters). 5-fold CV on them (per seed), and
   each fold's model, fitted on 4/5 of the runs, also ranks the fixture's test mixtures, whose
   losses were measured at 1M and at 60M parameters (`test_pile_loss_{1m,60m}.csv`). Spread:
   over folds and seeds.
2. `unlike`: the runs the workflow's rounds would choose from the 512 (32 random, then 16 and
   16 by `regmix propose --pool` with the default acquisition; the last round starts at the
   recommended mixture), one replay per seed: most of them crowd near the optimum, so the test
   mixtures are unlike them. Each model is fitted on them and ranks the test mixtures at 1M
   and 60M. Spread: over replays.
3. `demo` (with `--demo RESULTS`): a finished demo's proxies fit each model; it ranks the final
   models (held-out random mixtures and all), and, with `--heldout-proxies FILE`, more fresh
   held-out draws trained at proxy scale (`--train-heldout N` trains them once, ~15 s each on
   one core; the proxies rank the final models perfectly, so this is the transfer test with
   more than six mixtures).

The last table is the choice: the mean of Spearman and best-quarter Spearman over the CV on
the 512 runs and the transfer cells (60M from the 512 runs and from the replays), both targets.
The demo is reported, never chosen on: it is what the choice is judged by.

A model is a registered name (`gp`, `lightgbm`, ...) or a variant with changed fields,
`gp(mean=worst,features=[log:0.001])` (values as YAML).

    cpu-shared python benchmarks/regressors.py                      # every registered model
    cpu-shared python benchmarks/regressors.py --models gp,'gp(mean=worst)' --demo results \\
        --heldout-proxies /tmp/heldout.parquet --train-heldout 40 --json /tmp/figures.json
    python benchmarks/regressors.py --load /tmp/figures.json   # the tables again, no fitting
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from replay import PILE, published_runs
from transfer import final_runs

from regmix.search.cross_validation import fold_ids
from regmix.search.mixtures import WEIGHT
from regmix.search.propose import AcquisitionConfig, propose
from regmix.search.regression import ranking_metrics, training_data_from
from regmix.search.regressors import MODELS, Regressor, make_model
from regmix.search.runs import STATUS_OK, import_regmix_runs, loss_domains, parse_target

TARGETS = ("the_pile_pile_cc", "mean")
SCALES = ("1m", "60m")
FIGURES = ("spearman", "spearman_top_quarter", "regret")
UNLIKE_ROUNDS = (32, 16, 16)


def model_from_spec(spec: str) -> Regressor:
    """`name` or `name(field=value,...)`: a registered model, optionally with changed fields."""
    match = re.fullmatch(r"(\w+)(?:\((.*)\))?", spec.strip())
    if not match:
        raise SystemExit(f"--models: cannot read {spec!r}")
    model = make_model(match[1])
    if match[2]:
        known = {f.name: f for f in fields(model) if f.init}
        changes = {}
        for part in re.split(r",(?![^\[]*\])", match[2]):
            key, _, value = part.partition("=")
            if key.strip() not in known:
                raise SystemExit(f"--models: {match[1]} has no field {key.strip()!r}")
            parsed = yaml.safe_load(value)
            changes[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
        model = replace(model, **changes)
    return model


def test_runs(scale: str) -> pd.DataFrame:
    runs = import_regmix_runs(PILE / "test_mixture.csv", PILE / f"test_pile_loss_{scale}.csv")
    return runs[runs["status"] == STATUS_OK].reset_index(drop=True)


class Scores:
    """Figures per (model, cell); a cell holds one value per fold, seed or replay."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[dict]] = {}

    def add(self, model: str, cell: str, figures: dict) -> None:
        self.values.setdefault((model, cell), []).append(figures)

    def cell(self, model: str, cell: str, figure: str) -> tuple[float, float]:
        values = [v[figure] for v in self.values.get((model, cell), []) if v[figure] is not None]
        return (float(np.mean(values)), float(np.std(values))) if values else (np.nan, np.nan)

    def table(self, models: list[str], cells: list[str], title: str) -> None:
        print(f"\n{title}\n{'model':36s}" + "".join(f"{c:>30s}" for c in cells))
        print(f"{'':36s}" + "".join(f"{'rho  top-quarter  regret':>30s}" for _ in cells))
        for model in models:
            line = f"{model:36s}"
            for cell in cells:
                parts = [self.cell(model, cell, f) for f in FIGURES]
                line += "   " + " ".join(f"{m:.3f}±{s:.3f}" for m, s in parts)
            print(line, flush=True)


def published(models: list[str], seeds: int, scores: Scores) -> None:
    """CV on the 512 training runs; each fold's model also ranks the test mixtures."""
    runs = published_runs()
    tests = {scale: test_runs(scale) for scale in SCALES}
    for target in TARGETS:
        data, parsed = training_data_from(runs, target)
        truth = {s: parsed.values(t) for s, t in tests.items()}
        test_weights = {
            s: t[[WEIGHT + d for d in data.domains]].to_numpy() for s, t in tests.items()
        }
        for spec in models:
            started = time.perf_counter()
            for seed in range(seeds):
                ids = fold_ids(len(data.runs), 5, seed)
                oof = np.empty(len(data.target))
                for fold in range(5):
                    train = ids != fold
                    model = model_from_spec(spec).fit(data.weights[train], data.target[train])
                    oof[~train] = model.predict(data.weights[~train])
                    for scale in SCALES:
                        predicted = model.predict(test_weights[scale])
                        scores.add(
                            spec, f"{target} {scale}", ranking_metrics(truth[scale], predicted)
                        )
                scores.add(spec, f"{target} CV", ranking_metrics(data.target, oof))
            print(f"  published {target} {spec}: {time.perf_counter() - started:.0f} s", flush=True)


def unlike_subsets(target: str, seeds: int) -> list[list[str]]:
    """The runs the workflow's rounds choose from the 512, one replay per seed."""
    pool = published_runs()
    subsets = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        chosen = list(rng.choice(pool["run"], UNLIKE_ROUNDS[0], replace=False))
        for number, size in enumerate(UNLIKE_ROUNDS[1:], start=2):
            measured = pool[pool["run"].isin(chosen)]
            last = number == len(UNLIKE_ROUNDS)
            picks = propose(
                measured, target, size, AcquisitionConfig(), seed, number, pool, with_optimum=last
            )
            chosen += picks["run"].tolist()
        subsets.append(chosen)
    return subsets


def unlike(models: list[str], seeds: int, scores: Scores) -> None:
    runs = published_runs().set_index("run")
    tests = {scale: test_runs(scale) for scale in SCALES}
    for target in TARGETS:
        subsets = unlike_subsets(target, seeds)
        for spec in models:
            for chosen in subsets:
                data, parsed = training_data_from(runs.loc[chosen].reset_index(), target)
                model = model_from_spec(spec).fit(data.weights, data.target)
                for scale, test in tests.items():
                    predicted = model.predict(test[[WEIGHT + d for d in data.domains]].to_numpy())
                    figures = ranking_metrics(parsed.values(test), predicted)
                    scores.add(spec, f"unlike {target} {scale}", figures)


def train_heldout(results: Path, count: int, seed: int, out: Path) -> None:
    """Fresh draws of the final stage's held-out sampler (another seed), trained as proxies
    with the demo's own proxy settings; written as a runs table."""
    import tempfile

    import torch

    from regmix.search.mixtures import SamplerConfig, final_mixture
    from regmix.search.runs import LOSS
    from regmix.training.train import train_mixture
    from regmix.training.train_config import TrainConfig

    torch.set_num_threads(1)
    record = json.loads(sorted((results / "proxy").glob("run*/run.json"))[0].read_text())
    final = json.loads(sorted((results / "final").glob("*/run.json"))[0].read_text())["settings"]
    final_tokens = final["steps"] * final["batch_size"] * final["seq_len"]
    rows = []
    for k in range(1, count + 1):
        name = f"heldout{k:02d}"
        weights = final_mixture(
            name, results / "data" / "stats.parquet", final_tokens, 15.0, heldout_seed=seed,
            sampler=SamplerConfig(max_epochs=15.0),
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as work:
            trained = train_mixture(
                results / "data", name, dict(weights), TrainConfig(**record["settings"]), work
            )
        last = trained.losses[trained.losses["step"] == trained.losses["step"].max()]
        rows.append(
            {
                "run": f"fresh{k:02d}",
                **{WEIGHT + d: float(w) for d, w in weights.items()},
                **{LOSS + d: float(v) for d, v in zip(last["domain"], last["loss"], strict=True)},
                "status": STATUS_OK,
            }
        )
    pd.DataFrame(rows).to_parquet(out)


def demo(models: list[str], results: Path, heldout: Path | None, target: str, scores: Scores):
    proxies = pd.read_parquet(results / "proxy" / "runs.parquet")
    finals = final_runs([results / "final" / "runs.parquet"])
    data, parsed = training_data_from(proxies, target)
    columns = [WEIGHT + d for d in data.domains]
    held = finals["run"].str.startswith("heldout").to_numpy()
    fresh = pd.read_parquet(heldout) if heldout is not None else None
    for spec in models:
        model = model_from_spec(spec).fit(data.weights, data.target)
        predicted, actual = model.predict(finals[columns].to_numpy()), parsed.values(finals)
        scores.add(spec, "demo final held-out", ranking_metrics(actual[held], predicted[held]))
        scores.add(spec, "demo all finals", ranking_metrics(actual, predicted))
        if fresh is not None:
            fresh_target = parse_target(target, loss_domains(fresh)).values(fresh)
            predicted = model.predict(fresh[columns].to_numpy())
            scores.add(spec, "demo fresh held-out", ranking_metrics(fresh_target, predicted))


def choice(models: list[str], cells: list[str], scores: Scores) -> None:
    print("\nchoice: mean of Spearman and best-quarter Spearman over the CV and transfer cells")
    print("  cells: " + ", ".join(cells))
    for model in models:
        values = [
            scores.cell(model, c, f)[0] for c in cells for f in ("spearman", "spearman_top_quarter")
        ]
        print(f"{model:36s} {np.nanmean(values):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated specs")
    parser.add_argument("--seeds", type=int, default=1, help="CV seeds on the 512 runs")
    parser.add_argument("--replays", type=int, default=4, help="replays for `unlike`")
    parser.add_argument("--skip", default="", help="scenarios to skip: published,unlike")
    parser.add_argument("--demo", type=Path, help="a finished demo's results/ folder")
    parser.add_argument("--target", default="target", help="the demo's target")
    parser.add_argument("--heldout-proxies", type=Path, help="fresh held-out proxies (parquet)")
    parser.add_argument("--train-heldout", type=int, default=0, help="train this many first")
    parser.add_argument("--heldout-seed", type=int, default=5042)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--load", type=Path, help="print the tables of a --json file, no fits")
    args = parser.parse_args()
    models = re.split(r",(?![^()]*\))", args.models)
    skip = set(args.skip.split(","))
    scores = Scores()
    if args.load is not None:
        for key, values in json.loads(args.load.read_text()).items():
            model, cell = key.split(" | ")
            scores.values[model, cell] = values
        models = list(dict.fromkeys(model for model, _ in scores.values))
    else:
        if "published" not in skip:
            published(models, args.seeds, scores)
        if "unlike" not in skip:
            unlike(models, args.replays, scores)
    report(models, scores, args)
    if args.json is not None:
        figures = {f"{model} | {cell}": values for (model, cell), values in scores.values.items()}
        args.json.write_text(json.dumps(figures, indent=1))


def report(models: list[str], scores: Scores, args: argparse.Namespace) -> None:
    """Every table whose cells were scored, then the choice."""
    chosen = []
    if any(cell.endswith(" CV") for _, cell in scores.values):
        for target in TARGETS:
            cells = [f"{target} CV", *(f"{target} {s}" for s in SCALES)]
            scores.table(models, cells, f"published runs, {target}: fitted on the 512 (folds)")
        chosen += [c for t in TARGETS for c in (f"{t} CV", f"{t} 60m")]
    if any(cell.startswith("unlike ") for _, cell in scores.values):
        for target in TARGETS:
            cells = [f"unlike {target} {s}" for s in SCALES]
            scores.table(models, cells, f"unlike: fitted on the rounds' 64 runs, {target}")
        chosen += [f"unlike {t} 60m" for t in TARGETS]
    if args.demo is not None and args.load is None:
        heldout = args.heldout_proxies
        if args.train_heldout and heldout is not None and not heldout.exists():
            train_heldout(args.demo, args.train_heldout, args.heldout_seed, heldout)
        demo(models, args.demo, heldout, args.target, scores)
    demo_cells = ["demo final held-out", "demo all finals", "demo fresh held-out"]
    demo_cells = [c for c in demo_cells if any(cell == c for _, cell in scores.values)]
    if demo_cells:
        scores.table(models, demo_cells, "demo: fitted on its proxies (reported, not chosen on)")
    if chosen:
        choice(models, chosen, scores)


if __name__ == "__main__":
    main()
