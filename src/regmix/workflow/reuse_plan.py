"""What a re-run does with the runs an earlier sweep trained, known before anything runs.

The rules' params carry, for every training job, the record each of its runs will have once
the job ran (regmix.training.reuse.decide): the same decision the job takes, from the kept
records under `results/checkpoints/` and the current data's content. So after a corpus change
Snakemake runs exactly the jobs whose runs change, and the job keeps, measures again or trains
each run as decided. `ReusePlan.table_lines` prints the decisions by reason; the Snakefile
prints them while it parses (so `snakemake -n` shows them) and `regmix plan` prints them too.

When the data stage has to run first, the decisions are predicted from the corpus files (new,
removed and touched files; what corpus.domains leaves out) and say so; once it has run they are
measured from the content fingerprints. New domains add an extra round of proxies after the
configured ones (`extra_rounds`), derived from the mixture tables on disk so that the DAG stays
the same from one invocation to the next.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from regmix.data.content import Contents, DomainContent, read_contents
from regmix.search.mixtures import WEIGHT
from regmix.training.reuse import Decision, ReusePolicy, decide, kept_run
from regmix.training.train_config import TrainConfig, digest
from regmix.workflow.sweep import (
    OPTIMUM,
    Sweep,
    checkpoint_dir,
    final_mixture_path,
    mixtures_path,
    run_settings,
)

DATA = Path("results/data")
STAGES = {"proxy": ("proxy", False), "optimum": ("proxy", False), "final": ("final", True)}
"""Kept-results folder (results/checkpoints/<stage>) → (config section, keeps its model).
The optimum check is a proxy whose mixture is the final `regmix` model's."""
PLANNED = "planned"
"""The state of a run whose mixture is not drawn yet: its job runs anyway."""


# --- extra rounds for new domains -------------------------------------------------------------


def table_columns(path: Path) -> tuple[list[str], int] | None:
    """A mixture table's domains and rows, from its parquet footer (None: no table, or one
    that cannot be read, which the rule that writes it will say)."""
    if not path.is_file():
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return None
    names = meta.schema.names
    return [c[len(WEIGHT) :] for c in names if c.startswith(WEIGHT)], meta.num_rows


def extra_rounds(
    workdir: str | os.PathLike, configured: int, domains: Iterable[str], per_domain: int
) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """The rounds after the configured ones: those on disk (size, the domains each explores),
    and one more of `per_domain` runs per domain of `domains` (the corpus's train domains now)
    that no round's mixtures have, when a sweep has been drawn before."""
    workdir = Path(workdir)
    known: set[str] = set()
    drawn = False
    for round in range(1, configured + 1):
        found = table_columns(workdir / mixtures_path(round))
        if found is not None:
            known.update(found[0])
            drawn = True
    extra = []
    round = configured + 1
    while (found := table_columns(workdir / mixtures_path(round))) is not None:
        extra.append((found[1], tuple(d for d in found[0] if d not in known)))
        known.update(found[0])
        round += 1
    new = tuple(sorted(d for d in domains if d not in known))
    if drawn and new and per_domain > 0:
        extra.append((per_domain * len(new), new))
    return tuple(extra)


