"""A multi-domain corpus: which files it has, which split and domain each document belongs to.

Two layouts:

- RegMix's: `<corpus>/{train,valid}/<domain>-<k>.<ext>`: the domain is the file-name prefix
  before the first `-` and `<k>` a shard number, so `pile_cc-0.jsonl` and `pile_cc-1.jsonl.gz`
  are both domain `pile_cc`. A domain may exist only in `valid/`: a pure evaluation target.
- A domain in a field (`domain_field`, e.g. `meta.pile_set_name`, a dotted path into a JSON
  record or a parquet column): any file names anywhere under `<corpus>/`, `train/` and
  `valid/` optional. The corpus's names are normalised to identifiers (regmix.data.domains).

One document per JSON line (`.jsonl`, `.jsonl.gz`, `.json.gz`, `.jsonl.zst`) or parquet row,
text in the field `text`. With `valid_fraction`, documents outside `valid/` are held out for
validation by a hash of their text, so re-runs and added files never move a document between
splits. Any other file in the corpus is an error naming it: a silently skipped file is data lost.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from regmix.data.domains import normalise
from regmix.data.readers import EXTENSIONS, Progress, file_extension, read_records
from regmix.errors import RegmixError

SPLITS = ("train", "valid")
DOMAIN_NAME = re.compile(r"[A-Za-z0-9_]+")
SHARD_NUMBER = re.compile(r"\d+")
MISSING_DOMAIN = ("error", "skip")
IGNORED_AT_ROOT = re.compile(r"(README|LICENSE|planted\.yaml)", re.IGNORECASE)
"""Files a corpus folder may hold beside its documents (a dataset card, the demo's answer)."""


@dataclass(frozen=True)
class CorpusFile:
    split: str | None
    """train or valid; None for a file outside train/ and valid/ (documents go to train, or
    to valid by `valid_fraction`)."""
    domain: str | None
    """The file's domain in RegMix's layout; None when each record names its own."""
    path: Path
    relative: str
    """The path below the corpus folder: stable names for grouping files into jobs."""


@dataclass(frozen=True)
class ReadOptions:
    """How documents are assigned a split and a domain."""

    domain_field: str | None = None
    missing_domain: str = "error"
    valid_fraction: float = 0.0
    domains: frozenset[str] | None = None
    """Keep only these domains (identifiers); None keeps all."""
    keep: dict[str, float] | None = None
    """Per train domain, the share of its documents to keep (`corpus.max_tokens`, sampled by a
    hash of the text across all of the domain's files); a domain not named keeps all."""


@dataclass
class ReadCounts:
    """What a reader skipped or held out, for the log."""

    missing_domain: int = 0
    held_out: int = 0
    other_domains: int = 0
    sampled_out: int = 0
    raw_names: dict[str, str] = field(default_factory=dict)
    """The corpus's domain names seen, raw → identifier."""


@dataclass(frozen=True)
class Document:
    split: str
    domain: str
    text: str


def domain_of(path: Path) -> str:
    """`pile_cc-3.jsonl.gz` → `pile_cc`; a dash inside the domain name is an error."""
    stem = path.name[: -len(file_extension(path) or "")]
    domain, dash, shard = stem.partition("-")
    if dash and not SHARD_NUMBER.fullmatch(shard):
        head, _, tail = stem.rpartition("-")
        if not tail.isdigit():
            head, tail = stem, "0"
        suggestion = f"{head.replace('-', '_')}-{tail}"
        raise RegmixError(
            f"{path}: expected <domain>-<k>{file_extension(path)} with a numeric shard k; domain "
            f"names may not contain '-' (rename to e.g. {suggestion}), or set "
            "corpus.domain_field if each record names its domain"
        )
    if not DOMAIN_NAME.fullmatch(domain):
        raise RegmixError(f"{path}: domain {domain!r} must use only letters, digits and '_'")
    return domain


def _unknown_file(path: Path) -> RegmixError:
    return RegmixError(
        f"{path}: not a corpus file (expected {', '.join(EXTENSIONS)}); move it out of the corpus"
    )


def discover(
    corpus: str | os.PathLike, domains: list[str] | None = None, domain_field: str | None = None
) -> list[CorpusFile]:
    """All corpus files, sorted by their path below the corpus; checks the layout first."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise RegmixError(f"{corpus}: corpus folder does not exist")
    if domain_field is not None:
        return _discover_any(corpus)
    if not (corpus / "train").is_dir():
        expected = f"{corpus}/train/<domain>-<k>.jsonl"
        raise RegmixError(
            f"{corpus}: no train/ folder (expected {expected}, or set corpus.domain_field)"
        )
    files = []
    for split in SPLITS:
        folder = corpus / split
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if file_extension(path) is None or not path.is_file():
                raise _unknown_file(path)
            files.append(CorpusFile(split, domain_of(path), path, f"{split}/{path.name}"))
    if not any(f.split == "train" for f in files):
        raise RegmixError(f"{corpus}/train: no {', '.join(EXTENSIONS)} files")
    if domains is not None:
        found = {f.domain for f in files}
        missing = [d for d in domains if d not in found]
        if missing:
            raise RegmixError(f"{corpus}: no files for domain(s) {', '.join(missing)}")
        files = [f for f in files if f.domain in domains]
    return files


def _discover_any(corpus: Path) -> list[CorpusFile]:
    """Every document file under `corpus`, whatever its name; train/ and valid/ set the split."""
    files = []
    for root, dirs, names in os.walk(corpus):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            relative = path.relative_to(corpus).as_posix()
            if name.startswith(".") or ("/" not in relative and IGNORED_AT_ROOT.match(name)):
                continue
            if file_extension(path) is None:
                raise _unknown_file(path)
            top = relative.split("/", 1)[0] if "/" in relative else None
            files.append(CorpusFile(top if top in SPLITS else None, None, path, relative))
    if not files:
        raise RegmixError(f"{corpus}: no {', '.join(EXTENSIONS)} files")
    return sorted(files, key=lambda f: f.relative)


def hash_fraction(text: str, salt: bytes) -> float:
    """A document's place in [0, 1): a pure function of its text, so that every re-run (and
    every job) puts it on the same side of a threshold."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=salt)
    return int.from_bytes(digest.digest(), "little") / 2**64


