"""Tokenizing throughput of `regmix prepare` on the synthetic demo corpus.

Prints MB of text per second for the byte tokenizer and for a corpus-trained BPE (training
and encoding timed separately), with 1 and 2 worker processes.

    python benchmarks/tokenize_speed.py [--scale 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from regmix.data.corpus import discover, read_documents
from regmix.data.prepare import prepare_corpus
from regmix.data.synth import SynthConfig, write_corpus
from regmix.data.tokenize import train_bpe


def corpus_megabytes(corpus: Path) -> float:
    return sum(len(t.encode()) for f in discover(corpus) for t in read_documents(f.path)) / 1e6


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0, help="synthetic corpus scale")
    parser.add_argument("--bpe-vocab", type=int, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = write_corpus(tmp / "corpus", SynthConfig(scale=args.scale))
        mb = corpus_megabytes(corpus)
        read_s = timed(lambda: sum(1 for f in discover(corpus) for _ in read_documents(f.path)))
        print(f"corpus: {mb:.1f} MB of text; reading the files alone: {mb / read_s:.1f} MB/s")
        for workers in (1, 2):
            seconds = timed(prepare_corpus, corpus, tmp / f"byte{workers}", "byte", workers)
            print(f"prepare byte  workers={workers}: {seconds:.2f} s  {mb / seconds:6.1f} MB/s")
        train_texts = (
            t for f in discover(corpus) if f.split == "train" for t in read_documents(f.path)
        )
        bpe_s = timed(train_bpe, train_texts, args.bpe_vocab, tmp / "tokenizer.json")
        print(f"train bpe:{args.bpe_vocab} on the train split: {bpe_s:.2f} s")
        for workers in (1, 2):
            seconds = timed(
                prepare_corpus, corpus, tmp / f"bpe{workers}", str(tmp / "tokenizer.json"), workers
            )
            print(f"prepare bpe   workers={workers}: {seconds:.2f} s  {mb / seconds:6.1f} MB/s")


if __name__ == "__main__":
    main()
