import numpy as np
import pandas as pd
import pytest
from synthetic_runs import PILE_LOSSES, PILE_MISSING, PILE_MIXTURES, dirichlet_weights, runs_table

from regmix.cli import main
from regmix.errors import RegmixError
from regmix.search.mixtures import WEIGHT, weight_columns
from regmix.search.runs import (
    LOSS,
    STATUS_DIVERGED,
    STATUS_MISSING,
    STATUS_OK,
    import_regmix_runs,
    loss_domains,
    parse_target,
    read_runs,
    usable_runs,
)


def write_regmix_csvs(tmp_path, losses_rows=None):
    mixtures = pd.DataFrame(
        {
            "index": [1, 2, 3],
            "train_web": [0.501, 0.2, 0.0],
            "train_code": [0.5, 0.8, 0.999],
        }
    )
    losses = pd.DataFrame(
        losses_rows
        or {
            "index": [1, 2],
            "metric/web_val_loss": [3.0, np.nan],
            "metric/code_val_loss": [2.0, 2.5],
        }
    )
    mixtures.to_csv(tmp_path / "mix.csv", index=False)
    losses.to_csv(tmp_path / "loss.csv", index=False)
    return tmp_path / "mix.csv", tmp_path / "loss.csv"


def test_regmix_csvs_import_with_renamed_columns_renormalised_weights_and_statuses(tmp_path):
    runs = import_regmix_runs(*write_regmix_csvs(tmp_path))
    assert list(runs.columns) == [
        "run",
        "weight.web",
        "weight.code",
        "loss.web",
        "loss.code",
        "status",
    ]
    assert runs["run"].tolist() == ["1", "2", "3"]
    np.testing.assert_allclose(runs[weight_columns(runs)].sum(axis=1), 1.0, atol=1e-12)
    assert runs["weight.web"].iloc[0] == pytest.approx(0.501 / 1.001)
    assert runs["status"].tolist() == [STATUS_OK, STATUS_DIVERGED, STATUS_MISSING]


def test_losses_without_a_mixture_are_an_error_naming_the_index(tmp_path):
    rows = {"index": [1, 7], "metric/web_val_loss": [3.0, 3.1], "metric/code_val_loss": [2, 2]}
    with pytest.raises(RegmixError, match=r"loss\.csv: 1 index value\(s\) have no mixture.*7"):
        import_regmix_runs(*write_regmix_csvs(tmp_path, rows))


def test_duplicate_regmix_index_is_an_error(tmp_path):
    rows = {"index": [1, 1], "metric/web_val_loss": [3.0, 3.1]}
    with pytest.raises(RegmixError, match="index 1 appears more than once"):
        import_regmix_runs(*write_regmix_csvs(tmp_path, rows))


@pytest.mark.skipif(not PILE_MIXTURES.is_file(), reason=PILE_MISSING)
def test_pile_runs_import_as_512_ok_runs_with_the_pile_domain_names():
    runs = import_regmix_runs(PILE_MIXTURES, PILE_LOSSES)
    assert len(runs) == 512
    assert (runs["status"] == STATUS_OK).all()
    assert len(weight_columns(runs)) == 17
    assert "the_pile_pile_cc" in loss_domains(runs)
    assert len(loss_domains(runs)) == 13
    np.testing.assert_allclose(runs[weight_columns(runs)].sum(axis=1), 1.0, atol=1e-12)


def test_import_runs_command_writes_the_table_and_says_it_renormalised(tmp_path, capsys):
    mixtures, losses = write_regmix_csvs(tmp_path)
    out = tmp_path / "runs.parquet"
    assert (
        main(
            ["import-runs", "--mixtures", str(mixtures), "--losses", str(losses), "--out", str(out)]
        )
        == 0
    )
    assert "renormalised" in capsys.readouterr().err
    assert len(read_runs(out)) == 3


def test_import_runs_command_reports_a_missing_file_in_one_line(tmp_path, capsys):
    args = ["import-runs", "--mixtures", str(tmp_path / "nope.csv"), "--losses", "x.csv"]
    assert main([*args, "--out", str(tmp_path / "r.parquet")]) == 1
    assert (
        capsys.readouterr().err.strip() == f"regmix: error: {tmp_path / 'nope.csv'}: no such file"
    )


def small_runs(n=6):
    return runs_table(dirichlet_weights(n, 2), ["web", "code"], {"web": lambda w: 3 - w[:, 0]})


def test_runs_table_whose_weights_do_not_sum_to_one_is_rejected(tmp_path):
    runs = small_runs()
    runs.loc[2, WEIGHT + "web"] += 0.05
    runs.to_parquet(tmp_path / "runs.parquet")
    with pytest.raises(RegmixError, match=r"runs\.parquet: weights of run run0002 sum to 1\.05"):
        read_runs(tmp_path / "runs.parquet")


def test_runs_table_with_duplicate_runs_is_rejected(tmp_path):
    runs = small_runs()
    runs.loc[1, "run"] = "run0000"
    runs.to_parquet(tmp_path / "runs.parquet")
    with pytest.raises(RegmixError, match="run 'run0000' appears more than once"):
        read_runs(tmp_path / "runs.parquet")


def test_usable_runs_keep_ok_and_count_the_rest_by_status():
    runs = small_runs()
    runs.loc[[0, 3], "status"] = STATUS_DIVERGED
    usable, excluded = usable_runs(runs)
    assert len(usable) == 4
    assert dict(excluded) == {STATUS_DIVERGED: 2}


DOMAINS = ["pile_cc", "github", "arxiv"]


def test_target_domain_matches_its_loss_column():
    assert parse_target("pile_cc", DOMAINS).weights == {"pile_cc": 1.0}
    assert parse_target("loss.pile_cc", DOMAINS).weights == {"pile_cc": 1.0}


def test_target_mean_weights_every_loss_domain_equally():
    weights = parse_target("mean", DOMAINS).weights
    assert weights == pytest.approx({d: 1 / 3 for d in DOMAINS})


def test_weighted_target_list_is_parsed_and_computed():
    target = parse_target("pile_cc:0.75, github:0.25", DOMAINS)
    assert target.weights == {"pile_cc": 0.75, "github": 0.25}
    runs = pd.DataFrame({"run": ["a"], LOSS + "pile_cc": [4.0], LOSS + "github": [2.0]})
    assert target.values(runs) == pytest.approx([3.5])


def test_unknown_target_domain_names_the_choices_and_a_close_match():
    with pytest.raises(RegmixError, match=r"no loss column loss\.pilecc.*did you mean pile_cc"):
        parse_target("pilecc", DOMAINS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pile_cc:x", "weight 'x' of pile_cc is not a number"),
        ("pile_cc:-1", "weight of pile_cc must be a number > 0"),
        ("pile_cc:1,pile_cc:2", "pile_cc appears more than once"),
    ],
)
def test_malformed_weighted_targets_are_rejected(text, message):
    with pytest.raises(RegmixError, match=message):
        parse_target(text, DOMAINS)


def test_nan_target_loss_in_an_ok_run_is_an_error_naming_the_run():
    runs = pd.DataFrame({"run": ["a", "b"], LOSS + "pile_cc": [4.0, np.nan]})
    with pytest.raises(RegmixError, match=r"run b has status 'ok' but loss\.pile_cc is nan"):
        parse_target("pile_cc", DOMAINS).values(runs)
