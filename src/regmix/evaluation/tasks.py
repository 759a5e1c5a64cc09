"""Which lm-eval tasks a config names, and whether each one's data is at hand offline.

`evaluation.tasks` lists lm-eval task, group or tag names and the paths of local task YAML
files or folders. Paths go to lm-eval as its include path; names come from lm-eval's own
tasks. Before any job starts, preflight resolves every entry here without building lm-eval's
task index (which parses ~15,000 YAML files and takes ~10 s of CPU): a text search finds the
few files that mention a name, and only those are parsed. A task's data must be local files or
prepared in the `datasets` cache, checked file by file: evaluation jobs run offline
(HF_DATASETS_OFFLINE=1), where `load_dataset` reads nothing else.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from regmix.errors import RegmixError

KEY = "config key evaluation.tasks"
PACKAGED_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "xml", "webdataset"}
"""`datasets` builders that read the files named in `data_files` (no Hub repository)."""


@dataclass
class TaskSelection:
    """What lm-eval is asked to run: task names, the folders to index, and whether lm-eval's
    own tasks are needed (indexing them costs seconds, so local-only selections skip it)."""

    names: list[str] = field(default_factory=list)
    include_paths: list[str] = field(default_factory=list)
    defaults: bool = False


def is_path(entry: str) -> bool:
    """A task entry that names a file or folder rather than a task: it has a / or ends .yaml."""
    return "/" in entry or entry.endswith((".yaml", ".yml")) or Path(entry).exists()


def select_tasks(entries: list[str]) -> TaskSelection:
    """Split `entries` into lm-eval names and include paths (a folder runs every task in it)."""
    selection = TaskSelection()
    for entry in entries:
        if not is_path(entry):
            selection.names.append(entry)
            selection.defaults = True
            continue
        path = Path(entry)
        if not path.exists():
            raise RegmixError(f"evaluation task {entry}: no such file or folder")
        folder = path if path.is_dir() else path.parent
        if str(folder) not in selection.include_paths:
            selection.include_paths.append(str(folder))
        configs = [load_task_yaml(path)] if path.is_file() else folder_tasks(folder)
        selection.names += [task_name(config, entry) for config in configs]
    return selection


def task_name(config: dict, where: str) -> str:
    name = config.get("group") or config.get("task")
    if not isinstance(name, str):
        raise RegmixError(f"evaluation task {where}: expected a `task:` or `group:` name")
    return name


def folder_tasks(folder: Path) -> list[dict]:
    """The tasks a folder defines: the groups and tasks that no group there lists (a group
    runs its members, nested groups included; naming a member again would run it twice)."""
    configs = [load_task_yaml(path) for path in sorted(folder.rglob("*.y*ml"))]
    listed = {_member_name(m) for c in configs if "group" in c for m in _members(c)}
    top = [c for c in configs if c.get("group", c.get("task")) not in listed]
    if not top:
        raise RegmixError(f"evaluation task {folder}: no task YAML in this folder")
    return [c for c in top if "group" in c] + [c for c in top if "group" not in c]


class _TaskLoader(yaml.SafeLoader):
    """lm-eval's YAML dialect: `!function module.name` is kept as text (never imported)."""


_TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def load_task_yaml(path: Path, seen: frozenset[Path] = frozenset()) -> dict:
    """A task YAML with its `include:` files merged in first, as lm-eval merges them."""
    path = path.resolve()
    if path in seen:
        raise RegmixError(f"{path}: include cycle")
    try:
        config = yaml.load(path.read_text(), Loader=_TaskLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise RegmixError(f"{path}: not a readable task YAML ({exc})") from None
    if not isinstance(config, dict):
        raise RegmixError(f"{path}: expected a task YAML mapping")
    includes = config.pop("include", [])
    merged: dict = {}
    for include in includes if isinstance(includes, list) else [includes]:
        included = load_task_yaml(path.parent / include, seen | {path})
        included.pop("task_list", None)
        merged.update(included)
    merged.update(config)
    return merged


def _members(group: dict) -> list:
    members = group.get("task", [])
    return members if isinstance(members, list) else [members]


def _member_name(member) -> str | None:
    return member if isinstance(member, str) else member.get("task")


# --- lm-eval's own tasks, found without its index -------------------------------------------


def lm_eval_tasks_folder() -> Path | None:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


class LmEvalTasks:
    """lm-eval's task YAML files, read as text once; a name is looked up by parsing only the
    files that mention it."""

    def __init__(self, folder: Path) -> None:
        self.texts = {
            path: path.read_text(errors="replace")
            for path in sorted(folder.rglob("*.yaml"))
            if "__pycache__" not in path.parts
        }

    def configs(self, name: str) -> list[dict]:
        """The task configs that `name` stands for: the task itself, a group's members or a
        tag's tasks (recursively); empty if lm-eval knows no such name."""
        return self._resolve(name, set())

    def _resolve(self, name: str, seen: set[str]) -> list[dict]:
        if name in seen:
            return []
        seen.add(name)
        word = re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])")
        found = []
        for path, text in self.texts.items():
            if not word.search(text):
                continue
            try:
                config = load_task_yaml(path)
            except RegmixError:
                continue  # lm-eval's index skips files it cannot read, too
            tags = config.get("tag", [])
            tags = tags if isinstance(tags, list) else [tags]
            if config.get("group") == name:
                for member in _members(config):
                    if isinstance(member, dict) and "dataset_path" in member:
                        found.append(member)
                    elif (member_name := _member_name(member)) is not None:
                        found += self._resolve(member_name, seen)
            elif config.get("task") == name or name in tags:
                found.append(config)
        return found


