"""`regmix export-mixture`: each format read back the way its training stack reads it.

Megatron-LM and OLMo-core are not installed here (both pull a GPU stack), so the tests mirror
the few lines of theirs that read a mixture, each citing the file and function it follows
(NVIDIA/Megatron-LM at d98e8a6, allenai/OLMo-core at fa6c501); `benchmarks/trainer_stacks.py`
checks the mirrors against the real packages. `datasets` is real.
"""

from __future__ import annotations

import math
import re
import shlex
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic_runs import dirichlet_weights, runs_table, stats_table

from regmix.cli import main
from regmix.errors import RegmixError
from regmix.search.mixture_formats import (
    ExportOptions,
    Mixture,
    PrefixOptions,
    export_mixture,
    read_mixture,
    unit_shares,
)
from regmix.search.mixtures import SamplerConfig, mixture_table, weights_from_yaml
from regmix.search.regression import fit_model
from regmix.search.simulate import SimulationConfig, simulate, write_simulation

DOMAINS = ["web", "code", "books", "math", "wiki"]
TEMPLATE = "/data/{domain}_text_document"


def mixture(weights: dict[str, float], max_epochs: float | None = None) -> Mixture:
    series = pd.Series(weights, dtype=float)
    return Mixture(series / series.sum(), list(series.index), max_epochs, "test")


def export(m: Mixture, fmt: str, **options) -> str:
    return export_mixture(m, ExportOptions(fmt, **options)).text


# --- Megatron-LM, mirrored -------------------------------------------------------------------


def megatron_blend(tokens: list[str]) -> tuple[list[str], list[float] | None]:
    """Mirrors megatron/core/datasets/utils.py `get_blend_from_list`: an odd-length list is
    prefixes alone; an even-length one is weight/prefix pairs when every odd position parses
    with float(), else prefixes alone too (weights then come from the datasets' sizes).
    Prefixes are stripped. A list mixing numbers and non-numbers there fails an assert, which
    (one `map` iterator serves `any` and then `all`) checks only the items after the first
    non-number."""
    if len(tokens) % 2 == 1:
        return [t.strip() for t in tokens], None
    weights: list[float | None] = []
    for raw in tokens[0::2]:
        try:
            weights.append(float(raw))
        except ValueError:
            weights.append(None)
    if None in weights:
        assert all(w is None for w in weights[weights.index(None) + 1 :])
        return [t.strip() for t in tokens], None
    return [t.strip() for t in tokens[1::2]], weights


def megatron_normalize(weights: list[float]) -> list[float]:
    """Mirrors megatron/core/datasets/utils.py `normalize`: float64 array divided by its sum."""
    w = np.array(weights, dtype=np.float64)
    return (w / w.sum()).tolist()


def megatron_samples(weights: list[float], size: int) -> list[int]:
    """Mirrors blended_megatron_dataset_builder.py `_get_size_per_split_per_dataset` for one
    split and no surplus, with its check that the weights are normalised."""
    assert np.isclose(sum(weights), 1.0)
    return [math.ceil(size * w) for w in weights]


def megatron_reads(text: str) -> tuple[list[str], list[float]]:
    """--data-path as the shell splits it and --data-args-path as `f.read().split()`
    (megatron/training/utils/common_utils.py `get_blend_and_blend_per_split`) must agree; the
    builder normalises the weights and BlendedDataset.__init__ asserts each is > 0 and that
    there is one per prefix."""
    from_file = megatron_blend(text.split())
    assert megatron_blend(shlex.split(text)) == from_file
    prefixes, weights = from_file
    assert weights is not None, "read as prefixes alone: the weights were lost"
    assert len(prefixes) == len(weights) and all(w > 0 for w in weights)
    return prefixes, megatron_normalize(weights)


