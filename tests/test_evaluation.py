"""Downstream evaluation: lm-eval on an export with no file added by hand and on the GPU it
leases, finding tasks and their data offline, and the scores table: groups scored as lm-eval
scores them, paired comparisons. (The continuation task: tests/test_continuation.py.)"""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_continuation import word_documents

from regmix.cli import main
from regmix.data.tokenize import BYTE_EOS
from regmix.errors import RegmixError
from regmix.evaluation.continuation import make_examples, task_yaml
from regmix.evaluation.downstream import (
    collect_downstream,
    example_weights,
    headline,
    paired_difference,
    read_samples,
    sample_metrics,
)
from regmix.evaluation.tasks import check_tasks, select_tasks
from regmix.files import write_json
from regmix.training.devices import VISIBLE, Lease, holder
from regmix.training.export import export_hf
from regmix.training.model import ModelConfig, Transformer


def _local_task(folder: Path, name: str, n: int, seed: int = 0) -> Path:
    """A local multiple-choice task of `n` continuation examples: `<name>.yaml` + its data."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = make_examples(word_documents(n=20, seed=seed), n, max_tokens=32, seed=seed)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples))
    (folder / f"{name}.yaml").write_text(task_yaml(name, data))
    return folder / f"{name}.yaml"


def _export(folder, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(
        n_layer=1, n_head=2, n_embd=16, intermediate_size=32, vocab_size=257, max_seq_len=32
    )
    return export_hf(Transformer(config).eval(), folder, eos_id=BYTE_EOS)


def test_lm_eval_scores_an_export_with_no_file_added_by_hand(tmp_path):
    pytest.importorskip("lm_eval", reason="optional extra: pip install .[eval]")
    from regmix.evaluation.harness import EvalSettings, evaluate_model

    model = _export(tmp_path / "m" / "hf")  # 32 positions, as short as the tiny workflow's
    task = _local_task(tmp_path / "task", "continuation_target", 20)
    settings = EvalSettings(tasks=(str(task),), batch_size=8)
    results = evaluate_model(model, settings, tmp_path / "m" / "eval", threads=1, device="cpu")
    scores = results["results"]["continuation_target"]
    assert 0.0 <= scores["acc,none"] <= 1.0 and scores["acc_stderr,none"] > 0
    samples = (tmp_path / "m" / "eval" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 20
    table = collect_downstream([tmp_path / "m" / "eval"], tmp_path / "downstream.parquet")
    assert set(table.metric) == {"acc", "acc_norm"} and set(table.model) == {"m"}
    assert (table.samples == 20).all()
    per_example = read_samples(tmp_path / "m" / "eval", {"continuation_target": "acc"})
    assert len(per_example) == 20 and per_example.score.isin([0.0, 1.0]).all()
    assert per_example.score.mean() == pytest.approx(scores["acc,none"])


def test_unknown_task_is_one_line_naming_it():
    pytest.importorskip("lm_eval", reason="optional extra: pip install .[eval]")
    with pytest.raises(RegmixError, match="unknown task 'hellaswagg'"):
        check_tasks(["hellaswagg"])


def test_lm_eval_task_whose_data_is_not_cached_is_named(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="optional extra: pip install .[eval]")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(RegmixError, match="hellaswag.*Rowan/hellaswag is neither local nor in"):
        check_tasks(["hellaswag"])


def _prepared_dataset(cache, repo: str, config: str, splits: dict[str, list[dict]]):
    """`repo` prepared in the datasets cache as `datasets` leaves a Hub dataset it loaded:
    written by its own builder, under <namespace>___<snake name>/<config>/<version>/<hash>/."""
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.json.json import Json

    namespace, name = repo.split("/")
    files = {}
    for split, rows in splits.items():
        files[split] = str(cache.parent / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    staging = cache.parent / "staging"
    builder = Json(
        cache_dir=str(staging),
        dataset_name=camelcase_to_snakecase(name),
        config_name=config,
        data_files=files,
        hash="0123abcd",
    )
    builder.download_and_prepare()
    target = cache / f"{namespace}___{camelcase_to_snakecase(name)}" / config / "0.0.0"
    target.mkdir(parents=True)
    Path(builder.cache_dir).rename(target / "0123abcd")
    return target / "0123abcd"


def test_hub_dataset_check_agrees_with_datasets_loading_it_offline(tmp_path, monkeypatch):
    """Prepared by `datasets` passes (and loads offline); an empty folder, a Hub download alone
    and a prepared copy that lost a split's arrow file fail, naming what is missing."""
    pytest.importorskip("datasets")
    import datasets

    from regmix.evaluation.tasks import cached_dataset_problem, datasets_cache, snake_case

    (tmp_path / "hf").mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cache = datasets_cache()
    assert cache == tmp_path / "hf" / "datasets"
    (cache / "me___tiny_qa").mkdir(parents=True)  # the folder, but nothing in it
    assert "neither local nor in" in cached_dataset_problem("me/TinyQA", "main", cache)
    hub = tmp_path / "hf" / "hub" / "datasets--me--TinyQA" / "snapshots" / "abc"
    hub.mkdir(parents=True)
    (hub / "test.jsonl").write_text('{"q": 1}\n')  # a Hub download: not read offline
    assert "neither local nor in" in cached_dataset_problem("me/TinyQA", "main", cache)

    rows = [{"q": i, "label": i % 2} for i in range(4)]
    folder = _prepared_dataset(cache, "me/TinyQA", "main", {"train": rows, "test": rows})
    assert snake_case("TinyQA") == "tiny_qa"
    assert cached_dataset_problem("me/TinyQA", "main", cache) is None
    assert cached_dataset_problem("me/TinyQA", None, cache) is None
    assert "configuration other" in cached_dataset_problem("me/TinyQA", "other", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    loaded = datasets.load_dataset("me/TinyQA", "main", cache_dir=str(cache))
    assert loaded["test"].num_rows == 4

    (folder / "tiny_qa-train.arrow").unlink()
    problem = cached_dataset_problem("me/TinyQA", "main", cache)
    assert problem.startswith("dataset me/TinyQA (configuration main) is cached without its train")
    with pytest.raises(FileNotFoundError):
        datasets.load_dataset("me/TinyQA", "main", cache_dir=str(cache))


def test_lm_eval_task_prepared_in_the_datasets_cache_passes(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="optional extra: pip install .[eval]")
    from regmix.evaluation.tasks import datasets_cache

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "hf" / "datasets" / "Rowan___hellaswag").mkdir(parents=True)
    with pytest.raises(RegmixError, match="Rowan/hellaswag is neither local nor in"):
        check_tasks(["hellaswag"])  # an empty folder used to pass
    rows = [{"ctx": "a", "endings": ["b", "c"], "label": "0"}]
    _prepared_dataset(datasets_cache(), "Rowan/hellaswag", "default", {"validation": rows})
    check_tasks(["hellaswag"])


