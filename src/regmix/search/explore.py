"""Explore domains new to a finished sweep, as Olmix does after a domain-set change: the domains
the sweep knows stay in their current best proportions, frozen into one virtual domain, and a
small round of runs (a few per new domain, not a new sweep) mixes that virtual domain with the
new ones.

Each mixture of the round is (1 − s) × frozen blend + s × e, where e spreads s over the new
domains. The (virtual, new...) mixtures are drawn with RegMix's sampler around the token prior
of the reduced corpus (the virtual domain's tokens are the sum of its domains'), within the
caps of every domain, and the round takes draws at evenly spaced quantiles of s, so that it
covers a little to a lot of the new data. The frozen blend is the mixture the runs so far
recommend (regmix.search.propose.current_optimum) over the domains still in the corpus.

The regressor is then refitted on the old runs (weight 0 on the new domains: exact, they were
trained without them) and the new ones together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regmix.data.stats import full_train_tokens, read_stats, train_tokens
from regmix.errors import RegmixError
from regmix.parallel import quiet_convergence
from regmix.search.mixtures import (
    ROUND,
    SamplerConfig,
    dirichlet_draws,
    domain_caps,
    drop_small_weights,
    mixture_table,
    sharpened_prior,
    token_prior,
    within_caps,
)
from regmix.search.propose import (
    OPTIMUM_CANDIDATES,
    AcquisitionConfig,
    current_optimum,
    next_run_names,
    sampled_candidates,
)
from regmix.search.regression import training_data_from
from regmix.search.regressors import GaussianProcess

MIN_SHARE = 0.01
"""The least share of the new domains a mixture of the round gives them."""


def frozen_blend(
    runs: pd.DataFrame,
    target: str,
    domains: list[str],
    tokens: pd.Series,
    full: pd.Series,
    final_tokens: float,
    sampler: SamplerConfig,
    seed: int,
    source: str = "runs",
) -> pd.Series:
    """The mixture the runs recommend over `domains` (those of the runs still in the corpus;
    `tokens`/`full` their prepared and full train tokens), as the simulation would form it."""
    data, _ = training_data_from(runs, target, source)
    with quiet_convergence():
        model = GaussianProcess(seed=seed).fit(data.weights, data.target)
    rng = np.random.default_rng([seed, 7])
    centre = sharpened_prior(token_prior(full.reindex(domains)).to_numpy(), sampler.temperature)
    caps = domain_caps(tokens.reindex(domains), final_tokens, sampler.max_epochs).to_numpy()
    columns = [data.domains.index(d) for d in domains]
    best = data.weights[np.argsort(data.target)[:8]][:, columns]
    best = best / np.maximum(best.sum(axis=1, keepdims=True), 1e-12)
    config = AcquisitionConfig(candidates=OPTIMUM_CANDIDATES)
    local = sampled_candidates(centre, caps, best, config, sampler, rng)
    candidates = np.zeros((len(local), len(data.domains)))
    candidates[:, columns] = local  # domains gone from the corpus at weight 0
    blend = current_optimum(model, candidates)[columns]
    return pd.Series(blend / blend.sum(), index=domains)


def spread_picks(shares: np.ndarray, n: int) -> np.ndarray:
    """Indices of n rows whose `shares` sit at evenly spaced quantiles (distinct rows)."""
    order = np.argsort(shares, kind="stable")
    quantiles = (np.arange(n) + 0.5) / n
    picks = list(dict.fromkeys(int(order[int(q * len(order))]) for q in quantiles))
    rest = [int(i) for i in order if int(i) not in picks]
    return np.asarray(picks + rest[: n - len(picks)])


def explore_new_domains(
    runs: pd.DataFrame,
    target: str,
    new: list[str],
    n: int,
    stats_path,
    final_tokens: float,
    sampler: SamplerConfig | None = None,
    seed: int = 0,
    round_number: int | None = None,
    source: str = "runs",
) -> pd.DataFrame:
    """The round's n mixtures over the corpus's current train domains (a mixture table)."""
    sampler = sampler or SamplerConfig()
    if n < 1:
        raise RegmixError("--n: must be >= 1")
    stats = read_stats(stats_path)
    tokens, full = train_tokens(stats), full_train_tokens(stats)
    missing = [d for d in new if d not in tokens.index]
    if missing:
        raise RegmixError(f"{stats_path}: no train tokens for new domain(s) {', '.join(missing)}")
    known = [c.removeprefix("weight.") for c in runs.columns if c.startswith("weight.")]
    old = [d for d in known if d in tokens.index and d not in new]
    if not old:
        raise RegmixError(f"{source}: no domain of the runs so far is still in the corpus")
    blend = frozen_blend(runs, target, old, tokens, full, final_tokens, sampler, seed, source)
    reduced = pd.Series([full[old].sum(), *full[new]], index=["(frozen)", *new], dtype=float)
    centre = sharpened_prior(token_prior(reduced).to_numpy(), sampler.temperature)
    caps = domain_caps(tokens.reindex([*old, *new]), final_tokens, sampler.max_epochs)
    rng = np.random.default_rng([seed, round_number or 0])
    draws = drop_small_weights(
        dirichlet_draws(centre, n * sampler.oversample, sampler.strengths(), rng),
        sampler.min_weight,
    )
    weights = np.hstack([draws[:, :1] * blend.to_numpy()[None, :], draws[:, 1:]])
    shares = draws[:, 1:].sum(axis=1)
    usable = within_caps(weights, caps.to_numpy()) & (shares >= MIN_SHARE)
    if usable.sum() < n:
        raise RegmixError(
            f"explore: only {int(usable.sum())} of {n} mixtures give the new domain(s) "
            f"{', '.join(new)} at least {MIN_SHARE:.0%} within the caps; raise "
            "mixtures.max_epochs or lower reuse.runs_per_new_domain"
        )
    weights, shares = weights[usable], shares[usable]
    picked = weights[spread_picks(shares, n)]
    names = next_run_names(runs["run"].tolist(), n)
    table = mixture_table(names, [*old, *new], picked)
    if round_number is not None:
        table.insert(1, ROUND, round_number)
    return table
