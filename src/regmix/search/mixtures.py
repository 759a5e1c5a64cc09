"""Mixtures of training domains: RegMix's Dirichlet sampler, repetition caps and mixture tables.

A mixture table has one row per run: a `run` column and one `weight.<domain>` column per
training domain, each row summing to 1. The sampler follows RegMix's
`synthesize_mixture.py`: the centre is the train-token prior sharpened by a temperature, the
concentration is drawn from log-spaced strengths, samples above a per-domain cap are rejected,
tiny weights are zeroed, near-duplicates are dropped and N are picked from an oversampled pool.

The cap differs from RegMix in one deliberate way: RegMix bounds a weight by 15 × prior,
which only stands for "at most 15 epochs" when the final budget happens to equal the corpus
size. Here the cap is stated in its own terms: at the final model's token budget, a domain may
not be repeated more than `max_epochs` times.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.data.stats import full_train_tokens, read_stats, train_tokens, valid_domains
from regmix.errors import RegmixError
from regmix.files import read_yaml, write_table, write_yaml

WEIGHT = "weight."
ROUND = "round"
"""The column of a mixture or runs table that says which round proposed a run."""


@dataclass(frozen=True)
class SamplerConfig:
    """How proxy mixtures (and simulation candidates) are drawn; defaults are RegMix's."""

    temperature: float = 0.5
    """Exponent applied to the token prior before it centres the Dirichlet (<1 flattens)."""
    min_strength: float = 0.1
    """Smallest Dirichlet concentration multiplier (samples concentrate on few domains)."""
    max_strength: float = 5.0
    """Largest Dirichlet concentration multiplier (samples stay close to the centre)."""
    n_strengths: int = 15
    """How many log-spaced strengths between min and max; each sample picks one at random."""
    min_weight: float = 2e-4
    """Weights below this are set to zero and the rest renormalised."""
    oversample: int = 100
    """Draw this many times more candidates than needed, then pick from the survivors."""
    min_distance: float = 1e-3
    """Two mixtures closer than this in L1 distance count as duplicates."""
    max_epochs: float = 15.0
    """A domain may be repeated at most this many times at the final model's token budget."""

    def __post_init__(self) -> None:
        if not 0 < self.min_strength <= self.max_strength:
            raise RegmixError("mixtures: need 0 < min_strength <= max_strength")
        if self.temperature <= 0:
            raise RegmixError("mixtures.temperature: must be > 0")
        if self.oversample < 1 or self.n_strengths < 1:
            raise RegmixError("mixtures: oversample and n_strengths must be >= 1")
        if self.max_epochs <= 0:
            raise RegmixError("mixtures.max_epochs: must be > 0")

    def strengths(self) -> np.ndarray:
        low, high = np.log10(self.min_strength), np.log10(self.max_strength)
        return np.logspace(low, high, self.n_strengths)


def weight_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(WEIGHT)]


def mixture_domains(table: pd.DataFrame) -> list[str]:
    """The training domains of a mixture or runs table, in column order."""
    return [c[len(WEIGHT) :] for c in weight_columns(table)]


def mixture_table(runs: list[str], domains: list[str], weights: np.ndarray) -> pd.DataFrame:
    """Build a mixture table from a (runs × domains) weight matrix."""
    table = pd.DataFrame(np.asarray(weights, dtype=float), columns=[WEIGHT + d for d in domains])
    table.insert(0, "run", runs)
    return table


def check_weights(table: pd.DataFrame, source: str, tolerance: float = 1e-3) -> None:
    """Fail with one line if any row has negative weights or does not sum to 1."""
    columns = weight_columns(table)
    if not columns:
        raise RegmixError(f"{source}: no weight.<domain> columns")
    weights = table[columns].to_numpy(dtype=float)
    if np.isnan(weights).any() or (weights < 0).any():
        raise RegmixError(f"{source}: weights must be non-negative numbers")
    sums = weights.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > tolerance)
    if bad.size:
        run = table["run"].iloc[bad[0]] if "run" in table else bad[0]
        raise RegmixError(
            f"{source}: weights of run {run} sum to {sums[bad[0]]:.4f}, expected 1 "
            f"({bad.size} row(s) off by more than {tolerance})"
        )


def token_prior(train_tokens: pd.Series) -> pd.Series:
    """Each training domain's share of the train tokens (RegMix's 'human' mixture)."""
    train_tokens = train_tokens[train_tokens > 0].astype(float)
    if train_tokens.empty:
        raise RegmixError("stats: no training domain has any tokens")
    return train_tokens / train_tokens.sum()