def test_local_task_with_a_missing_data_file_is_named(tmp_path):
    task = _local_task(tmp_path / "task", "continuation_target", 5)
    check_tasks([str(task)])
    (tmp_path / "task" / "continuation_target.jsonl").write_text("")
    with pytest.raises(RegmixError, match="continuation_target: data file .*target.jsonl is not"):
        check_tasks([str(task)])
    (tmp_path / "task" / "continuation_target.jsonl").unlink()
    with pytest.raises(RegmixError, match="continuation_target: data file .*target.jsonl is not"):
        check_tasks([str(task)])
    with pytest.raises(RegmixError, match="no such task file or folder"):
        check_tasks([str(tmp_path / "nowhere.yaml")])


def test_paired_difference_sees_a_consistent_gain_and_its_absence():
    tasks = ["a"] * 200 + ["b"] * 200
    ids = list(range(200)) * 2
    rng = np.random.default_rng(0)
    theirs = pd.DataFrame({"task": tasks, "doc_id": ids, "score": rng.random(400) < 0.5})
    better = theirs.assign(score=theirs.score | (rng.random(400) < 0.3))
    gain = paired_difference(better.astype({"score": float}), theirs.astype({"score": float}))
    assert gain["lower"] > 0 and gain["p_better"] > 0.99
    same = paired_difference(theirs.astype({"score": float}), theirs.astype({"score": float}))
    assert same["difference"] == 0 and same["p_better"] == 0.5


