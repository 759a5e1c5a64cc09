"""The sweep a workflow configuration describes: rounds of proxy runs, the batches that train
them, the final models, and where each of their artefacts lies.

The Snakefile's rules, `regmix plan` and `regmix status` all read the sweep from here, so the
DAG, the cost estimate and the progress report never disagree about what is planned.

Run names are global and stable across rounds (`run0001`, ...): round r holds the next
`rounds[r-1]` names. A batch is `proxies_per_job` consecutive runs of one round, trained one
after another by one job (one process), named by its first and last run
(`run0001-run0008`, or `run0033` alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from regmix.errors import RegmixError
from regmix.search.mixtures import run_names
from regmix.training.train_config import training_settings

RESULTS = "results"
LOGS = "logs"
BASELINES = ("prior", "uniform")
"""Final models trained beside the optimum: the token prior (RegMix's "human" mixture) and
the flat mixture. `planted` joins them on a corpus with a planted answer."""
OPTIMUM = "regmix"
"""The final model (and the proxy-scale check) trained on the recommended mixture."""


@dataclass(frozen=True)
class Batch:
    """Consecutive runs of one round, trained one after another by one job."""

    name: str
    round: int
    runs: tuple[str, ...]


@dataclass(frozen=True)
class Sweep:
    """The runs and models a configuration plans, in the order they are trained."""

    rounds: tuple[int, ...]
    """Proxy runs per round; round 1 is RegMix's sampler, later rounds are proposed."""
    proxies_per_job: int = 1
    heldout: int = 0
    """Random mixtures also trained at the final scale, to check transfer."""
    planted: bool = False
    """The corpus records a planted answer, trained as a final model too."""
    check_optimum: bool = True
    """The recommended mixture is also trained as a proxy (predicted against actual)."""
    explores: tuple[tuple[str, ...], ...] = ()
    """The domains each extra round explores: rounds after the configured ones, added when
    domains new to a finished sweep arrived (regmix.workflow.reuse_plan.extra_rounds)."""

    def __post_init__(self) -> None:
        if not self.rounds or any(n < 1 for n in self.rounds):
            raise RegmixError(f"mixtures.rounds: expected sizes >= 1, got {list(self.rounds)}")
        if self.proxies_per_job < 1:
            raise RegmixError("proxy.proxies_per_job: must be >= 1")

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        planted: bool,
        extra: tuple[tuple[int, tuple[str, ...]], ...] = (),
    ) -> Sweep:
        """The sweep of a validated workflow config (defaults filled in), with the `extra`
        rounds (size, domains explored) that new domains added."""
        return cls(
            rounds=(*config["mixtures"]["rounds"], *(size for size, _ in extra)),
            proxies_per_job=config["proxy"]["proxies_per_job"],
            heldout=config["final"]["heldout"],
            planted=planted,
            check_optimum=config["proxy"]["check_optimum"],
            explores=tuple(tuple(domains) for _, domains in extra),
        )

    @property
    def n_rounds(self) -> int:
        return len(self.rounds)

    @property
    def configured_rounds(self) -> int:
        """The rounds the config asks for; the last of them also trains the current optimum."""
        return len(self.rounds) - len(self.explores)

    def explored(self, round: int) -> tuple[str, ...]:
        """The new domains an extra round explores (empty for a configured round)."""
        self._check_round(round)
        extra = round - self.configured_rounds
        return self.explores[extra - 1] if extra > 0 else ()

    @cached_property
    def _names(self) -> list[str]:
        return run_names(sum(self.rounds))

    def runs(self, round: int | None = None) -> list[str]:
        """Every proxy run's name, or those of one round (1-based)."""
        if round is None:
            return list(self._names)
        self._check_round(round)
        start = sum(self.rounds[: round - 1])
        return self._names[start : start + self.rounds[round - 1]]

    def round_of(self, run: str) -> int:
        index = self._names.index(run)
        total = 0
        for round, size in enumerate(self.rounds, start=1):
            total += size
            if index < total:
                return round
        raise AssertionError(run)  # unreachable: the name came from the rounds

    @cached_property
    def _batches(self) -> dict[str, Batch]:
        batches = {}
        for round in range(1, self.n_rounds + 1):
            runs = self.runs(round)
            for start in range(0, len(runs), self.proxies_per_job):
                chunk = tuple(runs[start : start + self.proxies_per_job])
                name = chunk[0] if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}"
                batches[name] = Batch(name, round, chunk)
        return batches

    def batches(self, round: int | None = None) -> list[Batch]:
        """The training jobs of all rounds, or of one round."""
        return [b for b in self._batches.values() if round is None or b.round == round]

    def batch(self, name: str) -> Batch:
        if name not in self._batches:
            raise RegmixError(f"no proxy batch named {name!r} in this sweep")
        return self._batches[name]

    def final_names(self) -> list[str]:
        """The final models: the optimum, the baselines and the held-out random mixtures."""
        names = [OPTIMUM, *BASELINES]
        names += ["planted"] if self.planted else []
        return names + run_names(self.heldout, "heldout", 2)

    def _check_round(self, round: int) -> None:
        if not 1 <= round <= self.n_rounds:
            raise RegmixError(f"round {round}: this sweep has rounds 1..{self.n_rounds}")


