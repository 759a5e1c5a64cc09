from pathlib import Path

from regmix.data.corpus import CorpusFile
from regmix.data.groups import plan_groups, runtime_minutes


def corpus(names_sizes: dict[str, int]) -> tuple[list[CorpusFile], dict[str, int]]:
    files = [CorpusFile(None, None, Path(name), name) for name in names_sizes]
    return files, dict(names_sizes)


def membership(groups) -> dict[str, str]:
    return {f.relative: g.name for g in groups for f in g.files}


def test_a_file_at_least_bytes_per_job_is_a_job_of_its_own():
    files, sizes = corpus({"a.jsonl": 10, "big.jsonl.zst": 1000, "c.jsonl": 10})
    groups = plan_groups(files, sizes, bytes_per_job=1000)
    assert [[f.relative for f in g.files] for g in groups] == [
        ["a.jsonl"],
        ["big.jsonl.zst"],
        ["c.jsonl"],
    ]


def test_small_files_are_grouped_to_about_bytes_per_job():
    files, sizes = corpus({f"part-{i:04d}.jsonl": 1_000 for i in range(2000)})
    groups = plan_groups(files, sizes, bytes_per_job=50_000)
    assert sum(len(g.files) for g in groups) == 2000
    assert 25 <= len(groups) <= 60  # 2 MB in groups of 50 kB on average: ~40


def test_a_new_file_moves_no_old_file_to_another_job():
    files, sizes = corpus({f"part-{i:04d}.jsonl": 1_000 for i in range(0, 2000, 2)})
    before = membership(plan_groups(files, sizes, bytes_per_job=50_000))
    for new in ("part-0001.jsonl", "part-0777.jsonl", "part-1999.jsonl", "part-2500.jsonl"):
        more, more_sizes = corpus({**sizes, new: 1_000})
        after = membership(plan_groups(more, more_sizes, bytes_per_job=50_000))
        # Files change job only within the one group the new file joined (which is split or
        # renamed when the new file ends it); every other group keeps its name and files.
        moved_from = {before[f] for f in before if after[f] != before[f]}
        assert len(moved_from) <= 1
        untouched = set(before.values()) - moved_from - {after[new]}
        for name in untouched:
            assert {f for f in before if before[f] == name} == {
                f for f in after if after[f] == name
            }


def test_runtime_grows_with_the_input_and_shrinks_with_threads():
    assert runtime_minutes(0, 1) == 10
    assert runtime_minutes(3e9, 1) > runtime_minutes(3e9, 4) > runtime_minutes(3e8, 4)