def test_megatron_reads_back_the_same_normalised_weights():
    raw = dirichlet_weights(1, len(DOMAINS), seed=3)[0]
    raw[3] = 0.0  # a domain the optimum does not use
    m = mixture(dict(zip(DOMAINS, raw, strict=True)))
    text = export(m, "megatron", prefixes=PrefixOptions(template=TEMPLATE))
    prefixes, weights = megatron_reads(text)
    used = [d for d in DOMAINS if d != "math"]
    assert prefixes == [TEMPLATE.format(domain=d) for d in used]
    # Megatron's weights are the shares we wrote, to the last bit or two of its division...
    written = unit_shares(m.weights)
    assert [float(t) for t in text.split()[0::2]] == written.tolist()  # float() reads them back
    np.testing.assert_allclose(weights, written, rtol=1e-15, atol=0)
    # ...and the mixture's own shares, to the 12 digits written.
    expected = (m.weights[used] / m.weights[used].sum()).to_numpy()
    np.testing.assert_allclose(
        weights, expected, rtol=0, atol=1e-11
    )  # 12 digits; the largest takes the rest's rounding
    # And a 10^9-sample split asks each dataset for the samples the mixture means.
    size = 10**9
    wanted = [math.ceil(size * w) for w in expected]
    got = megatron_samples(weights, size)
    assert max(abs(a - b) for a, b in zip(got, wanted, strict=True)) <= 1


def test_megatron_reads_a_single_domain_as_a_weighted_pair_not_a_bare_prefix():
    text = export(mixture({"web": 1.0, "code": 0.0}), "megatron", prefixes=PrefixOptions(TEMPLATE))
    assert text == "1.0 /data/web_text_document\n"
    assert megatron_reads(text) == (["/data/web_text_document"], [1.0])


def test_megatron_weights_in_any_units_come_out_as_shares(tmp_path):
    (tmp_path / "m.yaml").write_text("train: {web: 30, code: 70}\n")
    m = read_mixture(tmp_path / "m.yaml")
    text = export(m, "megatron", prefixes=PrefixOptions(pairs=("web=/d/w", "code=/d/c")))
    assert text == "0.3 /d/w 0.7 /d/c\n"


def test_a_prefix_with_whitespace_is_refused_since_megatron_splits_on_it():
    with pytest.raises(RegmixError, match="'web'.*whitespace"):
        export(mixture({"web": 1.0}), "megatron", prefixes=PrefixOptions(pairs=("web=/my data",)))


MEGATRON_CASES = [
    ["a"],
    ["a", "b"],
    ["0.3", "a", "0.7", "b"],
    ["1", "a"],
    [" 1e-3", " a ", "2", "b"],
    ["0.5", "a", "x", "b"],  # a non-number late: all prefixes
    ["x", "a", "0.5", "b"],  # a non-number first, a number after: the assert fails
]


# --- prefixes ---------------------------------------------------------------------------------


def test_later_prefix_sources_win_and_zero_weight_domains_need_none(tmp_path):
    (tmp_path / "map.yaml").write_text("web: /map/web\ncode: /map/code\nother: /map/other\n")
    m = mixture({"web": 0.5, "code": 0.25, "books": 0.25, "math": 0.0})
    options = PrefixOptions("/tpl/{domain}", tmp_path / "map.yaml", ("code=/cli/code",))
    text = export(m, "megatron", prefixes=options)
    assert text.split()[1::2] == ["/map/web", "/cli/code", "/tpl/books"]


def test_a_missing_prefix_is_an_error_naming_the_domain():
    m = mixture({"web": 0.5, "code": 0.5})
    with pytest.raises(RegmixError, match="no data prefix for domain 'code'"):
        export(m, "megatron", prefixes=PrefixOptions(pairs=("web=/d/web",)))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PrefixOptions(template="/data/web"), r"expected \{domain\}"),
        (PrefixOptions(pairs=("web",)), "expected DOMAIN=PATH"),
        (PrefixOptions(pairs=("wbe=/d",)), "'wbe' is not a domain of the mixture"),
    ],
)
def test_malformed_prefix_options_are_named(options, message):
    with pytest.raises(RegmixError, match=message):
        export(mixture({"web": 1.0}), "olmo-core", prefixes=options)


# --- OLMo-core, mirrored ----------------------------------------------------------------------

# src/olmo_core/data/source_mixture.py `SourceMixtureConfig`: its dataclass fields.
OLMO_SOURCE_FIELDS = {
    "source_name",
    "target_ratio",
    "paths",
    "max_repetition_ratio",
    "max_source_fraction",
}


