import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic_runs import (
    PILE_LOSSES,
    PILE_MISSING,
    PILE_MIXTURES,
    dirichlet_weights,
    runs_table,
    stats_table,
)

from regmix.cli import main
from regmix.errors import RegmixError
from regmix.search.mixtures import SamplerConfig, check_weights, domain_caps
from regmix.search.regression import fit_model
from regmix.search.runs import write_imported_runs
from regmix.search.simulate import SimulationConfig, simulate, write_simulation
from regmix.search.support import Support, nearest_distance, outside_support

DOMAINS = ["a", "b", "c", "d"]
BEST = np.array([0.45, 0.3, 0.2, 0.05])


def bowl(w: np.ndarray) -> np.ndarray:
    """Lowest at BEST, a mixture well inside the runs' support."""
    return 3.0 + 4.0 * ((w - BEST) ** 2).sum(axis=1)


def fitted(tmp_path, losses, weights, model="gp", noise=0.003):
    runs = runs_table(weights, DOMAINS, losses, noise=noise)
    runs.to_parquet(tmp_path / "runs.parquet")
    fit_model(tmp_path / "runs.parquet", "t", model, tmp_path / "model", threads=1)
    return tmp_path / "model"


@pytest.fixture(scope="module")
def bowl_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bowl")
    model = fitted(tmp, {"t": bowl}, dirichlet_weights(150, 4, seed=0))
    stats_table(dict.fromkeys(DOMAINS, 1_000_000)).to_parquet(tmp / "stats.parquet")
    return model, tmp / "stats.parquet"


def small(**changes) -> SimulationConfig:
    return SimulationConfig(**{"candidates": 20_000, "top_k": 50, "bootstrap": 0, **changes})


def tv(a, b) -> float:
    return 0.5 * float(np.abs(np.asarray(a) - np.asarray(b)).sum())


def test_simulation_finds_the_planted_optimum(bowl_model):
    model, stats = bowl_model
    result = simulate(model, stats, 1_000_000, small(), threads=1)
    assert tv(result.optimum, BEST) < 0.08
    assert result.predicted_loss == pytest.approx(3.0, abs=0.02)
    assert result.optimum.sum() == pytest.approx(1.0)


def test_result_does_not_depend_on_the_thread_count(bowl_model):
    model, stats = bowl_model
    one = simulate(model, stats, 1_000_000, small(chunk=4096), threads=1)
    two = simulate(model, stats, 1_000_000, small(chunk=4096), threads=2)
    np.testing.assert_array_equal(one.optimum, two.optimum)


def test_bootstrap_refits_report_how_far_the_optimum_moves(bowl_model):
    model, stats = bowl_model
    result = simulate(model, stats, 1_000_000, small(bootstrap=3), threads=2)
    stability = result.report["stability"]
    assert stability["bootstrap_refits"] == 3
    assert 0 < stability["mean_tv_shift"] <= stability["max_tv_shift"] < 0.2
    assert set(stability["weight_std"]) == set(DOMAINS)


def test_candidates_respect_the_repetition_caps(tmp_path):
    # d lowers the loss most, but at the final budget it may be at most 5 × 10k / 1M = 5%
    model = fitted(tmp_path, {"t": lambda w: 3 - w[:, 3]}, dirichlet_weights(60, 4), "linear")
    tokens = {"a": 1_000_000, "b": 1_000_000, "c": 1_000_000, "d": 10_000}
    stats_table(tokens).to_parquet(tmp_path / "stats.parquet")
    sampler = SamplerConfig(max_epochs=5)
    result = simulate(model, tmp_path / "stats.parquet", 1e6, small(guard=False), sampler, 1)
    caps = domain_caps(pd.Series(tokens), 1e6, 5).to_numpy()
    top = result.top[[f"weight.{d}" for d in DOMAINS]].to_numpy()
    assert (top <= caps + 1e-12).all()
    assert result.optimum[3] == pytest.approx(0.05, abs=0.01)


