"""A multi-domain corpus: which files it has, which split and domain each document belongs to.

Two layouts:

- RegMix's: `<corpus>/{train,valid}/<domain>-<k>.<ext>`: the domain is the file-name prefix
  before the first `-` and `<k>` a shard number, so `pile_cc-0.jsonl` and `pile_cc-1.jsonl.gz`
  are both domain `pile_cc`. A domain may exist only in `valid/`: a pure evaluation target.
- A domain in a field (`domain_field`, e.g. `meta.pile_set_name`, a dotted path into a JSON
  record or a parquet column): any file names anywhere under `<corpus>/`. The corpus's names
  are normalised to identifiers (regmix.data.domains).

The split comes from the path, as corpora ship: a folder or a file stem named `train`;
`val`, `valid`, `validation` or `dev` (→ valid); `test` (→ test), at any depth (The Pile's
`train/00.jsonl.zst`, `val.jsonl.zst`, `test.jsonl.zst`; SlimPajama's `validation/chunk1/...`;
Hugging Face's `train-00000-of-00002.parquet`). A file with no such name is train. `test`
documents are never trained on: they are read (and counted) like the others and are there for
whoever asks to evaluate on them. Where the corpus has no validation file at all,
`valid_fraction` holds train documents out for validation by a hash of their text, so re-runs
and added files never move a document between splits; where it has one, `valid_fraction` is
ignored (the corpus's own validation split is the one to use).

One document per JSON line (`.jsonl`, `.jsonl.gz`, `.json.gz`, `.jsonl.zst`) or parquet row,
text in the field `text`. Text that UTF-8 cannot carry (lone surrogates, which valid JSON can
spell as `"\\ud800"`, and bytes that are not UTF-8) is repaired, each bad code point becoming
U+FFFD, and the record counted. Any other file in the corpus is an error naming it: a silently
skipped file is data lost.
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

SPLITS = ("train", "valid", "test")
MODEL_SPLITS = ("train", "valid")
"""The splits a model trains or is validated on (the data stage writes shards for these only);
`test` is never among them."""
SPLIT_NAMES = {
    "train": "train",
    "val": "valid",
    "valid": "valid",
    "validation": "valid",
    "dev": "valid",
    "test": "test",
}
"""A folder or file stem of one of these names sets its documents' split."""
_HF_SHARD = re.compile(r"(?P<split>[a-z]+)-\d+-of-\d+")
"""Hugging Face's data file names: `train-00000-of-00004`."""
DOMAIN_NAME = re.compile(r"[A-Za-z0-9_]+")
SHARD_NUMBER = re.compile(r"\d+")
MISSING_DOMAIN = ("error", "skip")
IGNORED_AT_ROOT = re.compile(r"(README|LICENSE|planted\.yaml)", re.IGNORECASE)
"""Files a corpus folder may hold beside its documents (a dataset card, the demo's answer)."""
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class CorpusFile:
    split: str
    """train, valid or test, from the path (regmix.data.corpus.split_of)."""
    domain: str | None
    """The file's domain in RegMix's layout; None when each record names its own."""
    path: Path
    relative: str
    """The path below the corpus folder: stable names for grouping files into jobs."""


@dataclass(frozen=True)
class ReadOptions:
    """How documents are assigned a split and a domain: built from the config's `corpus`
    section by `read_options` (the CLI's reading flags are the same keys), and completed for a
    corpus by `open_corpus`, so that every stage decides alike."""

    domain_field: str | None = None
    missing_domain: str = "error"
    valid_fraction: float = 0.0
    domains: frozenset[str] | None = None
    """Keep only these domains (identifiers); None keeps all."""


def read_options(corpus: dict) -> ReadOptions:
    """The ReadOptions of a `corpus` config section (or the reading flags as the same keys:
    domain_field, missing_domain, valid_fraction, domains)."""
    fraction = float(corpus.get("valid_fraction") or 0.0)
    if not 0 <= fraction < 1:
        raise RegmixError(f"corpus.valid_fraction {fraction}: expected 0 <= f < 1")
    domains = corpus.get("domains")
    return ReadOptions(
        domain_field=corpus.get("domain_field") or None,
        missing_domain=corpus.get("missing_domain") or "error",
        valid_fraction=fraction,
        domains=frozenset(domains) if domains else None,
    )


