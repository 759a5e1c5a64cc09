"""Proposing the next round: from a pool (replay) or from the sampler under the caps."""

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import dirichlet_weights, runs_table, stats_table

from regmix.cli import main
from regmix.errors import RegmixError
from regmix.search.mixtures import WEIGHT, check_weights, mixture_table
from regmix.search.propose import AcquisitionConfig, hellinger, next_run_names, propose

DOMAINS = ["a", "b", "c", "d", "e"]
BEST = np.array([0.5, 0.3, 0.2, 0.0, 0.0])
"""The mixture with the lowest loss of the synthetic target."""


def bowl(weights: np.ndarray) -> np.ndarray:
    """A loss whose minimum is near BEST: the cross-entropy of a target drawn from that blend
    under a model that learned each domain in proportion to its weight."""
    return 1.0 - (BEST * np.log(weights + 0.01)).sum(axis=1)


def first_round(n: int = 24, seed: int = 0) -> pd.DataFrame:
    return runs_table(dirichlet_weights(n, len(DOMAINS), seed), DOMAINS, {"t": bowl}, 0.01, seed)


def pool_table(n: int = 300, seed: int = 9) -> pd.DataFrame:
    table = runs_table(dirichlet_weights(n, len(DOMAINS), seed, 0.7), DOMAINS, {"t": bowl})
    return table.assign(run=[f"pool{i:03d}" for i in range(n)])


def weights(table: pd.DataFrame) -> np.ndarray:
    return table[[WEIGHT + d for d in DOMAINS]].to_numpy()


def test_with_a_pool_it_picks_new_rows_and_keeps_their_names():
    pool = pool_table()
    runs = pool.iloc[:20]
    picked = propose(runs, "t", 8, AcquisitionConfig(), seed=0, round_number=2, pool=pool)
    assert len(picked) == 8 and set(picked["round"]) == {2}
    assert set(picked["run"]) <= set(pool["run"]) and not set(picked["run"]) & set(runs["run"])
    rows = pool.set_index("run").loc[picked["run"], [WEIGHT + d for d in DOMAINS]]
    np.testing.assert_allclose(weights(picked), rows.to_numpy())


@pytest.mark.parametrize("method", ["thompson", "ucb", "greedy"])
def test_an_active_round_lands_nearer_the_optimum_than_random_picks(method):
    pool, runs = pool_table(), first_round()
    config = AcquisitionConfig(method=method)
    picked = propose(runs, "t", 8, config, seed=1, pool=pool)
    fresh = pool[~pool["run"].isin(runs["run"])]
    assert bowl(weights(picked)).mean() < np.quantile(bowl(weights(fresh)), 0.25)


def test_a_round_stays_diverse():
    picked = propose(first_round(), "t", 8, AcquisitionConfig(), seed=2, pool=pool_table())
    rows = weights(picked)
    gaps = [hellinger(rows[i + 1 :], rows[i]).min() for i in range(len(rows) - 1)]
    assert min(gaps) >= AcquisitionConfig().min_distance


def test_without_a_pool_it_samples_within_the_caps_and_continues_the_run_names(tmp_path):
    stats = tmp_path / "stats.parquet"
    stats_table({"a": 1000, "b": 1000, "c": 200, "d": 5000, "e": 5000}).to_parquet(stats)
    runs = first_round().assign(run=[f"run{i:04d}" for i in range(1, 25)])
    picked = propose(
        runs, "t", 6, AcquisitionConfig(), seed=0, round_number=2, stats_path=stats,
        final_tokens=10_000, sampler=None,
    )  # fmt: skip
    assert list(picked["run"]) == [f"run{i:04d}" for i in range(25, 31)]
    check_weights(picked, "proposal")
    caps = np.array([1000, 1000, 200, 5000, 5000]) * 15 / 10_000
    assert (weights(picked) <= np.minimum(caps, 1) + 1e-9).all()


def test_random_proposals_need_no_model_and_are_reproducible():
    pool, runs = pool_table(), first_round()
    config = AcquisitionConfig(method="random")
    first = propose(runs, "t", 5, config, seed=3, pool=pool)
    assert first.equals(propose(runs, "t", 5, config, seed=3, pool=pool))


def test_next_run_names_continue_after_the_highest():
    assert next_run_names(["run0001", "run0007", "optimum"], 3) == ["run0008", "run0009", "run0010"]
    assert next_run_names([], 2) == ["run0001", "run0002"]


def test_bad_acquisition_settings_are_one_line_errors():
    with pytest.raises(RegmixError, match="acquisition.method: 'ei' is not one of"):
        AcquisitionConfig(method="ei")
    with pytest.raises(RegmixError, match="asked for 9 mixtures but only"):
        pool = pool_table(30)
        propose(pool.iloc[:22], "t", 9, AcquisitionConfig(), seed=0, pool=pool)


def test_the_command_writes_a_mixture_table(tmp_path, capsys):
    pool, runs = pool_table(), first_round()
    runs.to_parquet(tmp_path / "runs.parquet")
    mixture_table(list(pool["run"]), DOMAINS, weights(pool)).to_csv(tmp_path / "pool.csv")
    out = tmp_path / "next.parquet"
    args = ["propose", "--runs", str(tmp_path / "runs.parquet"), "--target", "t", "--n", "4"]
    args += ["--pool", str(tmp_path / "pool.csv"), "--round", "2", "--out", str(out)]
    assert main(args) == 0
    table = pd.read_parquet(out)
    assert len(table) == 4 and list(table.columns[:2]) == ["run", "round"]
    assert main([*args[:-2], "--acquisition", '{"method": "ei"}', "--out", str(out)]) == 1
    assert "regmix: error: acquisition.method" in capsys.readouterr().err


def test_a_last_round_starts_with_the_mixture_the_runs_so_far_recommend(tmp_path):
    stats = tmp_path / "stats.parquet"
    stats_table({d: 10_000 for d in DOMAINS}).to_parquet(stats)
    runs = first_round().assign(run=[f"run{i:04d}" for i in range(1, 25)])
    args = dict(stats_path=stats, final_tokens=10_000, round_number=3)
    plain = propose(runs, "t", 4, AcquisitionConfig(), seed=0, **args)
    last = propose(runs, "t", 4, AcquisitionConfig(), seed=0, with_optimum=True, **args)
    optimum = weights(last)[0]
    assert bowl(optimum[None, :])[0] < bowl(weights(runs)).min()  # better than any run so far
    assert not np.allclose(weights(plain)[0], optimum)
    from_pool = propose(
        runs, "t", 3, AcquisitionConfig(), seed=0, pool=pool_table(), with_optimum=True
    )
    assert len(from_pool) == 3
