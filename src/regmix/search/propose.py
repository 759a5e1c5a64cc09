"""Propose the next round's proxy mixtures from every run so far (active rounds).

RegMix draws all its proxy mixtures at once around the token prior, so most of the budget lands
far from the optimum. Here each later round fits a Gaussian process to the runs so far and
spends its N runs where they tell most about the optimum:

- Candidates: without a pool, draws from RegMix's sampler (the global view) and draws around
  the best runs so far (a Dirichlet centred on each, at several concentrations: the local
  view), all within the repetition caps; with a pool, its rows not trained yet.
- Choice (`AcquisitionConfig.method`):
  - `thompson` (default): batch Thompson sampling. N joint draws from the GP posterior over the
    candidates; each draw's minimum is one pick. Where the posterior is sure, the draws agree
    and picks cluster at the optimum; where it is not, they spread out.
  - `ucb`: GP-BUCB (Desautels et al., 2014): N times, pick the lowest mean - β·std, then
    shrink the std around the pick as if it had been observed.
  - `greedy`: the N lowest predicted losses (no uncertainty; a baseline).
  - `random`: N random candidates (a baseline; with no pool this is RegMix's sampler).
  Every method keeps picks at least `min_distance` (Hellinger) apart, so a round never
  collapses onto one point.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from regmix.data.stats import full_train_tokens, read_stats, train_tokens
from regmix.errors import RegmixError
from regmix.files import write_table
from regmix.parallel import quiet_convergence
from regmix.search.calibration import (
    cross_validated_z,
    interval_record,
    read_records,
    scale_from_records,
)
from regmix.search.mixtures import (
    SamplerConfig,
    dirichlet_draws,
    domain_caps,
    drop_small_weights,
    local_draws,
    mixture_table,
    sharpened_prior,
    token_prior,
    within_caps,
)
from regmix.search.regression import training_data_from
from regmix.search.regressors import GaussianProcess
from regmix.search.runs import aligned_weights, read_mixtures, read_runs
from regmix.search.simulate import SimulationConfig, cautious_score

METHODS = ("thompson", "ucb", "greedy", "random")
OPTIMUM_CANDIDATES = 65_536
"""Candidates scored for the current optimum of a last round (RegMix's simulation, smaller)."""
OPTIMUM_TOP_K = 100
ROUND = "round"


@dataclass(frozen=True)
class AcquisitionConfig:
    """How a later round chooses its mixtures."""

    method: str = "thompson"
    """thompson | ucb | greedy | random (see the module docstring)."""
    candidates: int = 4096
    """Candidate mixtures scored per proposal (without a pool)."""
    local_share: float = 0.5
    """Share of the candidates drawn around the best runs so far; the rest from the sampler."""
    local_runs: int = 8
    """How many of the best runs the local candidates are centred on."""
    local_concentrations: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0)
    """Dirichlet concentrations around a best run: smaller wanders further from it."""
    exploration: float = 2.0
    """β of `ucb`: how many posterior standard deviations a pick may trade for mean loss."""
    min_distance: float = 0.05
    """Smallest Hellinger distance between two picks of a round."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RegmixError(
                f"acquisition.method: {self.method!r} is not one of {', '.join(METHODS)}"
            )
        if self.candidates < 1:
            raise RegmixError("acquisition.candidates: must be >= 1")
        if not 0 <= self.local_share <= 1:
            raise RegmixError("acquisition.local_share: must be in [0, 1]")
        if self.local_runs < 1 or not self.local_concentrations:
            raise RegmixError("acquisition: need local_runs >= 1 and some local_concentrations")
        if self.exploration < 0 or self.min_distance < 0:
            raise RegmixError("acquisition: exploration and min_distance must be >= 0")


# --- candidates -----------------------------------------------------------------------------


def sampled_candidates(
    centre: np.ndarray,
    caps: np.ndarray,
    best: np.ndarray,
    config: AcquisitionConfig,
    sampler: SamplerConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Candidates within the caps: RegMix's sampler draws plus draws around the best runs."""
    n_local = round(config.candidates * config.local_share) if len(best) else 0
    parts = []
    for _ in range(20):  # the caps reject some draws; draw until there are enough
        draws = [dirichlet_draws(centre, config.candidates - n_local, sampler.strengths(), rng)]
        if n_local:
            draws.append(local_draws(best, n_local, config.local_concentrations, rng))
        batch = drop_small_weights(np.concatenate(draws), sampler.min_weight)
        parts.append(batch[within_caps(batch, caps)])
        if sum(len(p) for p in parts) >= config.candidates:
            break
    candidates = np.concatenate(parts)[: config.candidates]
    if not len(candidates):
        raise RegmixError(
            "propose: no candidate mixture is within the caps; raise mixtures.max_epochs"
        )
    return candidates


