"""Mistakes that can be known before training stop the run while Snakemake parses the workflow:
one line naming the key or file, a non-zero exit, within seconds, and no job started."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from workflow import REPO, TINY, snakemake

from regmix.data.tokenize import byte_tokenizer_json
from regmix.errors import RegmixError
from regmix.workflow.config import (
    load_config,
    merge,
    read_renamed,
    read_schema,
    schema_path,
    validate,
)
from regmix.workflow.preflight import (
    check_evaluation,
    check_workflow,
    corpus_domains,
    current_stats,
    exit_on_error,
    resolve_domain_names,
)
from regmix.workflow.training_checks import (
    check_compiler,
    check_device_split,
    check_training_settings,
    rekey,
)

# A bad config per issue case: the override merged over tests/config/tiny.yaml, and what the
# one error line must say. benchmarks/preflight_errors.py times these.
CASES = {
    "target": ({"target": "tagret"}, "config key target: domain 'tagret' has no validation data"),
    "weighted target": (
        {"target": "web:0.5,poetyr:0.5"},
        "config key target: 'web:0.5,poetyr:0.5': domain 'poetyr' has no validation data",
    ),
    "target outside corpus.domains": (
        {"corpus": {"domains": ["web", "news"]}},
        "config key target: domain 'target' has no validation data",
    ),
    "proxy preset": (
        {"proxy": {"model": "tinyllama_2M"}},
        "config key proxy.model: unknown preset 'tinyllama_2M' (expected one of: tinyllama_1M,",
    ),
    "final shape": (
        {"final": {"model": {"n_layer": 2, "n_head": 5, "n_embd": 48, "intermediate_size": 96}}},
        "config key final.model: n_embd (48) must split into n_head (5) heads",
    ),
    "final shape field": (
        {"final": {"model": {"n_layers": 2, "n_head": 2, "n_embd": 48, "intermediate_size": 96}}},
        "config key final.model: unknown shape field 'n_layers'",
    ),
    "corpus.domains": (
        {"corpus": {"domains": ["web", "nwes", "target"]}},
        "config key corpus.domains: the synthetic corpus has no files for domain 'nwes'",
    ),
    "tokenizer file": (
        {"corpus": {"tokenizer": "tokenizers/missing.json"}},
        "config key corpus.tokenizer: tokenizers/missing.json: tokenizer file does not exist",
    ),
    "batch over GPUs": (
        {"final": {"batch_size": 6, "resources": {"gpu": 4}}},
        "config key final.batch_size: 6 windows do not split over 4 devices (final.resources.gpu)",
    ),
    "micro-batch per device": (
        {"final": {"batch_size": 8, "micro_batch_size": 4, "resources": {"gpu": 4}}},
        "config key final.micro_batch_size: 4 does not divide the per-device batch "
        "(8 windows over 4 devices = 2)",
    ),
    "micro-batch": (
        {"proxy": {"micro_batch_size": 3}},
        "config key proxy.micro_batch_size: must divide batch_size (4), got 3",
    ),
    "regressor": (
        {"regression": {"model": "gpr"}},
        "config key regression.model: 'gpr' is not one of "
        "['gp', 'lightgbm', 'linear', 'mixlaw', 'ensemble']",
    ),
    "compared regressor": (
        {"regression": {"compare": ["linear", "forest"]}},
        "config key regression.compare.1: 'forest' is not one of ['gp', 'lightgbm',",
    ),
    "folds": (
        {"regression": {"folds": 8}},
        "config key regression.folds: 8 folds need at least 8 proxy runs (mixtures.rounds gives 6)",
    ),
    "renamed key": (
        {"mixtures": {"n": 32}},
        "config key mixtures.n: no longer read; write `mixtures.rounds: [32]` instead",
    ),
    "evaluation task": (
        {"evaluation": {"enabled": True, "tasks": ["hellaswagg"]}},
        "config key evaluation.tasks: unknown task 'hellaswagg' (not an lm-eval task, group or "
        "tag, nor a local .yaml file or folder)",
    ),
    "evaluation data offline": (  # this machine's Hugging Face cache has no hellaswag
        {"evaluation": {"enabled": True, "tasks": ["hellaswag"]}},
        "config key evaluation.tasks: hellaswag: task hellaswag: dataset Rowan/hellaswag is "
        "neither local nor in the Hugging Face datasets cache",
    ),
}
SCHEMA_CASES = ("regressor", "compared regressor", "renamed key")

TRAINING_OUTPUTS = ("results/proxy", "results/final", "results/checkpoints", "logs/proxy")
TRAINING_JOB = re.compile(r"^\s*(local)?rule (train_proxy|train_final|train_optimum)", re.M)
ERROR_LINE = re.compile(r"^regmix: error: .*$", re.M)


def tiny(overrides: dict | None = None) -> dict:
    """The tiny test config with `overrides` merged over it, validated with defaults."""
    config = load_config([TINY])
    if overrides:
        merge(config, copy.deepcopy(overrides))
        schema = schema_path()
        validate(config, read_schema(schema), read_renamed(schema.with_name("renamed.yaml")))
    return config


def error_of(config: dict, workdir: Path) -> str:
    with pytest.raises(RegmixError) as caught:
        check_workflow(config, workdir)
    return str(caught.value)


# --- each check on its own ----------------------------------------------------------------------


def test_the_tiny_and_embedded_configs_pass(tmp_path):
    check_workflow(tiny(), tmp_path)
    check_workflow(load_config(), tmp_path)


@pytest.mark.parametrize("case", [c for c in CASES if c not in SCHEMA_CASES])
def test_each_bad_case_raises_one_line_naming_its_key(tmp_path, case):
    overrides, expected = CASES[case]
    message = error_of(tiny(overrides), tmp_path)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_the_schema_and_the_renamed_keys_reject_before_the_checks(case):
    overrides, expected = CASES[case]
    with pytest.raises(RegmixError, match=re.escape(expected)):
        tiny(overrides)


def test_evaluation_is_on_for_the_demo_and_off_for_a_corpus_of_yours(tmp_path, corpus_dir):
    """`evaluation.enabled: auto`, the default, is settled once for every reader of the config:
    on for the synthetic demo (when lm-eval is installed), off for a user's corpus unless set."""
    lm_eval = importlib.util.find_spec("lm_eval") is not None
    assert load_config()["evaluation"]["enabled"] is lm_eval
    user = tmp_path / "user.yaml"
    user.write_text(f"corpus: {{path: {corpus_dir}}}\n")
    assert load_config([user])["evaluation"]["enabled"] is False
    user.write_text(f"corpus: {{path: {corpus_dir}}}\nevaluation: {{enabled: 'true'}}\n")
    assert load_config([user])["evaluation"]["enabled"] is True  # as --config passes it
    with pytest.raises(RegmixError, match=r"evaluation.enabled: 'sometimes' is not one of"):
        tiny({"evaluation": {"enabled": "sometimes"}})