def olmo_core_sources(text: str) -> list[dict]:
    """Mirrors `SourceMixtureList.from_yaml` + `validate` (and each `SourceMixtureConfig.
    validate`) in src/olmo_core/data/source_mixture.py: a `sources` list whose fields are the
    dataclass's, 0 < target_ratio <= 1, max_repetition_ratio >= 1, 0 < max_source_fraction
    <= 1, paths non-empty, and the ratios summing to 1 by np.allclose."""
    data = yaml.safe_load(text)
    assert set(data) == {"sources"} and data["sources"]
    for source in data["sources"]:
        assert set(source) <= OLMO_SOURCE_FIELDS
        assert {"source_name", "target_ratio", "paths"} <= set(source)
        assert 0 < source["target_ratio"] <= 1
        assert source.get("max_repetition_ratio", 1.0) >= 1
        assert 0 < source.get("max_source_fraction", 1.0) <= 1
        assert source["paths"]
    assert np.allclose(np.sum([s["target_ratio"] for s in data["sources"]]), 1.0)
    return data["sources"]


def olmo_core_fits(source: dict, available: int, requested: int) -> bool:
    """Mirrors `SourceMixtureDatasetConfig.build`'s check that a source has enough tokens."""
    needed = int(requested * source["target_ratio"])
    fraction = source.get("max_source_fraction", 1.0)
    return int(available * fraction * source.get("max_repetition_ratio", 1.0)) >= needed


def test_olmo_core_sources_validate_and_carry_the_mixtures_repetition_cap():
    m = mixture({"web": 0.6, "code": 0.3, "books": 0.1, "math": 0.0}, max_epochs=4.0)
    text = export(m, "olmo-core", prefixes=PrefixOptions("gs://bucket/{domain}/*.npy"))
    sources = olmo_core_sources(text)
    assert [s["source_name"] for s in sources] == ["web", "code", "books"]
    assert [s["target_ratio"] for s in sources] == [0.6, 0.3, 0.1]
    assert sources[0]["paths"] == ["gs://bucket/web/*.npy"]
    assert {s["max_repetition_ratio"] for s in sources} == {4.0}
    # books at 10% of 400 tokens with 10 available: exactly 4 epochs fits, more does not.
    assert olmo_core_fits(sources[2], available=10, requested=400)
    assert not olmo_core_fits(sources[2], available=9, requested=400)


def test_olmo_core_cap_below_one_epoch_becomes_a_source_fraction():
    m = mixture({"web": 0.5, "code": 0.5}, max_epochs=4.0)
    sources = olmo_core_sources(
        export(m, "olmo-core", prefixes=PrefixOptions("/d/{domain}"), max_repetition=0.5)
    )
    assert all(s["max_repetition_ratio"] == 1.0 for s in sources)
    assert all(s["max_source_fraction"] == 0.5 for s in sources)
    assert olmo_core_fits(sources[0], available=100, requested=100)
    assert not olmo_core_fits(sources[0], available=99, requested=100)


def test_olmo_core_without_a_known_cap_writes_its_default_and_says_so():
    m = mixture({"web": 0.5, "code": 0.5})
    exported = export_mixture(m, ExportOptions("olmo-core", PrefixOptions("/d/{domain}")))
    assert {s["max_repetition_ratio"] for s in olmo_core_sources(exported.text)} == {1.0}
    assert "no repetition cap recorded" in exported.note


# --- Hugging Face datasets --------------------------------------------------------------------


def test_interleave_datasets_accepts_the_probabilities_and_samples_the_mixture():
    datasets = pytest.importorskip("datasets", reason="optional extra: pip install .[hf]")
    m = mixture({"web": 0.5, "code": 0.3, "books": 0.2, "math": 0.0})
    exported = yaml.safe_load(export(m, "hf"))  # JSON is YAML
    assert exported["domains"] == ["web", "code", "books"]
    probabilities = exported["probabilities"]
    assert math.fsum(probabilities) == 1.0
    parts = {d: datasets.Dataset.from_dict({"domain": [d] * 20_000}) for d in DOMAINS}
    for strategy in ("first_exhausted", "all_exhausted"):  # the latter refuses a 0 probability
        mixed = datasets.interleave_datasets(
            [parts[d] for d in exported["domains"]],
            probabilities=probabilities,
            seed=0,
            stopping_strategy=strategy,
        )
        counts = pd.Series(mixed["domain"]).value_counts(normalize=True)
        if strategy == "first_exhausted":
            np.testing.assert_allclose(counts[exported["domains"]], probabilities, atol=0.01)


