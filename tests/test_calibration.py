"""Calibrated intervals: each later round's runs check the 95% intervals that the regressor of
the rounds before them gave, and the fitted regressor's intervals are rescaled to match."""

import json

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import dirichlet_weights, runs_table

from regmix.cli import main
from regmix.report.summary import calibration_lines
from regmix.search.calibration import (
    MIN_CHECKS,
    Z_95,
    cross_validated_z,
    interval_checks,
    interval_record,
    interval_scale,
    read_records,
)
from regmix.search.cross_validation import cross_validate, fold_ids, held_out
from regmix.search.mixtures import WEIGHT
from regmix.search.predict import predict_mixtures
from regmix.search.propose import AcquisitionConfig, proposal_model, write_proposal
from regmix.search.regression import fit_model, load_model
from regmix.search.regressors import GaussianProcess, RidgeRegression
from regmix.search.runs import STATUS_OK, parse_target

DOMAINS = ["a", "b", "c", "d"]


def loss(weights: np.ndarray) -> np.ndarray:
    return 2.0 - (np.array([0.5, 0.3, 0.2, 0.0]) * np.log(weights + 0.01)).sum(axis=1)


def pool(n: int = 200) -> pd.DataFrame:
    table = runs_table(dirichlet_weights(n, len(DOMAINS), 7, 0.7), DOMAINS, {"t": loss}, 0.02, 7)
    return table.assign(run=[f"pool{i:03d}" for i in range(n)])


def test_the_factor_puts_the_95th_percentile_of_held_out_errors_on_the_intervals_edge():
    z = np.r_[np.linspace(-3.0, 3.0, 20), 30.0]  # 20 up to |z| 3, one far out
    assert interval_scale(z) == pytest.approx(3.0 / Z_95)  # the 95th percentile is the 20th
    assert interval_scale(z / 3) == pytest.approx(1.0 / Z_95)  # too wide: narrowed
    assert interval_scale(np.ones(MIN_CHECKS - 1)) is None
    assert interval_scale(np.r_[np.ones(MIN_CHECKS - 1), np.nan]) is None
    many = np.random.default_rng(0).standard_normal(4000)
    assert interval_scale(many) == pytest.approx(1.0, abs=0.06)


def test_checks_compare_what_was_measured_with_what_was_recorded():
    runs = pool(40)
    weights = runs[[WEIGHT + d for d in DOMAINS]].to_numpy()
    model = GaussianProcess().fit(weights[:30], runs["loss.t"].to_numpy()[:30])
    record = interval_record(model, list(runs["run"][30:]), weights[30:], 2, 0.5, 7)
    assert list(record["interval_scale"]) == [0.5] * 10 and set(record["checks"]) == {7}
    runs.loc[35, "status"] = "diverged"
    checks = interval_checks(record, runs, parse_target("t", ["t"]))
    assert len(checks) == 9 and "pool035" not in set(checks["run"])
    actual = runs.set_index("run").loc[checks["run"], "loss.t"].to_numpy()
    np.testing.assert_allclose(checks["actual"], actual)
    np.testing.assert_allclose(checks["z"], (np.log(actual) - checks["mean"]) / checks["std"])
    assert (checks["inside_fitted"] == (checks["z"].abs() <= Z_95)).all()
    half = checks["z"].abs() <= Z_95 * 0.5  # recorded with the factor 0.5
    assert (checks["inside"] == half).all()


def rounds_with_records(tmp_path, sizes=(24, 8, 8)):
    """A replay of the workflow's rounds on a pool: each later round is proposed with its
    interval record (calibrated on the records before it), then 'trained' (read from the
    pool). Returns the runs table path and the record paths."""
    table = pool()
    chosen = table.iloc[: sizes[0]].assign(round=1)
    records = []
    for number, size in enumerate(sizes[1:], start=2):
        chosen.to_parquet(tmp_path / "runs.parquet")
        pool_path = tmp_path / "pool.parquet"
        table.to_parquet(pool_path)
        record = tmp_path / f"intervals{number}.parquet"
        picked = write_proposal(
            [tmp_path / "runs.parquet"], "t", size, tmp_path / f"round{number}.parquet",
            AcquisitionConfig(), seed=0, round_number=number, pool_path=pool_path,
            intervals_out=record, checks=records,
        )  # fmt: skip
        records.append(record)
        trained = table.set_index("run").loc[picked["run"]].reset_index().assign(round=number)
        chosen = pd.concat([chosen, trained], ignore_index=True)
    chosen.to_parquet(tmp_path / "runs.parquet")
    return tmp_path / "runs.parquet", records


