"""What a corpus change costs a finished sweep, against a full re-run of the changed corpus.

The demo's synthetic corpus, written as a user's corpus folder (RegMix's layout, inside the work
folder, so that a copy of the work folder is a copy of everything), is swept once. Then, for each
case, the change is made in a copy of the finished work folder (`cp -a`: Snakemake's metadata and
the files' times come along) and the workflow is run again (incremental), and the same changed
corpus is swept from scratch in a fresh folder (full):

- `a`  a ninth domain added (another generator's text, a train and a valid file);
- `b`  one file added to the largest domain (`web`, about 1% of its text), strict (reuse default);
- `bt` the same under `reuse.max_change` (`--max-change`, default 0.05);
- `c`  a domain removed (`corpus.domains` lists the rest; `math`, outside the planted blend);
- `d`  a file touched (its time, not its content).

It prints one table: proxy trainings run (sweep proxies, and the optimum's proxy check apart),
their core-seconds (each trained run's wall seconds × its threads), final models trained, and
the answer: L1 and TV from the recommended mixture to the planted blend, the `regmix` final
model's target loss, the TV between the incremental and full optimum and whether it lies within
the full re-run's bootstrap spread (the largest TV between its optimum and a bootstrap refit's,
`mixture.yaml` stability.max_tv_shift).

    python benchmarks/corpus_change.py --work /tmp/corpus-change                      # the demo
    python benchmarks/corpus_change.py --work /tmp/cc --configfile tests/config/tiny.yaml  # minutes
    python benchmarks/corpus_change.py --work /tmp/ccm --configfile tests/config/tiny.yaml \
        --configfile benchmarks/corpus_change_middle.yaml                 # 24 proxies (not timed)

The demo scale is ~2 h on 2 cores (9 sweeps: the base, 5 incremental, 3 full; `bt` shares
`b`'s full re-run and `d`'s is the base sweep, SAME_FULL).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from regmix.data.synth import SynthConfig, generate, write_corpus  # noqa: E402
from regmix.training.reuse import kept_runs  # noqa: E402
from regmix.workflow.config import merge  # noqa: E402

CASES = {
    "a": "a ninth domain added",
    "b": "one file added to web (strict)",
    "bt": "one file added to web (reuse.max_change)",
    "c": "a domain removed (corpus.domains)",
    "d": "a file touched",
}
NEW_DOMAIN = "extra"
REMOVED = "math"


def load_config(configfiles: list[Path]) -> dict:
    """The embedded config with each --configfile merged over it, as Snakemake merges them."""
    config: dict = {}
    for path in [REPO / "config" / "config.yaml", *configfiles]:
        merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def sweep(work: Path, config: Path, cores: int) -> float:
    """Run the workflow in `work`; its wall seconds."""
    started = time.perf_counter()
    command = [
        *(sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")),
        *("--directory", str(work), "--configfile", str(config), "--cores", str(cores), "-q"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"snakemake failed in {work}:\n{result.stderr[-4000:]}")
    return time.perf_counter() - started


def kept(work: Path) -> dict[str, tuple[str, dict]]:
    runs = kept_runs(work / "results" / "checkpoints")
    return {name: (kept.folder.name, kept.record) for name, kept in runs.items()}


def trained(before: dict, after: dict) -> dict[str, list[dict]]:
    """The records of the runs trained between two snapshots, by stage."""
    out: dict[str, list[dict]] = {"proxy": [], "optimum": [], "final": []}
    for run, (folder, record) in after.items():
        if before.get(run, ("",))[0] != folder:
            out[run.split("/")[0]].append(record)
    return out


def core_seconds(records: list[dict], threads: int) -> float:
    """Core-seconds of trained runs: each one's wall seconds times its job's threads."""
    return sum(r["wall_seconds"] for r in records) * threads


def answer(work: Path) -> dict:
    """The recommended mixture against the planted blend, and the regmix final's target loss."""
    optimum = yaml.safe_load((work / "results/optimal/mixture.yaml").read_text())
    planted = yaml.safe_load((work / "corpus/planted.yaml").read_text())["weights"]
    weights = pd.Series(optimum["train"], dtype=float)
    blend = pd.Series(planted, dtype=float).reindex(weights.index.union(planted), fill_value=0)
    weights = weights.reindex(blend.index, fill_value=0.0)
    summary = pd.read_parquet(work / "results/final/summary.parquet").set_index("run")
    return {
        "weights": weights.to_dict(),
        "l1": float(np.abs(weights - blend).sum()),
        "tv": float(0.5 * np.abs(weights - blend).sum()),
        "target_loss": float(summary.at["regmix", "target_loss"]),
        "spread": float(optimum.get("stability", {}).get("max_tv_shift", float("nan"))),
    }


def change(case: str, work: Path, config: dict, scale: float) -> dict:
    """Make the case's change in the corpus of `work`; returns the config to run with."""
    corpus = work / "corpus"
    config = json.loads(json.dumps(config))
    if case == "a":
        documents = generate(SynthConfig(seed=7, scale=scale))
        for split, chars in (("train", int(50_000 * scale)), ("valid", 12_000)):
            texts, total = [], 0
            for text in documents[(split, "web")]:  # another word chain: a domain of its own
                if total >= chars:
                    break
                texts.append(text)
                total += len(text)
            path = corpus / split / f"{NEW_DOMAIN}-0.jsonl"
            path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    elif case in ("b", "bt"):
        seed = config["corpus"]["synthetic"]["seed"]
        grown = generate(SynthConfig(seed=seed, scale=scale * 1.01))[("train", "web")]
        before = generate(SynthConfig(seed=seed, scale=scale))[("train", "web")]
        new = grown[len(before) :]  # the next documents of web's own generator: about 1%
        (corpus / "train" / "web-2.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in new)
        )
    elif case == "c":
        domains = sorted(
            {p.name.split("-")[0] for p in corpus.glob("*/*") if p.name.split("-")[0] != REMOVED}
        )
        config["corpus"]["domains"] = domains
    elif case == "d":
        time.sleep(1)
        (corpus / "train" / "web-0.jsonl").touch()
    return config


