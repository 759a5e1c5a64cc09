"""Find the optimal mixture: score many candidate mixtures with a fitted regressor and average
the best (RegMix's simulation), with the safeguards RegMix's own simulation lacked.

- Candidates come from the proxy sampler (Dirichlet around the sharpened token prior) and, for
  a share of them (`local_share`), from draws around the best runs, so that an optimum that
  rounds of proxies found far from the prior is searched finely too. All obey the per-domain
  caps: at the final token budget no domain repeats more than `max_epochs` times.
- Extrapolation guard: a regressor is only trusted where proxy runs were trained. A
  candidate is inside that support when no domain exceeds the largest weight any run gave it
  and its Hellinger distance to the nearest run is at most `radius`, the `support_quantile`
  quantile of each run's distance to its own nearest neighbour. With the guard on, only such
  candidates compete; either way the result reports how far the optimum and the unguarded
  optimum lie from the runs.
- Stability: the model is refitted on bootstrap resamples of the runs, each refit picks its
  own optimum from the same candidates, and the spread of those optima is reported.

Candidates are drawn, filtered and scored in fixed-size chunks across threads, each chunk with
its own seed, so memory stays bounded and the result does not depend on the thread count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regmix.data.stats import full_train_tokens, read_stats, train_tokens, valid_domains
from regmix.errors import RegmixError
from regmix.files import write_table, write_yaml
from regmix.parallel import available_threads, parallel_map
from regmix.search.mixtures import (
    SamplerConfig,
    dirichlet_draws,
    domain_caps,
    drop_small_weights,
    local_draws,
    mixture_table,
    regmix_yaml,
    sharpened_prior,
    token_prior,
    within_caps,
)
from regmix.search.regression import FittedModel, load_model
from regmix.search.regressors import Regressor, predict_weights
from regmix.search.support import Support, nearest_distance


@dataclass(frozen=True)
class SimulationConfig:
    """How many candidates are scored, how the optimum is formed and how it is checked."""

    candidates: int = 1_000_000
    """Mixtures drawn from the sampler (before caps); the paper scores 1M."""
    top_k: int = 100
    """The optimum is the mean of the k best-predicted candidates (paper: 100)."""
    seed: int = 0
    """Seed of the candidate draws and the bootstrap resamples."""
    guard: bool = True
    """Let only candidates inside the proxy runs' support compete."""
    support_quantile: float = 1.0
    """The support radius is this quantile of the runs' nearest-neighbour distances."""
    bootstrap: int = 5
    """Bootstrap refits used to measure how much the optimum moves (0 skips it)."""
    local_share: float = 0.5
    """Share of the candidates drawn around the best runs (0: RegMix's sampler only). The
    sampler rarely reaches a corner far from the token prior even when rounds of proxies have
    found the optimum there."""
    local_runs: int = 8
    """How many of the best runs the local candidates surround."""
    caution: float = 1.0
    """Rank candidates by the predicted loss plus this many posterior standard deviations (of
    the mean loss, for regressors that have one), so that a mixture promised a low loss only
    by extrapolating loses to one the runs support. 0 ranks by the prediction (RegMix)."""
    chunk: int = 65_536
    """Candidates drawn and scored together; bounds memory per thread."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise RegmixError("simulate.top_k: must be >= 1")
        if self.candidates < self.top_k:
            raise RegmixError("simulate.candidates: must be >= top_k")
        if not 0 < self.support_quantile <= 1:
            raise RegmixError("simulate.support_quantile: must be in (0, 1]")
        if self.bootstrap < 0:
            raise RegmixError("simulate.bootstrap: must be >= 0")
        if self.chunk < 1:
            raise RegmixError("simulate.chunk: must be >= 1")
        if not 0 <= self.local_share <= 1 or self.local_runs < 1:
            raise RegmixError("simulate: need 0 <= local_share <= 1 and local_runs >= 1")


# --- streaming top-k ------------------------------------------------------------------------


@dataclass
class TopK:
    """The k lowest predictions seen so far and their mixtures."""

    k: int
    predictions: np.ndarray = field(default_factory=lambda: np.empty(0))
    weights: np.ndarray | None = None

    def offer(self, predictions: np.ndarray, weights: np.ndarray) -> None:
        if self.weights is not None:
            predictions = np.concatenate([self.predictions, predictions])
            weights = np.concatenate([self.weights, weights])
        best = np.argsort(predictions, kind="stable")[: self.k]
        self.predictions, self.weights = predictions[best], weights[best]

    def merge(self, other: TopK) -> None:
        if other.weights is not None:
            self.offer(other.predictions, other.weights)

    def mean(self) -> np.ndarray:
        """RegMix's optimum: the average of the top-k mixtures (still on the simplex)."""
        if self.weights is None or len(self.weights) == 0:
            raise RegmixError(
                "simulate: no candidate is within the caps and the proxy runs' support; raise "
                "--candidates or --max-epochs, or pass --no-guard"
            )
        mean = self.weights.mean(axis=0)
        return mean / mean.sum()