def test_each_round_records_intervals_calibrated_on_the_rounds_before_it(tmp_path):
    runs_path, records = rounds_with_records(tmp_path)
    second, third = (pd.read_parquet(r) for r in records)
    assert list(second["round"].unique()) == [2] and list(third["round"].unique()) == [3]
    # before any check, the proposer's own cross-validation on round 1 sets the factor
    assert set(second["checks"]) == {0} and set(second["basis"]) == {"cross-validation"}
    runs = pd.read_parquet(runs_path)
    first = runs[runs["round"] == 1]
    weights, target = first[[WEIGHT + d for d in DOMAINS]].to_numpy(), first["loss.t"].to_numpy()
    z = cross_validated_z(proposal_model(weights, target, 0), weights, target, 0)
    assert second["interval_scale"].iloc[0] == pytest.approx(interval_scale(z))
    checks = interval_checks(second, runs, parse_target("t", ["t"]))
    assert set(third["checks"]) == {8} and set(third["basis"]) == {"checks"}
    assert third["interval_scale"].iloc[0] == pytest.approx(interval_scale(checks["z"]))
    # the record's interval is the predictive's, widened or narrowed by that factor
    scale = third["interval_scale"].iloc[0]
    np.testing.assert_allclose(
        np.log(third["upper"] / third["lower"]), 2 * Z_95 * scale * third["std"], rtol=1e-9
    )


def test_fit_calibrates_the_regressor_on_every_check_and_reports_coverage(tmp_path):
    runs_path, records = rounds_with_records(tmp_path)
    metrics = fit_model(runs_path, "t", "gp", tmp_path / "gp", threads=1, checks=records)
    calibration = metrics["calibration"]
    assert calibration["checks"] == 16 and calibration["applied"]
    assert calibration["basis"] == "checks"
    assert set(calibration["rounds"]) == {2, 3}
    assert calibration["rounds"][2]["basis"] == "cross-validation"
    assert calibration["rounds"][3]["checks"] == 8
    runs = pd.read_parquet(runs_path)
    checks = interval_checks(read_records(records), runs, parse_target("t", ["t"]))
    assert calibration["coverage_fitted"] == pytest.approx(checks["inside_fitted"].mean(), 1e-3)
    assert calibration["interval_scale"] == pytest.approx(interval_scale(checks["z"]), 1e-3)
    on_disk = json.loads((tmp_path / "gp" / "metrics.json").read_text())
    assert on_disk["calibration"] == json.loads(json.dumps(calibration))
    # the scale travels with the model: `predict` and `simulate` give calibrated intervals
    model = load_model(tmp_path / "gp")
    assert model.regressor.interval_scale == pytest.approx(calibration["interval_scale"], 1e-3)
    runs[["run", *[WEIGHT + d for d in DOMAINS]]].to_parquet(tmp_path / "x.parquet")
    out = predict_mixtures(tmp_path / "gp", tmp_path / "x.parquet", tmp_path / "p.parquet")
    weights = runs[[WEIGHT + d for d in DOMAINS]].to_numpy()
    width = 2 * Z_95 * model.regressor.latent_std(weights)
    np.testing.assert_allclose(np.log(out["upper"] / out["lower"]), width, rtol=1e-9)


def test_a_gp_proposers_checks_do_not_rescale_another_models_intervals(tmp_path):
    runs_path, records = rounds_with_records(tmp_path)
    metrics = fit_model(runs_path, "t", "ensemble", tmp_path / "e", threads=1, checks=records)
    assert metrics["calibration"]["checks"] == 16 and not metrics["calibration"]["applied"]
    assert load_model(tmp_path / "e").regressor.interval_scale == 1.0
    text = "\n".join(calibration_lines(metrics["calibration"]))
    assert "the checks are of `gp`: this regressor's intervals are as fitted" in text
    linear = fit_model(runs_path, "t", "linear", tmp_path / "l", threads=1, checks=records)
    assert not linear["calibration"]["applied"]
    assert not hasattr(RidgeRegression(), "interval_scale")


def test_the_commands_record_check_and_report(tmp_path, capsys):
    runs_path, records = rounds_with_records(tmp_path)
    out = tmp_path / "model"
    args = ["fit", "--runs", str(runs_path), "--target", "t", "--model", "gp", "--threads", "1"]
    assert main([*args, "--out", str(out), "--checks", *map(str, records)]) == 0
    err = capsys.readouterr().err
    assert "16 later-round runs checked the intervals given for them:" in err
    assert "95% intervals rescaled x" in err and "on the checks" in err
    assert main([*args, "--out", str(tmp_path / "none")]) == 0  # no checks: cross-validation
    assert "no interval checks yet" in capsys.readouterr().err
    calibration = json.loads((tmp_path / "none" / "metrics.json").read_text())["calibration"]
    assert calibration["checks"] == 0 and calibration["basis"] == "cross-validation"
    assert calibration["applied"] and calibration["interval_scale"] > 0


def test_the_summary_says_how_often_the_intervals_held():
    report = {
        "level": 0.95,
        "checks": 31,
        "coverage_fitted": 0.8065,
        "coverage": 0.9355,
        "interval_scale": 1.42,
        "model": "gp",
        "applied": True,
        "basis": "checks",
        "rounds": {
            "2": {
                "checks": 16,
                "coverage_fitted": 0.75,
                "coverage": 0.75,
                "interval_scale": 1.0,
                "basis": "as fitted",
            },
            "3": {
                "checks": 15,
                "coverage_fitted": 0.8667,
                "coverage": 1.0,
                "interval_scale": 1.3,
                "basis": "checks",
            },
        },
    }
    text = "\n".join(calibration_lines(report))
    assert "| 2 | 16 | 75% | 75% | x1.00 | as fitted |" in text
    assert "| 3 | 15 | 87% | 100% | x1.30 | checks |" in text
    assert "| all | 31 | 81% | 94% | | |" in text
    assert "the fitted ones x1.42" in text and "every check" in text
    report.update(checks=0, rounds={}, basis="cross-validation", interval_scale=2.5)
    text = "\n".join(calibration_lines(report))
    assert "nothing has checked them" in text
    assert "x2.50" in text and "cross-validation, before any check" in text


