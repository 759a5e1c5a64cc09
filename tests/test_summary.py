"""What the summary says about the recommended mixture: how sure, and where it stands."""

import json

import numpy as np
import pandas as pd
import pytest

from regmix.report.summary import optimum_check, optimum_lines, summarize_final


def optimum(radius_ratio: float, beyond: dict | None = None) -> dict:
    """A mixture.yaml document as `regmix simulate` writes it, reduced to what is read."""
    return {
        "predicted_loss": 1.60,
        "predicted_interval": {"lower": 1.50, "upper": 1.72, "method": "posterior"},
        "best_run_loss": 1.66,
        "support": {
            "optimum": {"radius_ratio": radius_ratio, "beyond_runs": beyond or {}},
        },
    }


@pytest.fixture
def proxy(tmp_path):
    losses = pd.DataFrame(
        {
            "run": "regmix",
            "step": [40, 40, 80, 80],
            "tokens": [1, 1, 2, 2],
            "domain": ["target", "web", "target", "web"],
            "loss": [2.0, 3.0, 1.65, 2.5],
        }
    )
    losses.to_parquet(tmp_path / "losses.parquet")
    return tmp_path


def test_a_supported_optimum_with_its_proxy_reads_as_such(proxy):
    check = optimum_check(optimum(0.4), "target", proxy)
    assert check.actual == pytest.approx(1.65) and check.within_interval
    text = "\n".join(optimum_lines(check))
    assert "95% interval 1.5000 … 1.7200" in text
    assert "inside what the proxy runs cover" in text
    assert "below every run" in text  # 1.60 predicted, best run 1.66
    assert "measured 1.6500 (+0.0500 from the prediction; inside the interval)" in text


def test_an_optimum_outside_the_runs_is_called_an_extrapolation_in_words():
    check = optimum_check(optimum(1.8, {"poetry": [0.4, 0.3]}), "target", None)
    text = "\n".join(optimum_lines(check))
    assert "outside what the proxy runs cover (1.8x the support radius; more poetry" in text
    assert "its predicted loss is an extrapolation" in text
    assert check.actual is None and "trained as a proxy" not in text


def test_a_proxy_outside_the_interval_is_flagged(proxy):
    document = optimum(0.4)
    document["predicted_interval"] = {"lower": 1.40, "upper": 1.55, "method": "posterior"}
    text = "\n".join(optimum_lines(optimum_check(document, "target", proxy)))
    assert "**outside** the interval" in text


def test_the_final_models_table_gives_intervals_and_marks_extrapolations(tmp_path):
    runs = pd.DataFrame(
        {
            "run": ["regmix", "prior", "heldout01"],
            "weight.web": [0.6, 0.5, 1.0],
            "weight.code": [0.4, 0.5, 0.0],
            "loss.web": [2.0, 2.2, 3.0],
            "status": "ok",
        }
    )
    runs.to_parquet(tmp_path / "runs.parquet")
    predictions = pd.DataFrame(
        {
            "run": ["regmix", "prior", "heldout01"],
            "prediction": [2.1, 2.3, 2.5],
            "lower": [1.9, 2.1, 2.0],
            "upper": [2.3, 2.5, 3.1],
            "inside_support": [True, True, False],
        }
    )
    predictions.to_parquet(tmp_path / "predictions.parquet")
    summarize_final(
        tmp_path / "runs.parquet",
        tmp_path / "predictions.parquet",
        "web",
        tmp_path / "summary.parquet",
        tmp_path / "summary.md",
    )
    text = (tmp_path / "summary.md").read_text()
    assert "| `regmix` | regmix | 2.0000 | 2.1000 [1.90 … 2.30] |" in text
    assert "| `heldout01` | heldout | 3.0000 | 2.5000 [2.00 … 3.10] *extrapolated* |" in text
    table = pd.read_parquet(tmp_path / "summary.parquet").set_index("run")
    assert not table.at["heldout01", "predicted_inside_support"]