# --- groups are scored as lm-eval scores them --------------------------------------------------

GROUPED = {"a": 12, "b": 24, "c": 12, "d": 12, "solo": 16}
"""A local task folder: group `suite` (plain mean of its tasks) holds task c and group `pair`
(size-weighted mean of a and b); group `plain` (no aggregate) holds d; `solo` stands alone."""


def _task_folder(folder):
    for i, (name, n) in enumerate(GROUPED.items()):
        _local_task(folder, name, n, seed=i)
    aggregate = "aggregate_metric_list: [{{metric: acc, weight_by_size: {}}}]"
    (folder / "pair.yaml").write_text(f"group: pair\ntask: [a, b]\n{aggregate.format('true')}\n")
    (folder / "suite.yaml").write_text(
        f"group: suite\ntask: [pair, c]\n{aggregate.format('false')}\n"
    )
    (folder / "plain.yaml").write_text("group: plain\ntask: [d]\n")
    return folder


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """Two tiny models scored by lm-eval on the grouped folder (one lm-eval import)."""
    pytest.importorskip("lm_eval", reason="optional extra: pip install .[eval]")
    from regmix.evaluation.harness import EvalSettings, evaluate_model

    root = tmp_path_factory.mktemp("grouped")
    tasks = _task_folder(root / "tasks")
    settings = EvalSettings(tasks=(str(tasks),), batch_size=16)
    results = {}
    folders = {model: root / "final" / model for model in ("regmix", "prior")}
    model_dir = _export(folders["regmix"] / "hf", seed=0)
    results["regmix"] = evaluate_model(model_dir, settings, folders["regmix"] / "eval", threads=1)
    # `prior` as an evaluate job asking for a GPU, on a machine with GPUs 0 and 1, 0 taken
    model_dir = _export(folders["prior"] / "hf", seed=1)
    command = ["evaluate", "--model", str(model_dir), "--out-dir", str(folders["prior"] / "eval")]
    command += ["--settings", json.dumps({"tasks": [str(tasks)], "batch_size": 16}), "--gpus", "1"]
    err, lease = io.StringIO(), root / "lease.json"
    write_json({"0": holder(os.getppid())}, lease)  # GPU 0: another job's (a live process)
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stderr(err):
        env.setenv("REGMIX_GPU_LEASE", str(lease))
        env.setenv(VISIBLE, "0,1")
        assert main(command) == 0
    results["prior"] = json.loads((folders["prior"] / "eval" / "results.json").read_text())
    evals = [folder / "eval" for folder in folders.values()]
    table = collect_downstream(evals, root / "downstream.parquet")
    return root, results, table, (err.getvalue(), Lease(lease).held())


def test_a_local_folder_runs_its_outermost_groups_and_lone_tasks(tmp_path):
    folder = _task_folder(tmp_path / "tasks")
    assert select_tasks([str(folder)]).names == ["plain", "suite", "solo"]
    check_tasks([str(folder)])


def test_a_group_counts_once_with_its_subtasks_filed_under_it(grouped):
    _, results, table, _ = grouped
    regmix = table[table.model == "regmix"]
    assert dict(zip(regmix.task, regmix.group, strict=True)) == {
        "a": "suite", "b": "suite", "pair": "suite", "c": "suite", "suite": "suite",
        "d": "d", "solo": "solo",
    }  # fmt: skip
    scores = headline(table)
    assert sorted(set(scores.task)) == ["d", "solo", "suite"] and set(scores.metric) == {"acc"}
    suite = results["regmix"]["results"]["suite"]
    row = scores[(scores.model == "regmix") & (scores.task == "suite")].iloc[0]
    assert row.value == pytest.approx(suite["acc,none"]) and row.samples == 12 + 24 + 12


