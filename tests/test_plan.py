"""`regmix plan`: jobs, tokens, FLOPs and disk checked against hand-computed values, the
schedule simulation on small DAGs, and one real timing of training steps."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from dataclasses import replace

import pandas as pd
import pyarrow.parquet as pq
import pytest
from workflow import TINY

from regmix.cli import main
from regmix.data.tokenize import byte_tokenizer_json
from regmix.observe.costs import (
    CHECKPOINT_EXTRA_BYTES,
    KEPT_RESULT_BYTES,
    text_bytes,
    tokenizer_json_vocab,
    vocabulary,
)
from regmix.observe.plan import plan_workflow
from regmix.observe.plan_report import jobs_per_stage, plan_dict, render_text
from regmix.observe.schedule import (
    AS_READY,
    LONGEST_CHAIN,
    Job,
    RunTime,
    makespan,
    peak_checkpoint_bytes,
    simulate_schedule,
)
from regmix.observe.step_timing import Shape, StepTiming, measure_steps

TINY_JOBS = {
    "data": {"synth_corpus": 1, "prepare": 1},
    "mixtures": {"sample_mixtures": 1, "propose_mixtures": 1},  # rounds [4, 2]
    "proxies": {"train_proxy": 2, "collect_proxies": 1},  # 4 per job: one per round
    "regression": {"fit": 4, "simulate": 1},  # gp + lightgbm, linear, mixlaw
    "optimum check": {"train_optimum_proxy": 1},
    # regmix, prior, uniform, planted, heldout01, heldout02
    "final models": {"final_mixture": 6, "train_final": 6, "collect_final": 1, "predict_final": 1},
    "report": {"summarize": 1, "report_figures": 1},
}


def write_config(tmp_path, text: str):
    path = tmp_path / "extra.yaml"
    path.write_text(text)
    return path


def test_tiny_config_jobs_per_stage(tmp_path):
    plan = plan_workflow([TINY], tmp_path, cores=2, measure=False)
    assert jobs_per_stage(plan.jobs) == TINY_JOBS
    assert [b.name for b in plan.sweep.batches()] == ["run0001-run0004", "run0005-run0006"]


def test_tiny_config_tokens_and_flops_by_hand(tmp_path):
    plan = plan_workflow([TINY], tmp_path, cores=2, measure=False)
    proxy, final = plan.proxy, plan.final
    # Proxy: 1 layer, width 32, MLP 64, byte vocabulary 257, 6 steps of 4 × 32 tokens.
    # Non-embedding: 4·32² + 3·32·64 + 2·32 + 32 (final norm) = 10,336; + embedding and head.
    assert proxy.cost.model.non_embedding_params == 10_336
    assert proxy.cost.model.total_params == 10_336 + 2 * 257 * 32
    assert proxy.cost.tokens == 768
    # 6 × (10,336 + 257·32 head) + 6 · 1 layer · 32 width · 32 tokens (causal attention)
    assert proxy.cost.flops_per_token == 117_504
    assert proxy.runs == 7  # six proxies + the optimum's check
    assert proxy.flops == 7 * 768 * 117_504
    # Evaluations at steps 3 and 6; 4 windows of 32 tokens in 9 validation domains; forward
    # only is a third of the training FLOPs.
    assert proxy.cost.evaluations == 2
    assert proxy.cost.valid_windows == 36
    assert proxy.eval_flops == pytest.approx(7 * 2 * 36 * 32 * 117_504 / 3)
    # Final: width 48, MLP 96, 8 steps; 6 models.
    assert final.cost.model.non_embedding_params == 4 * 48**2 + 3 * 48 * 96 + 2 * 48 + 48
    assert final.cost.flops_per_token == 6 * (23_184 + 257 * 48) + 6 * 48 * 32
    assert final.runs == 6
    assert final.tokens == 6 * 8 * 4 * 32


def test_embedded_default_jobs_and_compute_by_hand(tmp_path):
    plan = plan_workflow([], tmp_path, cores=2, measure=False)
    stages = jobs_per_stage(plan.jobs)
    # rounds [32, 16, 15], 8 runs per job: 4 + 2 + 2 jobs, and a proposal for rounds 2 and 3
    assert stages["proxies"] == {"train_proxy": 8, "collect_proxies": 1}
    assert stages["mixtures"] == {"sample_mixtures": 1, "propose_mixtures": 2}
    assert stages["final models"]["train_final"] == 10  # 4 + heldout01..06
    # + evaluation: the continuation task, one evaluate per final model, the table, its figure
    assert stages["evaluation"] == {"continuation_task": 1, "evaluate": 10, "collect_downstream": 1}
    assert len(plan.jobs) == 44 + 13
    # demo_proxy: 2 layers, width 128, MLP 256: 2 · 164,096 + 128 non-embedding parameters.
    assert plan.proxy.cost.model.non_embedding_params == 328_320
    assert plan.proxy.cost.flops_per_token == 6 * (328_320 + 257 * 128) + 6 * 2 * 128 * 128
    assert plan.proxy.cost.tokens == 80 * 32 * 128
    # demo_final: 4 layers, width 192, MLP 512; 140 steps, evaluated at 35, 70, 105, 140.
    assert plan.final.cost.model.non_embedding_params == 1_771_200
    assert plan.final.cost.flops_per_token == 6 * (1_771_200 + 257 * 192) + 6 * 4 * 192 * 128
    assert plan.final.cost.tokens == 140 * 32 * 128
    assert plan.final.cost.evaluations == 4
    assert plan.proxy.runs + plan.final.runs == 64 + 10  # 63 proxies + the optimum's check


def test_rounds_add_one_proposal_job_per_later_round(tmp_path):
    extra = write_config(tmp_path, "mixtures: {rounds: [32, 16, 12]}\n")
    plan = plan_workflow([extra], tmp_path, cores=2, measure=False)
    stages = jobs_per_stage(plan.jobs)
    assert stages["mixtures"] == {"sample_mixtures": 1, "propose_mixtures": 2}
    assert stages["proxies"]["train_proxy"] == 4 + 2 + 2  # 12 runs: a job of 8 and one of 4
    round3 = next(j for j in plan.jobs if j.name == "propose_mixtures[round3]")
    assert sum(j.startswith("train_proxy[") for j in round3.after) == 6  # rounds 1 and 2


def test_gpu_hours_count_training_tokens_only(tmp_path):
    plan = plan_workflow([TINY], tmp_path, cores=2, gpu_tokens_per_s=100.0, measure=False)
    assert plan.gpu_hours == pytest.approx((7 * 768 + 6 * 1024) / 100 / 3600)


def test_disk_from_prepared_data(tmp_path, data_dir):
    shutil.copytree(data_dir, tmp_path / "results" / "data")
    plan = plan_workflow([TINY], tmp_path, cores=2, measure=False)
    disk = {item.what: item.bytes for item in plan.disk}
    stats = pd.read_parquet(data_dir / "stats.parquet")
    assert plan.corpus.exact
    assert disk["token shards"] == 2 * int(stats["tokens"].sum())  # uint16 ids
    assert disk["token shards"] == sum(
        p.stat().st_size for p in data_dir.glob("shards/*/*/*/*.bin")
    )
    params = plan.final.cost.model.total_params
    assert plan.final.cost.checkpoint_bytes == 12 * params + CHECKPOINT_EXTRA_BYTES
    assert disk["exported models"] == 2 * 6 * 4 * params  # published + kept, 6 models
    assert disk["kept results"] == 2 * (7 + 6) * KEPT_RESULT_BYTES
    # No schedule without timing: the bound is one run in flight per core.
    assert disk["checkpoints (peak)"] == 2 * plan.final.cost.checkpoint_bytes


def test_synthetic_corpus_estimate_is_close_to_what_prepare_counts(tmp_path, corpus_dir, data_dir):
    extra = write_config(tmp_path, "corpus: {synthetic: {seed: 1, scale: 0.2}}\n")
    plan = plan_workflow([extra], tmp_path, cores=2, measure=False)
    counted = pd.read_parquet(data_dir / "stats.parquet")  # the same corpus, prepared
    assert not plan.corpus.exact
    assert plan.corpus.total == pytest.approx(int(counted["tokens"].sum()), rel=0.08)


def test_corpus_file_text_sizes(corpus_dir):
    gz = next(corpus_dir.glob("train/*.jsonl.gz"))
    assert text_bytes(gz) == len(gzip.decompress(gz.read_bytes()))
    parquet = next(corpus_dir.glob("train/*.parquet"))
    texts = pq.read_table(parquet, columns=["text"]).column("text").to_pylist()
    # Parquet's uncompressed column size adds lengths, page headers and statistics.
    text = sum(len(t.encode()) for t in texts)
    assert text <= text_bytes(parquet) <= 1.15 * text


def test_vocabulary_of_a_tokenizer_json(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(byte_tokenizer_json())
    assert tokenizer_json_vocab(path) == 257
    assert vocabulary("tokenizer.json", tmp_path).size == 257
    assert vocabulary("bpe:8192", tmp_path).size == 8192


def test_no_measure_prints_jobs_compute_and_disk(tmp_path, capsys):
    code = main(["plan", "--no-measure", "--configfile", str(TINY), "--directory", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "train_proxy 2, collect_proxies 1" in out
    assert "exported models" in out
    assert "wall time: not estimated (--no-measure)" in out


def test_json_output(tmp_path, capsys):
    args = ["plan", "--no-measure", "--json", "--configfile", str(TINY)]
    assert main([*args, "--directory", str(tmp_path), "--gpu-tokens-per-s", "1000"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jobs"] == TINY_JOBS
    assert data["proxy"]["tokens"] == 7 * 768
    assert "wall_seconds" not in data


def test_bad_config_key_is_a_one_line_error(tmp_path, capsys):
    extra = write_config(tmp_path, "proxy: {stepz: 3}\n")
    code = main(["plan", "--no-measure", "--configfile", str(extra)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: config key proxy") and "stepz" in err
    assert err.count("\n") == 1


# --- the schedule simulation ----------------------------------------------------------------


def test_schedule_runs_independent_jobs_side_by_side():
    jobs = [
        Job("a", "train_proxy", 1, 3.0, checkpoint_bytes=10),
        Job("b", "train_proxy", 1, 2.0, checkpoint_bytes=10),
        Job("c", "fit", 2, 1.0, after=("a", "b")),
    ]
    slots = simulate_schedule(jobs, cores=2)
    assert makespan(slots) == 4.0  # a and b together, then c on both cores
    assert peak_checkpoint_bytes(slots) == 20
    assert makespan(simulate_schedule(jobs, cores=1)) == 6.0


def test_schedule_orders_longest_chain_first_or_as_ready():
    # "long" has a 5 s job waiting for it: started first, its follower overlaps the second
    # short job and the schedule ends at 6 s; started as ready (then as listed), at 7 s.
    jobs = [
        Job("short1", "train_final", 1, 1.0),
        Job("short2", "train_final", 1, 1.0),
        Job("long", "train_proxy", 1, 1.0),
        Job("tail", "train_final", 1, 5.0, after=("long",)),
    ]
    slots = {s.job.name: s for s in simulate_schedule(jobs, 2, LONGEST_CHAIN)}
    assert slots["long"].start == 0.0 and slots["tail"].start == 1.0
    assert makespan(slots.values()) == 6.0
    slots = {s.job.name: s for s in simulate_schedule(jobs, 2, AS_READY)}
    assert slots["long"].start == 1.0 and makespan(slots.values()) == 7.0


def test_a_two_thread_job_waits_for_both_cores():
    # "fit" needs both cores; single-thread jobs ready beside it take a core as soon as one
    # frees, as Snakemake's scheduler does (no reservation).
    jobs = [
        Job("busy", "train_final", 1, 2.0),
        Job("fit", "fit", 2, 1.0),
        Job("other", "train_final", 1, 2.0),
    ]
    slots = {s.job.name: s for s in simulate_schedule(jobs, cores=2)}
    assert slots["fit"].start == 2.0


def test_old_layout_draws_final_mixtures_after_the_optimum(tmp_path):
    plan = plan_workflow([TINY], tmp_path, cores=2, measure=False)
    baseline = next(j for j in plan.jobs if j.name == "final_mixture[prior]")
    assert "simulate" not in baseline.after  # needs only the data
    old = plan_workflow([TINY], tmp_path, cores=2, measure=False, baselines_wait_for_optimum=True)
    table = next(j for j in old.jobs if j.rule == "final_mixtures")
    assert "simulate" in table.after


def test_job_seconds_from_given_step_timings_by_hand(tmp_path):
    timing = StepTiming("t", 0.1, 0.3, 0.01, 0.05, 2.0, "given")
    plan = plan_workflow([TINY], tmp_path, cores=2, timings={"proxy": timing, "final": timing})
    seconds = {job.name: job.seconds for job in plan.jobs}
    # A process: 0.5 s start + 2.0 s imports + 0.2 s first-step extra. A proxy run: 0.1 s +
    # 6 steps × 0.1 + 2 evaluations × 36 windows × 0.01 + 2 checkpoints × 0.05 = 1.52 s.
    assert seconds["train_proxy[run0001-run0004]"] == pytest.approx(0.5 + 2.7 + 4 * 1.52)
    assert seconds["train_proxy[run0005-run0006]"] == pytest.approx(0.5 + 2.7 + 2 * 1.52)
    # A final run: 0.1 + 8 × 0.1 + 2 × 36 × 0.01 + 1 checkpoint + the export (~1 checkpoint).
    assert seconds["train_final[prior]"] == pytest.approx(0.5 + 2.7 + 1.72)
    assert seconds["train_optimum_proxy"] == pytest.approx(0.5 + 2.7 + 1.52)
    assert makespan(plan.slots) > 0.5 + 2.7 + 4 * 1.52  # at least one proxy job


# --- timing real steps ----------------------------------------------------------------------


def test_measured_plan_has_a_positive_finite_wall_time(tmp_path):
    plan = plan_workflow([TINY], tmp_path, cores=2)
    for timing in plan.timings.values():
        assert 0 < timing.step_seconds < 60 and timing.how.startswith("measured")
        assert timing.eval_window_seconds > 0 and timing.checkpoint_seconds > 0
        assert timing.import_seconds > 0
    total = makespan(plan.slots)
    assert math.isfinite(total) and total > 0
    data = plan_dict(plan)
    assert data["wall_seconds"] == total
    assert {s["stage"] for s in data["stages"]} == set(TINY_JOBS)


def test_a_shape_too_large_to_time_is_extrapolated(tmp_path):
    plan = plan_workflow([TINY], tmp_path, cores=2, measure=False)
    small = Shape.of("small", plan.proxy.cost)
    huge = replace(small, label="huge", total_params=10**9, flops_per_token=6e9)
    timings = measure_steps([small, huge])
    assert timings["small"].how.startswith("measured")
    assert timings["huge"].how.startswith("extrapolated from FLOPs")
    ratio = timings["huge"].step_seconds / timings["small"].step_seconds
    assert ratio == pytest.approx(6e9 / small.flops_per_token, rel=1e-6)


def test_a_compiled_shape_is_timed_compiled_and_pays_compilation_once(tmp_path):
    """The demo compiles (`compile: true`): the plan times compiled steps, and the compilation
    is first-step time, which the schedule charges once per process, not per run."""
    plan = plan_workflow([TINY], tmp_path, cores=2, measure=False)
    eager = Shape.of("eager", plan.proxy.cost)
    assert not eager.compile  # the tiny config trains eager
    compiled = replace(eager, label="compiled", compile=True)
    timings = measure_steps([eager, compiled])
    assert "compiled" in timings["compiled"].how and "compiled" not in timings["eager"].how
    assert timings["compiled"].first_step_extra > 10 * timings["compiled"].step_seconds
    seconds = RunTime.of(plan.proxy.cost, timings["compiled"], exports=False)
    assert seconds.run_seconds < timings["compiled"].first_step_extra < seconds.process_seconds
    assert Shape.of("demo", plan_workflow([], tmp_path, cores=2, measure=False).proxy.cost).compile


def test_evaluation_cost_counts_requests_tokens_and_forward_flops(tmp_path):
    plan = plan_workflow([], tmp_path, cores=2, measure=False)  # the demo: its continuation task
    cost = plan.evaluation
    assert cost is not None and cost.enabled
    (task,) = cost.tasks
    assert task.requests == 200 * 4 and task.tokens_per_request == 64 + 32
    assert cost.flops == pytest.approx(800 * 96 * plan.final.cost.flops_per_token / 3)
    assert "downstream evaluation per final model (on" in render_text(plan)


def test_evaluation_cost_of_documented_tasks_respects_limit_shots_and_length(tmp_path):
    config = write_config(
        tmp_path,
        "evaluation: {enabled: false, tasks: [hellaswag, mystery], num_fewshot: 1, limit: 100,"
        " continuation: {examples: 0}}\n",
    )
    plan = plan_workflow([config], tmp_path, cores=2, measure=False)
    hellaswag, mystery = plan.evaluation.tasks
    assert hellaswag.requests == 100 * 4
    assert hellaswag.tokens_per_request == min(2 * 110, plan.final.cost.train.seq_len)
    assert mystery.requests is None and plan.evaluation.unknown == ["mystery"]
    assert "not counted (unknown size): mystery" in render_text(plan)
