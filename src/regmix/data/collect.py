"""The data stage's fan-in: every group's per-file shards → one index per (split, domain),
`stats.parquet` and `domains.json`, under the data folder.

- `{split}/{domain}.json`, the domain's index: dtype, tokenizer, vocab_size, eos_id, counts,
  `shards` (one per file holding the domain, in the order of the files' paths: `path`,
  `tokens` in the shard, `use` — the prefix of it the loader reads —, `token_hash`, `file`),
  `keep`, `estimated_tokens` and the domain's `fingerprint` (regmix.data.fingerprint);
- `stats.parquet`: domain, split, tokens (what the loader reads), documents, text_bytes,
  estimated_tokens (the domain's whole size in tokens), fingerprint;
- `domains.json`: the corpus's own domain names → the identifiers used everywhere else.

With `corpus.max_tokens`, each data job tokenized a hash sample of each train domain's
documents at the share the survey asked for (`keep`: an estimate, with a margin) and counted
every document's text bytes, kept or not. The fan-in therefore knows each domain's whole size
(its text bytes × the tokens per byte of what was tokenized), and cuts every file's shard to
the same share of the hash sample so that the loader reads max_tokens tokens of the domain: a
prefix of each file's shard (within one file, the sample's first documents). Adding a file
thus re-runs its job and this fan-in only. A domain that falls more than 10% short of its
target (its shards hold less: the survey underestimated its share) is named in a warning.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from regmix.data.corpus import MODEL_SPLITS
from regmix.data.domains import merge_names
from regmix.data.fingerprint import domain_fingerprint
from regmix.data.shards import FILE_RECORD, GROUP_RECORD
from regmix.data.stats import COLUMNS as STATS_COLUMNS
from regmix.errors import RegmixError
from regmix.files import write_json, write_table

DOMAIN_NAMES = "domains.json"
SHORT = 0.9
"""A domain with fewer prepared tokens than this share of its target is named in a warning."""
INDEX_KEYS = ("dtype", "tokenizer", "vocab_size", "eos_id")
STATS = [*STATS_COLUMNS, "text_bytes", "estimated_tokens", "fingerprint"]


def read_files(groups: list[Path]) -> tuple[list[tuple[Path, dict]], list[dict]]:
    """Every file record of the groups as (its folder, the record), in the order of the files'
    paths, and the group records."""
    files, summaries = [], []
    for group in groups:
        record_path = group / GROUP_RECORD
        if not record_path.is_file():
            raise RegmixError(f"{group}: not a prepared group (no {GROUP_RECORD})")
        summary = json.loads(record_path.read_text())
        if "file_ids" not in summary:
            raise RegmixError(
                f"{group}: prepared by an older regmix (no per-file shards); run it again"
            )
        summaries.append(summary)
        for name in summary["file_ids"]:
            files.append((group / name, json.loads((group / name / FILE_RECORD).read_text())))
    return sorted(files, key=lambda item: item[1]["relative"]), summaries


def shard_meta(folder: Path, split: str, domain: str) -> dict:
    return json.loads((folder / split / f"{domain}.json").read_text())


def refine(shards: list[dict], target: int | None) -> float:
    """Set each shard's `use` so that the domain's shards give `target` tokens (all when they
    hold fewer), cutting every file at the same share of the hash sample; returns that share
    (the threshold a whole hash sample would have used; 1.0 with no target)."""
    available = sum(s["tokens"] for s in shards)
    top = max((s["keep"] for s in shards), default=1.0)
    if target is None or available <= target:
        for shard in shards:
            shard["use"] = shard["tokens"]
        return top if target is not None else 1.0

    def used(share: float) -> float:
        return sum(s["tokens"] * min(1.0, share / s["keep"]) for s in shards)

    low, high = 0.0, top
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if used(middle) < target else (low, middle)
    for shard in shards:
        shard["use"] = min(shard["tokens"], round(shard["tokens"] * min(1.0, high / shard["keep"])))
    return high


def domain_entry(
    split: str, domain: str, parts: list[tuple[Path, dict, dict]], out: Path, target: int | None
) -> dict:
    """A domain's index from its per-file entries (folder, file record, the record's entry)."""
    shards, meta = [], None
    for folder, record, entry in parts:
        if entry["tokens"] == 0:
            continue
        meta = meta or shard_meta(folder, split, domain)
        shards.append(
            {
                "path": os.path.relpath(folder / split / f"{domain}.bin", out),
                "tokens": entry["tokens"],
                "token_hash": entry["token_hash"],
                "file": record["relative"],
                "keep": entry["keep"],
                "documents": entry["documents"],
                "text_bytes": entry["text_bytes"],
            }
        )
    if meta is None:
        return {}
    keep = refine(shards, target if split == "train" else None)
    read_bytes = sum(entry["read_text_bytes"] for _, _, entry in parts)
    read_documents = sum(entry["read_documents"] for _, _, entry in parts)
    tokens = sum(s["use"] for s in shards)
    index = {k: meta[k] for k in INDEX_KEYS} | {
        "tokens": tokens,
        "documents": sum(round(s["documents"] * s["use"] / s["tokens"]) for s in shards),
        "text_bytes": sum(round(s["text_bytes"] * s["use"] / s["tokens"]) for s in shards),
        "read_documents": read_documents,
        "read_text_bytes": read_bytes,
        "keep": keep,
        "estimated_tokens": whole_size(shards, read_bytes, read_documents),
        "shards": [
            {k: s[k] for k in ("path", "tokens", "use", "token_hash", "file")} for s in shards
        ],
    }
    index["fingerprint"] = domain_fingerprint(meta["tokenizer"], meta["dtype"], index["shards"])
    return index


def whole_size(shards: list[dict], read_bytes: int, read_documents: int) -> int:
    """A domain's tokens had every document been tokenized: what was, where it was all; else
    every document's text bytes at the tokens per byte of those tokenized, plus one
    end-of-text token per document."""
    written = sum(s["tokens"] for s in shards)
    if all(s["keep"] >= 1 for s in shards):
        return written
    documents = sum(s["documents"] for s in shards)
    per_byte = (written - documents) / max(sum(s["text_bytes"] for s in shards), 1)
    return round(read_bytes * per_byte) + read_documents


def collect_shards(
    groups: list[Path], out: str | os.PathLike, max_tokens: int | None = None
) -> pd.DataFrame:
    """Fan-in: index every group's per-file shards per (split, domain), write the stats table
    and the domain names, and remove what killed jobs left in the shards folder."""
    out = Path(out)
    files, summaries = read_files(groups)
    parts: dict[tuple[str, str], list] = {}
    for folder, record in files:
        for key, entry in record["domains"].items():
            split, domain = key.split("/", 1)
            if split in MODEL_SPLITS:
                parts.setdefault((split, domain), []).append((folder, record, entry))
    index = {}
    for (split, domain), found in sorted(parts.items()):
        if entry := domain_entry(split, domain, found, out, max_tokens):
            index[(split, domain)] = entry
    if len({e["tokenizer"] for e in index.values()}) > 1:
        raise RegmixError(f"{out}: shards made with different tokenizers; prepare them again")
    if not any(split == "train" for split, _ in index):
        raise RegmixError(f"{out}: no train documents in {len(groups)} prepared group(s)")
    for (split, domain), entry in index.items():
        write_json(entry, out / split / f"{domain}.json")
    for split in MODEL_SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    write_json(merge_names(s["domain_names"] for s in summaries), out / DOMAIN_NAMES)
    stats = pd.DataFrame(
        [
            (
                d,
                s,
                e["tokens"],
                e["documents"],
                e["text_bytes"],
                e["estimated_tokens"],
                e["fingerprint"],
            )
            for (s, d), e in sorted(index.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ],
        columns=STATS,
    )
    write_table(stats, out / "stats.parquet")
    remove_leftovers(groups)
    report(index, summaries, max_tokens)
    return stats


def remove_leftovers(groups: list[Path]) -> None:
    """Partial and staging folders beside the groups: every group listed is done, so these are
    what killed or replaced jobs left behind."""
    for parent in {g.parent for g in groups}:
        for entry in parent.glob(".*"):
            if entry.is_dir() and (entry.name.endswith(".partial") or ".staging-" in entry.name):
                shutil.rmtree(entry, ignore_errors=True)


def report(index: dict, summaries: list[dict], max_tokens: int | None) -> None:
    """What the logs say: test documents left out, repaired records, and with max_tokens each
    train domain's tokens against its target (a warning where it falls short)."""
    test = sum(s.get("test_documents", 0) for s in summaries)
    repaired = sum(s.get("repaired", 0) for s in summaries)
    print(
        f"collect-shards: {test:,} test documents counted, none trained on; {repaired:,} "
        "records with text UTF-8 cannot carry repaired",
        file=sys.stderr,
    )
    if max_tokens is None:
        return
    for (split, domain), entry in index.items():
        if split != "train":
            continue
        target = min(max_tokens, entry["estimated_tokens"])
        line = (
            f"train domain {domain!r}: {entry['tokens']:,} tokens prepared for a target of "
            f"{target:,} (corpus.max_tokens {max_tokens:,}; the domain holds "
            f"~{entry['estimated_tokens']:,})"
        )
        if entry["tokens"] < SHORT * target:
            short = 1 - entry["tokens"] / target
            line = (
                f"warning: {line}: {short:.0%} short (its hash sample was too small: the survey "
                "underestimated its share; `snakemake --forcerun survey_corpus` prepares it "
                "again)"
            )
        print(f"collect-shards: {line}", file=sys.stderr)
