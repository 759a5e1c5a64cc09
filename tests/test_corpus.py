import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_jsonl

from regmix.data.corpus import discover, domain_of, read_documents
from regmix.errors import RegmixError


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("pile_cc-0.jsonl", "pile_cc"),
        ("pile_cc-12.jsonl.gz", "pile_cc"),
        ("arxiv.parquet", "arxiv"),
        ("the_pile_github-3.jsonl", "the_pile_github"),
    ],
)
def test_domain_is_the_file_name_prefix_before_the_first_dash(name, domain):
    assert domain_of(Path(name)) == domain


def test_a_dash_inside_a_domain_name_is_rejected_with_a_suggested_name():
    with pytest.raises(RegmixError, match=r"pile-cc-0\.jsonl.*may not contain '-'.*pile_cc-0"):
        domain_of(Path("pile-cc-0.jsonl"))


def test_discover_groups_files_by_split_and_allows_valid_only_domains(tmp_path):
    write_jsonl(tmp_path / "train" / "a-0.jsonl", ["x"])
    write_jsonl(tmp_path / "train" / "a-1.jsonl", ["y"])
    write_jsonl(tmp_path / "valid" / "a-0.jsonl", ["z"])
    write_jsonl(tmp_path / "valid" / "target-0.jsonl", ["t"])
    (tmp_path / "train" / "README.txt").write_text("ignored")
    files = discover(tmp_path)
    assert [(f.split, f.domain, f.path.name) for f in files] == [
        ("train", "a", "a-0.jsonl"),
        ("train", "a", "a-1.jsonl"),
        ("valid", "a", "a-0.jsonl"),
        ("valid", "target", "target-0.jsonl"),
    ]


def test_missing_corpus_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(RegmixError, match="corpus folder does not exist"):
        discover(tmp_path / "nope")


def test_corpus_without_train_files_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(RegmixError, match="no .jsonl"):
        discover(tmp_path)


def test_requested_domain_without_files_is_named(tmp_path):
    write_jsonl(tmp_path / "train" / "a-0.jsonl", ["x"])
    with pytest.raises(RegmixError, match="no files for domain.*missing"):
        discover(tmp_path, domains=["a", "missing"])


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "a-0.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(RegmixError, match=r"a-0\.jsonl:2: malformed JSON"):
        list(read_documents(path))


def test_record_without_text_names_file_and_line(tmp_path):
    path = tmp_path / "a-0.jsonl"
    path.write_text('{"text": "ok"}\n\n{"body": "no text"}\n')
    with pytest.raises(RegmixError, match=r"a-0\.jsonl:3: record has no 'text' field"):
        list(read_documents(path))


def test_reads_gzipped_jsonl_and_parquet(tmp_path):
    gz = tmp_path / "a-0.jsonl.gz"
    with gzip.open(gz, "wt") as out:
        out.write(json.dumps({"text": "héllo", "id": 1}) + "\n")
    parquet = tmp_path / "b-0.parquet"
    pd.DataFrame({"text": ["one", "two"], "meta": [1, 2]}).to_parquet(parquet)
    assert list(read_documents(gz)) == ["héllo"]
    assert list(read_documents(parquet)) == ["one", "two"]


def test_parquet_without_text_column_is_an_error(tmp_path):
    parquet = tmp_path / "b-0.parquet"
    pd.DataFrame({"body": ["x"]}).to_parquet(parquet)
    with pytest.raises(RegmixError, match="no 'text' column"):
        list(read_documents(parquet))