# --- is a task's data at hand offline? -------------------------------------------------------


def datasets_cache() -> Path:
    """Where `datasets` keeps the datasets it has prepared (its arrow files): the only place it
    reads a Hub dataset from offline. A download into the Hub's file cache
    (`huggingface-cli download`) alone is not read: `load_dataset` goes to the Hub for it."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(os.environ.get("HF_HOME", Path(xdg) / "huggingface")).expanduser() / "datasets"


_UPPER_UPPER = re.compile(r"([A-Z]+)([A-Z][a-z])")
_LOWER_UPPER = re.compile(r"([a-z\d])([A-Z])")


def snake_case(name: str) -> str:
    """`datasets.naming.camelcase_to_snakecase`, which names cached datasets and their files
    (copied: importing `datasets` costs a second of every workflow parse)."""
    return _LOWER_UPPER.sub(r"\1_\2", _UPPER_UPPER.sub(r"\1_\2", name)).lower()


def cached_dataset_problem(source: str, config: str | None, cache: Path) -> str | None:
    """Why `datasets` could not load the Hub dataset `source` (configuration `config`) from
    `cache` offline, or None when it can.

    The same look-up as `datasets` offline (load.CachedDatasetModuleFactory and
    packaged_modules/cache): `<cache>/<namespace>___<snake name>/<config>/<version>/<hash>/`,
    the newest such folder, whose dataset_info.json lists the splits, every one of which must
    have its arrow files (`<snake name>-<split>.arrow`, or `-<i>-of-<n>.arrow` shards), since
    `load_dataset` opens them all.
    """
    parts = source.split("/")
    name = snake_case(parts[-1])
    root = cache / "___".join([*parts[:-1], name])
    label = f"dataset {source}" + (f" (configuration {config})" if config else "")
    folders = [
        folder
        for folder in root.glob(f"{glob_escape(config) if config else '*'}/*/*")
        if (folder / "dataset_info.json").is_file()
    ]
    if not folders:
        return f"{label} is neither local nor in the Hugging Face datasets cache ({root})"
    folder = max(folders, key=lambda f: f.stat().st_mtime)
    try:
        splits = json.loads((folder / "dataset_info.json").read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{label}: {folder / 'dataset_info.json'} lists no splits (download it again)"
    for split, info in splits.items():
        shards = len((info or {}).get("shard_lengths") or []) if isinstance(info, dict) else 0
        files = (
            [f"{name}-{split}-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
            if shards > 1
            else [f"{name}-{split}.arrow"]
        )
        for file in files:
            if not _non_empty(folder / file):
                return f"{label} is cached without its {split} split ({folder / file} is missing)"
    return None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def data_problem(config: dict) -> str | None:
    """Why a task's data cannot be read offline, or None when it can."""
    if "class" in config or "custom_dataset" in config:
        return None  # a Python task reads its data itself: nothing to check from here
    source = config.get("dataset_path")
    if not isinstance(source, str):
        return "its YAML names no dataset_path"
    if source in PACKAGED_BUILDERS:
        files = _data_files(config)
        if not files:
            return "its YAML names no data_files"
        missing = next((f for f in files if not _data_file_present(f)), None)
        return None if missing is None else f"data file {missing} is not there (or is empty)"
    local = Path(source)
    if local.exists():
        holds_data = local.is_file() or any(
            _non_empty(p) for p in local.rglob("*") if not p.name.startswith(".")
        )
        return None if holds_data else f"local dataset {source} holds no data file"
    return cached_dataset_problem(source, config.get("dataset_name"), datasets_cache())


def _data_files(config: dict) -> list[str]:
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        files = list(files.values())
    files = files if isinstance(files, list) else [files] if files else []
    return [f for group in files for f in (group if isinstance(group, list) else [group])]


def _data_file_present(pattern: str) -> bool:
    """A data file, or a glob pattern (which `datasets` accepts) matching at least one."""
    if any(c in pattern for c in "*?["):
        return any(_non_empty(Path(p)) for p in glob.glob(pattern, recursive=True))
    return _non_empty(Path(pattern))


def check_tasks(entries: list[str]) -> None:
    """Raise one line naming the first task that is unknown or whose data is not offline."""
    index = None
    for entry in entries:
        if is_path(entry):
            path = Path(entry)
            if not path.exists():
                raise RegmixError(f"{KEY}: {entry}: no such task file or folder")
            selection = select_tasks([entry])
            configs = [load_task_yaml(path)] if path.is_file() else folder_tasks(path)
            local = LocalTasks(Path(selection.include_paths[0]))
            configs = [c for config in configs for c in local.expand(config)]
        else:
            if index is None:
                folder = lm_eval_tasks_folder()
                if folder is None:
                    raise RegmixError(
                        f"{KEY}: {entry!r} is an lm-eval task but lm-eval is not "
                        "installed (pip install 'regmix[eval]')"
                    )
                index = LmEvalTasks(folder)
            configs = index.configs(entry)
            if not configs:
                raise RegmixError(
                    f"{KEY}: unknown task {entry!r} (not an lm-eval task, group or "
                    "tag, nor a local .yaml file or folder)"
                )
        for config in configs:
            if (problem := data_problem(config)) is not None:
                name = config.get("task", entry)
                raise RegmixError(
                    f"{KEY}: {entry}: task {name}: {problem} (evaluation runs offline: load it "
                    "once with datasets.load_dataset where there is internet, or drop the task)"
                )


class LocalTasks(LmEvalTasks):
    """A local task folder, searched like lm-eval's own (a group there may list its tasks)."""

    def expand(self, config: dict) -> list[dict]:
        if "group" not in config:
            return [config]
        return self.configs(config["group"])
