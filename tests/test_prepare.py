import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import write_jsonl

from regmix.data.corpus import ReadOptions, read_documents
from regmix.data.prepare import prepare_corpus
from regmix.data.tokenize import BYTE_EOS
from regmix.errors import RegmixError


def domain_ids(data_dir, split, domain):
    """A domain's tokens: its shard files, in the order its index lists them."""
    meta = json.loads((data_dir / split / f"{domain}.json").read_text())
    return np.concatenate(
        [np.fromfile(data_dir / s["path"], dtype=meta["dtype"]) for s in meta["shards"]]
    )


def test_stats_match_shards_and_indexes(data_dir):
    stats = pd.read_parquet(data_dir / "stats.parquet")
    columns = [
        *("domain", "split", "tokens", "documents", "text_bytes", "estimated_tokens"),
        "fingerprint",
    ]
    assert list(stats.columns) == columns
    for row in stats.itertuples():
        meta = json.loads((data_dir / row.split / f"{row.domain}.json").read_text())
        ids = domain_ids(data_dir, row.split, row.domain)
        assert len(ids) == row.tokens == meta["tokens"]
        assert (ids == BYTE_EOS).sum() == row.documents == meta["documents"]
        assert meta["vocab_size"] == 257


def test_byte_shards_decode_back_to_the_documents(corpus_dir, data_dir):
    ids = domain_ids(data_dir, "train", "legal")
    documents = bytes(ids[ids != BYTE_EOS].astype(np.uint8)).decode("utf-8")
    expected = "".join(read_documents(corpus_dir / "train" / "legal-0.jsonl.gz"))
    assert documents == expected


def test_valid_only_domain_has_no_train_shard(data_dir):
    stats = pd.read_parquet(data_dir / "stats.parquet")
    assert set(stats.loc[stats["domain"] == "target", "split"]) == {"valid"}
    assert not (data_dir / "train" / "target.json").exists()


def test_bpe_tokenizer_is_trained_on_train_and_saved_beside_the_shards(tmp_path):
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "train" / "a-0.jsonl", ["alpha beta gamma delta"] * 200)
    write_jsonl(corpus / "valid" / "a-0.jsonl", ["alpha gamma"] * 10)
    out = tmp_path / "data"
    stats = prepare_corpus(corpus, out, "bpe:300")
    assert (out / "tokenizer.json").is_file()
    meta = json.loads((out / "train" / "a.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] <= 300
    assert stats.loc[stats["split"] == "train", "tokens"].item() < 200 * 22  # merges happened


def test_empty_domain_fails_and_leaves_the_last_good_output_untouched(tmp_path):
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "train" / "a-0.jsonl", ["some text"])
    out = tmp_path / "data"
    prepare_corpus(corpus, out, "byte")
    before = (out / "stats.parquet").read_bytes()
    (corpus / "train" / "b-0.jsonl").write_text("")
    with pytest.raises(RegmixError, match=r"b-0.jsonl: no documents"):
        prepare_corpus(corpus, out, "byte")
    assert (out / "stats.parquet").read_bytes() == before
    assert (out / "train" / "a.json").is_file()
    assert not list(out.glob(".staging-*"))


def test_cli_reports_bad_input_in_one_line_with_nonzero_exit(tmp_path):
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "train" / "a-0.jsonl", ["fine"])
    (corpus / "train" / "a-1.jsonl").write_text('{"text": "fine"}\n{oops}\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "regmix.cli",
            "prepare",
            "--corpus",
            str(corpus),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "a-1.jsonl:2: malformed JSON" in result.stderr
    assert not (tmp_path / "out" / "stats.parquet").exists()


def test_preparing_again_with_another_tokenizer_drops_the_old_tokenizer_file(tmp_path):
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "train" / "a-0.jsonl", ["alpha beta gamma delta"] * 200)
    out = tmp_path / "data"
    prepare_corpus(corpus, out, "bpe:300")
    assert (out / "tokenizer.json").is_file()
    prepare_corpus(corpus, out, "byte")
    assert not (out / "tokenizer.json").exists()  # else exports would ship the wrong tokenizer