# --- choosing -------------------------------------------------------------------------------


def hellinger(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hellinger distances between the rows of a and one mixture b (0 = same, 1 = disjoint)."""
    return np.sqrt(np.maximum(0.5 * ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(axis=1), 0.0))


def _spread_order(order: np.ndarray, weights: np.ndarray, taken: list[int], gap: float) -> int:
    """The first index of `order` at least `gap` from every taken row (else the first one)."""
    for index in order:
        if all(hellinger(weights[[index]], weights[t])[0] >= gap for t in taken):
            return int(index)
    return int(order[0])


def thompson_picks(
    model: GaussianProcess,
    candidates: np.ndarray,
    n: int,
    gap: float,
    rng: np.random.Generator,
    picks: list[int],
) -> list[int]:
    """n more picks, each the minimum of one joint posterior draw over the candidates."""
    z = model.scaled(candidates)
    v = model.explained(z)
    covariance = model.covariance(z, z) - v.T @ v
    covariance[np.diag_indices_from(covariance)] += 1e-8 * model.amplitude_
    try:
        factor = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:  # numerically indefinite: fall back on the eigenbasis
        values, vectors = np.linalg.eigh(covariance)
        factor = vectors * np.sqrt(np.maximum(values, 0.0))
    mean = model.latent_mean(candidates) / model.y_scale_  # standardised units
    draws = mean[:, None] + factor @ rng.standard_normal((len(candidates), n))
    picks = list(picks)
    for column in draws.T:
        picks.append(_spread_order(np.argsort(column), candidates, picks, gap))
    return picks


def ucb_picks(
    model: GaussianProcess,
    candidates: np.ndarray,
    n: int,
    beta: float,
    gap: float,
    picks: list[int],
) -> list[int]:
    """GP-BUCB: the lowest mean - β·std, n more times, each pick shrinking the std around it."""
    z = model.scaled(candidates)
    v = model.explained(z)
    mean = model.latent_mean(candidates) / model.y_scale_  # standardised units
    base_var = model.amplitude_ - (v * v).sum(axis=0)
    picks = list(picks)
    for _ in range(n):
        if picks:
            # Posterior covariance with the picks, which count as observed with noise.
            cross = model.covariance(z, z[picks]) - v.T @ v[:, picks]  # (M, k)
            among = cross[picks] + model.noise_ * np.eye(len(picks))
            reduction = (cross * np.linalg.solve(among, cross.T).T).sum(axis=1)
            variance = base_var - reduction
        else:
            variance = base_var
        score = mean - beta * np.sqrt(np.maximum(variance, 0.0))
        score[picks] = np.inf
        picks.append(_spread_order(np.argsort(score), candidates, picks, gap))
    return picks


def greedy_picks(
    model: GaussianProcess, candidates: np.ndarray, n: int, gap: float, picks: list[int]
) -> list[int]:
    order = np.argsort(model.predict(candidates))
    picks = list(picks)
    for _ in range(n):
        remaining = order[~np.isin(order, picks)]
        picks.append(_spread_order(remaining, candidates, picks, gap))
    return picks


def choose(
    model: GaussianProcess | None,
    candidates: np.ndarray,
    n: int,
    config: AcquisitionConfig,
    rng: np.random.Generator,
    first: list[int] = (),
) -> np.ndarray:
    """Indices of the n candidates the acquisition picks (distinct), after the `first` ones."""
    if n > len(candidates):
        raise RegmixError(f"propose: asked for {n} mixtures but only {len(candidates)} candidates")
    more, first = n - len(first), list(first)
    if config.method == "random" or model is None:
        rest = np.setdiff1d(np.arange(len(candidates)), first)
        return np.asarray(first + list(rng.choice(rest, size=more, replace=False)))
    gap = config.min_distance
    with quiet_convergence():
        if config.method == "thompson":
            picks = thompson_picks(model, candidates, more, gap, rng, first)
        elif config.method == "ucb":
            picks = ucb_picks(model, candidates, more, config.exploration, gap, first)
        else:
            picks = greedy_picks(model, candidates, more, gap, first)
    return _distinct(picks, n)


def _distinct(picks: list[int], n: int) -> np.ndarray:
    """Repeated picks (draws that agreed on one candidate) are replaced by none: the caller's
    candidates are many, so repeats only happen when picks are forced; keep them unique."""
    unique = list(dict.fromkeys(picks))
    if len(unique) < n:
        raise RegmixError(f"propose: only {len(unique)} distinct picks for {n} mixtures")
    return np.asarray(unique[:n])


def current_optimum(
    model: GaussianProcess, candidates: np.ndarray, top_k: int = OPTIMUM_TOP_K
) -> np.ndarray:
    """The mixture the runs so far recommend, as the simulation would form it: the mean of the
    top-k candidates ranked with the simulation's caution (within the caps, since the
    candidates are and the caps are convex)."""
    best = np.argsort(cautious_score(model, candidates, SimulationConfig().caution))[:top_k]
    optimum = candidates[best].mean(axis=0)
    return optimum / optimum.sum()


# --- the command ----------------------------------------------------------------------------


def next_run_names(existing: list[str], n: int) -> list[str]:
    """The names after the highest `run<k>` so far (names stay global across rounds)."""
    numbers = [int(m[1]) for r in existing if (m := re.fullmatch(r"run(\d+)", r))]
    start = max(numbers, default=0) + 1
    width = max(4, len(str(start + n - 1)))
    return [f"run{i:0{width}d}" for i in range(start, start + n)]


def read_run_tables(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One runs table from several (the batch tables of earlier rounds)."""
    tables = [read_runs(p) for p in paths]
    runs = pd.concat(tables, ignore_index=True)
    duplicated = runs.loc[runs["run"].duplicated(), "run"]
    if not duplicated.empty:
        raise RegmixError(f"--runs: run {duplicated.iloc[0]!r} appears in more than one table")
    return runs


