"""The data stage at real scale: a ~1 GB Pile-layout corpus through Snakemake with a 32k BPE.

Builds `*.jsonl.zst` files whose records name their domain in `meta.pile_set_name` (real Pile
names; no validation split: corpus.valid_fraction holds documents out) from text already on
the machine: man pages ("Wikipedia (en)"), /usr/share/doc ("Pile-CC"), its copyright files
("FreeLaw"), C headers ("Github") and Python sources ("StackExchange"); topped up to the
target size by repeating documents if the machine has less. Then prints:

1. the data stage (`results/data/stats.parquet`) through Snakemake, `--cores 2`, one job per
   file: wall time, MB of text per second per core against the tokenizer's own single-thread
   `encode_batch_fast` rate on the same text, and each job's peak RSS (Snakemake benchmark);
2. the same with `corpus.max_tokens: auto` for a final budget that needs part of the corpus:
   text tokenized, bytes read and wall time, against run 1, and each domain's tokens against
   the target (collect_shards' log);
3. a dry run after adding one input file, without and with max_tokens: the jobs it lists;
4. every kind of bad input: the error line (or, for repaired text, the exit) and the time.

    cpu-exclusive python benchmarks/data_stage.py --work /tmp/data-stage
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import zstandard

REPO = Path(__file__).resolve().parents[1]
SOURCES = {  # Pile name → (root, which files)
    "Wikipedia (en)": [("/usr/share/man", lambda p: p.endswith(".gz"))],
    "Pile-CC": [("/usr/share/doc", lambda p: not p.endswith("copyright") and _texty(p))],
    "FreeLaw": [("/usr/share/doc", lambda p: p.endswith("copyright"))],
    "Github": [("/usr/include", lambda p: p.endswith((".h", ".hpp", ".hh", ".def", ".inc")))],
    "StackExchange": [
        (root, lambda p: p.endswith(".py"))
        for root in [*map(str, Path("/usr/lib").glob("python3*")), sys.prefix + "/lib"]
    ],
}
BINARY = (".png", ".jpg", ".gif", ".pdf", ".woff", ".woff2", ".ttf", ".ico", ".svgz", ".zip")
MAX_DOCUMENT = 100_000  # characters: longer files become several documents, as in the Pile


def _texty(path: str) -> bool:
    return not path.endswith(BINARY)


def source_files() -> list[tuple[str, str]]:
    found = []
    for name, roots in SOURCES.items():
        for root, wanted in roots:
            for folder, _, files in os.walk(root):
                for file in files:
                    path = os.path.join(folder, file)
                    if wanted(path) and os.path.isfile(path) and not os.path.islink(path):
                        found.append((name, path))
    return sorted(set(found))


def documents_of(path: str) -> list[str]:
    try:
        raw = gzip.decompress(Path(path).read_bytes()) if path.endswith(".gz") else None
        raw = raw if raw is not None else Path(path).read_bytes()
    except (OSError, EOFError, zlib.error):
        return []
    if b"\0" in raw[:4096]:
        return []  # binary
    text = raw.decode("utf-8", errors="replace")
    return [text[i : i + MAX_DOCUMENT] for i in range(0, len(text), MAX_DOCUMENT) if text.strip()]


def build_corpus(out: Path, target_bytes: int, files: int, seed: int = 0) -> dict:
    """Shuffled documents of every domain in `files` .jsonl.zst files of about equal size."""
    out.mkdir(parents=True, exist_ok=True)
    sources = source_files()
    random.Random(seed).shuffle(sources)
    per_file = target_bytes // files
    compressor = zstandard.ZstdCompressor(level=3)
    written = unique = 0
    by_domain: dict[str, int] = {}
    index = copy = 0
    for k in range(files):
        with (
            open(out / f"{k:02d}.jsonl.zst", "wb") as raw,
            compressor.stream_writer(raw) as stream,
        ):
            in_file = 0
            while in_file < per_file:
                if index == len(sources):
                    index, copy = 0, copy + 1
                name, path = sources[index]
                index += 1
                for text in documents_of(path):
                    record = {"text": text, "meta": {"pile_set_name": name}}
                    line = (json.dumps(record) + "\n").encode()
                    stream.write(line)
                    size = len(text.encode())
                    in_file += size
                    by_domain[name] = by_domain.get(name, 0) + size
                    unique += size if copy == 0 else 0
        written += in_file
    disk = sum(p.stat().st_size for p in out.glob("*.jsonl.zst"))
    return {"text_bytes": written, "unique_bytes": unique, "disk_bytes": disk, "domains": by_domain}


def tokenizer_rate(tokenizer: Path, corpus: Path, megabytes: float) -> float:
    """MB/s of `encode_batch_fast` on one thread, on the first `megabytes` of the corpus."""
    code = f"""
import json, time, zstandard, io
from tokenizers import Tokenizer
tok = Tokenizer.from_file({str(tokenizer)!r})
texts, size = [], 0
with open({str(corpus / "00.jsonl.zst")!r}, "rb") as raw:
    lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
    for line in lines:
        texts.append(json.loads(line)["text"]); size += len(texts[-1].encode())
        if size > {megabytes * 1e6}: break