def test_hf_probabilities_per_document_give_back_the_token_shares(tmp_path):
    stats = stats_table({"web": 1_000_000, "code": 200_000, "books": 50_000})
    stats.loc[(stats["domain"] == "books") & (stats["split"] == "train"), "documents"] = 50
    stats.to_parquet(tmp_path / "stats.parquet")
    m = mixture({"web": 0.5, "code": 0.3, "books": 0.2})
    exported = yaml.safe_load(export(m, "hf", stats=tmp_path / "stats.parquet"))
    probabilities = pd.Series(exported["probabilities"], index=exported["domains"])
    assert math.fsum(probabilities) == 1.0 and "whole documents" in exported["unit"]
    train = stats[stats["split"] == "train"].set_index("domain")
    tokens = probabilities * (train["tokens"] / train["documents"])  # expected tokens per draw
    np.testing.assert_allclose(tokens / tokens.sum(), m.weights, rtol=1e-10)


def test_shares_sum_to_exactly_one_as_floats():
    for seed in range(300):
        raw = dirichlet_weights(1, 7, seed=seed)[0]
        shares = unit_shares(pd.Series(raw / 3.0))
        assert math.fsum(shares) == 1.0
        np.testing.assert_allclose(
            shares, raw / raw.sum(), rtol=0, atol=1e-11
        )  # 12 digits; the largest takes the rest's rounding
        assert all(len(repr(float(x))) <= 19 for x in shares)


def test_shares_whose_decimals_miss_one_as_floats_are_stepped_to_it():
    raw = pd.Series(dirichlet_weights(1, 7, seed=646)[0])  # found by search: a rare case
    decimals = [Decimal(f"{w:.12g}") for w in raw / math.fsum(raw)]
    decimals[int(raw.argmax())] += 1 - sum(decimals)
    assert sum(decimals) == 1  # as decimals, but their nearest floats miss:
    assert math.fsum(float(d) for d in decimals) != 1.0
    shares = unit_shares(raw)
    assert math.fsum(shares) == 1.0
    np.testing.assert_allclose(shares, raw / raw.sum(), rtol=0, atol=1e-11)


def test_round_shares_stay_round():
    shares = unit_shares(pd.Series({"a": 0.6, "b": 0.3, "c": 0.1}))
    assert [repr(float(x)) for x in shares] == ["0.6", "0.3", "0.1"]


# --- RegMix's YAML and the command ------------------------------------------------------------


@pytest.fixture(scope="module")
def optimum(tmp_path_factory):
    """A mixture.yaml as `regmix simulate` writes it, from a real fit on synthetic runs."""
    tmp = tmp_path_factory.mktemp("optimum")
    best = np.array([0.45, 0.3, 0.15, 0.05, 0.05])
    weights = dirichlet_weights(60, len(DOMAINS), seed=0)
    runs_table(weights, DOMAINS, {"t": lambda w: 3 + 4 * ((w - best) ** 2).sum(1)}).to_parquet(
        tmp / "runs.parquet"
    )
    fit_model(tmp / "runs.parquet", "t", "linear", tmp / "model", threads=1)
    stats_table(dict.fromkeys(DOMAINS, 1_000_000)).to_parquet(tmp / "stats.parquet")
    config = SimulationConfig(candidates=20_000, top_k=50, bootstrap=0)
    result = simulate(
        tmp / "model", tmp / "stats.parquet", 1e6, config, SamplerConfig(max_epochs=4.0), 1
    )
    write_simulation(result, tmp / "mixture.yaml")
    return tmp / "mixture.yaml"


def test_regmix_format_is_the_optimums_regmix_shape(optimum):
    document = yaml.safe_load(optimum.read_text())
    exported = yaml.safe_load(export(read_mixture(optimum), "regmix"))
    assert exported == {"train": document["train"], "valid": document["valid"]}
    again = weights_from_yaml(exported, "exported", DOMAINS)
    np.testing.assert_allclose(again, read_mixture(optimum).weights, atol=1e-12)