@pytest.fixture(scope="module")
def rare_model(tmp_path_factory):
    """Runs that never give domain d more than 2%, and a target that d lowers linearly: a
    linear model extrapolates to d-only mixtures the runs say nothing about."""
    tmp = tmp_path_factory.mktemp("rare")
    rng = np.random.default_rng(0)
    weights = np.column_stack([dirichlet_weights(80, 3, seed=1), rng.uniform(0, 0.02, 80)])
    weights /= weights.sum(axis=1, keepdims=True)
    model = fitted(tmp, {"t": lambda w: 3 - 2 * w[:, 3] - 0.3 * w[:, 0]}, weights, "linear")
    stats_table(dict.fromkeys(DOMAINS, 1_000_000)).to_parquet(tmp / "stats.parquet")
    return model, tmp / "stats.parquet", weights[:, 3].max()


def test_without_the_guard_the_extrapolated_optimum_is_reported_as_outside(rare_model):
    model, stats, _ = rare_model
    result = simulate(model, stats, 1e6, small(guard=False), threads=1)
    assert result.optimum[3] > 0.5
    where = result.report["support"]["optimum"]
    assert "d" in where["beyond_runs"] and where["radius_ratio"] > 1
    assert outside_support(result.report)


def test_the_guard_keeps_the_optimum_where_the_runs_are(rare_model):
    model, stats, rare_max = rare_model
    result = simulate(model, stats, 1e6, small(), threads=1)
    assert result.optimum[3] <= rare_max + 1e-9
    assert result.top["inside_support"].all()
    assert not outside_support(result.report)
    unguarded = result.report["support"]["unguarded"]
    assert unguarded["top_k_outside"] == 50 and unguarded["tv_shift"] > 0.5
    assert unguarded["largest_weight"] == {"d": pytest.approx(1.0, abs=0.05)}


def test_nearest_distance_is_the_hellinger_distance_to_the_closest_run():
    runs = dirichlet_weights(30, 4, seed=1)
    points = dirichlet_weights(20, 4, seed=2)
    hellinger = np.sqrt(((np.sqrt(points[:, None]) - np.sqrt(runs[None])) ** 2).sum(-1) / 2)
    np.testing.assert_allclose(nearest_distance(points, runs, block=7), hellinger.min(axis=1))
    own = nearest_distance(runs, runs, exclude_self=True, block=7)
    assert (own > 0).all()


def test_support_contains_the_runs_but_not_a_pure_unexplored_domain():
    runs = dirichlet_weights(30, 4, seed=1)
    runs[:, 3] = np.minimum(runs[:, 3], 0.1)
    runs /= runs.sum(axis=1, keepdims=True)
    support = Support.of_runs(runs, quantile=1.0)
    assert support.contains(runs).all()
    assert not support.contains(np.array([[0.0, 0.0, 0.0, 1.0]]))[0]


def test_a_domain_gone_from_the_corpus_gets_weight_zero_and_one_never_run_stays_out(
    bowl_model, tmp_path
):
    """After the corpus changed: the model's domain d is gone (its runs stay evidence, d a
    feature at 0) and e is new (no run weighed it): the optimum is searched over a, b, c."""
    weights = dirichlet_weights(150, 4, seed=0)
    weights[::3, 3] = 0.0  # as RegMix's sampler zeroes small weights, some runs left d out
    model = fitted(tmp_path, {"t": bowl}, weights / weights.sum(axis=1, keepdims=True))
    stats = tmp_path / "stats.parquet"
    stats_table({"a": 10**6, "b": 10**6, "c": 10**6, "e": 10**6}).to_parquet(stats)
    result = simulate(model, stats, 10**6, small(), threads=1)
    assert result.domains == DOMAINS and result.optimum[3] == 0
    # The bowl's lowest point with d at 0: BEST with d's share spread evenly over a, b, c.
    assert tv(result.optimum, [*(BEST[:3] + BEST[3] / 3), 0]) < 0.08
    stats_table({"e": 10}).to_parquet(stats)
    with pytest.raises(RegmixError, match="none of the model's domains has train tokens"):
        simulate(model, stats, 100, small(), threads=1)