# --- where things lie (relative to the workflow's working directory) -------------------------


def mixtures_path(round: int) -> str:
    """The mixture table of one round's proxy runs."""
    return f"{RESULTS}/mixtures/round{round}.parquet"


def intervals_path(round: int | str) -> str:
    """The 95% intervals the proposer of a later round gave its runs, which they check."""
    return f"{RESULTS}/mixtures/intervals/round{round}.parquet"


def batch_table(round: int | str, batch: str) -> str:
    """The runs-table rows of one batch, written when its job has trained every run.

    The round is part of the path so that the SLURM profile can bundle batches of one round
    into a submission (a group named per round): a bundle spanning rounds would wait on itself.
    """
    return f"{RESULTS}/proxy/batches/round{round}/{batch}.parquet"


def batch_log(round: int | str, batch: str) -> str:
    return f"{LOGS}/proxy/round{round}/{batch}.log"


def proxy_dir(run: str) -> str:
    """One proxy's published results (losses.parquet, run.json)."""
    return f"{RESULTS}/proxy/{run}"


def runs_table() -> str:
    """Every proxy run of every round: the regression's input."""
    return f"{RESULTS}/proxy/runs.parquet"


def final_mixture_path(name: str) -> str:
    """One final model's mixture (a one-row mixture table)."""
    return f"{RESULTS}/mixtures/final/{name}.parquet"


def final_dir(name: str) -> str:
    return f"{RESULTS}/final/{name}"


def final_log(name: str) -> str:
    return f"{LOGS}/final/{name}.log"


def optimum_proxy_dir() -> str:
    """The recommended mixture trained at proxy scale (losses.parquet, run.json)."""
    return f"{RESULTS}/optimal/proxy/{OPTIMUM}"


def checkpoint_dir(stage: str, run: str) -> str:
    """Checkpoints and kept results of one run, outside the declared outputs."""
    return f"{RESULTS}/checkpoints/{stage}/{run}"


# --- what each run is trained with ----------------------------------------------------------


def final_tokens(config: Mapping[str, Any]) -> int:
    """The final model's token budget: it sets how often a domain may be repeated."""
    final = config["final"]
    return final["steps"] * final["batch_size"] * final["seq_len"]


def run_settings(config: Mapping[str, Any], section: str) -> dict[str, Any]:
    """A training section's TrainConfig fields; repetition-matched proxies train on the share
    of each domain that they repeat as often as the final model will repeat all of it."""
    settings = training_settings(config[section])
    if section == "proxy" and config["proxy"]["repetition_matched"]:
        proxy = config["proxy"]
        settings["data_fraction"] = min(
            1.0, proxy["steps"] * proxy["batch_size"] * proxy["seq_len"] / final_tokens(config)
        )
    return settings
