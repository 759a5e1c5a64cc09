"""Check the exported mixtures against the real trainer packages, where they are installed.

`tests/test_mixture_formats.py` checks `regmix export-mixture` against small mirrors of how
Megatron-LM parses `--data-path` and of OLMo-core's source-mixture fields, so CI needs neither
package (megatron-core brings a GPU stack; ai2-olmo-core pins an older huggingface-hub than
transformers needs). This script checks the mirrors against the real thing. Run it in a
throwaway virtualenv:

    python -m venv /tmp/stacks && . /tmp/stacks/bin/activate
    pip install torch==2.13.0 && pip install -e . megatron-core ai2-olmo-core
    python benchmarks/trainer_stacks.py

Last run: megatron-core 0.16.1 and ai2-olmo-core 3.0.0 both agree.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_mixture_formats import (
    MEGATRON_CASES,
    OLMO_SOURCE_FIELDS,
    TEMPLATE,
    export,
    megatron_blend,
    megatron_reads,
    mixture,
)

from regmix.search.mixture_formats import PrefixOptions


def check_megatron_core():
    from megatron.core.datasets import utils

    def outcome(read, tokens):
        try:
            prefixes, weights = read(list(tokens))
        except AssertionError:
            return "assert"
        return list(prefixes), None if weights is None else list(weights)

    for tokens in MEGATRON_CASES:
        assert outcome(megatron_blend, tokens) == outcome(utils.get_blend_from_list, tokens)
    text = export(
        mixture({"web": 0.45, "code": 0.35, "books": 0.2}),
        "megatron",
        prefixes=PrefixOptions(TEMPLATE),
    )
    prefixes, weights = utils.get_blend_from_list(text.split())
    assert (prefixes, utils.normalize(weights)) == megatron_reads(text)


def check_olmo_core(tmp_path: Path):
    from olmo_core.data import source_mixture as olmo

    m = mixture({"web": 0.6, "code": 0.3, "books": 0.1}, max_epochs=0.5)
    (tmp_path / "mix.yaml").write_text(
        export(m, "olmo-core", prefixes=PrefixOptions("/d/{domain}"))
    )
    sources = olmo.SourceMixtureList.from_yaml(tmp_path / "mix.yaml")
    sources.validate()
    for source in sources.sources:
        source.validate()
    assert [(s.source_name, s.target_ratio) for s in sources.sources] == [
        ("web", 0.6),
        ("code", 0.3),
        ("books", 0.1),
    ]
    assert {(s.max_repetition_ratio, s.max_source_fraction) for s in sources.sources} == {
        (1.0, 0.5)
    }
    fields = {f.name for f in dataclasses.fields(olmo.SourceMixtureConfig)}
    assert {f for f in fields if not f.startswith("_")} == OLMO_SOURCE_FIELDS


def main() -> int:
    checks = {"megatron.core": check_megatron_core, "olmo_core": check_olmo_core}
    failed = False
    for package, check in checks.items():
        if importlib.util.find_spec(package.split(".")[0]) is None:
            print(f"{package}: not installed (see this script's docstring)")
            failed = True
            continue
        with tempfile.TemporaryDirectory() as folder:
            args = (Path(folder),) if check is check_olmo_core else ()
            check(*args)
        print(f"{package}: the exported mixture reads back as regmix wrote it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
