"""A synthetic multi-domain corpus with a planted answer, for the embedded demo and the tests.

Eight source domains of artificial text, each with its own character: its own syllables (so
its own letters and letter pairs, which even a tiny byte-level model picks up quickly), word
inventory, word-to-word transitions, sentence lengths, symbols and line layout. Two pairs
share half of their sentences (`news` with `web`, `forum` with `chat`), so training on one
helps the other; the rest are unrelated. Sizes are very unequal (40× between `web` and
`poetry`), so the token prior is far from any good mixture and repetition caps bite.

The target domain exists only in `valid/`. Each of its documents is drawn from one source
domain picked with the planted blend's probabilities, using that domain's generator. A
model's loss on the target is then lowest when its training mixture is near the blend, which
`planted.yaml` records so later stages can be judged on recovering it.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.files import atomic_path, write_yaml

TARGET = "target"
PLANTED_BLEND = {"legal": 0.4, "forum": 0.3, "poetry": 0.3}


@dataclass(frozen=True)
class Style:
    """How one domain writes: its building blocks and its layout."""

    onsets: tuple[str, ...]
    nuclei: tuple[str, ...]
    codas: tuple[str, ...]
    vocab: int
    """Distinct words in the domain's inventory."""
    sentence_words: tuple[int, int]
    """(minimum, mean extra) words per sentence; the extra is Poisson."""
    symbols: tuple[str, ...] = ()
    """Inserted between words with probability `symbol_rate`."""
    symbol_rate: float = 0.0
    endings: tuple[str, ...] = (".",)
    layout: str = "prose"
    """prose | lines | code | dialogue | verse: how sentences become lines and documents."""
    sentences_per_document: tuple[int, int] = (4, 8)
    capitalize: bool = True


@dataclass(frozen=True)
class DomainSpec:
    name: str
    train_chars: int
    style: Style
    shares_with: str | None = None
    """Half of this domain's sentences come from that domain's word chain."""


WEB = Style(
    onsets=("", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "w", "th", "st"),
    nuclei=("a", "e", "i", "o", "u", "ea", "ou"),
    codas=("", "n", "r", "s", "t", "d", "l", "nd", "st", "ng"),
    vocab=900,
    sentence_words=(6, 9),
    symbols=(",",),
    symbol_rate=0.06,
    endings=(".", ".", ".", "?"),
    layout="prose",
)
NEWS = Style(
    onsets=("", "b", "c", "d", "g", "h", "k", "m", "p", "r", "s", "t", "v", "w", "sp", "gr"),
    nuclei=("a", "e", "i", "o", "u", "ai", "ee"),
    codas=("", "n", "r", "s", "t", "ck", "ll", "rd", "ws"),
    vocab=700,
    sentence_words=(8, 10),
    symbols=(",", ' "', '" ', " 2024", " 17"),
    symbol_rate=0.08,
    endings=(".",),
    layout="lines",
    sentences_per_document=(5, 8),
)
CODE = Style(
    onsets=("get", "set", "is", "load", "make", "to", "x", "n", "k", "buf", "ptr", "idx"),
    nuclei=("_", "", "A", "Count", "Item", "Node", "Size", "_id"),
    codas=("", "s", "1", "2", "Map", "List", "_t"),
    vocab=400,
    sentence_words=(2, 4),
    symbols=("(", ")", " = ", ".", ", ", "[", "]", " + ", " == "),
    symbol_rate=0.45,
    endings=(";", ":", " {", " }", ");"),
    layout="code",
    sentences_per_document=(8, 20),
    capitalize=False,
)
LEGAL = Style(
    onsets=("", "pr", "qu", "v", "c", "d", "t", "s", "l", "m", "n", "tr", "cl", "ex", "j"),
    nuclei=("a", "e", "i", "o", "u", "ae", "io", "ua"),
    codas=("", "x", "s", "m", "t", "nt", "ct", "tion", "us", "iv"),
    vocab=600,
    sentence_words=(14, 12),
    symbols=(",", ";", " § 12", " (b)", " (iii)", " hereinafter"),
    symbol_rate=0.1,
    endings=(".", ";"),
    layout="prose",
    sentences_per_document=(3, 5),
)
MATH = Style(
    onsets=("1", "2", "3", "4", "5", "6", "7", "8", "9", "x", "y", "z", "n"),
    nuclei=("", "0", "1", "2", "5", "7", "9", "^2", "_i"),
    codas=("",),
    vocab=250,
    sentence_words=(3, 4),
    symbols=(" + ", " - ", " * ", " / ", " = ", " ≤ ", "(", ")"),
    symbol_rate=0.7,
    endings=("", " .", " ,"),
    layout="lines",
    sentences_per_document=(6, 10),
    capitalize=False,
)
CHAT = Style(
    onsets=("", "k", "z", "y", "g", "b", "l", "m", "n", "j", "wh", "sk"),
    nuclei=("a", "o", "u", "oo", "aa", "y"),
    codas=("", "z", "k", "x", "h", "y", "p"),
    vocab=500,
    sentence_words=(2, 5),
    symbols=(" lol", " :)", "!!", " ...", " omg"),
    symbol_rate=0.08,
    endings=("", "?", "!", " :)"),
    layout="dialogue",
    sentences_per_document=(6, 12),
    capitalize=False,
)
FORUM = Style(
    onsets=("", "k", "z", "g", "b", "f", "m", "qu", "fl", "gr", "v"),
    nuclei=("a", "o", "u", "oo", "ei", "y"),
    codas=("", "z", "k", "ff", "x", "rk", "m"),
    vocab=450,
    sentence_words=(5, 8),
    symbols=(" >>", " IMO", ",", " [quote]", " +1"),
    symbol_rate=0.07,
    endings=(".", "?", "!!"),
    layout="lines",
    sentences_per_document=(4, 8),
)
POETRY = Style(
    onsets=("", "l", "m", "n", "s", "v", "fl", "gl", "dr", "ſ"),
    nuclei=("a", "e", "i", "o", "é", "ö", "å", "ie", "æ"),
    codas=("", "l", "n", "r", "th", "ë"),
    vocab=350,
    sentence_words=(3, 3),
    symbols=(" —", ",", " o"),
    symbol_rate=0.1,
    endings=(",", ";", ".", " —"),
    layout="verse",
    sentences_per_document=(8, 8),
)

