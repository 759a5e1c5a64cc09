"""`regmix status` and `regmix plan` on the data stage: from file names, sizes and records."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from workflow import TINY

from regmix.observe.data_stage import data_plan, data_status, planned_groups, status_line
from regmix.workflow.config import load_config


def field_corpus(tmp_path: Path, files: int = 3, **corpus) -> dict:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for k in range(files):
        line = json.dumps({"text": "some text " * 50, "meta": {"set": "Pile-CC"}})
        (folder / f"{k:02d}.jsonl").write_text((line + "\n") * 100)
    config = load_config([TINY])
    config["corpus"].update(path="corpus", domain_field="meta.set", bytes_per_job=1, **corpus)
    return config


def test_status_counts_files_done_running_failed_and_pending(tmp_path):
    config = field_corpus(tmp_path)
    done, running, failed = sorted(planned_groups(config, tmp_path))
    shards = tmp_path / "results/data/shards"
    (shards / done).mkdir(parents=True)
    record = {"text_bytes": 50_000_000, "seconds": 10.0}
    (shards / done / "group.json").write_text(json.dumps(record))
    logs = tmp_path / "logs/data/prepare"
    logs.mkdir(parents=True)
    (logs / f"{running}.log").write_text(
        "prepare x: 10 documents, ... (2.50 MB/s), ... ETA 0:01:00\n"
    )
    (logs / f"{failed}.log").write_text("regmix: error: corpus/02.jsonl:7: malformed JSON\n")
    os.utime(logs / f"{failed}.log", (time.time() - 3600,) * 2)
    status = data_status(config, tmp_path)
    assert status.files == {"done": 1, "running": 1, "failed": 1, "pending": 0}
    assert status.megabytes_per_s == 2.5  # the running job's own rate
    assert status.failed == [f"{failed}: regmix: error: corpus/02.jsonl:7: malformed JSON"]
    assert "files 1 done, 1 running, 1 failed (3 jobs), 2.5 MB/s" in status_line(status)


def test_plan_counts_bytes_text_and_core_hours(tmp_path):
    config = field_corpus(tmp_path)
    plan = data_plan(config, tmp_path, tokens_per_byte=0.25)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "corpus").iterdir())
    assert plan.jobs == 3 and plan.bytes_to_read == on_disk == plan.text_bytes
    assert plan.tokens_to_write == on_disk * 0.25
    assert plan.core_hours == plan.core_hours_all > 0


def test_plan_shows_what_max_tokens_saves_once_surveyed(tmp_path):
    config = field_corpus(tmp_path, max_tokens=1000)
    survey = tmp_path / "results/data/survey.json"
    survey.parent.mkdir(parents=True)
    domains = {
        "pile_cc": {"estimated_tokens": 3000, "keep": 0.25},
        "x": {"estimated_tokens": 1000, "keep": 1.0},
    }
    survey.write_text(json.dumps({"domains": domains}))
    plan = data_plan(config, tmp_path, tokens_per_byte=0.25)
    assert plan.core_hours / plan.core_hours_all == pytest.approx((750 + 1000) / 4000)


def test_a_killed_job_is_failed_not_pending(tmp_path):
    from base64 import urlsafe_b64encode

    config = field_corpus(tmp_path, files=2)
    killed, _ = sorted(planned_groups(config, tmp_path))
    logs = tmp_path / "logs/data/prepare"
    logs.mkdir(parents=True)
    log = logs / f"{killed}.log"
    log.write_text("prepare x: 10 documents, 1.0 MB of text (2.50 MB/s), ... ETA 0:01:00\n")
    os.utime(log, (time.time() - 600,) * 2)
    (tmp_path / f"results/data/shards/.{killed}.partial/00-abcdef").mkdir(parents=True)
    (tmp_path / f"results/data/shards/.{killed}.partial/00-abcdef/file.json").write_text("{}")
    # Snakemake was killed with the job: its mark is left, no lock
    marks = tmp_path / ".snakemake/incomplete"
    marks.mkdir(parents=True)
    name = urlsafe_b64encode(f"results/data/shards/{killed}".encode()).decode()
    (marks / name).write_text("")
    status = data_status(config, tmp_path)
    assert status.files == {"done": 0, "running": 0, "failed": 1, "pending": 1}
    (line,) = status.failed
    assert line.startswith(f"{killed}: stopped without an error (killed")
    assert "1 of 1 file(s) finished, kept for the re-run" in line