def test_group_weights_reproduce_lm_evals_aggregate(grouped):
    _, results, table, _ = grouped
    scores = results["regmix"]["results"]
    weights = example_weights(table, "regmix", {"a", "b", "c", "d", "solo"})
    assert weights["a"] == weights["b"] == weights["c"] == pytest.approx(1 / 9)  # plain mean
    assert weights["d"] == weights["solo"] == pytest.approx(1 / 3)
    average = sum(w * scores[t]["acc,none"] for t, w in weights.items())
    entries = ("suite", "d", "solo")
    assert average == pytest.approx(np.mean([scores[e]["acc,none"] for e in entries]))
    pair = {"results": {k: scores[k] for k in ("a", "b", "pair")}, "group_subtasks": {}}
    pair["group_subtasks"]["pair"] = ["a", "b"]
    from regmix.evaluation.downstream import results_rows

    alone = pd.DataFrame(results_rows("regmix", pair))
    assert example_weights(alone, "regmix", {"a", "b"}) == pytest.approx({"a": 1 / 3, "b": 2 / 3})


def test_paired_difference_over_groups_is_the_difference_of_the_averages(grouped):
    root, _, table, _ = grouped
    metrics = sample_metrics(table)
    ours, theirs = (read_samples(root / "final" / m / "eval", metrics) for m in ("regmix", "prior"))
    assert sorted(set(ours.task)) == ["a", "b", "c", "d", "solo"]
    weights = example_weights(table, "regmix", set(ours.task))
    diff = paired_difference(ours, theirs, weights)
    averages = headline(table).groupby("model").value.mean()
    assert diff["difference"] == pytest.approx(averages["regmix"] - averages["prior"])


def test_summary_averages_the_scored_entries_only(grouped):
    from regmix.report.downstream import downstream_lines, read_downstream

    root, results, _, _ = grouped
    samples = [root / "final" / m / "eval" / "samples.jsonl" for m in results]
    report = read_downstream(root / "downstream.parquet", samples, None)
    average = report.scores[report.scores.task == "average"].set_index("model").value
    scores = results["prior"]["results"]
    expected = np.mean([scores[e]["acc,none"] for e in ("suite", "d", "solo")])
    assert average["prior"] == pytest.approx(expected)
    header = next(line for line in downstream_lines(report) if line.startswith("| model"))
    assert header == "| model | d (acc) | solo (acc) | suite (acc) | average (mean) |"


def test_an_evaluate_job_takes_a_free_gpu_from_the_training_lease(grouped):
    """GPU 0 was held: the job scored on GPU 1 (here on the CPU, with no CUDA behind the ids:
    said in one line), and gave GPU 1 back when it ended."""
    *_, (err, lease) = grouped
    assert "regmix: granted GPU 1 but CUDA is not available; scoring on CPU" in err
    assert set(lease) == {"0"}


def test_a_job_asking_no_gpu_hides_them_and_one_asking_a_gpu_gets_a_free_one(monkeypatch, tmp_path):
    from regmix.evaluation.harness import granted_device

    monkeypatch.setenv("REGMIX_GPU_LEASE", str(tmp_path / "lease.json"))
    monkeypatch.setenv(VISIBLE, "0,1")
    with granted_device(0) as device:
        assert device == "cpu" and os.environ[VISIBLE] == ""
    monkeypatch.setenv(VISIBLE, "0,1")
    other = holder(os.getppid())  # a live process: another job holding GPU 0
    write_json({"0": other}, tmp_path / "lease.json")
    with granted_device(1):
        assert os.environ[VISIBLE] == "1"
        assert Lease(tmp_path / "lease.json").held() == {"0": other, "1": holder(os.getpid())}
    assert os.environ[VISIBLE] == "0,1" and Lease(tmp_path / "lease.json").held() == {"0": other}