@dataclass
class ChunkResult:
    drawn: int
    within_caps: int
    inside: int
    best: TopK
    """Top-k of the main model among the competing candidates."""
    unguarded: TopK
    """Top-k of the main model among all candidates within the caps."""
    bootstrap: list[TopK]


@dataclass
class Candidates:
    """How candidates are drawn: RegMix's sampler around the prior and, for a share of them,
    draws around the best runs; then the caps."""

    centre: np.ndarray
    caps: np.ndarray
    sampler: SamplerConfig
    total: int
    chunk: int
    seed: int
    best: np.ndarray
    """The best runs' mixtures, which the local draws surround (none: sampler only)."""
    local_share: float = 0.0
    concentrations: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0)
    columns: np.ndarray | None = None
    """Where the drawn domains sit among the model's `width` domains (None: they are all of
    them); the others are left at weight 0."""
    width: int = 0

    def sizes(self) -> list[int]:
        full, rest = divmod(self.total, self.chunk)
        return [self.chunk] * full + ([rest] if rest else [])

    def draw(self, index: int, size: int) -> np.ndarray:
        """Chunk `index`: the same draws whatever the thread count or chunk order."""
        rng = np.random.default_rng([self.seed, index])
        local = round(size * self.local_share) if len(self.best) else 0
        draws = [dirichlet_draws(self.centre, size - local, self.sampler.strengths(), rng)]
        if local:
            draws.append(local_draws(self.best, local, self.concentrations, rng))
        weights = drop_small_weights(np.concatenate(draws), self.sampler.min_weight)
        if self.columns is None:
            return weights
        full = np.zeros((len(weights), self.width))
        full[:, self.columns] = weights
        return full


def _score_chunk(
    candidates: Candidates,
    index: int,
    size: int,
    model: Regressor,
    refits: list[Regressor],
    support: Support,
    config: SimulationConfig,
) -> ChunkResult:
    weights = candidates.draw(index, size)
    weights = weights[within_caps(weights, candidates.caps)]
    inside = support.contains(weights)
    predictions = cautious_score(model, weights, config.caution)
    unguarded = TopK(config.top_k)
    unguarded.offer(predictions, weights)
    if config.guard:
        competing, scores = weights[inside], predictions[inside]
    else:
        competing, scores = weights, predictions
    best = TopK(config.top_k)
    best.offer(scores, competing)
    tops = []
    for refit in refits:
        top = TopK(config.top_k)
        top.offer(cautious_score(refit, competing, config.caution), competing)
        tops.append(top)
    return ChunkResult(size, len(weights), int(inside.sum()), best, unguarded, tops)