DOMAINS = (
    DomainSpec("web", 400_000, WEB),
    DomainSpec("news", 150_000, NEWS, shares_with="web"),
    DomainSpec("code", 120_000, CODE),
    DomainSpec("legal", 80_000, LEGAL),
    DomainSpec("math", 50_000, MATH),
    DomainSpec("chat", 30_000, CHAT),
    DomainSpec("forum", 18_000, FORUM, shares_with="chat"),
    DomainSpec("poetry", 10_000, POETRY),
)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; the defaults are the embedded demo's corpus."""

    seed: int = 0
    """Everything is a deterministic function of this seed."""
    scale: float = 1.0
    """Multiplies every domain's train size (the valid sizes stay fixed)."""
    valid_chars: int = 12_000
    """Characters of validation text per source domain."""
    target_valid_chars: int = 24_000
    """Characters of the valid-only target domain."""
    planted: dict[str, float] = field(default_factory=lambda: dict(PLANTED_BLEND))
    """The blend of source domains the target is drawn from."""


class WordChain:
    """A domain's words and their transitions: a sparse Markov chain with Zipfian weights."""

    def __init__(self, style: Style, rng: np.random.Generator, successors: int = 8) -> None:
        self.words = self._inventory(style, rng)
        n = len(self.words)
        ranks = np.arange(1, n + 1)
        self.unigram = (1 / ranks**1.1) / (1 / ranks**1.1).sum()
        self.next_words = rng.choice(n, size=(n, successors), p=self.unigram)
        weights = 1 / np.arange(1, successors + 1) ** 1.3
        self.next_cumulative = np.cumsum(weights / weights.sum())
        self.unigram_cumulative = np.cumsum(self.unigram)

    @staticmethod
    def _inventory(style: Style, rng: np.random.Generator) -> list[str]:
        words: set[str] = set()
        while len(words) < style.vocab:
            syllables = rng.integers(1, 4)
            word = "".join(
                rng.choice(style.onsets) + rng.choice(style.nuclei) + rng.choice(style.codas)
                for _ in range(syllables)
            )
            if word:
                words.add(word)
        return sorted(words, key=lambda w: (len(w), w))  # short words become the frequent ones

    def sentence(self, length: int, rng: np.random.Generator) -> list[str]:
        draws = rng.random(2 * length)
        current = int(np.searchsorted(self.unigram_cumulative, draws[0]))
        out = [self.words[current]]
        for i in range(1, length):
            if draws[length + i] < 0.75:
                pick = int(np.searchsorted(self.next_cumulative, draws[i]))
                current = int(self.next_words[current, pick])
            else:
                current = int(np.searchsorted(self.unigram_cumulative, draws[i]))
            out.append(self.words[min(current, len(self.words) - 1)])
        return out


class DomainWriter:
    """Writes documents in one domain's style from its own (and maybe a partner's) chain."""

    def __init__(self, spec: DomainSpec, chains: dict[str, WordChain]) -> None:
        self.spec = spec
        self.style = spec.style
        self.own = chains[spec.name]
        self.partner = chains[spec.shares_with] if spec.shares_with else None

    def sentence(self, rng: np.random.Generator) -> str:
        low, extra = self.style.sentence_words
        length = low + int(rng.poisson(extra))
        chain = self.partner if self.partner is not None and rng.random() < 0.5 else self.own
        words = chain.sentence(length, rng)
        text = words[0]
        for word in words[1:]:
            gap = " "
            if self.style.symbols and rng.random() < self.style.symbol_rate:
                symbol = str(rng.choice(self.style.symbols))
                gap = symbol if symbol.endswith((" ", "(", "[")) else symbol + " "
            text += gap + word
        if self.style.capitalize:
            text = text[:1].upper() + text[1:]
        return text + str(rng.choice(self.style.endings))

    def document(self, rng: np.random.Generator) -> str:
        low, extra = self.style.sentences_per_document
        sentences = [self.sentence(rng) for _ in range(low + int(rng.poisson(extra)))]
        return LAYOUTS[self.style.layout](sentences, rng)