def write_pile(folder, files: int, docs: int, seed: int = 0) -> None:
    """A Pile-layout corpus: .jsonl.zst files mixing two domains named in meta.pile_set_name."""
    import zstandard

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        lines = []
        for i in range(docs):
            name = "Pile-CC" if rng.random() < 0.8 else "Wikipedia (en)"
            letters = rng.integers(97, 123, size=(int(rng.integers(20, 60)), 4), dtype=np.uint8)
            words = " ".join(bytes(row).decode() for row in letters)  # compresses like text
            text = f"{name} document {k}-{i} {words} "
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": name}}))
        data = ("\n".join(lines) + "\n").encode()
        (folder / f"{k:02d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))


def test_pile_layout_with_a_hash_held_out_validation_split(tmp_path):
    write_pile(tmp_path / "pile", files=3, docs=400)
    options = ReadOptions(domain_field="meta.pile_set_name", valid_fraction=0.05)
    stats = prepare_corpus(tmp_path / "pile", tmp_path / "data", "byte", options=options)
    table = stats.set_index(["split", "domain"])["documents"]
    assert set(table.index) == {
        ("train", "pile_cc"),
        ("train", "wikipedia_en"),
        ("valid", "pile_cc"),
        ("valid", "wikipedia_en"),
    }
    assert table.sum() == 1200 and 30 < table.loc["valid"].sum() < 90
    names = json.loads((tmp_path / "data" / "domains.json").read_text())
    assert names == {"Pile-CC": "pile_cc", "Wikipedia (en)": "wikipedia_en"}


def test_max_tokens_tokenizes_a_sample_of_every_file_and_estimates_the_whole(tmp_path):
    write_pile(tmp_path / "pile", files=4, docs=1000)
    options = ReadOptions(domain_field="meta.pile_set_name")
    full = prepare_corpus(tmp_path / "pile", tmp_path / "full", "byte", options=options)
    sampled = prepare_corpus(
        tmp_path / "pile",
        tmp_path / "sampled",
        "byte",
        options=options,
        max_tokens=150_000,
        bytes_per_job=1,
    )
    full, sampled = (t.set_index("domain") for t in (full, sampled))
    # Pile-CC (~700k tokens) is sampled to about max_tokens (+10% margin), ~700 documents;
    assert 135_000 < sampled.loc["pile_cc", "tokens"] < 200_000 < full.loc["pile_cc", "tokens"]
    # the full size is estimated from the sample (±15% is 4 sd for ~700 documents), and every
    # file contributed documents.
    estimate = sampled.loc["pile_cc", "estimated_tokens"] / full.loc["pile_cc", "tokens"]
    assert 0.85 < estimate < 1.15
    index = json.loads((tmp_path / "sampled" / "train" / "pile_cc.json").read_text())
    assert len(index["shards"]) == 4 and all(s["tokens"] > 5_000 for s in index["shards"])


def test_cli_prepares_a_pile_layout_sample(tmp_path):
    write_pile(tmp_path / "pile", files=2, docs=1000)
    command = [sys.executable, "-m", "regmix.cli", "prepare", "--corpus", str(tmp_path / "pile")]
    command += ["--out", str(tmp_path / "data"), "--domain-field", "meta.pile_set_name"]
    command += ["--valid-fraction", "0.05", "--max-tokens", "100000"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    stats = pd.read_parquet(tmp_path / "data" / "stats.parquet").set_index(["split", "domain"])
    assert stats.loc[("train", "pile_cc"), "tokens"] < 150_000  # of ~350k: sampled
    assert (tmp_path / "data" / "survey.json").is_file()


def test_the_survey_scales_a_sample_spread_over_every_file(tmp_path):
    from regmix.data.survey import survey_corpus

    write_pile(tmp_path / "pile", files=4, docs=4000)
    options = ReadOptions(domain_field="meta.pile_set_name")
    full = prepare_corpus(tmp_path / "pile", tmp_path / "full", "byte", options=options)
    survey = survey_corpus(tmp_path / "pile", options, "byte", 1_500_000, 10**9, tmp_path / "s")
    truth = full.set_index("domain")["tokens"]
    # ~1.5 MB of ~3.5 MB sampled
    for domain, estimate in survey["domains"].items():
        assert estimate["sampled_text_bytes"] < 0.5 * truth[domain]
        assert 0.8 < estimate["estimated_tokens"] / truth[domain] < 1.25


def write_sorted(folder, files: int, per_domain: dict[str, int], seed: int = 0) -> dict[str, int]:
    """A corpus sorted by domain: each .jsonl.zst file holds one domain after another (as
    corpora sorted by source ship); returns each domain's text bytes."""
    import zstandard

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = dict.fromkeys(per_domain, 0)
    for k in range(files):
        lines = []
        for name, docs in per_domain.items():
            for i in range(docs):
                letters = rng.integers(97, 123, size=(int(rng.integers(20, 60)), 4), dtype=np.uint8)
                text = f"{name} {k}-{i} " + " ".join(bytes(row).decode() for row in letters)
                sizes[name] += len(text.encode())
                lines.append(json.dumps({"text": text, "meta": {"pile_set_name": name}}))
        data = ("\n".join(lines) + "\n").encode()
        (folder / f"{k:02d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    return sizes


def test_max_tokens_on_a_corpus_sorted_by_domain_prepares_each_domains_target(tmp_path, capfd):
    # Pile-CC first in every file, then Wikipedia, then a small Github: a survey reading the
    # head of each file would see Pile-CC only.
    per_domain = {"Pile-CC": 600, "Wikipedia (en)": 600, "Github": 60}
    sizes = write_sorted(tmp_path / "pile", 4, per_domain)
    options = ReadOptions(domain_field="meta.pile_set_name")
    stats = prepare_corpus(
        tmp_path / "pile",
        tmp_path / "data",
        "byte",
        options=options,
        max_tokens=150_000,
        bytes_per_job=1,
        sample_bytes=400_000,
    )
    train = stats[stats["split"] == "train"].set_index("domain")
    survey = json.loads((tmp_path / "data" / "survey.json").read_text())["domains"]
    for domain, truth in [("pile_cc", sizes["Pile-CC"]), ("wikipedia_en", sizes["Wikipedia (en)"])]:
        full = truth + 600 * 4  # byte tokens: text bytes + one EOS per document
        assert 0.9 < survey[domain]["estimated_tokens"] / full < 1.1
        assert train.loc[domain, "estimated_tokens"] == full  # counted, not estimated
        assert abs(train.loc[domain, "tokens"] - 150_000) <= 4  # cut to the target
    github = sizes["Github"] + 60 * 4
    assert train.loc["github", "tokens"] == train.loc["github", "estimated_tokens"] == github
    index = json.loads((tmp_path / "data" / "train" / "pile_cc.json").read_text())
    assert all(0 < s["use"] < s["tokens"] for s in index["shards"])
    assert "warning" not in capfd.readouterr().err


def test_a_domain_short_of_its_target_is_named_in_a_warning(tmp_path, capfd):
    from regmix.data.collect import collect_shards
    from regmix.data.corpus import open_corpus
    from regmix.data.shards import prepare_group

    write_sorted(tmp_path / "pile", 2, {"Pile-CC": 400, "Github": 400})
    files, options = open_corpus(tmp_path / "pile", ReadOptions(domain_field="meta.pile_set_name"))
    # a survey that underestimated Github's share: its sample holds about a fifth of it
    group = tmp_path / "shards" / "g-000000"
    prepare_group(files, group, "byte", options, keep={"pile_cc": 1.0, "github": 0.2})
    stats = collect_shards([group], tmp_path, max_tokens=40_000).set_index("domain")
    assert stats.loc["pile_cc", "tokens"] == 40_000
    err = capfd.readouterr().err
    assert "warning: train domain 'github'" in err and "short" in err
    assert "warning: train domain 'pile_cc'" not in err


def test_the_parquet_survey_divides_by_all_rows(tmp_path):
    from regmix.data.survey import survey_corpus

    rows = 4000
    texts = [f"document {i} " + "word " * 40 for i in range(rows)]
    source = ["Github" if i % 4 == 0 else "ArXiv" for i in range(rows)]
    (tmp_path / "corpus").mkdir()
    pd.DataFrame({"text": texts, "source": source}).to_parquet(
        tmp_path / "corpus" / "train-00000-of-00001.parquet", row_group_size=500
    )
    options = ReadOptions(domain_field="source", domains=frozenset({"github"}))
    survey = survey_corpus(tmp_path / "corpus", options, "byte", 20_000, 10**9, tmp_path / "s")
    truth = sum(len(t) for t, s in zip(texts, source, strict=True) if s == "Github")
    estimate = survey["domains"]["github"]["estimated_text_bytes"]
    assert 0.9 < estimate / truth < 1.1  # not 4x too low (kept rows over all rows)


def test_bad_text_never_kills_a_data_command(tmp_path):
    """A lone surrogate (valid JSON) in the tokenizer's sample, the survey and a data job."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [
        json.dumps({"text": f"text number {i} " * 20, "meta": {"src": "a"}}) for i in range(300)
    ]
    lines.insert(5, '{"text": "scraped \\ud800 text \\udfff", "meta": {"src": "a"}}')
    (corpus / "00.jsonl").write_text("\n".join(lines) + "\n")
    reading = ["--corpus", str(corpus), "--domain-field", "meta.src"]
    regmix = [sys.executable, "-m", "regmix.cli"]
    tokenizer = tmp_path / "tokenizer.json"
    commands = [
        ["train-tokenizer", *reading, "--tokenizer", "bpe:300", "--out", str(tokenizer)],
        ["survey-corpus", *reading, "--tokenizer", str(tokenizer), "--max-tokens", "1000"],
        ["prepare-group", *reading, "--tokenizer", str(tokenizer), "--out", str(tmp_path / "g")],
    ]
    commands[1] += ["--out", str(tmp_path / "survey.json")]
    for command in commands:
        result = subprocess.run([*regmix, *command], capture_output=True, text=True)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "1 records with text UTF-8 cannot carry repaired" in result.stderr
    group = json.loads((tmp_path / "g" / "group.json").read_text())
    assert group["repaired"] == 1 and group["documents"] == 301
