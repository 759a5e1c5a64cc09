"""The recommended mixture in the shapes that training stacks read (`regmix export-mixture`).

RegMix ends with a mixture; the large model is then trained by some other stack. Each format
here is checked against how that stack reads it (see tests/test_mixture_formats.py):

- `regmix`: RegMix's YAML, `train: {domain: weight}` and `valid: {domain: 1.0}`.
- `megatron`: Megatron-LM's `--data-path` list `w1 prefix1 w2 prefix2 ...` (also a valid
  `--data-args-path` file). Megatron parses each weight with `float()` and divides by their
  sum; its blended dataset rejects a weight of 0, so domains without a share are left out.
- `olmo-core`: an OLMo-core `SourceMixtureList` YAML (`sources:` with `source_name`,
  `target_ratio`, `paths`, `max_repetition_ratio`), as `SourceMixtureList.from_yaml` loads it
  for `SourceMixtureDatasetConfig(source_list=...)`.
- `hf`: probabilities for Hugging Face `datasets.interleave_datasets`, in a JSON file with
  the domain order they follow.

RegMix's weights are shares of training *tokens*. Megatron and OLMo-core sample token
sequences, so the shares carry over as they are; `interleave_datasets` samples examples, so
for datasets of whole documents the shares are divided by each domain's tokens per document
(from `stats.parquet`) first.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from regmix.data.stats import read_stats
from regmix.errors import RegmixError
from regmix.files import read_table, read_yaml
from regmix.search.mixtures import (
    check_weights,
    mixture_domains,
    regmix_yaml,
    weight_columns,
    weights_from_yaml,
)

FORMATS = ("regmix", "megatron", "olmo-core", "hf")
DEFAULT_MIXTURE = Path("results/optimal/mixture.yaml")
DOMAIN_FIELD = "{domain}"
DIGITS = 12
"""Significant digits a share is written to: far below any effect on training."""


@dataclass(frozen=True)
class Mixture:
    """A mixture read from a RegMix-shape YAML or a mixture table, ready to export."""

    weights: pd.Series
    """Weight per training domain, in the file's order, summing to 1 (zeros kept)."""
    valid: list[str]
    """The validation domains RegMix's YAML lists (the file's, else the training domains)."""
    max_epochs: float | None
    """The repetition cap the mixture was chosen under (mixture.yaml's `caps.max_epochs`)."""
    source: str


@dataclass(frozen=True)
class PrefixOptions:
    """Where each domain's data lies, for the formats that name files (megatron, olmo-core).

    Later sources win: the template fills every domain, the map file overrides it, and
    `--prefix domain=PATH` overrides both.
    """

    template: str | None = None
    """A path with `{domain}` in it, e.g. `/data/{domain}_text_document`."""
    map_file: Path | None = None
    """A YAML mapping of domain: path."""
    pairs: tuple[str, ...] = field(default_factory=tuple)
    """`domain=PATH` strings."""