# --- corpus changes predicted from the files --------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """A corpus file that changed since the data stage read it, for one (split, domain) it
    feeds (a train file feeds valid too where corpus.valid_fraction holds documents out)."""

    relative: str
    split: str
    domain: str
    kind: str
    """added | removed | changed | touched (same content)"""
    tokens: int
    """Tokens of the (split, domain) the change moves: the recorded ones of a file removed, the
    expected ones of a file added (its bytes at the tokens per byte its domain's files had),
    both of a file changed; 0 for a touched one."""


def recorded_files(data_dir: Path) -> dict[str, dict]:
    """The corpus files the data stage last read: relative path → its file record
    (`shards/{group}/{file_id}/file.json`: size, mtime_ns, content_hash, split, and the tokens
    it gave each `split/domain`; regmix.data.shards)."""
    import json

    files = {}
    for record in (data_dir / "shards").glob("*/*/file.json"):
        entry = json.loads(record.read_text())
        files[entry["relative"]] = entry
    return files


def fed_domains(entry: Mapping) -> dict[tuple[str, str], int]:
    """The (split, domain)s of the model splits a file record fed, with their tokens."""
    from regmix.data.corpus import MODEL_SPLITS

    fed = {}
    for key, counts in entry.get("domains", {}).items():
        split, _, domain = key.partition("/")
        if split in MODEL_SPLITS:
            fed[(split, domain)] = int(counts.get("tokens", 0))
    return fed


def tokens_per_byte(recorded: Mapping[str, dict]) -> dict[tuple[str, str], dict]:
    """For the files of each (split, domain) of RegMix's layout: the tokens per byte of file
    they gave each (split, domain) they fed, so that a file added is expected to give alike."""
    from regmix.data.corpus import domain_of

    tokens: dict[tuple[str, str], Counter] = {}
    size: Counter = Counter()
    for relative, entry in recorded.items():
        key = (entry["split"], domain_of(Path(relative)))
        size[key] += entry["size"]
        tokens.setdefault(key, Counter()).update(fed_domains(entry))
    return {
        key: {fed: n / max(size[key], 1) for fed, n in found.items()}
        for key, found in tokens.items()
    }


def predict_changes(data_dir: Path, corpus_files: Iterable) -> list[FileChange]:
    """What changed in the corpus since the data stage last read it (`corpus_files`:
    regmix.data.corpus.CorpusFile of a corpus in RegMix's layout), from the file records:
    files added and removed, by name; files whose size changed; and files whose time changed
    but not their size, whose content is hashed and compared with the recorded hash. Each
    change counts for every (split, domain) the file fed, with the tokens it moves."""
    from regmix.data.fingerprint import file_hash

    recorded = recorded_files(data_dir)
    rates = tokens_per_byte(recorded)
    changes, seen = [], set()
    for file in corpus_files:
        if file.domain is None or file.split is None:
            continue
        seen.add(file.relative)
        size = file.path.stat().st_size
        entry = recorded.get(file.relative)
        if entry is None:
            rate = rates.get((file.split, file.domain)) or {(file.split, file.domain): 1.0}
            fed = {key: round(size * per_byte) for key, per_byte in rate.items()}
            kind = "added"
        else:
            kind = file_change(file.path, size, entry, file_hash)
            if kind is None:
                continue
            fed = {
                key: tokens + round(size * tokens / max(entry["size"], 1))
                for key, tokens in fed_domains(entry).items()
            }
        for (split, domain), tokens in sorted(fed.items()):
            tokens = tokens if kind != "touched (same content)" else 0
            changes.append(FileChange(file.relative, split, domain, kind, tokens))
    for relative in sorted(set(recorded) - seen):
        for (split, domain), tokens in sorted(fed_domains(recorded[relative]).items()):
            changes.append(FileChange(relative, split, domain, "removed", tokens))
    return changes


def file_change(path: Path, size: int, entry: Mapping, file_hash) -> str | None:
    """How a file the data stage read before differs from its record: changed (size or content
    hash), touched (same content; its time alone moved) or None (same size and time)."""
    if size != entry["size"]:
        return "changed"
    if path.stat().st_mtime_ns == entry["mtime_ns"]:
        return None
    return "touched (same content)" if file_hash(path) == entry["content_hash"] else "changed"


def predicted_contents(
    old: Contents, changes: list[FileChange], expected: Mapping[str, list[str]]
) -> Contents:
    """The content the data stage is expected to produce: `old` with the domains that
    corpus.domains leaves out or whose files are all gone removed, new domains added, and the
    domains with files added, removed or changed moved by the tokens those files move (a
    changed file counts twice, as its old and new tokens). A touched file of the same content
    changes nothing."""
    contents: Contents = {}
    for split, domains in expected.items():
        contents[split] = {}
        for domain in domains:
            moved = sum(c.tokens for c in changes if (c.split, c.domain) == (split, domain))
            before = old.get(split, {}).get(domain)
            if before is None:
                contents[split][domain] = DomainContent(f"predicted:new:{domain}", 0, ())
            elif not moved:
                contents[split][domain] = before
            else:
                contents[split][domain] = DomainContent(
                    f"predicted:changed:{before.fingerprint}",
                    before.tokens + moved,
                    (*before.parts, (f"predicted:{domain}", moved)),
                )
    return contents


# --- decisions --------------------------------------------------------------------------------


@dataclass
class ReusePlan:
    """Every run's decision for the workflow run in `workdir` under `config`."""

    config: Mapping
    workdir: Path
    sweep: Sweep
    expected: Mapping[str, list[str]] | None = None
    """The domains the data stage will hold, by split, when it must run first (predicted
    decisions); None when the prepared data is current (measured decisions)."""
    changes: list[FileChange] = field(default_factory=list)
    """Corpus files added, removed or touched since the data stage ran (predicted only)."""
    _contents: tuple[int, Contents] | None = None
    """The prepared data's measured content, with the stats file's mtime it was read at."""
    _predicted: Contents | None = None
    """`predicted_contents` of the measured content, made once (every decision asks for it)."""

    @property
    def policy(self) -> ReusePolicy:
        return ReusePolicy.from_config(self.config.get("reuse"))

    @property
    def predicted(self) -> bool:
        return self.expected is not None

    def contents(self) -> Contents | None:
        """The prepared data's content now (re-read whenever the data stage rewrote it, as it
        may have in this invocation), or as predicted; None before any data was prepared."""
        stats = self.workdir / DATA / "stats.parquet"
        if not stats.is_file():
            return None
        stamp = stats.stat().st_mtime_ns
        if self._contents is None or self._contents[0] != stamp:
            self._contents = (stamp, read_contents(self.workdir / DATA))
            self._predicted = None
        if self.expected is not None and stamp == self._predicted_from:
            if self._predicted is None:
                self._predicted = predicted_contents(self._contents[1], self.changes, self.expected)
            return self._predicted
        return self._contents[1]

    def __post_init__(self) -> None:
        stats = self.workdir / DATA / "stats.parquet"
        # Predictions stand for the data as it was when the workflow was read; once the data
        # stage has run in this invocation, its fingerprints decide.
        self._predicted_from = stats.stat().st_mtime_ns if stats.is_file() else None

    def settings(self, stage: str) -> dict:
        section, _ = STAGES[stage]
        return asdict(TrainConfig(**run_settings(self.config, section)))

    def decision(self, stage: str, run: str, weights: Mapping[str, float]) -> Decision | None:
        """The decision about one run (None: no data prepared yet, so every run is new)."""
        contents = self.contents()
        if contents is None:
            return None
        kept = kept_run(self.workdir / checkpoint_dir(stage, run))
        record = kept.record if kept is not None else None
        _, keep_model = STAGES[stage]
        return decide(record, self.settings(stage), weights, contents, self.policy, keep_model)

    def state(self, stage: str, mixtures: str, runs: Iterable[str]) -> str:
        """What a training job's params carry: the state its runs will have once it ran."""
        weights = mixture_weights(self.workdir / mixtures)
        states = []
        for run in runs:
            if run not in weights:
                return PLANNED
            decision = self.decision(stage, run, weights[run])
            states.append(PLANNED if decision is None else decision.state)
        return digest(states)

    def batch_state(self, round: int, runs: Iterable[str]) -> str:
        return self.state("proxy", mixtures_path(round), runs)

    def final_state(self, name: str) -> str:
        return self.state("final", final_mixture_path(name), [name])

    def optimum_state(self) -> str:
        return self.state("optimum", final_mixture_path(OPTIMUM), [OPTIMUM])

    # --- the table by reason ------------------------------------------------------------------

    def decisions(self) -> dict[str, list[tuple[str, Decision]]]:
        """Every run trained before, or drawn and not trained yet, with its decision, by kind:
        proxies (with the optimum check) and final models."""
        found: dict[str, list[tuple[str, Decision]]] = {"proxies": [], "finals": []}
        for round in range(1, self.sweep.n_rounds + 1):
            weights = mixture_weights(self.workdir / mixtures_path(round))
            for run in self.sweep.runs(round):
                if run in weights and (decision := self.decision("proxy", run, weights[run])):
                    found["proxies"].append((run, decision))
        optimum = mixture_weights(self.workdir / final_mixture_path(OPTIMUM)).get(OPTIMUM)
        checked = self.sweep.check_optimum and optimum is not None
        if checked and (decision := self.decision("optimum", OPTIMUM, optimum)):
            found["proxies"].append((f"{OPTIMUM} (optimum check)", decision))
        for name in self.sweep.final_names():
            weights = mixture_weights(self.workdir / final_mixture_path(name)).get(name)
            if weights is not None and (decision := self.decision("final", name, weights)):
                found["finals"].append((name, decision))
        return found

    def table_lines(self) -> list[str]:
        """The decisions by reason, as a person reads them; empty when nothing was trained
        before, or every run is kept as it is and no corpus change is expected."""
        found = self.decisions()
        decided = [d for runs in found.values() for _, d in runs]
        if all(d.action == "new" for d in decided):
            return []
        unchanged = all(row_label(d) == "kept (data unchanged)" for d in decided)
        if unchanged and not self.predicted and not self.new_rounds():
            return []
        how = (
            "predicted from the corpus files (the data stage runs first; its fingerprints decide)"
            if self.predicted
            else "measured from the prepared data's content fingerprints"
        )
        lines = [f"regmix reuse: what this run does with the runs trained before, {how}"]
        lines += self.change_lines()
        counts: dict[str, Counter] = {}
        for kind, runs in found.items():
            for _, decision in runs:
                counts.setdefault(row_label(decision), Counter())[kind] += 1
        for explored in self.new_rounds():
            counts.setdefault(explored[0], Counter())["proxies"] += explored[1]
        width = max(len(label) for label in counts)
        lines.append(f"  {'decision':<{width}}  proxies  finals")
        for label, count in counts.items():
            lines.append(f"  {label:<{width}}  {count['proxies']:>7}  {count['finals']:>6}")
        lines.append(
            "  (final models that follow the optimum or the token prior are decided once their "
            "mixture is drawn)"
        )
        return lines

    def new_rounds(self) -> list[tuple[str, int]]:
        """Extra rounds not drawn yet: (label, runs)."""
        rows = []
        for round in range(self.sweep.configured_rounds + 1, self.sweep.n_rounds + 1):
            if not (self.workdir / mixtures_path(round)).is_file():
                explored = ", ".join(self.sweep.explored(round))
                rows.append(
                    (f"new: round {round} explores {explored}", self.sweep.rounds[round - 1])
                )
        return rows

    def change_lines(self) -> list[str]:
        """The corpus changes the prediction rests on (predicted decisions only)."""
        if not self.predicted:
            return []
        files: dict[str, dict[str, set]] = {}
        for change in self.changes:
            name = f"{change.split}/{change.domain}"
            files.setdefault(name, {}).setdefault(change.kind, set()).add(change.relative)
        old = self._contents[1] if self._contents else {}
        gone = {
            f"{split}/{domain}"
            for split, domains in self.expected.items()
            for domain in set(old.get(split, {})) - set(domains)
        }
        parts = []
        for name in sorted(set(files) | gone):
            said = [
                f"{len(found)} file(s) {kind}"
                for kind, found in sorted(files.get(name, {}).items())
            ]
            parts.append(f"{name}: {', '.join(said + ['left out'] * (name in gone))}")
        return [f"  corpus changes: {'; '.join(parts) or 'none found'}"]


def row_label(decision: Decision) -> str:
    """A decision's row in the table: its category and reasons, without per-run figures."""
    reasons = sorted({re.sub(r" \(.*\)$", "", r) for r in decision.reasons})
    if decision.action == "keep" and decision.stale:
        reasons = [f"{', '.join(d for d, _ in decision.stale)} changed"]
    return decision.category + (f": {'; '.join(reasons)}" if reasons else "")


def mixture_weights(path: Path) -> dict[str, dict[str, float]]:
    """{run: {domain: weight}} of a mixture table (empty: no table yet)."""
    if not path.is_file():
        return {}
    import pandas as pd

    table = pd.read_parquet(path)
    columns = [c for c in table.columns if c.startswith(WEIGHT)]
    return {
        str(row["run"]): {c[len(WEIGHT) :]: float(row[c]) for c in columns}
        for _, row in table.iterrows()
    }


def with_predictions(
    plan: ReusePlan, expected: Mapping[str, list[str]], changes: list[FileChange]
) -> ReusePlan:
    """The plan with its decisions predicted from corpus changes (the data stage runs first)."""
    return replace(plan, expected=expected, changes=changes)


# --- built from a workflow's config -----------------------------------------------------------


def current_train_domains(config: Mapping, workdir: Path) -> list[str]:
    """The train domains of the corpus now: listed from its files, or (when records name their
    domains) as last prepared."""
    from regmix.workflow.preflight import corpus_domains

    corpus = corpus_domains(config["corpus"], workdir)
    if corpus.known:
        return corpus.train
    return sorted(p.stem for p in (workdir / DATA / "train").glob("*.json"))


def planned_sweep(config: Mapping, workdir: str | os.PathLike, planted: bool) -> Sweep:
    """The configured sweep and the extra rounds new domains added."""
    workdir = Path(workdir)
    configured = len(config["mixtures"]["rounds"])
    per_domain = ReusePolicy.from_config(config.get("reuse")).runs_per_new_domain
    domains = current_train_domains(config, workdir)
    return Sweep.from_config(
        config, planted, extra_rounds(workdir, configured, domains, per_domain)
    )


def reuse_plan(config: Mapping, workdir: str | os.PathLike, sweep: Sweep) -> ReusePlan:
    """The decisions of the workflow run in `workdir`: measured when the prepared data is
    current, predicted from the corpus files when the data stage must run first."""
    from regmix.data.corpus import discover
    from regmix.workflow.preflight import corpus_domains, current_stats

    workdir = Path(workdir)
    plan = ReusePlan(config, workdir, sweep)
    corpus = corpus_domains(config["corpus"], workdir)
    if not (workdir / DATA / "stats.parquet").is_file():
        return plan
    if current_stats(config["corpus"], workdir, corpus) is not None:
        return plan
    old = read_contents(workdir / DATA)
    expected = (
        {"train": corpus.train, "valid": corpus.valid}
        if corpus.known
        else {split: sorted(found) for split, found in old.items()}
    )
    if not (config["corpus"]["path"] and corpus.known):
        # The synthetic corpus, or records that name their domains: no file-by-file prediction.
        return with_predictions(plan, expected, [])
    files = discover(workdir / config["corpus"]["path"], None)
    return with_predictions(plan, expected, predict_changes(workdir / DATA, files))
