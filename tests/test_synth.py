from collections import Counter

import pandas as pd

from regmix.data.synth import DOMAINS, TARGET, SynthConfig, generate, write_corpus
from regmix.files import read_yaml


def _char_distribution(texts: list[str]) -> Counter:
    return Counter("".join(texts))


def _total_variation(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[c] / na - b[c] / nb) for c in set(a) | set(b))


def test_same_seed_gives_the_same_corpus_and_another_seed_a_different_one():
    small = SynthConfig(seed=3, scale=0.05, valid_chars=2000, target_valid_chars=2000)
    assert generate(small) == generate(small)
    other = SynthConfig(seed=4, scale=0.05, valid_chars=2000, target_valid_chars=2000)
    assert generate(small) != generate(other)


def test_domain_sizes_differ_by_at_least_thirty_times():
    corpus = generate(SynthConfig())
    sizes = {d.name: sum(map(len, corpus[("train", d.name)])) for d in DOMAINS}
    assert max(sizes.values()) / min(sizes.values()) >= 30


def test_target_exists_only_in_valid_and_planted_blend_is_written(tmp_path):
    write_corpus(tmp_path, SynthConfig(scale=0.05))
    assert not list((tmp_path / "train").glob(f"{TARGET}-*"))
    assert list((tmp_path / "valid").glob(f"{TARGET}-*"))
    planted = read_yaml(tmp_path / "planted.yaml")
    assert planted["target"] == TARGET
    assert abs(sum(planted["weights"].values()) - 1) < 1e-6
    sizes = {d.name: d.train_chars for d in DOMAINS}
    assert min(sizes, key=sizes.get) in planted["weights"]  # the smallest domain is planted
    assert max(sizes, key=sizes.get) not in planted["weights"]


def test_shared_pairs_are_closer_in_characters_than_unrelated_domains():
    corpus = generate(SynthConfig(scale=0.3))
    chars = {d.name: _char_distribution(corpus[("train", d.name)]) for d in DOMAINS}
    assert _total_variation(chars["news"], chars["web"]) < _total_variation(
        chars["news"], chars["legal"]
    )
    assert _total_variation(chars["forum"], chars["chat"]) < _total_variation(
        chars["forum"], chars["poetry"]
    )


def test_target_characters_are_a_blend_of_the_planted_domains():
    config = SynthConfig(scale=0.3, target_valid_chars=60_000)
    corpus = generate(config)
    target = _char_distribution(corpus[("valid", TARGET)])
    planted = Counter()
    for domain, weight in config.planted.items():
        dist = _char_distribution(corpus[("valid", domain)])
        total = sum(dist.values())
        for c, n in dist.items():
            planted[c] += weight * n / total
    prior = _char_distribution(corpus[("valid", "web")])
    assert _total_variation(target, planted) < 0.1 < _total_variation(target, prior)


def test_every_input_format_is_exercised(tmp_path):
    write_corpus(tmp_path, SynthConfig(scale=0.05))
    names = {p.name for p in (tmp_path / "train").iterdir()}
    assert {"code-0.parquet", "legal-0.jsonl.gz", "web-0.jsonl", "web-1.jsonl"} <= names
    assert len(pd.read_parquet(tmp_path / "train" / "code-0.parquet")) > 0