def test_command_writes_every_format_from_the_simulated_optimum(optimum, tmp_path, capsys):
    (tmp_path / "old.txt").write_text("kept until the new file is complete")
    for fmt in ("regmix", "megatron", "olmo-core", "hf"):
        out = tmp_path / f"{fmt}.out"
        args = ["export-mixture", "--format", fmt, "--mixture", str(optimum), "--out", str(out)]
        assert main([*args, "--prefix-template", TEMPLATE]) == 0
        assert out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["old.txt", "regmix.out", "megatron.out", "olmo-core.out", "hf.out"]
    )  # no temporary files left beside them
    document = yaml.safe_load(optimum.read_text())
    used = [d for d in DOMAINS if document["train"][d] > 0]
    prefixes, weights = megatron_reads((tmp_path / "megatron.out").read_text())
    assert prefixes == [TEMPLATE.format(domain=d) for d in used]
    train = pd.Series(document["train"])[used]
    np.testing.assert_allclose(
        weights, train / train.sum(), rtol=0, atol=1e-11
    )  # 12 digits; the largest takes the rest's rounding
    sources = olmo_core_sources((tmp_path / "olmo-core.out").read_text())
    assert {s["max_repetition_ratio"] for s in sources} == {4.0}  # simulate's mixtures cap
    assert "-> " in capsys.readouterr().err


def test_command_prints_to_stdout_without_out_and_reads_a_final_mixture_table(tmp_path, capsys):
    table = mixture_table(["regmix"], ["web", "code"], np.array([[0.25, 0.75]]))
    table.to_parquet(tmp_path / "regmix.parquet")
    args = ["export-mixture", "--format", "megatron", "--mixture", str(tmp_path / "regmix.parquet")]
    assert main([*args, "--prefix", "web=/d/web", "--prefix", "code=/d/code"]) == 0
    assert capsys.readouterr().out == "0.25 /d/web 0.75 /d/code\n"


def test_a_table_of_several_mixtures_needs_run(tmp_path, capsys):
    table = mixture_table(["run1", "run2"], ["web", "code"], np.array([[0.5, 0.5], [0.2, 0.8]]))
    table.to_parquet(tmp_path / "round1.parquet")
    args = ["export-mixture", "--format", "hf", "--mixture", str(tmp_path / "round1.parquet")]
    assert main(args) == 1
    assert "holds 2 mixtures; pick one with --run" in capsys.readouterr().err
    assert main([*args, "--run", "run2"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["probabilities"] == [0.2, 0.8]


@pytest.mark.parametrize(
    ("content", "name", "extra", "message"),
    [
        ("train: {web: 1}\n", "m.yaml", ["--format", "torchtitan"], "unknown format 'torchtitan'"),
        ("train: {web: 0.5, code: 0.5}\n", "m.yaml", [], "no data prefix for domain 'code'"),
        ("weights: {web: 1}\n", "m.yaml", [], "m.yaml: expected a 'train' mapping"),
        ("train: {web: -1, code: 2}\n", "m.yaml", [], "m.yaml: weights must be non-negative"),
        ("train: {web: 1}\n", "m.txt", [], "m.txt: expected a RegMix-style mixture YAML"),
        (None, "runs.parquet", [], r"runs.parquet: no weight.<domain> columns"),
        ("", "absent.yaml", [], "absent.yaml: no such file"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, content, name, extra, message):
    path = tmp_path / name
    if content is None:
        pd.DataFrame({"run": ["a"], "loss.web": [3.0]}).to_parquet(path)
    elif name != "absent.yaml":
        path.write_text(content)
    args = ["export-mixture", "--mixture", str(path), "--prefix", "web=/d/web"]
    code = main([*args, *(extra or ["--format", "megatron"])])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("regmix: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_the_default_mixture_missing_says_what_writes_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export-mixture", "--format", "regmix"]) == 1
    err = capsys.readouterr().err
    assert "results/optimal/mixture.yaml: no such file (the workflow's simulate stage" in err
