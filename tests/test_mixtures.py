import numpy as np
import pandas as pd
import pytest

from regmix.cli import main
from regmix.errors import RegmixError
from regmix.files import read_yaml
from regmix.search.mixtures import (
    SamplerConfig,
    check_weights,
    domain_caps,
    drop_small_weights,
    final_mixture,
    mixture_domains,
    pick_distinct,
    sample_mixtures,
    token_prior,
    write_final_mixture,
    write_proxy_mixtures,
)

TOKENS = pd.Series({"big": 1_000_000, "mid": 200_000, "small": 20_000, "tiny": 5_000})


def test_prior_is_the_train_token_share():
    prior = token_prior(TOKENS)
    assert prior["big"] == pytest.approx(1_000_000 / 1_225_000)
    assert prior.sum() == pytest.approx(1)


def test_caps_limit_repetition_at_the_final_budget():
    caps = domain_caps(TOKENS, final_tokens=1_000_000, max_epochs=4)
    assert caps["tiny"] == pytest.approx(4 * 5_000 / 1_000_000)
    assert caps["big"] == 1.0


def test_infeasible_caps_name_the_domains_and_the_shortfall():
    expected = r"caps sum to 0\.245 < 1.*tiny ≤ 0\.001.*max_epochs ≥ 4\.08"
    with pytest.raises(RegmixError, match=expected):
        domain_caps(TOKENS, final_tokens=5_000_000, max_epochs=1)


def test_sampled_mixtures_are_valid_distinct_and_within_caps():
    prior = token_prior(TOKENS)
    caps = domain_caps(TOKENS, final_tokens=2_000_000, max_epochs=15)
    config = SamplerConfig()
    weights = sample_mixtures(prior, caps, 200, config, seed=0)
    assert weights.shape == (200, 4)
    np.testing.assert_allclose(weights.sum(axis=1), 1)
    assert (weights <= caps.to_numpy() + 1e-12).all()
    assert ((weights == 0) | (weights >= config.min_weight * 0.99)).all()
    distances = np.abs(weights[:, None, :] - weights[None, :, :]).sum(-1)
    assert distances[np.triu_indices(200, 1)].min() >= config.min_distance


