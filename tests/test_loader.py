import itertools

import numpy as np
import pytest
import torch
from conftest import write_jsonl

from regmix.data.loader import (
    MixedBatches,
    TokenStream,
    domain_counts,
    leading_share,
    open_shards,
    validation_windows,
    vocab_size,
)
from regmix.data.prepare import prepare_corpus
from regmix.errors import RegmixError

# Each fake domain uses its own token range, so a window's domain can be read off its tokens.
SHARDS = {
    "a": np.arange(0, 100, dtype=np.uint16).repeat(50),
    "b": np.arange(100, 200, dtype=np.uint16).repeat(50),
    "c": np.arange(200, 300, dtype=np.uint16).repeat(50),
}


def _domain_of_rows(batch: torch.Tensor) -> list[str]:
    return ["abc"[int(row[0]) // 100] for row in batch]


def test_a_batch_is_a_pure_function_of_seed_and_step():
    batches = MixedBatches(SHARDS, {"a": 0.5, "b": 0.3, "c": 0.2}, 16, 32, seed=7)
    again = MixedBatches(SHARDS, {"a": 0.5, "b": 0.3, "c": 0.2}, 16, 32, seed=7)
    assert torch.equal(batches(5), again(5))
    assert torch.equal(batches(5), batches(5))
    assert not torch.equal(batches(5), batches(6))
    assert not torch.equal(batches(5), MixedBatches(SHARDS, {"a": 1.0}, 16, 32, seed=8)(5))
    assert batches(0).shape == (16, 33) and batches(0).dtype == torch.int64


def test_batches_follow_the_mixture_weights():
    weights = {"a": 0.6, "b": 0.3, "c": 0.1}
    batches = MixedBatches(SHARDS, weights, 10, 16, seed=0)
    rows = [d for step in range(2000) for d in _domain_of_rows(batches(step))]
    for domain, weight in weights.items():
        assert rows.count(domain) / len(rows) == pytest.approx(weight, abs=0.005)


def test_windows_come_from_one_domain_and_zero_weight_domains_never_appear():
    batches = MixedBatches(SHARDS, {"a": 0.5, "b": 0.5, "c": 0.0}, 8, 16, seed=0)
    for step in range(50):
        batch = batches(step)
        assert ((batch // 100) == (batch[:, :1] // 100)).all()
        assert (batch < 200).all()


def test_domain_counts_give_tiny_weights_their_exact_expected_share():
    rng = np.random.default_rng(0)
    weights = np.array([0.9, 0.0998, 0.0002])
    counts = np.stack([domain_counts(weights, 8, rng) for _ in range(100_000)])
    assert (counts.sum(axis=1) == 8).all()
    assert counts[:, 2].mean() / 8 == pytest.approx(0.0002, rel=0.15)


def test_validation_windows_are_fixed_and_do_not_overlap():
    windows = validation_windows(SHARDS, seq_len=31, windows=10)
    assert torch.equal(windows["a"], validation_windows(SHARDS, seq_len=31, windows=10)["a"])
    assert windows["b"].shape == (10, 32)
    starts = [int(np.flatnonzero(SHARDS["a"] == row[0])[0]) for row in windows["a"]]
    assert len(set(windows["a"][:, 0].tolist())) > 1
    assert all(b - a >= 32 for a, b in itertools.pairwise(starts))


def test_shard_shorter_than_a_window_is_an_error():
    with pytest.raises(RegmixError, match="fewer train tokens than one window"):
        MixedBatches({"a": np.zeros(10, dtype=np.uint16)}, {"a": 1.0}, 4, 16, seed=0)


def test_mixture_naming_a_domain_without_shard_is_an_error():
    with pytest.raises(RegmixError, match="no training shard for domain.*zzz"):
        MixedBatches(SHARDS, {"a": 0.5, "zzz": 0.5}, 4, 16, seed=0)


def test_open_shards_memory_maps_the_prepared_data(data_dir):
    shards = open_shards(data_dir, "train")
    assert "target" not in shards and "web" in shards
    assert isinstance(shards["news"], np.memmap)  # one file: its shard itself
    assert all(isinstance(p, np.memmap) for p in shards["web"].parts)  # two files, in order
    assert vocab_size(data_dir) == 257
    assert set(open_shards(data_dir, "valid")) >= {"target", "poetry"}


def test_a_leading_share_keeps_the_domains_proportions_and_draws_only_from_it():
    shards = {"a": np.arange(1000, dtype=np.uint16), "b": np.arange(400, dtype=np.uint16)}
    shared = leading_share(shards, 0.25)
    assert {d: len(s) for d, s in shared.items()} == {"a": 250, "b": 100}
    batches = MixedBatches(shared, {"a": 0.5, "b": 0.5}, batch_size=64, seq_len=8, seed=0)
    drawn = torch.cat([batches(step) for step in range(20)])
    assert int(drawn.max()) < 250  # no token from beyond the first quarter of either domain
    assert leading_share(shards, 1.0)["a"] is shards["a"]


def test_a_domain_in_several_shard_files_reads_as_their_concatenation():
    whole = np.arange(1000, dtype=np.uint16)
    stream = TokenStream([whole[:300], whole[300:310], whole[310:]])
    assert len(stream) == 1000
    starts = np.array([0, 295, 305, 990 - 9])
    windows = stream[starts[:, None] + np.arange(10)]  # windows crossing file boundaries
    np.testing.assert_array_equal(windows, whole[starts[:, None] + np.arange(10)])
    share = stream[290:320]  # a view per file, no copy
    np.testing.assert_array_equal(share[np.arange(30)], whole[290:320])
    batches = MixedBatches({"a": stream}, {"a": 1.0}, batch_size=8, seq_len=16, seed=3)
    reference = MixedBatches({"a": whole}, {"a": 1.0}, batch_size=8, seq_len=16, seed=3)
    assert torch.equal(batches(5), reference(5))


def test_a_multi_file_domain_from_prepare_is_opened_as_one_stream(tmp_path):
    corpus = tmp_path / "corpus"
    for k in range(3):
        write_jsonl(corpus / "train" / f"a-{k}.jsonl", [f"file {k} text " * 20] * 5)
    write_jsonl(corpus / "valid" / "a-0.jsonl", ["held out text " * 20])
    prepare_corpus(corpus, tmp_path / "data", "byte", bytes_per_job=1)  # one job per file
    shards = open_shards(tmp_path / "data", "train")
    assert isinstance(shards["a"], TokenStream) and len(shards["a"].parts) == 3
    ids = shards["a"][np.arange(len(shards["a"]))]
    text = bytes(ids[ids != 256].astype(np.uint8)).decode()
    assert text == "".join(f"file {k} text " * 20 * 5 for k in range(3))