def test_the_demo_without_lm_eval_runs_without_evaluation(monkeypatch):
    from regmix.workflow import config as workflow_config

    real = importlib.util.find_spec
    monkeypatch.setattr(
        workflow_config.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "lm_eval" else real(name, *args),
    )
    assert load_config()["evaluation"]["enabled"] is False
    with pytest.raises(RegmixError, match="evaluation.enabled: lm-eval is not installed"):
        check_evaluation({"enabled": True, "tasks": [], "continuation": {"examples": 8}}, Path())


def test_a_near_miss_gets_a_suggestion(tmp_path):
    assert error_of(tiny({"target": "tagret"}), tmp_path).endswith("did you mean 'target'?")
    assert "did you mean 'tinyllama_1M'" in error_of(
        tiny({"proxy": {"model": "tinyllama_2M"}}), tmp_path
    )


def test_weighted_and_mean_targets_over_validation_domains_pass(tmp_path):
    check_workflow(tiny({"target": "target:0.5,poetry:0.5"}), tmp_path)
    check_workflow(tiny({"target": "mean"}), tmp_path)


def test_a_target_weight_must_be_a_number(tmp_path):
    message = error_of(tiny({"target": "web:half,news:0.5"}), tmp_path)
    assert message == "config key target: 'web:half,news:0.5': weight 'half' of web is not a number"


def test_corpus_domains_restrict_the_validation_domains_too(tmp_path):
    config = tiny({"corpus": {"domains": ["web", "legal", "target"]}})
    domains = corpus_domains(config["corpus"], tmp_path)
    assert domains.train == ["web", "legal"] and domains.valid == ["web", "legal", "target"]
    check_workflow(config, tmp_path)


def test_a_user_corpus_is_listed_with_the_readers_naming_rules(tmp_path, corpus_dir):
    config = tiny({"corpus": {"path": str(corpus_dir)}})
    domains = corpus_domains(config["corpus"], tmp_path)
    assert "target" in domains.valid and "target" not in domains.train
    assert domains.train == sorted(domains.train) and "web" in domains.train
    relative = tiny({"corpus": {"path": os.path.relpath(corpus_dir, tmp_path)}})
    check_workflow(relative, tmp_path)  # relative to the working directory, as in the rules