def write_config(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


SAME_FULL = {"bt": "b", "d": "base"}
"""Cases whose full re-run is another's: `bt`'s changed corpus is `b`'s (max_change does
nothing to a sweep from scratch), and `d`'s is the base corpus (same content, same seeds)."""


def outcome(work: Path, seconds: float, before: dict, threads: int) -> dict:
    """What a sweep in `work` trained since `before` (kept runs), and its answer."""
    runs = trained(before, kept(work))
    return {
        "seconds": seconds,
        "proxies": len(runs["proxy"]),
        "optimum_check": len(runs["optimum"]),
        "proxy_core_seconds": core_seconds(runs["proxy"] + runs["optimum"], threads),
        "finals": sorted(r["run"] for r in runs["final"]),
        **answer(work),
    }


def full_sweep(case: str, args: argparse.Namespace, settings: dict, threads: int) -> dict:
    """The full re-run of the case's changed corpus, from scratch in a fresh folder (or the
    one it shares, SAME_FULL, when that has run)."""
    shared = SAME_FULL.get(case)
    if shared is not None:
        work = args.work / shared / ("work" if shared == "base" else "full/work")
        seconds = args.work / shared / ("seconds" if shared == "base" else "full/seconds")
        if seconds.is_file() and (work / "results/final/summary.parquet").is_file():
            return {**outcome(work, float(seconds.read_text()), {}, threads), "from": shared}
    folder = args.work / case / "full"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copytree(args.work / case / "incremental" / "work" / "corpus", folder / "work/corpus")
    seconds = sweep(folder / "work", write_config(settings, folder / "config.yaml"), args.cores)
    (folder / "seconds").write_text(f"{seconds}\n")
    return outcome(folder / "work", seconds, {}, threads)


def run_case(case: str, args: argparse.Namespace, config: dict, before: dict) -> list[dict]:
    """The case's incremental run and full re-run, as two rows of the table."""
    scale = config["corpus"]["synthetic"]["scale"]
    threads = config["proxy"].get("resources", {}).get("threads", 1)
    settings = json.loads(json.dumps(config))
    if case == "bt":
        settings.setdefault("reuse", {})["max_change"] = args.max_change
    folder = args.work / case / "incremental"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    work = folder / "work"
    subprocess.run(["cp", "-a", str(args.work / "base" / "work"), str(work)], check=True)
    settings = change(case, work, settings, scale)
    seconds = sweep(work, write_config(settings, folder / "config.yaml"), args.cores)
    results = {
        "incremental": outcome(work, seconds, before, threads),
        "full": full_sweep(case, args, settings, threads),
    }
    inc, full = results["incremental"], results["full"]
    domains = sorted(set(inc["weights"]) | set(full["weights"]))
    a = np.array([inc["weights"].get(d, 0.0) for d in domains])
    b = np.array([full["weights"].get(d, 0.0) for d in domains])
    tv = float(0.5 * np.abs(a - b).sum())
    rows = []
    for mode, r in results.items():
        incremental = mode == "incremental"
        rows.append(
            {
                "case": f"{case}: {CASES[case]}",
                "run": f"full (= {r['from']})" if r.get("from") else mode,
                "wall s": round(r["seconds"]),
                "proxies trained": r["proxies"],
                "optimum check": r["optimum_check"],
                "proxy core-s": round(r["proxy_core_seconds"], 1),
                "finals trained": len(r["finals"]),
                "L1 planted": round(r["l1"], 3),
                "TV planted": round(r["tv"], 3),
                "regmix target loss": round(r["target_loss"], 4),
                "TV to full": round(tv, 3) if incremental else "",
                "full bootstrap TV": round(full["spread"], 3) if incremental else "",
                "within": bool(tv <= full["spread"]) if incremental else "",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a folder to work in")
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: a,b,bt,c,d")
    parser.add_argument("--max-change", type=float, default=0.05)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()

    config = load_config(args.configfile)
    synthetic = config["corpus"].get("synthetic", {})
    seed, scale = int(synthetic.get("seed", 0)), float(synthetic.get("scale", 1.0))
    config["corpus"] = {"path": "corpus", "synthetic": {"seed": seed, "scale": scale}}
    base = args.work / "base" / "work"
    if not (base / "results/final/summary.parquet").is_file():  # a finished base is reused
        write_corpus(base / "corpus", SynthConfig(seed=seed, scale=scale))
        seconds = sweep(base, write_config(config, args.work / "base" / "config.yaml"), args.cores)
        (args.work / "base" / "seconds").write_text(f"{seconds}\n")
        print(f"base sweep: {seconds:.0f} s", file=sys.stderr)
    before = kept(base)
    rows = []
    for case in args.cases.split(","):
        rows += run_case(case, args, config, before)
        (args.work / "corpus_change.json").write_text(json.dumps(rows, indent=2))
        print(f"case {case} done", file=sys.stderr)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