def propose(
    runs: pd.DataFrame,
    target: str,
    n: int,
    config: AcquisitionConfig,
    seed: int,
    round_number: int | None = None,
    pool: pd.DataFrame | None = None,
    stats_path: str | os.PathLike | None = None,
    final_tokens: float | None = None,
    sampler: SamplerConfig | None = None,
    source: str = "runs",
    with_optimum: bool = False,
    model: GaussianProcess | None = None,
) -> pd.DataFrame:
    """The next n mixtures as a mixture table (with a `round` column given `round_number`).

    `with_optimum` makes the first of them the mixture the runs so far recommend (the last
    round trains it, so that the final fit knows the loss where it will recommend) and draws
    the others around it and the best runs only; from a pool, the first is the row with the
    lowest predicted loss. `model`: the `proposal_model` of these runs, if already fitted.
    """
    if n < 1:
        raise RegmixError("--n: must be >= 1")
    data, _ = training_data_from(runs, target, source)
    domains = data.domains
    rng = np.random.default_rng([seed, round_number or 0])
    if config.method == "random":
        model = None
    elif model is None:
        model = proposal_model(data.weights, data.target, seed)
    if pool is not None:
        fresh = pool[~pool["run"].isin(runs["run"])].reset_index(drop=True)
        candidates = aligned_weights(fresh, domains, "--pool")
        names = fresh["run"].tolist()
        first = [int(np.argmin(model.predict(candidates)))] if with_optimum and model else []
        picks = choose(model, candidates, n, config, rng, first)
        table = mixture_table([names[i] for i in picks], domains, candidates[picks])
    else:
        if stats_path is None or final_tokens is None:
            raise RegmixError("propose: without --pool, --stats and --final-tokens are needed")
        sampler = sampler or SamplerConfig()
        stats = read_stats(stats_path)
        tokens = train_tokens(stats).reindex(domains)
        if tokens.isna().any():
            missing = ", ".join(tokens.index[tokens.isna()])
            raise RegmixError(f"{stats_path}: no train tokens for domain(s) {missing}")
        full = full_train_tokens(stats).reindex(domains)
        centre = sharpened_prior(token_prior(full).to_numpy(), sampler.temperature)
        caps = domain_caps(tokens, final_tokens, sampler.max_epochs).to_numpy()
        best = data.weights[np.argsort(data.target)[: config.local_runs]]
        first = []
        if with_optimum and model is not None:
            # The last round: no later round could use what exploring far away reveals, so it
            # searches only around the current optimum and the best runs, to pin the optimum.
            wide = replace(config, candidates=OPTIMUM_CANDIDATES)
            optimum = current_optimum(
                model, sampled_candidates(centre, caps, best, wide, sampler, rng)
            )
            best, first = np.vstack([optimum, best]), [0]
            config = replace(config, local_share=1.0)
        candidates = sampled_candidates(centre, caps, best, config, sampler, rng)
        if first:
            candidates = np.vstack([best[:1], candidates])
        picks = choose(model, candidates, n, config, rng, first)
        names = next_run_names(runs["run"].tolist(), n)
        table = mixture_table(names, domains, candidates[picks])
    if round_number is not None:
        table.insert(1, ROUND, round_number)
    return table