def test_a_user_corpus_must_exist_and_have_the_domains_named(tmp_path, corpus_dir):
    missing = error_of(tiny({"corpus": {"path": "no_corpus"}}), tmp_path)
    assert missing == f"config key corpus.path: {tmp_path}/no_corpus: corpus folder does not exist"
    unknown = tiny({"corpus": {"path": str(corpus_dir), "domains": ["web", "wiki"]}})
    assert f"config key corpus.domains: {corpus_dir} has no files for domain 'wiki'" in error_of(
        unknown, tmp_path
    )


def test_valid_only_domains_leave_nothing_to_train_on(tmp_path):
    message = error_of(tiny({"corpus": {"domains": ["target"]}}), tmp_path)
    assert message.startswith("config key corpus.domains: none of target has train data")


def test_a_corpus_file_name_with_a_dash_in_the_domain_is_named(tmp_path, corpus_dir):
    corpus = shutil.copytree(corpus_dir, tmp_path / "corpus")
    (corpus / "train" / "pile-cc-0.jsonl").write_text('{"text": "x"}\n')
    message = error_of(tiny({"corpus": {"path": str(corpus)}}), tmp_path)
    assert message.startswith(f"config key corpus.path: {corpus}/train/pile-cc-0.jsonl:")


@pytest.mark.parametrize("spec", ["bpe:12", "bpe:lots", "bpe:-5", "bpe:99999999"])
def test_a_bpe_tokenizer_needs_a_sane_vocabulary(tmp_path, spec):
    message = error_of(tiny({"corpus": {"tokenizer": spec}}), tmp_path)
    assert message.startswith(f"config key corpus.tokenizer: {spec!r}: expected bpe:<vocab size>")


def test_a_tokenizer_file_must_load(tmp_path):
    (tmp_path / "good.json").write_text(byte_tokenizer_json())
    check_workflow(tiny({"corpus": {"tokenizer": "good.json"}}), tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    message = error_of(tiny({"corpus": {"tokenizer": "bad.json"}}), tmp_path)
    assert message.startswith("config key corpus.tokenizer: ") and "bad.json" in message


def test_a_model_shape_needs_integer_fields(tmp_path):
    config = tiny()
    config["proxy"]["model"] = {"n_layer": 1, "n_head": 2, "n_embd": 32}
    missing = error_of(config, tmp_path)
    assert missing.startswith("config key proxy.model: a shape needs intermediate_size")
    config["proxy"]["model"] = {"n_layer": "1", "n_head": 2, "n_embd": 32, "intermediate_size": 64}
    with pytest.raises(
        RegmixError, match=r"^config key proxy\.model\.n_layer: expected an integer"
    ):
        check_training_settings(config["proxy"], "proxy")


def test_training_setting_errors_are_keyed_by_section():
    assert rekey("train.lr: x", "final") == "config key final.lr: x"
    assert rekey("train: need lr > 0", "proxy") == "config key proxy: need lr > 0"
    assert (
        rekey("model.n_layer: must be >= 1", "proxy")
        == "config key proxy.model.n_layer: must be >= 1"
    )
    assert rekey("something else", "final") == "config key final: something else"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"accelerator": "gpu"},
            "config key proxy.accelerator: 'gpu' needs proxy.resources.gpu >= 1",
        ),
        ({"accelerator": "tpu"}, "config key proxy.accelerator: 'tpu' (expected one of"),
        (
            {"accelerator": "cpu", "resources": {"gpu": 1}},
            "config key proxy.accelerator: 'cpu', but proxy.resources.gpu asks for 1 GPU(s)",
        ),
        ({"devices": 0}, "config key proxy.devices: 0 (expected a count >= 1, -1 or auto)"),
        (
            {"devices": 2, "resources": {"gpu": 1}},
            "config key proxy.devices: 2, but proxy.resources.gpu asks for 1 GPU(s)",
        ),
        (
            {"devices": 3, "batch_size": 4},
            "config key proxy.batch_size: 4 windows do not split over 3 devices (proxy.devices)",
        ),
    ],
)
def test_devices_and_accelerator_agree_with_the_gpus_a_job_asks_for(section, expected):
    config = tiny({"proxy": section})
    with pytest.raises(RegmixError, match=re.escape(expected)):
        check_device_split(config["proxy"], "proxy")