def domain_caps(train_tokens: pd.Series, final_tokens: float, max_epochs: float) -> pd.Series:
    """Largest weight per domain such that the final model sees it at most `max_epochs` times."""
    caps = (max_epochs * train_tokens.astype(float) / float(final_tokens)).clip(upper=1.0)
    shortfall = 1.0 - caps.sum()
    if shortfall > 1e-12:
        listing = ", ".join(f"{d} ≤ {c:.3g}" for d, c in caps.sort_values().items())
        needed = final_tokens / train_tokens.sum()
        raise RegmixError(
            f"mixtures: caps sum to {caps.sum():.3f} < 1 ({listing}): {final_tokens:.3g} final "
            f"tokens from {train_tokens.sum():.3g} train tokens needs max_epochs ≥ {needed:.3g} "
            f"(have {max_epochs:g}), or a smaller final token budget"
        )
    return caps


def dirichlet_draws(
    centre: np.ndarray, n: int, strengths: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """n draws from Dirichlet(centre × s), with s picked uniformly from `strengths` per draw."""
    picks = rng.integers(len(strengths), size=n)
    draws = np.empty((n, len(centre)))
    for i, strength in enumerate(strengths):
        rows = np.flatnonzero(picks == i)
        if rows.size:
            draws[rows] = rng.dirichlet(centre * strength, size=rows.size)
    return draws


LOCAL_FLOOR = 0.2
"""Dirichlet concentration spread evenly over all domains in a local draw. Around a blend of
three of eight domains, some left-out domain comes back above 1% in about one draw in eleven;
a floor of 1 put 2% of every draw on left-out domains on average, which averaging the top
candidates then carried into the optimum as a smear over domains that do not help."""


def local_draws(
    centres: np.ndarray, n: int, concentrations: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """n draws around the centres: Dirichlet(κ·centre + floor/d), κ and centre picked per draw.

    Where RegMix's sampler spreads its draws around the token prior, these stay near given
    mixtures (the best runs so far), so that the region of the optimum is searched finely.
    """
    d = centres.shape[1]
    which = rng.integers(len(centres), size=n)
    kappa = np.asarray(concentrations, dtype=float)[rng.integers(len(concentrations), size=n)]
    alpha = kappa[:, None] * centres[which] + LOCAL_FLOOR / d
    draws = rng.gamma(alpha)
    return draws / draws.sum(axis=1, keepdims=True)


def sharpened_prior(prior: np.ndarray, temperature: float) -> np.ndarray:
    centre = np.asarray(prior, dtype=float) ** temperature
    return centre / centre.sum()


def drop_small_weights(weights: np.ndarray, min_weight: float) -> np.ndarray:
    """Zero weights below `min_weight` and renormalise each row to sum to 1."""
    weights = np.where(weights < min_weight, 0.0, weights)
    return weights / weights.sum(axis=1, keepdims=True)


def within_caps(weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose every weight is at most its domain's cap."""
    return (weights <= caps[None, :] + 1e-12).all(axis=1)


def pick_distinct(weights: np.ndarray, n: int, min_distance: float) -> np.ndarray:
    """Pick up to n rows in the given order, skipping any within `min_distance` (L1) of a pick."""
    picked: list[int] = []
    for i, row in enumerate(weights):
        if picked and np.abs(weights[picked] - row).sum(axis=1).min() < min_distance:
            continue
        picked.append(i)
        if len(picked) == n:
            break
    return np.asarray(picked, dtype=int)


def sample_mixtures(
    prior: pd.Series, caps: pd.Series, n: int, config: SamplerConfig, seed: int | list[int]
) -> np.ndarray:
    """Draw n distinct mixtures within the caps (rows of a (n × domains) weight matrix)."""
    if n < 1:
        raise RegmixError(f"mixtures: cannot sample {n} mixtures (need >= 1)")
    rng = np.random.default_rng(seed)
    centre = sharpened_prior(prior.to_numpy(), config.temperature)
    pool = dirichlet_draws(centre, n * config.oversample, config.strengths(), rng)
    pool = drop_small_weights(pool, config.min_weight)
    pool = pool[within_caps(pool, caps.reindex(prior.index).to_numpy())]
    pool = pool[rng.permutation(len(pool))]
    picked = pool[pick_distinct(pool, n, config.min_distance)]
    if len(picked) < n:
        raise RegmixError(
            f"mixtures: only {len(picked)} of {n} requested mixtures are distinct and within the "
            f"caps after {n * config.oversample} draws; raise mixtures.oversample or max_epochs"
        )
    return picked


def run_names(n: int, prefix: str = "run", digits: int = 4) -> list[str]:
    """Stable run names (`run0001`, ...) known before sampling, so the DAG can be built first."""
    width = max(digits, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def regmix_yaml(weights: pd.Series, valid_domains: list[str]) -> dict:
    """A run's mixture in RegMix's YAML shape: `train: {domain: weight}`, `valid: {domain: 1.0}`."""
    return {
        "train": {d: round(float(w), 8) for d, w in weights.items()},
        "valid": {d: 1.0 for d in valid_domains},
    }


def write_proxy_mixtures(
    stats_path: str | os.PathLike,
    n: int,
    final_tokens: float,
    config: SamplerConfig,
    seed: int,
    out: str | os.PathLike,
    yaml_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Sample the proxy mixtures from a stats table and write the table (and per-run YAMLs)."""
    stats = read_stats(stats_path)
    tokens = train_tokens(stats)
    prior = token_prior(full_train_tokens(stats))
    caps = domain_caps(tokens, final_tokens, config.max_epochs)
    weights = sample_mixtures(prior, caps, n, config, seed)
    table = mixture_table(run_names(n), list(prior.index), weights)
    table.insert(1, ROUND, 1)
    if yaml_dir is not None:
        valid = valid_domains(stats)
        for run, row in zip(table["run"], weights, strict=True):
            mixture = pd.Series(row, index=prior.index)
            write_yaml(regmix_yaml(mixture, valid), Path(yaml_dir) / f"{run}.yaml")
    write_table(table, out)
    return table


def uniform_weights(domains: list[str]) -> pd.Series:
    return pd.Series(1.0 / len(domains), index=domains)


def weights_from_yaml(data: dict, source: str, domains: list[str]) -> pd.Series:
    """The `train: {domain: weight}` block of a RegMix-style YAML, over `domains`."""
    train = data.get("train") if isinstance(data, dict) else None
    if not isinstance(train, dict) or not train:
        raise RegmixError(f"{source}: expected a 'train' mapping of domain: weight")
    # A domain gone from the corpus may stay in a mixture at weight 0 (the optimum keeps it).
    unknown = sorted(d for d in set(train) - set(domains) if train[d] != 0)
    if unknown:
        raise RegmixError(f"{source}: unknown training domain(s) {', '.join(unknown)}")
    try:
        weights = pd.Series({d: float(train.get(d, 0.0)) for d in domains})
    except (TypeError, ValueError):
        raise RegmixError(f"{source}: weights must be numbers") from None
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise RegmixError(f"{source}: weights must be non-negative with a positive sum")
    return weights / weights.sum()


def read_planted(path: str | os.PathLike, domains: list[str]) -> pd.Series:
    """The planted blend of a synthetic corpus (planted.yaml's `weights: {domain: weight}`),
    over `domains`."""
    data = read_yaml(path)
    blend = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(blend, dict) or not blend:
        raise RegmixError(f"{path}: expected a 'weights' mapping of domain: weight")
    return weights_from_yaml({"train": blend}, str(path), domains)


def final_mixture(
    name: str,
    stats_path: str | os.PathLike,
    final_tokens: float,
    max_epochs: float,
    optimum_path: str | os.PathLike | None = None,
    planted_path: str | os.PathLike | None = None,
    heldout_seed: int | None = None,
    sampler: SamplerConfig | None = None,
) -> pd.Series:
    """One final model's mixture, over the training domains of the stats table.

    `regmix` is the simulated optimum (`optimum_path`), `prior` the token prior (the paper's
    "human" mixture), `uniform` the flat mixture, `planted` a synthetic corpus's planted blend
    (the answer RegMix should recover) and `heldout<k>` the k-th fresh draw of the proxy
    sampler (`heldout_seed`): final-scale losses of those test whether the proxies' ranking
    transfers. Each is made on its own, so adding held-out mixtures leaves the others as they
    were. Every one first checks that the caps are feasible at the final budget, so an
    impossible budget stops the run before any final model trains.
    """
    stats = read_stats(stats_path)
    tokens = train_tokens(stats)
    prior = token_prior(full_train_tokens(stats))
    domains = list(prior.index)
    caps = domain_caps(tokens, final_tokens, max_epochs)
    if name == "regmix":
        if optimum_path is None:
            raise RegmixError("final-mixtures: the regmix mixture needs --optimum")
        return weights_from_yaml(read_yaml(optimum_path), str(optimum_path), domains)
    if name == "prior":
        return prior
    if name == "uniform":
        return uniform_weights(domains)
    if name == "planted":
        if planted_path is None:
            raise RegmixError("final-mixtures: the planted mixture needs --planted")
        return read_planted(planted_path, domains)
    match = re.fullmatch(r"heldout(\d+)", name)
    if match and heldout_seed is not None:
        config = sampler or SamplerConfig(max_epochs=max_epochs)
        draw = sample_mixtures(prior, caps, 1, config, [heldout_seed, int(match[1])])
        return pd.Series(draw[0], index=domains)
    raise RegmixError(
        f"final-mixtures: unknown mixture {name!r} (expected regmix, prior, uniform, planted or "
        "heldout<k> with --heldout-seed)"
    )


def write_final_mixture(name: str, out: str | os.PathLike, **sources) -> pd.DataFrame:
    """`regmix final-mixtures`: one final model's mixture as a one-row mixture table."""
    weights = final_mixture(name, **sources)
    table = mixture_table([name], list(weights.index), weights.to_numpy()[None, :])
    write_table(table, out)
    return table
