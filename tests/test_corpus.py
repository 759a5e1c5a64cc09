import gzip
import json
import zlib
from pathlib import Path

import pandas as pd
import pytest
import zstandard
from conftest import write_jsonl

from regmix.data.corpus import (
    ReadCounts,
    ReadOptions,
    discover,
    documents,
    domain_of,
    open_corpus,
    read_documents,
    read_options,
    split_of,
)
from regmix.data.domains import normalise, resolve_target
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
    (tmp_path / "train" / ".hidden").write_text("ignored")
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


def test_an_unknown_file_in_the_corpus_is_an_error_naming_it(tmp_path):
    write_jsonl(tmp_path / "train" / "a-0.jsonl", ["x"])
    (tmp_path / "train" / "notes.txt").write_text("not a corpus file")
    with pytest.raises(RegmixError, match=r"train/notes\.txt: not a corpus file"):
        discover(tmp_path)
    with pytest.raises(RegmixError, match=r"train/notes\.txt: not a corpus file"):
        discover(tmp_path, domain_field="meta.source")


def write_zst(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(text))
    return path


PILE = [
    {"text": "a web page", "meta": {"pile_set_name": "Pile-CC"}},
    {"text": "an article", "meta": {"pile_set_name": "Wikipedia (en)"}},
    {"text": "a book", "meta": {"pile_set_name": "Gutenberg (PG-19)"}},
]


def test_pile_layout_reads_zstd_with_the_domain_from_a_dotted_field(tmp_path):
    write_zst(tmp_path / "00.jsonl.zst", PILE)
    with _gz(tmp_path / "more" / "01.json.gz") as out:
        out.write(json.dumps(PILE[0]) + "\n")
    files = discover(tmp_path, domain_field="meta.pile_set_name")
    assert [(f.relative, f.split, f.domain) for f in files] == [
        ("00.jsonl.zst", "train", None),
        ("more/01.json.gz", "train", None),
    ]
    counts = ReadCounts()
    options = ReadOptions(domain_field="meta.pile_set_name")
    got = [(d.split, d.domain, d.text) for f in files for d in documents(f, options, counts)]
    assert got == [
        ("train", "pile_cc", "a web page"),
        ("train", "wikipedia_en", "an article"),
        ("train", "gutenberg_pg_19", "a book"),
        ("train", "pile_cc", "a web page"),
    ]
    assert counts.raw_names["Wikipedia (en)"] == "wikipedia_en"


def _gz(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return gzip.open(path, "wt")


def test_parquet_folder_with_a_domain_column(tmp_path):
    (tmp_path / "data").mkdir()
    frame = pd.DataFrame({"text": ["x", "y"], "source": ["Github", "ArXiv"]})
    frame.to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text("a dataset card, allowed at the root")
    files = discover(tmp_path, domain_field="source")
    docs = list(documents(files[0], ReadOptions(domain_field="source")))
    assert [(d.domain, d.text) for d in docs] == [("github", "x"), ("arxiv", "y")]


@pytest.mark.parametrize(
    ("raw", "ident"),
    [
        ("Pile-CC", "pile_cc"),
        ("Wikipedia (en)", "wikipedia_en"),
        ("Gutenberg (PG-19)", "gutenberg_pg_19"),
        ("DM Mathematics", "dm_mathematics"),
        ("  ", ""),
        ("2ch", "d_2ch"),
    ],
)
def test_domain_names_are_normalised_to_identifiers(raw, ident):
    assert normalise(raw) == ident


def test_config_spellings_resolve_to_identifiers():
    assert resolve_target("Wikipedia (en)", True) == "wikipedia_en"
    assert resolve_target("Pile-CC:0.5,loss.FreeLaw:0.5", True) == "pile_cc:0.5,freelaw:0.5"
    assert resolve_target("mean", True) == "mean"
    assert resolve_target("Odd-Name", False) == "Odd-Name"


def test_valid_fraction_holds_out_the_same_documents_whatever_the_file(tmp_path):
    texts = [f"document number {i}" for i in range(2000)]
    write_jsonl(tmp_path / "train" / "a-0.jsonl", texts)
    write_jsonl(tmp_path / "train" / "a-1.jsonl", list(reversed(texts[:1000])))
    options = ReadOptions(valid_fraction=0.1)
    first, second = discover(tmp_path)
    held_first = {d.text for d in documents(first, options) if d.split == "valid"}
    held_second = {d.text for d in documents(second, options) if d.split == "valid"}
    assert 150 < len(held_first) < 250  # ~10% of 2000
    assert held_second == {t for t in held_first if t in set(texts[:1000])}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"text": "ok", "meta": {}}], r"00\.jsonl:1: record has no 'meta.src' field"),
        ([{"text": "ok", "meta": {"src": ""}}], r"00\.jsonl:1: 'meta.src' must be a non-empty"),
        ([{"text": "ok", "meta": {"src": "--"}}], r"00\.jsonl:1: 'meta.src' must be a non-empty"),
        ([{"text": 3, "meta": {"src": "a"}}], r"00\.jsonl:1: 'text' must be a string, got int"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, records, message):
    path = tmp_path / "00.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (file,) = discover(tmp_path, domain_field="meta.src")
    with pytest.raises(RegmixError, match=message):
        list(documents(file, ReadOptions(domain_field="meta.src")))