def test_compile_on_the_cpu_needs_a_cpp_compiler(monkeypatch):
    """The demo compiles its models: without a compiler every training job would fail at its
    first step, so the run stops at parse time instead."""
    config = load_config()
    assert config["proxy"]["compile"] and config["final"]["compile"]
    check_compiler(config["final"], "final")  # this machine has one
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(RegmixError, match=r"^config key final\.compile: torch\.compile on the"):
        check_compiler(config["final"], "final")
    check_compiler(tiny({"final": {"compile": False}})["final"], "final")
    check_compiler(tiny({"final": {"compile": True, "resources": {"gpu": 1}}})["final"], "final")


def test_batches_that_split_over_the_devices_pass(tmp_path):
    final = {"batch_size": 16, "micro_batch_size": 2, "devices": "auto", "resources": {"gpu": 4}}
    check_workflow(tiny({"final": final, "proxy": {"devices": 2, "micro_batch_size": 2}}), tmp_path)


def test_the_shipped_presets_pass_the_training_and_device_checks():
    for preset in sorted((REPO / "config" / "presets").glob("*.yaml")):
        config = load_config([preset])
        for section in ("proxy", "final"):
            check_training_settings(config[section], section)
            check_device_split(config[section], section)


def test_sampler_and_simulation_sizes_are_checked(tmp_path):
    strengths = error_of(tiny({"mixtures": {"min_strength": 9.0}}), tmp_path)
    assert strengths == "config key mixtures: need 0 < min_strength <= max_strength"
    top_k = error_of(tiny({"simulation": {"top_k": 50, "candidates": 10}}), tmp_path)
    assert top_k.startswith("config key simulation.top_k: 50 is more than the 10 candidates")


def test_exit_on_error_prints_one_line_and_exits_1(capsys):
    with pytest.raises(SystemExit) as exited, exit_on_error():
        raise RegmixError("config key x: first\nsecond")
    assert exited.value.code == 1
    assert capsys.readouterr().err == "regmix: error: config key x: first second\n"


# --- token counts already on disk ---------------------------------------------------------------


@pytest.fixture
def prepared(tmp_path, corpus_dir, data_dir) -> Path:
    """A working directory whose results/data was prepared from corpus_dir (byte tokenizer)."""
    shutil.copytree(data_dir, tmp_path / "results" / "data")  # keeps mtimes: newer than corpus
    return tmp_path


def user_corpus(corpus_dir: Path, **overrides) -> dict:
    return tiny({"corpus": {"path": str(corpus_dir)}, **overrides})


HUGE_FINAL = {"final": {"steps": 100_000}}


def test_infeasible_caps_fail_at_parse_time_when_the_counts_are_current(prepared, corpus_dir):
    message = error_of(user_corpus(corpus_dir, **HUGE_FINAL), prepared)
    assert message.startswith("config key mixtures.max_epochs: caps sum to ")
    assert "needs max_epochs ≥" in message and "results/data/stats.parquet" in message
    check_workflow(user_corpus(corpus_dir), prepared)  # the tiny budget fits


def test_a_window_longer_than_a_domain_fails_when_the_counts_are_current(prepared, corpus_dir):
    message = error_of(user_corpus(corpus_dir, proxy={"seq_len": 20_000}), prepared)
    assert message.startswith("config key proxy.seq_len: ") and "fewer than one window" in message


def test_stale_counts_are_not_used(prepared, corpus_dir):
    stats = prepared / "results/data/stats.parquet"
    config = user_corpus(corpus_dir)
    assert current_stats(config["corpus"], prepared, corpus_domains(config["corpus"], prepared))
    later = stats.stat().st_mtime + 10
    corpus = shutil.copytree(corpus_dir, prepared / "corpus")
    os.utime(corpus / "train" / "poetry-0.jsonl", (later, later))  # edited after prepare
    edited = user_corpus(corpus, **HUGE_FINAL)
    check_workflow(edited, prepared)  # prepare will count again; the rules check the caps then
    for stale in [
        user_corpus(corpus_dir, corpus={"path": str(corpus_dir), "tokenizer": "bpe:300"}),
        user_corpus(corpus_dir, corpus={"path": str(corpus_dir), "domains": ["web", "target"]}),
    ]:
        domains = corpus_domains(stale["corpus"], prepared)
        assert current_stats(stale["corpus"], prepared, domains) is None