def test_caution_prefers_a_supported_mixture_to_an_extrapolated_promise(bowl_model):
    """Ranked by the prediction alone the top candidates may sit where no run was; with
    caution the optimum lies nearer the runs and its predicted interval is narrower."""
    model, stats = bowl_model
    bold = simulate(model, stats, 1_000_000, small(caution=0.0, guard=False), threads=1)
    careful = simulate(model, stats, 1_000_000, small(caution=2.0, guard=False), threads=1)

    def nearest(result):
        return result.report["support"]["optimum"]["nearest_run"]

    def width(result):
        return (
            result.report["predicted_interval"]["upper"]
            - result.report["predicted_interval"]["lower"]
        )

    assert nearest(careful) <= nearest(bold) and width(careful) <= width(bold)


def test_simulation_config_rejects_a_top_k_larger_than_the_candidates():
    with pytest.raises(RegmixError, match="candidates: must be >= top_k"):
        SimulationConfig(candidates=10, top_k=20)


def test_written_yaml_has_regmix_shape_and_the_report(bowl_model, tmp_path):
    model, stats = bowl_model
    result = simulate(model, stats, 1_000_000, small(), threads=1)
    write_simulation(result, tmp_path / "mixture.yaml", tmp_path / "top.parquet")
    document = yaml.safe_load((tmp_path / "mixture.yaml").read_text())
    assert list(document)[:2] == ["train", "valid"]
    assert sum(document["train"].values()) == pytest.approx(1.0, abs=1e-6)
    assert document["valid"] == dict.fromkeys(DOMAINS, 1.0)
    assert document["target"] == "t" and document["model"] == "gp"
    assert document["predicted_loss"] == pytest.approx(result.predicted_loss, abs=1e-6)
    top = pd.read_parquet(tmp_path / "top.parquet")
    check_weights(top, "top.parquet")
    assert len(top) == 50 and top["score"].is_monotonic_increasing  # ranked by the score
    assert (top["prediction"] <= top["score"]).all()  # the prediction plus caution × std


def test_simulate_command_writes_outputs_and_warns_about_extrapolation(
    rare_model, tmp_path, capsys
):
    model, stats, _ = rare_model
    out, plot = tmp_path / "mixture.yaml", tmp_path / "optimum.png"
    args = ["simulate", "--model", str(model), "--stats", str(stats), "--final-tokens", "1e6"]
    args += ["--candidates", "5000", "--top-k", "20", "--bootstrap", "2", "--no-guard"]
    assert main([*args, "--out", str(out), "--plot", str(plot), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "regmix simulate: predicted t loss" in err
    assert "warning: the optimum lies outside the proxy runs' support" in err
    assert "stability" in yaml.safe_load(out.read_text())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not PILE_MIXTURES.is_file(), reason=PILE_MISSING)
def test_linear_model_on_pile_runs_goes_to_enron_emails_unless_guarded(tmp_path):
    """The issue's case: without caps a ridge fit on RegMix's runs puts nearly everything on
    Enron Emails (no run gave it more than 2.6%); the guard keeps the optimum where runs are."""
    write_imported_runs(PILE_MIXTURES, PILE_LOSSES, tmp_path / "runs.parquet")
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    fit_model(tmp_path / "runs.parquet", "the_pile_pile_cc", "linear", tmp_path / "m", threads=1)
    weights = runs[[c for c in runs.columns if c.startswith("weight.")]]
    tokens = (weights.mean() * 1e9).astype(int)
    stats_table({c.removeprefix("weight."): t for c, t in tokens.items()}).to_parquet(
        tmp_path / "stats.parquet"
    )
    no_caps = SamplerConfig(max_epochs=1e9)
    config = small(candidates=100_000, top_k=100)
    result = simulate(tmp_path / "m", tmp_path / "stats.parquet", 1e9, config, no_caps, 2)
    enron = result.domains.index("the_pile_enron_emails")
    unguarded = result.report["support"]["unguarded"]
    assert unguarded["largest_weight"]["the_pile_enron_emails"] > 0.9
    assert unguarded["predicted_loss"] < runs["loss.the_pile_pile_cc"].min()
    assert result.optimum[enron] <= weights["weight.the_pile_enron_emails"].max()