def test_records_without_the_domain_field_can_be_skipped_and_counted(tmp_path):
    path = tmp_path / "00.jsonl"
    records = [{"text": "a", "src": "x"}, {"text": "b"}, {"text": "c", "src": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (file,) = discover(tmp_path, domain_field="src")
    counts = ReadCounts()
    docs = list(documents(file, ReadOptions("src", missing_domain="skip"), counts))
    assert [d.text for d in docs] == ["a", "c"] and counts.missing_domain == 1


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".jsonl.gz"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_compressed_file_is_one_error_naming_it(tmp_path, suffix, damage):
    good = "".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(2000)).encode()
    data = zstandard.ZstdCompressor().compress(good) if "zst" in suffix else gzip.compress(good)
    half = len(data) // 2
    bad = data[:half] if damage == "truncated" else data[:half] + b"\x00garbage" * 8 + data[half:]
    path = tmp_path / f"a-0{suffix}"
    path.write_bytes(bad)
    # gzip checks its CRC only at the end: garbage inside may first decode into broken JSON
    expected = rf"a-0{suffix}(:\d+)?: (cannot read: (corrupt or )?truncated|malformed JSON)"
    with pytest.raises(RegmixError, match=expected):
        list(read_documents(path))


@pytest.mark.parametrize(
    ("relative", "split"),
    [
        ("train/00.jsonl.zst", "train"),
        ("val.jsonl.zst", "valid"),
        ("test.jsonl.zst", "test"),
        ("00.jsonl.zst", "train"),
        ("validation/chunk1/example_holdout_0.jsonl.zst", "valid"),
        ("test/chunk3/example_holdout_9.jsonl.zst", "test"),
        ("Dev/part.jsonl", "valid"),
        ("data/train-00000-of-00002.parquet", "train"),
        ("data/validation-00000-of-00001.parquet", "valid"),
        ("testing/x.jsonl", "train"),  # only the exact names count
    ],
)
def test_the_split_comes_from_a_folder_or_file_name_at_any_depth(relative, split):
    assert split_of(relative) == split


def test_a_path_naming_two_splits_is_an_error():
    with pytest.raises(RegmixError, match=r"test/val\.jsonl: its path names test and valid"):
        split_of("test/val.jsonl")


def test_the_pile_as_it_ships_reads_train_val_and_test_apart(tmp_path):
    write_zst(tmp_path / "train" / "00.jsonl.zst", PILE)
    write_zst(tmp_path / "val.jsonl.zst", PILE[:2])
    write_zst(tmp_path / "test.jsonl.zst", PILE[:1])
    options = ReadOptions(domain_field="meta.pile_set_name", valid_fraction=0.5)
    files, options = open_corpus(tmp_path, options)
    assert [(f.relative, f.split) for f in files] == [
        ("test.jsonl.zst", "test"),
        ("train/00.jsonl.zst", "train"),
        ("val.jsonl.zst", "valid"),
    ]
    assert options.valid_fraction == 0  # the corpus has validation files: no hold-out
    splits = [(d.split, d.domain) for f in files for d in documents(f, options)]
    assert splits.count(("test", "pile_cc")) == 1
    assert splits.count(("valid", "pile_cc")) == splits.count(("valid", "wikipedia_en")) == 1
    assert sum(s == "train" for s, _ in splits) == 3


def test_valid_fraction_holds_out_train_documents_where_there_is_no_validation_file(tmp_path):
    write_zst(tmp_path / "train" / "00.jsonl.zst", PILE * 200)
    write_zst(tmp_path / "test.jsonl.zst", PILE)
    files, options = open_corpus(tmp_path, ReadOptions("meta.pile_set_name", valid_fraction=0.5))
    assert options.valid_fraction == 0.5
    splits = [d.split for f in files for d in documents(f, options)]
    assert splits.count("test") == 3 and 0 < splits.count("valid") < 600


def test_regmix_layout_reads_test_and_val_folders(tmp_path):
    write_jsonl(tmp_path / "train" / "a-0.jsonl", ["x"])
    write_jsonl(tmp_path / "val" / "a-0.jsonl", ["y"])
    write_jsonl(tmp_path / "test" / "a-0.jsonl", ["z"])
    files = discover(tmp_path)
    assert [(f.relative, f.split, f.domain) for f in files] == [
        ("test/a-0.jsonl", "test", "a"),
        ("train/a-0.jsonl", "train", "a"),
        ("val/a-0.jsonl", "valid", "a"),
    ]


def test_the_same_options_come_from_the_config_and_the_flags():
    corpus = {"domain_field": "meta.x", "missing_domain": "skip", "valid_fraction": 0.1}
    options = read_options({**corpus, "domains": ["a", "b"], "path": "/data"})
    assert options == ReadOptions("meta.x", "skip", 0.1, frozenset({"a", "b"}))
    assert read_options({}) == ReadOptions()


def test_a_lone_surrogate_is_repaired_and_counted(tmp_path):
    path = tmp_path / "00.jsonl"
    # valid JSON: an escaped lone surrogate, as scraped text often holds
    path.write_text('{"text": "bad \\ud800 text", "meta": {"src": "a"}}\n{"text": "fine"}\n')
    path.write_bytes(path.read_bytes() + b'{"text": "not utf-8: \xff\xfe"}\n')
    counts = ReadCounts()
    (file,) = discover(tmp_path, domain_field="meta.src")
    docs = list(documents(file, ReadOptions("meta.src", missing_domain="skip"), counts))
    assert [d.text for d in docs] == ["bad \ufffd text"]
    assert counts.repaired == 1 and counts.missing_domain == 2
    texts = list(read_documents(path))
    assert texts == ["bad \ufffd text", "fine", "not utf-8: \ufffd\ufffd"]
    assert [len(t.encode()) for t in texts] == [12, 4, 17]


def _flushed(lines: list[bytes], suffix: str) -> tuple[bytes, list[int]]:
    """The lines compressed with a flush after each, and the offsets where each flush ends:
    a cut there ends the decompressed text exactly between two lines."""
    if suffix == ".jsonl.zst":
        compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
        flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
    else:
        compressor, flush = zlib.compressobj(wbits=31), zlib.Z_SYNC_FLUSH
    data, ends = b"", []
    for line in lines:
        data += compressor.compress(line) + compressor.flush(flush)
        ends.append(len(data))
    return data + compressor.flush(), ends


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".jsonl.gz"])
def test_a_cut_compressed_file_is_an_error_naming_it_wherever_the_cut_falls(tmp_path, suffix):
    lines = [(json.dumps({"text": f"doc {i} " * 300}) + "\n").encode() for i in range(40)]
    data, ends = _flushed(lines, suffix)
    path = tmp_path / f"a-0{suffix}"
    path.write_bytes(data)
    assert len(list(read_documents(path))) == 40
    between_lines = [ends[0], ends[19], ends[-1]]  # after whole lines, before the frame end
    inside = [len(data) // 3, len(data) // 2 + 7, len(data) - 9, len(data) - 1]
    for cut in between_lines + inside:
        path.write_bytes(data[:cut])
        with pytest.raises(RegmixError, match=rf"a-0{suffix}(:\d+)?: cannot read: .*truncated"):
            list(read_documents(path))