def cautious_score(model: Regressor, weights: np.ndarray, caution: float) -> np.ndarray:
    """What candidates are ranked by: the predicted loss, or with `caution` its posterior
    upper bound, mean + caution × standard deviation of the mean loss (the seed noise left
    out: it is the same everywhere)."""
    if caution > 0 and hasattr(model, "predict_interval"):
        return model.predict_interval(weights, caution, observation=False)[1]
    return predict_weights(model, weights)


def bootstrap_refits(model: FittedModel, count: int, seed: int, threads: int) -> list[Regressor]:
    """Refit the model on `count` bootstrap resamples of its runs."""
    if count == 0:
        return []
    weights, target = model.train_weights, model.train["target"].to_numpy(dtype=float)
    rng = np.random.default_rng([seed, 1])
    samples = [rng.integers(len(target), size=len(target)) for _ in range(count)]

    def refit(rows: np.ndarray) -> Regressor:
        return model.regressor.warm_unfitted().fit(weights[rows], target[rows])

    return parallel_map(refit, samples, threads)


# --- the simulation -------------------------------------------------------------------------


def _searched_domains(
    stats: pd.DataFrame, stats_path: str | os.PathLike, domains: list[str]
) -> list[str]:
    """The model's domains that the corpus still has: the search gives the others weight 0 (a
    domain removed after the runs trained on it stays a feature of the model, at 0; a domain
    no run has explored yet cannot be weighed and stays out)."""
    searched = [d for d in domains if d in train_tokens(stats).index]
    if not searched:
        raise RegmixError(f"{stats_path}: none of the model's domains has train tokens")
    return searched


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between two mixtures: the share of tokens that moves."""
    return float(0.5 * np.abs(a - b).sum())


def _rounded(values: dict[str, float] | pd.Series, digits: int = 6) -> dict[str, float]:
    return {str(k): round(float(v), digits) for k, v in dict(values).items()}


@dataclass
class Simulation:
    """The optimum and everything reported about it."""

    domains: list[str]
    optimum: np.ndarray
    predicted_loss: float
    top: pd.DataFrame
    """The top-k candidates: run, weight.<domain>..., prediction, nearest_run, inside_support."""
    prior: pd.Series
    report: dict[str, Any]
    spread: pd.Series | None
    """Per-domain standard deviation of the bootstrap optima (None without bootstrap)."""
    valid_domains: list[str]
    """The validation domains of the stats table, for the `valid` block of mixture.yaml."""


def simulate(
    model_dir: str | os.PathLike,
    stats_path: str | os.PathLike,
    final_tokens: float,
    config: SimulationConfig | None = None,
    sampler: SamplerConfig | None = None,
    threads: int | None = None,
) -> Simulation:
    """Score candidates with the fitted model and return the averaged top-k optimum."""
    config = config or SimulationConfig()
    sampler = sampler or SamplerConfig()
    threads = threads or available_threads()
    model = load_model(model_dir)
    domains = model.domains
    stats = read_stats(stats_path)
    searched = _searched_domains(stats, stats_path, domains)
    columns = np.array([domains.index(d) for d in searched])
    # In the model's domain order, all > 0: the prior from full sizes, caps from tokens prepared.
    prior = token_prior(full_train_tokens(stats).reindex(searched))
    caps = domain_caps(train_tokens(stats).reindex(searched), final_tokens, sampler.max_epochs)
    best = model.train_weights[np.argsort(model.train["target"].to_numpy())[: config.local_runs]]
    best = best[:, columns] / np.maximum(best[:, columns].sum(axis=1, keepdims=True), 1e-12)
    candidates = Candidates(
        centre=sharpened_prior(prior.to_numpy(), sampler.temperature),
        caps=caps.reindex(domains, fill_value=0.0).to_numpy(),
        sampler=sampler,
        total=config.candidates,
        chunk=config.chunk,
        seed=config.seed,
        best=best,
        local_share=config.local_share,
        columns=None if len(searched) == len(domains) else columns,
        width=len(domains),
    )
    support = Support.of_runs(model.train_weights, config.support_quantile)
    refits = bootstrap_refits(model, config.bootstrap, config.seed, threads)

    def score(job: tuple[int, int]) -> ChunkResult:
        index, size = job
        return _score_chunk(candidates, index, size, model.regressor, refits, support, config)

    results = parallel_map(score, list(enumerate(candidates.sizes())), threads)

    best, unguarded = TopK(config.top_k), TopK(config.top_k)
    boot = [TopK(config.top_k) for _ in refits]
    for result in results:
        best.merge(result.best)
        unguarded.merge(result.unguarded)
        for total, part in zip(boot, result.bootstrap, strict=True):
            total.merge(part)

    optimum = best.mean()
    predicted = float(model.regressor.predict(optimum[None, :])[0])
    interval = prediction_interval(model.regressor, refits, optimum)
    counts = {
        "drawn": sum(r.drawn for r in results),
        "within_caps": sum(r.within_caps for r in results),
        "inside_support": sum(r.inside for r in results),
    }
    report = {
        "predicted_loss": round(predicted, 6),
        **({"predicted_interval": interval} if interval else {}),
        "target": model.spec["target"],
        "model": model.spec["model"],
        "top_k_mean_prediction": round(float(model.regressor.predict(best.weights).mean()), 6),
        "caution": config.caution,
        "best_run_loss": round(float(model.train["target"].min()), 6),
        "best_run": str(model.train["run"].iloc[int(model.train["target"].argmin())]),
        "candidates": {**counts, "top_k": config.top_k, "seed": config.seed},
        "caps": {
            "final_tokens": float(final_tokens),
            "max_epochs": sampler.max_epochs,
            "max_weight": _rounded(caps),
        },
        "support": _support_report(model, support, config, optimum, unguarded, predicted),
    }
    spread = None
    if refits:
        optima = np.stack([top.mean() for top in boot])
        shifts = [_tv(o, optimum) for o in optima]
        spread = pd.Series(optima.std(axis=0), index=domains)
        report["stability"] = {
            "bootstrap_refits": len(refits),
            "mean_tv_shift": round(float(np.mean(shifts)), 6),
            "max_tv_shift": round(float(np.max(shifts)), 6),
            "weight_std": _rounded(spread),
            "refit_predicted_loss": [
                round(float(r.predict(o[None, :])[0]), 6)
                for r, o in zip(refits, optima, strict=True)
            ],
        }
    top = mixture_table(
        [f"top{i + 1:04d}" for i in range(len(best.predictions))], domains, best.weights
    )
    top["prediction"] = model.regressor.predict(best.weights)
    top["score"] = best.predictions  # what they were ranked by (with `caution`)
    top["nearest_run"] = nearest_distance(best.weights, support.runs)
    top["inside_support"] = support.contains(best.weights, top["nearest_run"].to_numpy())
    return Simulation(domains, optimum, predicted, top, prior, report, spread, valid_domains(stats))


INTERVAL_LEVEL = 0.95
Z_95 = 1.959964


def prediction_interval(
    regressor: Regressor, refits: list[Regressor], optimum: np.ndarray
) -> dict[str, Any] | None:
    """How sure the predicted loss of the optimum is: a 95% interval for the loss a proxy
    trained on it would measure.

    A Gaussian process gives it from its posterior (seed noise included); other regressors
    from the spread of their bootstrap refits (their lowest to highest prediction, a rough
    range with few refits); None without either.
    """
    row = optimum[None, :]
    if hasattr(regressor, "predict_interval"):
        lower, upper = regressor.predict_interval(row, Z_95)
        return {
            "lower": round(float(lower[0]), 6),
            "upper": round(float(upper[0]), 6),
            "level": INTERVAL_LEVEL,
            "method": regressor.uncertainty,
        }
    if refits:
        predictions = [float(r.predict(row)[0]) for r in refits]
        return {
            "lower": round(min(predictions), 6),
            "upper": round(max(predictions), 6),
            "level": None,
            "method": f"range of {len(refits)} bootstrap refits",
        }
    return None


def _support_report(
    model: FittedModel,
    support: Support,
    config: SimulationConfig,
    optimum: np.ndarray,
    unguarded: TopK,
    predicted: float,
) -> dict[str, Any]:
    """How far the optimum (and the optimum without the guard) lies from the proxy runs."""
    domains = model.domains

    def where(weights: np.ndarray) -> dict[str, Any]:
        distance = float(nearest_distance(weights[None, :], support.runs)[0])
        beyond = support.beyond_runs(weights[None, :])[0]
        return {
            "nearest_run": round(distance, 6),
            "radius_ratio": round(distance / support.radius, 4) if support.radius else None,
            "beyond_runs": {
                d: [round(float(w), 6), round(float(m), 6)]
                for d, w, m, b in zip(domains, weights, support.max_weight, beyond, strict=True)
                if b
            },
        }

    free = unguarded.mean()
    free_loss = float(model.regressor.predict(free[None, :])[0])
    largest = int(np.argmax(free))
    return {
        "guard": config.guard,
        "radius": round(support.radius, 6),
        "quantile": config.support_quantile,
        "optimum": where(optimum),
        "unguarded": {
            "predicted_loss": round(free_loss, 6),
            "top_k_outside": int((~support.contains(unguarded.weights)).sum()),
            "tv_shift": round(_tv(free, optimum), 6),
            "largest_weight": {domains[largest]: round(float(free[largest]), 6)},
            **where(free),
        },
    }


def write_simulation(
    simulation: Simulation,
    out: str | os.PathLike,
    top_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write mixture.yaml (RegMix's shape plus the report) and optionally the top-k table."""
    weights = pd.Series(simulation.optimum, index=simulation.domains)
    document = {**regmix_yaml(weights, simulation.valid_domains), **simulation.report}
    if top_out is not None:
        write_table(simulation.top, top_out)
    write_yaml(document, out)
    return document