def test_only_trained_runs_count_as_checks():
    runs = pool(30)
    weights = runs[[WEIGHT + d for d in DOMAINS]].to_numpy()
    model = GaussianProcess().fit(weights[:20], runs["loss.t"].to_numpy()[:20])
    record = interval_record(model, ["later1", "later2"], weights[:2], 2, 1.0, 0)
    later = runs.iloc[:1].assign(run="later1", status=STATUS_OK)
    checks = interval_checks(record, later, parse_target("t", ["t"]))
    assert list(checks["run"]) == ["later1"]


def test_cross_validation_widens_intervals_a_few_runs_are_too_sure_of():
    """Fitted on a few runs, the marginal likelihood is sure of itself; each run predicted by
    a refit on the others says by how much, and the rescaled intervals hold more new runs."""
    runs = pool(200)
    weights = runs[[WEIGHT + d for d in DOMAINS]].to_numpy()
    target = runs["loss.t"].to_numpy()
    model = proposal_model(weights[:16], target[:16], 0)
    z = cross_validated_z(model, weights[:16], target[:16], 0)
    assert len(z) == 16 and np.isfinite(z).all()
    mean = model.latent_mean(weights[16:])
    std = model.latent_std(weights[16:], calibrated=False)
    new = np.abs(np.log(target[16:]) - mean) / std
    raw, rescaled = np.mean(new <= Z_95), np.mean(new <= Z_95 * interval_scale(z))
    print(f"16 runs: {raw:.0%} of 184 new runs inside as fitted, {rescaled:.0%} rescaled")
    assert abs(rescaled - 0.95) < abs(raw - 0.95)
    assert len(cross_validated_z(model, weights[:9], target[:9], 0)) == 0  # too few to split


def test_fit_calibrates_on_the_refits_of_its_own_cross_validation():
    """`regmix fit` refits once per fold for its CV metrics and its intervals' factor alike: the
    standardised errors are those of cross-validation on the same folds."""
    runs = pool(30)
    weights = runs[[WEIGHT + d for d in DOMAINS]].to_numpy()
    target = runs["loss.t"].to_numpy()
    model = proposal_model(weights, target, 0)
    held = held_out(model, weights, target, fold_ids(len(target), 5, 0))
    np.testing.assert_allclose(held.z, cross_validated_z(model, weights, target, 0))
    np.testing.assert_allclose(
        held.predictions, cross_validate(model, weights, target, fold_ids(len(target), 5, 0))
    )
    assert len(held_out(RidgeRegression(), weights, target, fold_ids(30, 5, 0)).z) == 0


def test_records_written_before_basis_read_with_the_basis_their_checks_imply(tmp_path):
    runs = pool(30)
    weights = runs[[WEIGHT + d for d in DOMAINS]].to_numpy()
    model = GaussianProcess().fit(weights[:20], runs["loss.t"].to_numpy()[:20])
    old = [tmp_path / "round2.parquet", tmp_path / "round3.parquet"]
    for path, checks in zip(old, (0, MIN_CHECKS), strict=True):
        record = interval_record(model, ["r1", "r2"], weights[:2], 2, 1.0, checks)
        record.drop(columns="basis").to_parquet(path)
    assert list(read_records(old)["basis"]) == ["as fitted"] * 2 + ["checks"] * 2


@pytest.mark.workflow
def test_the_workflow_calibrates_round_2_on_cross_validation_and_round_3_on_its_checks(tmp_path):
    """The tiny config with a first round large enough to cross-validate (10 runs), run as a
    user runs it (merged over the default config) up to the fitted GP."""
    import yaml
    from workflow import TINY, snakemake

    config = yaml.safe_load(TINY.read_text())
    config["mixtures"]["rounds"] = [10, 5, 5]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    target = "results/regression/gp/metrics.json"
    result = snakemake(work, target, config=tmp_path / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    second, third = (
        pd.read_parquet(work / f"results/mixtures/intervals/round{r}.parquet") for r in (2, 3)
    )
    assert set(second["basis"]) == {"cross-validation"} and set(second["checks"]) == {0}
    assert set(third["basis"]) == {"checks"} and set(third["checks"]) == {5}
    calibration = json.loads((work / target).read_text())["calibration"]
    assert calibration["checks"] == 10 and calibration["basis"] == "checks"
    assert calibration["applied"]
    assert calibration["rounds"]["2"]["basis"] == "cross-validation"  # JSON keys: strings
    assert calibration["rounds"]["3"]["basis"] == "checks"
