"""How fast a bad config stops the workflow, and with which line.

For every bad-config case of tests/test_preflight.py, runs the real workflow (`snakemake`, not
a dry run) in a fresh folder on tests/config/tiny.yaml with the case merged in, and prints the
wall time from the command's start to its exit and the one `regmix: error:` line. Two caps
cases show the paths without a parse-time check: a fresh folder (the counts do not exist yet:
the `sample_mixtures` rule stops the run after synth_corpus and prepare) and a folder whose
corpus was already counted (the parse stops it). For scale it also prints a valid dry run (the
same parse plus planning the DAG) and the in-process cost of `check_workflow`.

    python benchmarks/preflight_errors.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_preflight import CASES, HUGE_FINAL, config_file  # noqa: E402
from workflow import snakemake  # noqa: E402

from regmix.data.synth import SynthConfig, write_corpus  # noqa: E402
from regmix.workflow.config import load_config  # noqa: E402
from regmix.workflow.preflight import check_workflow  # noqa: E402

ERROR = re.compile(r"^regmix: error: .*$", re.M)


def timed(workdir: Path, *args: str, config: Path) -> tuple[float, str, int]:
    started = time.perf_counter()
    result = snakemake(workdir, *args, config=config)
    seconds = time.perf_counter() - started
    lines = ERROR.findall(result.stdout + result.stderr)
    return seconds, " | ".join(lines) or "(no error line)", result.returncode


def row(case: str, seconds: float, line: str, code: int) -> None:
    print(f"| {case} | {seconds:.1f} | {code} | `{line}` |", flush=True)


def main() -> None:
    print("| case | seconds to exit | exit | line |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case, (overrides, _) in CASES.items():
            folder = tmp / re.sub(r"\W+", "_", case)
            folder.mkdir()
            row(case, *timed(folder, config=config_file(folder, overrides)))
        folder = tmp / "command_line"
        folder.mkdir()
        tiny = config_file(folder, {})
        row(
            "--config proxy={steps: ten}",
            *timed(folder, "--config", "proxy={steps: ten}", config=tiny),
        )

        fresh = tmp / "caps_fresh"
        fresh.mkdir()
        row("caps, corpus not yet counted", *timed(fresh, config=config_file(fresh, HUGE_FINAL)))

        counted = tmp / "caps_counted"
        counted.mkdir()
        corpus = write_corpus(counted / "corpus", SynthConfig(seed=1, scale=0.2))
        user = {"corpus": {"path": str(corpus)}}
        snakemake(counted, "results/data/stats.parquet", config=config_file(counted, user))
        bad = config_file(counted, {**user, **HUGE_FINAL})
        row("caps, corpus already counted", *timed(counted, config=bad))

        valid = tmp / "valid"
        valid.mkdir()
        seconds, _, code = timed(valid, "--dry-run", config=config_file(valid, {}))
        print(f"\nvalid config, dry run (parse + DAG): {seconds:.1f} s (exit {code})")
        config = load_config([REPO / "tests/config/tiny.yaml"])
        started = time.perf_counter()
        check_workflow(config, valid)
        milliseconds = 1000 * (time.perf_counter() - started)
        print(f"check_workflow in process (tiny config): {milliseconds:.0f} ms")


if __name__ == "__main__":
    main()