def summary_line(report: dict[str, Any]) -> str:
    """One stderr line a person reads after `regmix simulate`."""
    where = report["support"]["optimum"]
    interval = report.get("predicted_interval")
    sure = f" [{interval['lower']:.4f}, {interval['upper']:.4f}]" if interval else ""
    line = (
        f"regmix simulate: predicted {report['target']} loss {report['predicted_loss']:.4f}{sure} "
        f"(best proxy run {report['best_run_loss']:.4f}); optimum at {where['nearest_run']:.3f} "
        f"from the nearest run ({where['radius_ratio']}× the support radius)"
    )
    if "stability" in report:
        line += f"; bootstrap TV shift {report['stability']['mean_tv_shift']:.3f}"
    return line


def evidence_key(
    model_dir: str | os.PathLike,
    stats_path: str | os.PathLike,
    final_tokens: float,
    config: SimulationConfig,
    sampler: SamplerConfig,
) -> str:
    """What an optimum is searched from: the runs the model was fitted on (their weights and
    target), the model's spec, the settings, and the domains the corpus has. The token counts
    are left out: they only shape where candidates are drawn, and a corpus change that keeps
    every run (within reuse.max_change) keeps the optimum; one that changes the runs changes
    the evidence and searches again, with the counts of the day."""
    import hashlib
    import json
    from dataclasses import asdict

    from regmix.files import read_table, read_yaml

    folder = Path(model_dir)
    train = read_table(folder / "train.parquet")
    evidence = {
        "runs": train.round(12).to_dict(orient="list"),
        "spec": read_yaml(folder / "model.json"),
        "settings": [asdict(config), asdict(sampler), float(final_tokens)],
        "domains": sorted(train_tokens(read_stats(stats_path)).index),
    }
    text = json.dumps(evidence, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
