"""Per-file shards, file records and domain fingerprints; a data job killed at any point
resumes at file granularity and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard

from regmix.data.collect import collect_shards
from regmix.data.corpus import ReadOptions, open_corpus
from regmix.data.fingerprint import file_hash, read_fingerprints
from regmix.data.loader import open_domain
from regmix.data.shards import FILE_RECORD, GROUP_RECORD, file_id, partial_folder, prepare_group

FIELD = ReadOptions(domain_field="meta.src")


def write_part(path: Path, k: int, docs: int = 50, names=("Pile-CC", "Github")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "text": f"{names[i % len(names)]} document {k}-{i} " * 5,
                "meta": {"src": names[i % len(names)]},
            }
        )
        for i in range(docs)
    ]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(data) if path.suffix == ".zst" else data)
    return path


def prepare(corpus: Path, shards: Path, groups: dict[str, list[str]], **kwargs) -> list[Path]:
    files, options = open_corpus(corpus, FIELD)
    by_name = {f.relative: f for f in files}
    out = []
    for name, members in groups.items():
        out.append(shards / name)
        prepare_group([by_name[m] for m in members], shards / name, "byte", options, **kwargs)
    return out


def test_each_file_has_its_own_folder_record_and_token_hash(tmp_path):
    corpus = tmp_path / "corpus"
    for k in range(3):
        write_part(corpus / f"{k:02d}.jsonl.zst", k)
    (group,) = prepare(
        corpus,
        tmp_path / "data/shards",
        {"g-000000": ["00.jsonl.zst", "01.jsonl.zst", "02.jsonl.zst"]},
    )
    summary = json.loads((group / GROUP_RECORD).read_text())
    assert summary["files"] == ["00.jsonl.zst", "01.jsonl.zst", "02.jsonl.zst"]
    folder = group / file_id("01.jsonl.zst")
    record = json.loads((folder / FILE_RECORD).read_text())
    source = corpus / "01.jsonl.zst"
    assert record["relative"] == "01.jsonl.zst"
    assert record["size"] == source.stat().st_size
    assert record["mtime_ns"] == source.stat().st_mtime_ns
    assert record["content_hash"] == file_hash(source)
    assert record["documents"] == 50
    entry = record["domains"]["train/github"]
    tokens = np.fromfile(folder / "train/github.bin", dtype=np.uint16)
    assert entry["tokens"] == len(tokens) and entry["documents"] == 25
    hasher = __import__("hashlib").blake2b(tokens.tobytes(), digest_size=32)
    assert entry["token_hash"] == f"blake2b:{hasher.hexdigest()}"
    assert not list((tmp_path / "data/shards").glob(".*"))  # nothing left beside the group


def test_the_fingerprint_ignores_grouping_names_and_mtimes_and_follows_the_tokens(tmp_path):
    corpus = tmp_path / "corpus"
    for k in range(3):
        write_part(corpus / f"{k:02d}.jsonl.zst", k)
    names = ["00.jsonl.zst", "01.jsonl.zst", "02.jsonl.zst"]
    one = prepare(corpus, tmp_path / "a/shards", {"all-000000": names})
    collect_shards(one, tmp_path / "a")
    three = prepare(
        corpus, tmp_path / "b/shards", {f"g{k}-000000": [n] for k, n in enumerate(names)}
    )
    stats = collect_shards(three, tmp_path / "b")
    first, second = read_fingerprints(tmp_path / "a"), read_fingerprints(tmp_path / "b")
    assert first == second and set(first) == {("train", "pile_cc"), ("train", "github")}
    assert set(stats["fingerprint"]) == set(first.values())
    index = json.loads((tmp_path / "b/train/github.json").read_text())
    assert [s["file"] for s in index["shards"]] == names  # in the order of the files' paths
    # a file touched but unchanged: same fingerprint; a changed document: a new one (that
    # domain's only)
    os.utime(corpus / "01.jsonl.zst", ns=(1, 1))
    again = prepare(corpus, tmp_path / "c/shards", {"all-000000": names})
    collect_shards(again, tmp_path / "c")
    assert read_fingerprints(tmp_path / "c") == first
    lines = zstandard.decompress((corpus / "02.jsonl.zst").read_bytes()).decode().splitlines()
    lines[1] = lines[1].replace("document", "Document")  # a github document
    (corpus / "02.jsonl.zst").write_bytes(zstandard.compress("\n".join(lines).encode() + b"\n"))
    changed = prepare(corpus, tmp_path / "d/shards", {"all-000000": names})
    collect_shards(changed, tmp_path / "d")
    now = read_fingerprints(tmp_path / "d")
    assert now[("train", "github")] != first[("train", "github")]
    assert now[("train", "pile_cc")] == first[("train", "pile_cc")]


def test_a_resumed_job_keeps_finished_files_and_removes_the_unfinished(tmp_path):
    corpus = tmp_path / "corpus"
    for k in range(3):
        write_part(corpus / f"{k:02d}.jsonl", k)
    shards = tmp_path / "shards"
    names = ["00.jsonl", "01.jsonl", "02.jsonl"]
    (done,) = prepare(corpus, tmp_path / "first", {"g-000000": names})
    # An attempt killed inside file 02: files 00 and 01 done, 02 staged, and an old-style
    # staging folder beside the group.
    partial = partial_folder(shards / "g-000000")
    partial.mkdir(parents=True)
    for name in names[:2]:
        os.system(f"cp -a {done / file_id(name)} {partial}")
    stale = partial / f".{file_id(names[2])}.staging-123"
    stale.mkdir()
    (stale / "junk.bin").write_bytes(b"x" * 100)
    (shards / ".g-000000.staging-abc").mkdir()
    kept_before = (partial / file_id(names[0]) / FILE_RECORD).stat().st_mtime_ns
    summary = prepare(corpus, shards, {"g-000000": names})[0] / GROUP_RECORD
    record = json.loads(summary.read_text())
    assert record["resumed_files"] == 2 and record["documents"] == 150
    group = shards / "g-000000"
    assert (group / file_id(names[0]) / FILE_RECORD).stat().st_mtime_ns == kept_before
    assert sorted(p.name for p in shards.iterdir()) == ["g-000000"]  # nothing else left
    assert not list(group.glob(".*"))
    # a file changed since it was finished is read again
    again = partial_folder(shards / "g-000000")
    os.replace(group, again)
    write_part(corpus / "01.jsonl", 1, docs=10)
    record = json.loads(
        (prepare(corpus, shards, {"g-000000": names})[0] / GROUP_RECORD).read_text()
    )
    assert record["resumed_files"] == 2 and record["documents"] == 110


def test_folders_follow_the_umask(tmp_path):
    corpus = tmp_path / "corpus"
    write_part(corpus / "00.jsonl", 0)
    old = os.umask(0o022)
    try:
        (group,) = prepare(corpus, tmp_path / "shards", {"g-000000": ["00.jsonl"]})
    finally:
        os.umask(old)
    for path in [group, *group.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), path


def test_sigkill_mid_file_then_a_rerun_redoes_only_that_file_and_leaves_nothing(tmp_path):
    """A real kill: the job reads its second file from a pipe that the test stops feeding."""
    corpus = tmp_path / "corpus"
    write_part(corpus / "00.jsonl", 0)
    pipe = corpus / "01.jsonl"
    os.mkfifo(pipe)
    out = tmp_path / "shards" / "g-000000"
    command = [sys.executable, "-m", "regmix.cli", "prepare-group", "--corpus", str(corpus)]
    command += ["--domain-field", "meta.src", "--out", str(out)]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    with open(pipe, "w") as feed:  # blocks until the job opens the pipe: file 00 is done
        feed.write(json.dumps({"text": "half a file", "meta": {"src": "Github"}}) + "\n")
        feed.flush()
        partial = partial_folder(out)
        deadline = time.time() + 30
        while not list(partial.glob(".*staging*")) and time.time() < deadline:
            time.sleep(0.01)
        job.send_signal(signal.SIGKILL)
        job.wait()
    assert job.returncode == -signal.SIGKILL
    left = sorted(p.name for p in partial.iterdir())
    assert left[0].startswith(f".{file_id('01.jsonl')}.staging-") and left[1] == file_id("00.jsonl")
    pipe.unlink()
    write_part(pipe, 1)
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 of 2 file(s) finished by an earlier attempt, kept" in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["g-000000"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [GROUP_RECORD, file_id("00.jsonl"), file_id("01.jsonl")]
    )


def test_collect_removes_what_a_replaced_group_left_and_the_loader_reads_in_file_order(tmp_path):
    corpus = tmp_path / "corpus"
    for k in range(2):
        write_part(corpus / f"{k:02d}.jsonl", k)
    groups = prepare(
        corpus, tmp_path / "data/shards", {"b-000000": ["00.jsonl"], "a-000000": ["01.jsonl"]}
    )
    (tmp_path / "data/shards/.old-123456.partial/x").mkdir(parents=True)
    collect_shards(groups, tmp_path / "data")
    assert not list((tmp_path / "data/shards").glob(".*"))
    stream = open_domain(tmp_path / "data", "train", "github")
    first = bytes(stream[:30].astype(np.uint8)).decode()
    assert first.startswith("Github document 0-1 ")  # file 00 first, though its group sorts last


@pytest.mark.parametrize("size", [0, 1])
def test_an_empty_file_of_a_field_corpus_has_an_empty_record(tmp_path, size):
    corpus = tmp_path / "corpus"
    write_part(corpus / "00.jsonl", 0)
    (corpus / "01.jsonl").write_text("\n" * size)
    (group,) = prepare(corpus, tmp_path / "shards", {"g-000000": ["00.jsonl", "01.jsonl"]})
    record = json.loads((group / file_id("01.jsonl") / FILE_RECORD).read_text())
    assert record["documents"] == 0 and record["domains"] == {}