def proposal_model(weights: np.ndarray, target: np.ndarray, seed: int) -> GaussianProcess:
    """The regressor a round is proposed from: the default GP, fitted on the runs so far."""
    with quiet_convergence():
        return GaussianProcess(seed=seed).fit(weights, target)


def write_proposal(
    runs_paths: list[str | os.PathLike],
    target: str,
    n: int,
    out: str | os.PathLike,
    config: AcquisitionConfig,
    seed: int,
    round_number: int | None = None,
    pool_path: str | os.PathLike | None = None,
    stats_path: str | os.PathLike | None = None,
    final_tokens: float | None = None,
    sampler: SamplerConfig | None = None,
    with_optimum: bool = False,
    intervals_out: str | os.PathLike | None = None,
    checks: list[str | os.PathLike] = (),
) -> pd.DataFrame:
    """`regmix propose`: read the runs (and the pool), propose, write the mixture table; with
    `intervals_out`, also the 95% interval the proposing regressor gives each proposed run
    (`regmix.search.calibration`), calibrated on the interval records of earlier rounds
    (`checks`) against what their runs measured."""
    runs = read_run_tables(list(runs_paths))
    pool = read_mixtures(pool_path) if pool_path is not None else None
    source = ", ".join(str(p) for p in runs_paths)
    model = None
    if intervals_out is not None:
        data, parsed = training_data_from(runs, target, source)
        model = proposal_model(data.weights, data.target, seed)
    table = propose(
        runs,
        target,
        n,
        config,
        seed,
        round_number,
        pool,
        stats_path,
        final_tokens,
        sampler,
        source,
        with_optimum,
        model,
    )
    if intervals_out is not None:
        scale, count, basis = scale_from_records(
            read_records(list(checks)),
            runs,
            parsed,
            lambda: cross_validated_z(model, data.weights, data.target, seed),
        )
        weights = aligned_weights(table, data.domains, str(out))
        record = interval_record(
            model, table["run"].tolist(), weights, round_number, scale, count, basis
        )
        write_table(record, intervals_out)
    write_table(table, out)
    return table