def test_synthetic_counts_are_used_only_for_the_recorded_seed_and_scale(prepared):
    # corpus_dir is the synthetic corpus at seed 1, scale 0.2, as results/corpus would hold it.
    planted = prepared / "results/corpus/planted.yaml"
    planted.parent.mkdir(parents=True)
    planted.write_text(yaml.safe_dump({"target": "target", "seed": 1}))
    os.utime(planted, (0, 0))
    synthetic = {"corpus": {"synthetic": {"seed": 1, "scale": 0.2}}, **HUGE_FINAL}
    check_workflow(tiny(synthetic), prepared)  # scale not recorded: the counts may be stale
    planted.write_text(yaml.safe_dump({"target": "target", "seed": 1, "scale": 0.2}))
    os.utime(planted, (0, 0))
    assert "max_epochs" in error_of(tiny(synthetic), prepared)
    rescaled = {"corpus": {"synthetic": {"seed": 1, "scale": 0.5}}, **HUGE_FINAL}
    check_workflow(tiny(rescaled), prepared)


# --- through Snakemake: one line, exit 1, no job started ----------------------------------------


def config_file(folder: Path, overrides: dict) -> Path:
    """tests/config/tiny.yaml with `overrides` merged over it, as a user's --configfile."""
    config = merge(yaml.safe_load(TINY.read_text()), copy.deepcopy(overrides))
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_stopped_before_training(workdir: Path, output: str) -> None:
    assert not TRAINING_JOB.search(output), output[-3000:]
    for path in TRAINING_OUTPUTS:
        assert not (workdir / path).exists(), path


def assert_one_error_line(result, expected: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    lines = ERROR_LINE.findall(output)
    assert len(lines) == 1, output[-3000:]
    assert expected in lines[0]
    assert "Traceback" not in output and "WorkflowError" not in output
    return lines[0]


@pytest.mark.workflow
@pytest.mark.parametrize("case", list(CASES))
def test_a_real_run_stops_at_parse_time_in_one_line(tmp_path, case):
    overrides, expected = CASES[case]
    result = snakemake(tmp_path, config=config_file(tmp_path, overrides))
    assert_one_error_line(result, expected)
    assert_stopped_before_training(tmp_path, result.stdout + result.stderr)
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


@pytest.mark.workflow
@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_a_dry_run_and_a_profile_stop_the_same_way(tmp_path, profile):
    if profile == "slurm":
        pytest.importorskip(
            "snakemake_executor_plugin_slurm", reason="optional extra: pip install -e '.[slurm]'"
        )
    overrides, expected = CASES["proxy preset"]
    config = config_file(tmp_path, overrides)
    dry = snakemake(tmp_path, "--dry-run", config=config)
    assert_one_error_line(dry, expected)
    with_profile = snakemake(tmp_path, "--profile", str(REPO / "profiles" / profile), config=config)
    assert_one_error_line(with_profile, expected)


@pytest.mark.workflow
def test_nested_command_line_overrides_are_converted(tmp_path):
    result = snakemake(
        tmp_path,
        "--dry-run",
        "--printshellcmds",
        "--config",
        "proxy={steps: 10, compile: true, model: {n_layer: 2, n_head: 2, n_embd: 32, "
        "intermediate_size: 64}}",
        "mixtures={rounds: [4, 3]}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    settings = re.search(r"train-proxy .*--settings '([^']*)'", output).group(1)
    assert '"steps":10' in settings and '"compile":true' in settings
    assert '"model":{"intermediate_size":64,"n_embd":32,"n_head":2,"n_layer":2}' in settings
    assert "run0007" in output and "run0008" not in output  # 4 + 3 proxy runs


@pytest.mark.workflow
def test_a_command_line_value_that_does_not_convert_names_its_key(tmp_path):
    result = snakemake(tmp_path, "--config", "proxy={steps: ten}")
    line = assert_one_error_line(result, "config key proxy.steps: 'ten' is not of type 'integer'")
    assert line == "regmix: error: config key proxy.steps: 'ten' is not of type 'integer'"
    assert_stopped_before_training(tmp_path, result.stdout + result.stderr)


@pytest.mark.workflow
def test_infeasible_caps_stop_the_run_before_any_training_job(tmp_path):
    result = snakemake(tmp_path, config=config_file(tmp_path, HUGE_FINAL))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "regmix: error: mixtures: caps sum to" in output and "needs max_epochs" in output
    assert_stopped_before_training(tmp_path, output)