@dataclass
class ReadCounts:
    """What a reader skipped, held out or repaired, for the log."""

    missing_domain: int = 0
    held_out: int = 0
    other_domains: int = 0
    repaired: int = 0
    """Records whose text held code points UTF-8 cannot carry (lone surrogates), replaced."""
    raw_names: dict[str, str] = field(default_factory=dict)
    """The corpus's domain names seen, raw → identifier."""


@dataclass(frozen=True)
class Document:
    split: str
    domain: str
    text: str
    size: int
    """The text's UTF-8 bytes."""


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


def split_of(relative: str, stems: bool = True) -> str:
    """The split a file's path below the corpus names (`train/00.jsonl.zst` → train,
    `val.jsonl.zst` → valid, `validation/chunk1/x.jsonl.zst` → valid, `test.jsonl.zst` →
    test); train when it names none. `stems`: the file name counts too (not in RegMix's
    layout, whose file names are domains). Two different splits in one path are an error."""
    *folders, name = relative.split("/")
    names = [f.lower() for f in folders]
    if stems:
        stem = name[: -len(file_extension(Path(name)) or "")].lower()
        shard = _HF_SHARD.fullmatch(stem)
        names.append(shard["split"] if shard else stem)
    found = {SPLIT_NAMES[n] for n in names if n in SPLIT_NAMES}
    if len(found) > 1:
        raise RegmixError(
            f"{relative}: its path names {' and '.join(sorted(found))} splits (folders or file "
            "names train, val/valid/validation/dev, test set a document's split); rename one"
        )
    return found.pop() if found else "train"


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
    for folder in sorted(corpus.iterdir()):
        if not folder.is_dir() or folder.name.lower() not in SPLIT_NAMES:
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if file_extension(path) is None or not path.is_file():
                raise _unknown_file(path)
            relative = f"{folder.name}/{path.name}"
            files.append(CorpusFile(split_of(relative, False), domain_of(path), path, relative))
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
    """Every document file under `corpus`, whatever its name; names set the split."""
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
            files.append(CorpusFile(split_of(relative), None, path, relative))
    if not files:
        raise RegmixError(f"{corpus}: no {', '.join(EXTENSIONS)} files")
    return sorted(files, key=lambda f: f.relative)


def open_corpus(
    corpus: str | os.PathLike, options: ReadOptions
) -> tuple[list[CorpusFile], ReadOptions]:
    """The corpus's files (in RegMix's layout, those of `options.domains` only) and the options
    to read them with: `valid_fraction` only where the corpus has no validation file. Every
    stage that reads the corpus starts here, so that all decide splits and domains alike."""
    field_corpus = options.domain_field is not None
    wanted = sorted(options.domains) if options.domains and not field_corpus else None
    files = discover(corpus, None, options.domain_field)
    if has_validation_files(files) and options.valid_fraction > 0:
        options = ReadOptions(options.domain_field, options.missing_domain, 0.0, options.domains)
    if wanted is not None:
        files = discover(corpus, wanted, None)
    return files, options


def has_validation_files(files: list[CorpusFile]) -> bool:
    return any(f.split == "valid" for f in files)


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
    digest=None,
    every: int = 1,
) -> Iterator[Document]:
    """The documents of one corpus file with their split and domain, in order (every
    `every`-th record only, for a sample spread over the file). `digest`, a hashlib object, is
    fed the file's raw bytes."""
    counts = counts if counts is not None else ReadCounts()
    field_path = options.domain_field.split(".") if options.domain_field else None
    columns = ["text"] + ([field_path[0]] if field_path and field_path[0] != "text" else [])
    for number, record in read_records(file.path, columns, progress, digest, every):
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
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            text = _SURROGATE.sub("\ufffd", text)
            size = len(text.encode("utf-8"))
            counts.repaired += 1
        split = file.split
        held_out = (
            split == "train"
            and options.valid_fraction > 0
            and hash_fraction(text, VALID_SALT) < options.valid_fraction
        )
        if held_out:
            split = "valid"
            counts.held_out += 1
        yield Document(split, domain, text, size)


def kept(document: Document, keep: dict[str, float] | None) -> bool:
    """Whether a document is in `corpus.max_tokens`'s hash sample: `keep` maps a train domain
    to the share of its documents to keep (by a hash of the text, so the same documents
    whatever the file or job); other splits and domains not named keep all."""
    if not keep or document.split != "train" or document.domain not in keep:
        return True
    return hash_fraction(document.text, KEEP_SALT) < keep[document.domain]


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