@dataclass(frozen=True)
class ExportOptions:
    """What `regmix export-mixture` writes; checked before the mixture is read."""

    format: str
    """One of FORMATS."""
    prefixes: PrefixOptions = field(default_factory=PrefixOptions)
    max_repetition: float | None = None
    """OLMo-core's repetition cap; default: the one the mixture was chosen under."""
    stats: Path | None = None
    """stats.parquet, to turn token shares into per-document probabilities (hf)."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise RegmixError(
                f"--format: unknown format {self.format!r} (expected one of: {', '.join(FORMATS)})"
            )
        if self.max_repetition is not None and not self.max_repetition > 0:
            raise RegmixError(f"--max-repetition: must be > 0, got {self.max_repetition}")


@dataclass(frozen=True)
class Exported:
    text: str
    note: str
    """One line for a person: what was written and how a trainer takes it."""


def read_mixture(path: str | os.PathLike, run: str | None = None) -> Mixture:
    """A mixture from a RegMix-shape YAML (`train: {domain: weight}`) or a mixture table."""
    path = Path(path)
    if not path.is_file():
        hint = " (the workflow's simulate stage writes it; or pass --mixture)"
        raise RegmixError(f"{path}: no such file{hint if path == DEFAULT_MIXTURE else ''}")
    if path.suffix in (".yaml", ".yml"):
        if run is not None:
            raise RegmixError(f"--run {run}: {path} holds one mixture; --run picks a table row")
        return _mixture_from_yaml(path)
    if path.suffix in (".parquet", ".csv"):
        return _mixture_from_table(path, run)
    raise RegmixError(
        f"{path}: expected a RegMix-style mixture YAML (.yaml) or a mixture table "
        "(.parquet/.csv with weight.<domain> columns)"
    )


def _mixture_from_yaml(path: Path) -> Mixture:
    data = read_yaml(path)
    train = data.get("train") if isinstance(data, dict) else None
    if isinstance(train, dict) and not all(isinstance(d, str) for d in train):
        raise RegmixError(f"{path}: 'train' keys must be domain names")
    domains = list(train) if isinstance(train, dict) else []
    weights = weights_from_yaml(data, str(path), domains)
    valid = data.get("valid")
    caps = data.get("caps")
    max_epochs = caps.get("max_epochs") if isinstance(caps, dict) else None
    if max_epochs is not None and (
        not isinstance(max_epochs, int | float) or isinstance(max_epochs, bool) or max_epochs <= 0
    ):
        raise RegmixError(f"{path}: caps.max_epochs must be a number > 0, got {max_epochs!r}")
    return Mixture(
        weights=weights,
        valid=[str(d) for d in valid] if isinstance(valid, dict) and valid else domains,
        max_epochs=None if max_epochs is None else float(max_epochs),
        source=str(path),
    )


def _mixture_from_table(path: Path, run: str | None) -> Mixture:
    table = read_table(path)
    check_weights(table, str(path))
    if run is not None:
        if "run" not in table or not (table["run"].astype(str) == run).any():
            raise RegmixError(f"{path}: no run {run!r}")
        table = table[table["run"].astype(str) == run]
    if len(table) != 1:
        raise RegmixError(
            f"{path}: holds {len(table)} mixtures; pick one with --run "
            "(a final mixture table, results/mixtures/final/<name>.parquet, holds one)"
        )
    domains = mixture_domains(table)
    values = table[weight_columns(table)].iloc[0].to_numpy(dtype=float)
    weights = pd.Series(values / values.sum(), index=domains)
    return Mixture(weights=weights, valid=domains, max_epochs=None, source=str(path))


def unit_shares(weights: pd.Series) -> pd.Series:
    """The domains with a positive weight, as shares whose floats sum to exactly 1.

    Readers check the sum with a tolerance (numpy's `choice`, OLMo-core's `allclose`) or
    renormalise (Megatron); an exact 1 leaves none of them a rounding error to trip on. Shares
    are rounded to `DIGITS` significant digits, so that a file reads 0.1 and not
    0.09999999999999999, and the rounding residual goes to the largest share, where it
    changes least.
    """
    positive = weights[weights > 0].astype(float)
    if positive.empty:
        raise RegmixError("mixture: no domain has a positive weight")
    decimals = [Decimal(f"{w:.{DIGITS}g}") for w in positive / math.fsum(positive)]
    largest = int(np.argmax(positive.to_numpy()))
    decimals[largest] += Decimal(1) - sum(decimals)
    values = np.array([float(d) for d in decimals])
    # The nearest doubles to decimals summing to 1 can miss 1.0 by an ulp (1 mixture in
    # 400 measured); step the largest share by ulps until they do not.
    for _ in range(16):
        residual = 1.0 - math.fsum(values)
        if residual == 0.0:
            break
        values[largest] = np.nextafter(values[largest], np.inf if residual > 0 else -np.inf)
    return pd.Series(values, index=positive.index)


def data_paths(domains: list[str], options: PrefixOptions, needed: list[str]) -> dict[str, str]:
    """The data path or prefix of each `needed` domain (of the mixture's `domains`); an error
    names the first needed domain without one."""
    paths: dict[str, str] = {}
    if options.template is not None:
        if DOMAIN_FIELD not in options.template:
            raise RegmixError(
                f"--prefix-template {options.template!r}: expected {DOMAIN_FIELD} in it"
            )
        paths.update({d: options.template.replace(DOMAIN_FIELD, d) for d in domains})
    if options.map_file is not None:
        paths.update(_prefix_map(options.map_file))
    for pair in options.pairs:
        domain, sep, path = pair.partition("=")
        if not sep or not domain or not path:
            raise RegmixError(f"--prefix {pair!r}: expected DOMAIN=PATH")
        if domain not in domains:
            raise RegmixError(
                f"--prefix {pair!r}: {domain!r} is not a domain of the mixture "
                f"(expected one of: {', '.join(domains)})"
            )
        paths[domain] = path
    missing = [d for d in needed if d not in paths]
    if missing:
        raise RegmixError(
            f"no data prefix for domain {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": give --prefix DOMAIN=PATH, --prefix-map FILE or --prefix-template"
        )
    return {d: paths[d] for d in needed}


def _prefix_map(path: Path) -> dict[str, str]:
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise RegmixError(f"{path}: expected a mapping of domain: data prefix")
    for domain, prefix in data.items():
        if not isinstance(prefix, str) or not prefix:
            raise RegmixError(f"{path}: the prefix of {domain!r} must be a path, got {prefix!r}")
    return {str(d): p for d, p in data.items()}


def regmix_text(mixture: Mixture) -> str:
    """RegMix's YAML, as `simulate` writes its first two keys."""
    return yaml.safe_dump(regmix_yaml(mixture.weights, mixture.valid), sort_keys=False)


def megatron_text(shares: pd.Series, prefixes: dict[str, str]) -> str:
    """`w1 prefix1 w2 prefix2 ...` on one line, each weight written to round-trip exactly."""
    for domain in shares.index:
        prefix = prefixes[domain]
        # Megatron strips each prefix and reads a --data-args-path file split on whitespace.
        if re.search(r"\s", prefix):
            raise RegmixError(
                f"data prefix of {domain!r} ({prefix!r}) has whitespace, which Megatron's "
                "--data-path and --data-args-path cannot carry"
            )
    # repr is the shortest string that float() reads back as the same double.
    return " ".join(f"{float(w)!r} {prefixes[d]}" for d, w in shares.items()) + "\n"


def olmo_core_text(
    shares: pd.Series, paths: dict[str, str], max_repetition: float, source: str
) -> str:
    """A `SourceMixtureList` YAML: one source per domain with a positive share.

    OLMo-core caps a source at available tokens × `max_source_fraction` ×
    `max_repetition_ratio` and requires the ratio to be >= 1, so a cap below one epoch goes
    into the fraction instead.
    """
    repetition, fraction = (max_repetition, 1.0) if max_repetition >= 1 else (1.0, max_repetition)
    sources = []
    for domain, share in shares.items():
        entry = {
            "source_name": domain,
            "target_ratio": float(share),
            "paths": [paths[domain]],
            "max_repetition_ratio": float(repetition),
        }
        if fraction < 1:
            entry["max_source_fraction"] = float(fraction)
        sources.append(entry)
    header = (
        f"# OLMo-core source mixture from {source} (regmix export-mixture).\n"
        "# SourceMixtureList.from_yaml(this file), then "
        "SourceMixtureDatasetConfig(source_list=..., requested_tokens=..., global_batch_size=...)\n"
    )
    return header + yaml.safe_dump({"sources": sources}, sort_keys=False)


def hf_text(shares: pd.Series, stats: Path | None, source: str) -> str:
    """`interleave_datasets` probabilities over the domains with a positive share, as JSON."""
    if stats is None:
        unit = "examples that hold equal numbers of tokens (e.g. packed blocks)"
    else:
        shares = unit_shares(shares / _tokens_per_document(stats, list(shares.index)))
        unit = f"whole documents (token shares ÷ tokens per document from {stats})"
    document = {
        "domains": list(shares.index),
        "probabilities": [float(p) for p in shares],
        "unit": unit,
        "usage": "datasets.interleave_datasets([<one dataset per domain, in this order>], "
        "probabilities=probabilities, seed=0)",
        "source": source,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _tokens_per_document(stats_path: Path, domains: list[str]) -> pd.Series:
    stats = read_stats(stats_path)
    train = stats[stats["split"] == "train"].set_index("domain")
    missing = [d for d in domains if d not in train.index]
    if missing:
        raise RegmixError(f"{stats_path}: no train row for domain {missing[0]!r}")
    tokens = train.loc[domains, "tokens"].to_numpy(dtype=float)
    documents = train.loc[domains, "documents"].to_numpy(dtype=float)
    if (tokens <= 0).any() or (documents <= 0).any():
        bad = domains[int(np.flatnonzero((tokens <= 0) | (documents <= 0))[0])]
        raise RegmixError(f"{stats_path}: domain {bad!r} has no train tokens or documents")
    return pd.Series(tokens / documents, index=domains)


def export_mixture(mixture: Mixture, options: ExportOptions) -> Exported:
    """Render `mixture` in `options.format`, with a one-line note on what it holds."""
    if options.format == "regmix":
        return Exported(regmix_text(mixture), f"RegMix YAML over {len(mixture.weights)} domains")
    shares = unit_shares(mixture.weights)
    left_out = len(mixture.weights) - len(shares)
    count = f"{len(shares)} domains" + (f" ({left_out} at weight 0 left out)" if left_out else "")
    if options.format == "hf":
        text = hf_text(shares, options.stats, mixture.source)
        return Exported(text, f"interleave_datasets probabilities for {count}")
    paths = data_paths(list(mixture.weights.index), options.prefixes, list(shares.index))
    if options.format == "megatron":
        return Exported(
            megatron_text(shares, paths),
            f"Megatron --data-path list for {count}: pass the file as --data-args-path FILE, "
            "or its contents to --data-path",
        )
    repetition, cap = repetition_cap(mixture, options.max_repetition)
    text = olmo_core_text(shares, paths, repetition, mixture.source)
    return Exported(text, f"OLMo-core sources for {count}; {cap}")


def repetition_cap(mixture: Mixture, max_repetition: float | None) -> tuple[float, str]:
    """OLMo-core's repetition cap and where it came from: the option, else the cap the
    mixture was chosen under, else OLMo-core's own default of 1 (no repetition)."""
    if max_repetition is not None:
        return max_repetition, f"max_repetition_ratio {max_repetition:g} (--max-repetition)"
    if mixture.max_epochs is not None:
        return (
            mixture.max_epochs,
            f"max_repetition_ratio {mixture.max_epochs:g} (the mixture's cap)",
        )
    return 1.0, "no repetition cap recorded: OLMo-core's default 1.0 (give --max-repetition)"