@pytest.mark.workflow
def test_infeasible_caps_stop_at_parse_time_once_the_corpus_is_counted(tmp_path, corpus_dir):
    corpus = shutil.copytree(corpus_dir, tmp_path / "corpus")
    counted = snakemake(
        tmp_path,
        "results/data/stats.parquet",
        config=config_file(tmp_path, {"corpus": {"path": str(corpus)}}),
    )
    assert counted.returncode == 0, counted.stderr[-3000:]
    config = config_file(tmp_path, {"corpus": {"path": str(corpus)}, **HUGE_FINAL})
    result = snakemake(tmp_path, config=config)
    assert_one_error_line(result, "config key mixtures.max_epochs: caps sum to")
    assert_stopped_before_training(tmp_path, result.stdout + result.stderr)
    assert not (tmp_path / "results/mixtures").exists()


@pytest.mark.workflow
def test_a_training_job_that_fails_shows_its_error_on_the_console(tmp_path):
    # Windows longer than every validation domain: only known once the corpus is counted.
    proxy = {"seq_len": 20_000, "proxies_per_job": 6}  # one training job
    result = snakemake(tmp_path, config=config_file(tmp_path, {"proxy": proxy}))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"^(local)?rule train_proxy", output, re.M)
    assert re.search(r"^regmix: error: .*fewer .*than one window", output, re.M), output[-3000:]


# --- corpora whose records name their domains ----------------------------------------------------


def test_domain_names_in_the_config_resolve_to_identifiers(tmp_path):
    (tmp_path / "00.jsonl").write_text('{"text": "x", "meta": {"set": "Pile-CC"}}\n')
    field = {"path": str(tmp_path), "domain_field": "meta.set", "valid_fraction": 0.1}
    config = tiny({"corpus": {**field, "domains": ["Pile-CC", "FreeLaw"]}})
    config["target"] = "Wikipedia (en):0.5,Pile-CC:0.5"
    resolve_domain_names(config)
    assert config["target"] == "wikipedia_en:0.5,pile_cc:0.5"
    assert config["corpus"]["domains"] == ["pile_cc", "freelaw"]
    check_workflow(config, tmp_path)  # domains unknown until prepared: collect-shards checks


def test_a_domain_field_needs_a_corpus_path():
    message = error_of(tiny({"corpus": {"domain_field": "meta.set"}}), Path("."))
    assert "corpus.domain_field: set corpus.path too" in message


def test_an_unknown_file_in_a_field_corpus_stops_the_run(tmp_path):
    (tmp_path / "00.jsonl").write_text('{"text": "x", "meta": {"set": "Pile-CC"}}\n')
    (tmp_path / "01.txt").write_text("stray")
    config = tiny({"corpus": {"path": str(tmp_path), "domain_field": "meta.set"}})
    assert re.search(r"corpus.path: .*01\.txt: not a corpus file", error_of(config, tmp_path))


def test_a_field_corpus_without_validation_files_needs_valid_fraction(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train/00.jsonl").write_text('{"text": "x", "meta": {"set": "Pile-CC"}}\n')
    config = tiny({"corpus": {"path": str(tmp_path), "domain_field": "meta.set"}})
    assert "corpus has no validation data (no folder or file named val" in error_of(
        config, tmp_path
    )
    (tmp_path / "val.jsonl").write_text('{"text": "y", "meta": {"set": "Pile-CC"}}\n')
    config["target"] = "pile_cc"
    check_workflow(config, tmp_path)


def test_a_misspelt_domain_of_a_prepared_field_corpus_stops_at_parse_time(tmp_path):
    from regmix.data.corpus import ReadOptions
    from regmix.data.prepare import prepare_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [{"text": f"doc {i} " * 40, "meta": {"set": s}} for i in range(20) for s in NAMES]
    (corpus / "00.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    options = ReadOptions("meta.set", valid_fraction=0.2)
    prepare_corpus(corpus, tmp_path / "results/data", "byte", options=options)
    field = {"path": str(corpus), "domain_field": "meta.set", "valid_fraction": 0.2}
    config = tiny({"corpus": {**field, "domains": ["Pile-CC", "Stack Exchange"]}})
    config["target"] = "Pile-CC"
    config["final"].update(steps=1, batch_size=1)  # no cap to check: names only
    resolve_domain_names(config)
    assert error_of(config, tmp_path) == (
        "config key corpus.domains: no domain 'stack_exchange' in the corpus (its domains: "
        "'Pile-CC', 'StackExchange'); did you mean 'StackExchange'?"
    )


NAMES = ("Pile-CC", "StackExchange")