def _prose(sentences: list[str], rng: np.random.Generator) -> str:
    paragraphs, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if rng.random() < 0.25:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def _lines(sentences: list[str], rng: np.random.Generator) -> str:
    return "\n".join(sentences)


def _code(sentences: list[str], rng: np.random.Generator) -> str:
    depth, lines = 0, []
    for sentence in sentences:
        lines.append("    " * depth + sentence)
        if sentence.endswith("{") or sentence.endswith(":"):
            depth = min(depth + 1, 3)
        elif sentence.endswith("}") or rng.random() < 0.2:
            depth = max(depth - 1, 0)
    return "\n".join(lines)


def _dialogue(sentences: list[str], rng: np.random.Generator) -> str:
    speakers = ("kz", "mo", "jj", "yaz", "bo")
    return "\n".join(f"<{speakers[int(rng.integers(len(speakers)))]}> {s}" for s in sentences)


def _verse(sentences: list[str], rng: np.random.Generator) -> str:
    stanzas = ["\n".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    return "\n\n".join(stanzas)


LAYOUTS: dict[str, Callable[[list[str], np.random.Generator], str]] = {
    "prose": _prose,
    "lines": _lines,
    "code": _code,
    "dialogue": _dialogue,
    "verse": _verse,
}


def _documents(next_document: Callable[[], str], chars: int) -> list[str]:
    documents, total = [], 0
    while total < chars:
        documents.append(next_document())
        total += len(documents[-1])
    return documents


def generate(config: SynthConfig) -> dict[tuple[str, str], list[str]]:
    """All documents, keyed by (split, domain)."""
    unknown = sorted(set(config.planted) - {d.name for d in DOMAINS})
    if unknown:
        raise ValueError(f"planted blend names unknown domain(s): {', '.join(unknown)}")
    root = np.random.SeedSequence(config.seed)
    chain_seeds, text_seeds = root.spawn(2)
    chains = {
        spec.name: WordChain(spec.style, np.random.default_rng(seed))
        for spec, seed in zip(DOMAINS, chain_seeds.spawn(len(DOMAINS)), strict=True)
    }
    writers = {spec.name: DomainWriter(spec, chains) for spec in DOMAINS}
    corpus: dict[tuple[str, str], list[str]] = {}
    streams = text_seeds.spawn(2 * len(DOMAINS) + 1)
    for i, spec in enumerate(DOMAINS):
        writer = writers[spec.name]
        for split, chars, seed in (
            ("train", int(spec.train_chars * config.scale), streams[2 * i]),
            ("valid", config.valid_chars, streams[2 * i + 1]),
        ):
            rng = np.random.default_rng(seed)
            corpus[(split, spec.name)] = _documents(lambda: writer.document(rng), chars)  # noqa: B023
    names = list(config.planted)
    blend = np.array([config.planted[n] for n in names], dtype=float)
    blend /= blend.sum()
    rng = np.random.default_rng(streams[-1])
    corpus[("valid", TARGET)] = _documents(
        lambda: writers[names[rng.choice(len(names), p=blend)]].document(rng),
        config.target_valid_chars,
    )
    return corpus


def _write_jsonl(documents: list[str], path: Path) -> None:
    opener = gzip.open if path.name.endswith(".gz") else open
    with atomic_path(path) as tmp, opener(tmp, "wt", encoding="utf-8") as out:
        for text in documents:
            out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def _write_parquet(documents: list[str], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame({"text": documents}).to_parquet(tmp, index=False)


# Exercise every input format the corpus reader accepts, as a real corpus would.
FILE_FORMATS = {"code": ".parquet", "legal": ".jsonl.gz"}
FILES_PER_DOMAIN = {"web": 2}


def write_corpus(out: str | os.PathLike, config: SynthConfig = SynthConfig()) -> Path:
    """Write the corpus in RegMix's layout under `out`, with `planted.yaml` beside it."""
    out = Path(out)
    for (split, domain), documents in generate(config).items():
        extension = FILE_FORMATS.get(domain, ".jsonl")
        shards = FILES_PER_DOMAIN.get(domain, 1) if split == "train" else 1
        for k in range(shards):
            path = out / split / f"{domain}-{k}{extension}"
            part = documents[k::shards]
            if extension == ".parquet":
                _write_parquet(part, path)
            else:
                _write_jsonl(part, path)
    total = sum(config.planted.values())
    write_yaml(
        {
            "target": TARGET,
            "weights": {d: round(w / total, 6) for d, w in config.planted.items()},
            "seed": config.seed,
            "scale": config.scale,
        },
        out / "planted.yaml",
    )
    return out