def _eval_folder(root, model: str, correct: list[int]) -> str:
    folder = root / model / "eval"
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"task": "cont", "doc_id": i, "acc": float(c), "acc_norm": float(c)})
        for i, c in enumerate(correct)
    ]
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder / "samples.jsonl")


def test_downstream_section_gives_scores_paired_intervals_and_rank_correlation(tmp_path):
    from regmix.report.downstream import downstream_lines, read_downstream

    rng = np.random.default_rng(0)
    base = rng.random(300) < 0.4
    answers = {
        "regmix": base | (rng.random(300) < 0.4),  # right wherever the baselines are, and more
        "prior": base,
        "uniform": base & (rng.random(300) < 0.8),
        "heldout01": base | (rng.random(300) < 0.2),
    }
    rows, samples = [], []
    for model, correct in answers.items():
        samples.append(_eval_folder(tmp_path, model, correct.astype(int).tolist()))
        acc = correct.mean()
        stderr = correct.std(ddof=1) / np.sqrt(len(correct))
        rows += [
            {"model": model, "task": "cont", "metric": m, "value": acc, "stderr": stderr}
            for m in ("acc", "acc_norm")
        ]
    table = pd.DataFrame(rows).assign(samples=300, group="cont")
    table.to_parquet(tmp_path / "downstream.parquet")
    losses = {"regmix": 1.0, "heldout01": 1.1, "prior": 1.2, "uniform": 1.3}
    summary = pd.DataFrame({"run": list(losses), "target_loss": list(losses.values())})
    report = read_downstream(tmp_path / "downstream.parquet", samples, summary)
    comparisons = report.comparisons.set_index("baseline")
    assert list(comparisons.index) == ["prior", "uniform"]
    assert comparisons.loc["prior", "lower"] > 0 and comparisons.loc["prior", "p_better"] == 1
    assert comparisons.loc["prior", "difference"] == pytest.approx(
        answers["regmix"].mean() - answers["prior"].mean()
    )
    assert report.spearman == pytest.approx(-1.0)
    text = "\n".join(downstream_lines(report))
    assert "| `regmix` | " in text and "± " in text and "P(regmix better)" in text
    assert "Spearman(target loss, downstream average) over 4 final models: -1.000" in text


def test_transfer_is_ranked_overall_in_the_best_quarter_and_by_regret(tmp_path):
    names = ["regmix", "prior", "uniform", *(f"heldout{i:02d}" for i in range(1, 7))]
    actual = [1.0, 1.5, 1.4, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0]
    predicted = [1.1, 1.6, 1.5, 2.3, 2.1, 2.5, 2.7, 2.9, 3.1]  # heldout01/02 swapped
    runs = pd.DataFrame(
        {"run": names, "weight.web": 0.5, "weight.code": 0.5, "loss.web": actual, "status": "ok"}
    )
    runs.to_parquet(tmp_path / "runs.parquet")
    pd.DataFrame({"run": names, "prediction": predicted}).to_parquet(tmp_path / "p.parquet")
    result = summarize_final(
        tmp_path / "runs.parquet",
        tmp_path / "p.parquet",
        "web",
        tmp_path / "summary.parquet",
        tmp_path / "summary.md",
    )
    held = result.ranking["heldout"]
    assert held["spearman"] == pytest.approx(1 - 6 * 2 / (6 * 35))
    assert held["regret"] == pytest.approx(0.2)  # heldout02 predicted best, 0.2 worse
    assert held["spearman_top_quarter"] is None  # two of six: too few to rank
    assert result.ranking["all"]["regret"] == 0
    text = (tmp_path / "summary.md").read_text()
    assert (
        "  - held-out mixtures: Spearman 0.943, in the best quarter n/a; the one predicted " in text
    )
    assert "best is 0.2000 worse than the best" in text
    assert "  - all final models: Spearman 0.983, in the best quarter 1.000; " in text