def test_sampling_is_seeded():
    prior, caps = token_prior(TOKENS), domain_caps(TOKENS, 2_000_000, 15)
    a = sample_mixtures(prior, caps, 20, SamplerConfig(), seed=1)
    b = sample_mixtures(prior, caps, 20, SamplerConfig(), seed=1)
    c = sample_mixtures(prior, caps, 20, SamplerConfig(), seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_low_strengths_explore_far_from_the_prior():
    prior, caps = token_prior(TOKENS), domain_caps(TOKENS, 2_000_000, 15)
    weights = sample_mixtures(prior, caps, 300, SamplerConfig(), seed=0)
    # RegMix's wide strength range yields both near-one-hot and near-prior mixtures.
    assert weights.max(axis=1).max() > 0.95
    assert np.abs(weights - prior.to_numpy()).sum(axis=1).min() < 0.3


def test_too_few_feasible_mixtures_is_an_error():
    prior, caps = token_prior(TOKENS), domain_caps(TOKENS, 2_000_000, 15)
    with pytest.raises(RegmixError, match="only .* of 500 requested"):
        sample_mixtures(prior, caps, 500, SamplerConfig(oversample=1, min_distance=0.5), seed=0)


def test_small_weights_are_zeroed_and_rows_renormalised():
    out = drop_small_weights(np.array([[0.5, 0.4999, 0.0001]]), 2e-4)
    np.testing.assert_allclose(out, [[0.5 / 0.9999, 0.4999 / 0.9999, 0.0]])


def test_pick_distinct_skips_near_duplicates():
    rows = np.array([[1.0, 0.0], [0.9999, 0.0001], [0.5, 0.5]])
    assert pick_distinct(rows, 3, 1e-3).tolist() == [0, 2]


def test_weights_not_summing_to_one_are_rejected():
    table = pd.DataFrame({"run": ["a"], "weight.x": [0.5], "weight.y": [0.2]})
    with pytest.raises(RegmixError, match="run a sum to 0.7000"):
        check_weights(table, "runs.parquet")


def test_write_proxy_mixtures_writes_table_and_regmix_yamls(data_dir, tmp_path):
    table = write_proxy_mixtures(
        data_dir / "stats.parquet",
        8,
        200_000,
        SamplerConfig(),
        42,
        tmp_path / "proxy.parquet",
        tmp_path / "yaml",
    )
    assert list(table["run"]) == [f"run{i:04d}" for i in range(1, 9)]
    assert "target" not in mixture_domains(table)  # valid-only domains are not trainable
    check_weights(pd.read_parquet(tmp_path / "proxy.parquet"), "proxy.parquet")
    run = read_yaml(tmp_path / "yaml" / "run0003.yaml")
    assert set(table["round"]) == {1}
    expected = {
        c.removeprefix("weight."): v for c, v in table.iloc[2].drop(["run", "round"]).items()
    }
    assert run["train"] == pytest.approx(expected, abs=1e-7)
    assert set(run["valid"]) >= {"target", "web"}
    assert sum(run["train"].values()) == pytest.approx(1, abs=1e-6)


def test_final_mixtures_hold_the_optimum_baselines_and_heldout_draws(
    data_dir, corpus_dir, tmp_path
):
    optimum = tmp_path / "mixture.yaml"
    optimum.write_text("train:\n  legal: 0.5\n  forum: 0.25\n  poetry: 0.25\npredicted_loss: 2.0\n")
    sources = dict(
        stats_path=data_dir / "stats.parquet",
        final_tokens=200_000,
        max_epochs=15,
        optimum_path=optimum,
        planted_path=corpus_dir / "planted.yaml",
        heldout_seed=7,
    )
    names = ["regmix", "prior", "uniform", "planted", "heldout01", "heldout02", "heldout03"]
    tables = [write_final_mixture(n, tmp_path / f"{n}.parquet", **sources) for n in names]
    table = pd.concat(tables, ignore_index=True)
    assert list(table["run"]) == names
    check_weights(table, "final mixtures")
    rows = table.set_index("run")
    assert rows.loc["regmix", "weight.legal"] == pytest.approx(0.5)
    assert rows.loc["regmix", "weight.web"] == 0
    assert rows.loc["uniform"].nunique() == 1
    stats = pd.read_parquet(data_dir / "stats.parquet")
    web = stats.query("split == 'train' and domain == 'web'")["tokens"].item()
    assert rows.loc["prior", "weight.web"] == pytest.approx(
        web / stats.query("split == 'train'")["tokens"].sum()
    )
    assert rows.loc["planted", "weight.poetry"] == pytest.approx(0.3)
    heldout = rows.loc[["heldout01", "heldout02", "heldout03"]].to_numpy()
    assert len({tuple(np.round(r, 9)) for r in heldout}) == 3  # three different draws


def test_a_heldout_mixture_does_not_depend_on_how_many_there_are(data_dir, tmp_path):
    """heldout02 stays the same when a third is added: adding held-out models re-trains none."""
    sources = dict(
        stats_path=data_dir / "stats.parquet", final_tokens=200_000, max_epochs=15, heldout_seed=3
    )
    first = final_mixture("heldout02", **sources)
    assert final_mixture("heldout02", **sources).equals(first)
    assert not final_mixture("heldout03", **sources).equals(first)


def test_every_final_mixture_checks_that_the_caps_can_be_met(data_dir, tmp_path):
    with pytest.raises(RegmixError, match="needs max_epochs"):
        final_mixture("uniform", data_dir / "stats.parquet", final_tokens=1e9, max_epochs=15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target: target\n", "expected a 'weights' mapping"),
        ("weights: [legal, forum]\n", "expected a 'weights' mapping"),
        ("- legal\n", "expected a 'weights' mapping"),
        ("weights:\n  legal: lots\n", "weights must be numbers"),
    ],
)
def test_a_planted_blend_without_weights_is_a_one_line_error(
    text, message, data_dir, tmp_path, capsys
):
    optimum, planted = tmp_path / "mixture.yaml", tmp_path / "planted.yaml"
    optimum.write_text("train:\n  legal: 0.5\n  forum: 0.5\n")
    planted.write_text(text)
    args = ["final-mixtures", "--name", "planted", "--stats", str(data_dir / "stats.parquet")]
    args += ["--optimum", str(optimum), "--planted", str(planted), "--final-tokens", "200000"]
    assert main([*args, "--out", str(tmp_path / "final.parquet")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"regmix: error: {planted}: {message}")
    assert err.count("\n") == 1


def test_an_optimum_naming_an_unknown_domain_is_rejected(data_dir, tmp_path):
    optimum = tmp_path / "mixture.yaml"
    optimum.write_text("train:\n  legal: 0.5\n  klingon: 0.5\n")
    with pytest.raises(RegmixError, match="mixture.yaml: unknown training domain.*klingon"):
        final_mixture("regmix", data_dir / "stats.parquet", 200_000, 15, optimum_path=optimum)