start = time.perf_counter()
for i in range(0, len(texts), 2048):
    tok.encode_batch_fast(texts[i : i + 2048], add_special_tokens=False)
print(size / 1e6 / (time.perf_counter() - start))
"""
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return float(result.stdout.strip())


def snakemake(workdir: Path, config: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    command = [
        *(sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")),
        *("--directory", str(workdir), "--configfile", str(REPO / "tests/config/tiny.yaml")),
        *(str(config), "--cores", "2", "results/data/stats.parquet", *args),
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    return result, time.perf_counter() - start


def write_config(path: Path, folder: Path, tokenizer: str, **extra) -> Path:
    corpus_keys = {
        "path": str(folder),
        "domain_field": "meta.pile_set_name",
        "valid_fraction": 0.002,
        "tokenizer": tokenizer,
        "bytes_per_job": 1,  # every file (~50 MB of text) is a job of its own
        **extra.pop("corpus", {}),
    }
    path.write_text(json.dumps({"corpus": corpus_keys, "target": "Wikipedia (en)", **extra}))
    return path


def data_jobs(workdir: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((workdir / "results/benchmarks/data").rglob("*.tsv")):
        table = pd.read_csv(tsv, sep="\t")
        group = tsv.parent / tsv.stem
        record = workdir / "results/data/shards" / tsv.stem / "group.json"
        made = json.loads(record.read_text()) if record.is_file() else {}
        text, cpu = made.get("text_bytes", 0), made.get("cpu_seconds", float("nan"))
        rows.append(
            {
                "job": str(group.relative_to(workdir / "results/benchmarks/data")),
                "s": table["s"].iloc[0],
                "max_rss_mb": table["max_rss"].iloc[0],
                "text_mb": text / 1e6,
                "cpu_s": cpu,
            }
        )
    return pd.DataFrame(rows)


def report_run(label: str, workdir: Path, wall: float, single_thread: float) -> pd.DataFrame:
    jobs = data_jobs(workdir)
    groups = jobs[jobs["job"].str.startswith("prepare/")]
    text_mb = groups["text_mb"].sum()
    job_seconds = groups["s"].sum()
    stats = pd.read_parquet(workdir / "results/data/stats.parquet")
    other = jobs[~jobs["job"].str.startswith("prepare/")]
    print(f"\n== {label}")
    print(
        f"wall time (snakemake, --cores 2): {wall:.1f} s; jobs: {len(groups)} prepare_group + "
        + ", ".join(f"{r.job} {r.s:.1f} s" for r in other.itertuples())
    )
    print(f"text tokenized: {text_mb:,.1f} MB -> {stats['tokens'].sum():,} tokens")
    per_core = text_mb / job_seconds
    per_cpu = text_mb / groups["cpu_s"].sum()
    print(
        f"MB/s per core (text / sum of prepare_group job seconds): {per_core:.2f}; "
        f"tokenizer alone, 1 thread: {single_thread:.2f} MB/s; ratio {per_core / single_thread:.2f}"
    )
    print(
        f"MB per CPU-second of the jobs themselves (process time, all threads): {per_cpu:.2f}; "
        f"ratio {per_cpu / single_thread:.2f}; jobs' CPU / wall: "
        f"{groups['cpu_s'].sum() / job_seconds:.2f} (below 1: the jobs waited for a core); "
        f"load average now {os.getloadavg()[0]:.2f}"
    )
    rates = groups["text_mb"] / groups["s"]
    spread = f"min {rates.min():.2f}, median {rates.median():.2f}, max {rates.max():.2f}"
    print(f"per job MB/s: {spread}")
    print(
        f"peak RSS per prepare_group job: max {groups['max_rss_mb'].max():.0f} MB, "
        f"median {groups['max_rss_mb'].median():.0f} MB"
    )
    print(stats.to_string(index=False))
    return stats


BAD_INPUTS = {
    "corrupt .zst": ("00.jsonl.zst", "zst-garbage"),
    "cut .zst": ("00.jsonl.zst", "zst-cut"),
    "lone surrogate (repaired, exit 0)": ("00.jsonl", "surrogate"),
    "truncated .gz": ("00.jsonl.gz", "gz-truncated"),
    "malformed line": ("00.jsonl", "malformed"),
    "record without the domain field": ("00.jsonl", "no-domain"),
    "non-string text": ("00.jsonl", "text-int"),
    "empty domain": ("00.jsonl", "empty-domain"),
}


def bad_inputs(folder: Path, tokenizer: Path, good_lines: int) -> None:
    print(f"\n== bad inputs (line {good_lines + 1} of a file; regmix prepare-group, 32k BPE)")
    record = json.dumps({"text": "a good document " * 100, "meta": {"pile_set_name": "Pile-CC"}})
    good = (record + "\n") * good_lines
    bad_lines = {
        "malformed": '{"text": "cut off", "meta": \n',
        "no-domain": json.dumps({"text": "no meta"}) + "\n",
        "text-int": json.dumps({"text": 7, "meta": {"pile_set_name": "Pile-CC"}}) + "\n",
        "empty-domain": json.dumps({"text": "x", "meta": {"pile_set_name": ""}}) + "\n",
        "surrogate": json.dumps({"text": "bad \ud800", "meta": {"pile_set_name": "Github"}}) + "\n",
    }
    for label, (name, kind) in BAD_INPUTS.items():
        corpus = folder / kind
        corpus.mkdir(parents=True, exist_ok=True)
        data = (good + bad_lines.get(kind, good)).encode()
        if kind == "zst-garbage":
            packed = zstandard.ZstdCompressor().compress(data)
            cut = int(len(packed) * 0.9)
            data = packed[:cut] + b"\x13garbage\x00" * 64 + packed[cut:]
        elif kind == "zst-cut":
            packed = zstandard.ZstdCompressor().compress(data)
            data = packed[: int(len(packed) * 0.9)]
        elif kind == "gz-truncated":
            packed = gzip.compress(data)
            data = packed[: int(len(packed) * 0.9)]
        (corpus / name).write_bytes(data)
        command = [
            "regmix",
            "prepare-group",
            "--corpus",
            str(corpus),
            "--out",
            str(folder / f"{kind}-out"),
            "--tokenizer",
            str(tokenizer),
            "--domain-field",
            "meta.pile_set_name",
            "--threads",
            "1",
        ]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        lines = result.stderr.strip().splitlines()
        print(
            f"{label}: exit {result.returncode} after {seconds:.1f} s, {len(lines)} line(s): "
            f"{lines[-1] if lines else ''}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--final-tokens", type=int, default=40_000_000)
    args = parser.parse_args()
    corpus = args.work / "corpus"
    if not corpus.is_dir():
        start = time.perf_counter()
        built = build_corpus(corpus, int(args.gigabytes * 1e9), args.files)
        print(
            f"corpus: {built['text_bytes'] / 1e9:.2f} GB of text "
            f"({built['unique_bytes'] / 1e9:.2f} GB unique) in {args.files} .jsonl.zst files, "
            f"{built['disk_bytes'] / 1e6:,.0f} MB on disk, built in "
            f"{time.perf_counter() - start:.0f} s; by domain (MB): "
            + ", ".join(f"{k} {v / 1e6:,.0f}" for k, v in built["domains"].items())
        )

    full = args.work / "full"
    full.mkdir(exist_ok=True)
    config = write_config(args.work / "full.json", corpus, "bpe:32768")
    result, wall = snakemake(full, config)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-4000:])
    tokenizer = full / "results/data/tokenizer.json"
    single = tokenizer_rate(tokenizer, corpus, 50)
    full_stats = report_run("run 1: the whole corpus", full, wall, single)

    sampled = args.work / "sampled"
    sampled.mkdir(exist_ok=True)
    steps = args.final_tokens // (64 * 512)
    final = {"model": "demo_final", "seq_len": 512, "batch_size": 64, "steps": steps}
    config = write_config(
        args.work / "sampled.json",
        corpus,
        str(tokenizer),
        corpus={"max_tokens": "auto"},
        final=final,
    )
    result, sampled_wall = snakemake(sampled, config)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-4000:])
    print(f"\nfinal budget {steps * 64 * 512:,} tokens -> max_tokens auto")
    stats = report_run("run 2: corpus.max_tokens: auto", sampled, sampled_wall, single)
    collect_log = (sampled / "logs/data/collect_shards.log").read_text().splitlines()
    print("\n".join(line for line in collect_log if "train domain" in line))
    saved = 1 - stats["text_bytes"].sum() / full_stats["text_bytes"].sum()
    print(
        f"text tokenized: {saved:.0%} less than run 1; wall {sampled_wall:.0f} s vs {wall:.0f} s "
        f"({1 - sampled_wall / wall:.0%} saved, survey and tokenizer copy included); bytes "
        "read: all of the corpus both times (a hash sample must see every document)"
    )

    extra = corpus / f"{args.files:02d}.jsonl.zst"
    record = {"text": "one more file " * 1000, "meta": {"pile_set_name": "Github"}}
    extra.write_bytes(zstandard.ZstdCompressor().compress((json.dumps(record) + "\n").encode()))
    try:
        for label, workdir, name in (
            ("", full, "full.json"),
            (" under max_tokens", sampled, "sampled.json"),
        ):
            dry, _ = snakemake(workdir, args.work / name, "--dry-run")
            table = (dry.stdout + dry.stderr).split("Job stats:", 1)[-1].split("total", 1)[0]
            jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE))
            print(f"\n== dry run after adding {extra.name}{label}: jobs {jobs}")
    finally:
        extra.unlink()

    bad_inputs(args.work / "bad", tokenizer, good_lines=5_000)


if __name__ == "__main__":
    main()