VALID_SALT = b"regmix-valid"
KEEP_SALT = b"regmix-keep"  # independent of VALID_SALT: the sample is not the validation set


def _field(record: object, path: list[str]) -> object:
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def documents(
    file: CorpusFile,
    options: ReadOptions,
    counts: ReadCounts | None = None,
    progress: Progress | None = None,
) -> Iterator[Document]:
    """The documents of one corpus file with their split and domain, in order."""
    counts = counts if counts is not None else ReadCounts()
    field_path = options.domain_field.split(".") if options.domain_field else None
    columns = ["text"] + ([field_path[0]] if field_path and field_path[0] != "text" else [])
    for number, record in read_records(file.path, columns, progress):
        text = _document_text(record, file.path, number)
        domain = file.domain
        if field_path is not None:
            raw = _field(record, field_path)
            if raw is None:
                if options.missing_domain == "skip":
                    counts.missing_domain += 1
                    continue
                where = _where(file.path, number)
                raise RegmixError(
                    f"{where}: record has no {options.domain_field!r} field (set "
                    "corpus.missing_domain: skip to leave such records out)"
                )
            if not isinstance(raw, str) or not (domain := normalise(raw)):
                raise RegmixError(
                    f"{_where(file.path, number)}: {options.domain_field!r} must be a non-empty "
                    "domain name, "
                    f"got {raw!r}"
                )
            counts.raw_names.setdefault(raw, domain)
        if options.domains is not None and domain not in options.domains:
            counts.other_domains += 1
            continue
        split = file.split or "train"
        held_out = (
            split == "train"
            and options.valid_fraction > 0
            and hash_fraction(text, VALID_SALT) < options.valid_fraction
        )
        if held_out:
            split = "valid"
            counts.held_out += 1
        if split == "train" and _sampled_out(text, domain, options.keep):
            counts.sampled_out += 1
            continue
        yield Document(split, domain, text)


def _sampled_out(text: str, domain: str, keep: dict[str, float] | None) -> bool:
    return bool(keep) and domain in keep and hash_fraction(text, KEEP_SALT) >= keep[domain]


def _where(path: Path, number: int) -> str:
    """A record's place for an error message (built only on error: it is per document)."""
    return f"{path}: row {number}" if path.name.endswith(".parquet") else f"{path}:{number}"


def _document_text(record: object, path: Path, number: int) -> str:
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    where = _where(path, number)
    if not isinstance(record, dict):
        raise RegmixError(f"{where}: expected a JSON object with a 'text' field")
    if "text" not in record:
        raise RegmixError(f"{where}: record has no 'text' field")
    raise RegmixError(f"{where}: 'text' must be a string, got {type(record['text']).__name__}")


def read_documents(path: Path) -> Iterator[str]:
    """The texts of one corpus file, in order (no split or domain)."""
    file = CorpusFile("train", "any", path, path.name)
    return (doc.text for doc in documents(file, ReadOptions()))
