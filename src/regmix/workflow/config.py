"""The workflow configuration: read, coerced to the schema's types, validated, defaults filled.

`config/schema.yaml` (JSON Schema, draft 2020-12) documents every key and its default. The
Snakefile validates the config Snakemake merged from `configfile:`, `--configfile` and
`--config`; `regmix plan` and `regmix status` load the same files the same way, so all three
see one configuration.

Snakemake hands nested `--config` values over as strings (`--config 'proxy={steps: 10}'` gives
`{"steps": "10"}`); `coerce` converts such strings to the number, boolean or null the schema
asks for, and leaves anything that does not convert for validation to report by key.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from regmix.errors import RegmixError
from regmix.files import read_yaml

REPO = Path(__file__).resolve().parents[3]
SCHEMA = "config/schema.yaml"
RENAMED = "config/renamed.yaml"
"""Keys earlier versions read, with what replaced them (beside the schema)."""
DEFAULT_CONFIG = "config/config.yaml"

_INTEGER = re.compile(r"^[+-]?\d+$")
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
_NULLS = {"null", "none", "~", ""}


def schema_path(workflow_dir: str | os.PathLike | None = None) -> Path:
    return Path(workflow_dir or REPO) / SCHEMA


def read_schema(path: str | os.PathLike) -> dict:
    schema = read_yaml(path)
    if not isinstance(schema, dict):
        raise RegmixError(f"{path}: not a schema")
    return schema


def read_renamed(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The table of renamed keys: `{dotted key: {use: ..., why: ...}}`; empty if absent."""
    path = Path(path)
    table = read_yaml(path) if path.is_file() else {}
    if not isinstance(table, dict) or not all(
        isinstance(entry, dict) and "use" in entry for entry in table.values()
    ):
        raise RegmixError(f"{path}: expected a mapping of dotted keys to {{use: ..., why: ...}}")
    return table


def check_renamed(config: Mapping, renamed: Mapping[str, Mapping[str, str]]) -> None:
    """Raise one line naming the first renamed key the config still sets, and what to write."""
    for dotted, entry in renamed.items():
        *parents, name = dotted.split(".")
        section: Any = config
        for part in parents:
            section = section.get(part) if isinstance(section, Mapping) else None
        if isinstance(section, Mapping) and name in section:
            use = entry["use"].format(value=section[name])
            why = f" ({entry['why']})" if entry.get("why") else ""
            raise RegmixError(f"config key {dotted}: no longer read; write `{use}` instead{why}")


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    """Follow a local `$ref` (`#/$defs/name`), merging the referring schema's own keys."""
    ref = schema.get("$ref")
    if not ref or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve(target, root))
    for key, value in schema.items():
        if key == "$ref":
            continue
        if key == "properties":
            # The referring schema may restate a property only to give it a default.
            properties = {k: dict(v) for k, v in merged.get("properties", {}).items()}
            for name, sub in value.items():
                properties[name] = {**properties.get(name, {}), **sub}
            merged["properties"] = properties
        else:
            merged[key] = value
    return merged


def _types(schema: Mapping) -> set[str]:
    kind = schema.get("type")
    if kind is None and "enum" in schema:
        return {type(v).__name__ for v in schema["enum"]}
    return {kind} if isinstance(kind, str) else set(kind or ())


def _scalar(text: str, types: set[str]) -> Any:
    """`text` as the first of the schema's non-string types it reads as; else unchanged."""
    lowered = text.strip().lower()
    if "null" in types and lowered in _NULLS:
        return None
    if ("integer" in types or "int" in types) and _INTEGER.match(text.strip()):
        return int(text)
    if "number" in types or "float" in types:
        try:
            return float(text)
        except ValueError:
            pass
    if ("boolean" in types or "bool" in types) and lowered in _BOOLEANS:
        return _BOOLEANS[lowered]
    return text


def coerce(value: Any, schema: Mapping, root: Mapping | None = None) -> Any:
    """A copy of `value` with strings converted where the schema wants a number, a boolean or
    null and does not also accept a string."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {k: coerce(v, properties.get(k, {}), root) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce(v, items, root) for v in value]
    if isinstance(value, str):
        types = _types(schema)
        if types and "string" not in types and "str" not in types:
            return _scalar(value, types)
        if value not in schema.get("enum", [value]):  # `enum: [true, false, auto]`
            return _scalar(value, types - {"string", "str"})
    return value


def _default_filling_validator(schema: Mapping):
    """A Draft 2020-12 validator that also fills in `default:` values (the jsonschema FAQ's
    recipe), so a config without a key gets the schema's default."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    cls = validators.extend(Draft202012Validator, {"properties": set_defaults})
    return cls(schema)


def validate(
    config: dict, schema: Mapping, renamed: Mapping[str, Mapping[str, str]] | None = None
) -> dict:
    """Coerce, fill defaults and validate in place; the first problem raises one line naming
    its key. A key of `renamed` (`read_renamed`) still set says what replaced it. Returns
    `config`."""
    check_renamed(config, renamed or {})
    coerced = coerce(config, schema)
    config.clear()
    config.update(coerced)
    validator = _default_filling_validator(schema)
    for _ in validator.iter_errors(config):
        pass  # the first pass fills the defaults; errors are judged on the filled config
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RegmixError(f"config key {key}: {error.message}")
    resolve_evaluation(config)
    return config


def resolve_evaluation(config: dict) -> None:
    """`evaluation.enabled: auto` (the default) as true or false, so that every reader of the
    config sees one answer: on for the synthetic demo corpus (`corpus.path: null`) when lm-eval
    is installed — tiny models and a continuation task that needs no download —, off for a
    corpus of yours, whose models may need a GPU to be scored in time and whose tasks are yours
    to choose (`enabled: true`)."""
    evaluation = config.get("evaluation")
    if not isinstance(evaluation, dict) or evaluation.get("enabled") != "auto":
        return
    synthetic = (config.get("corpus") or {}).get("path") is None
    evaluation["enabled"] = synthetic and importlib.util.find_spec("lm_eval") is not None


def merge(base: dict, update: Mapping) -> dict:
    """Snakemake's merge of config files: nested mappings are merged, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def load_config(
    configfiles: Iterable[str | os.PathLike] = (),
    workflow_dir: str | os.PathLike | None = None,
) -> dict:
    """The workflow's config as Snakemake would see it: the embedded default, then each
    `--configfile` merged over it; validated, with defaults filled."""
    workflow_dir = Path(workflow_dir or REPO)
    config: dict = {}
    for path in [workflow_dir / DEFAULT_CONFIG, *map(Path, configfiles)]:
        if not path.is_file():
            raise RegmixError(f"{path}: no such config file")
        data = read_yaml(path)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise RegmixError(f"{path}: expected a mapping of config keys")
        merge(config, data)
    schema = schema_path(workflow_dir)
    return validate(config, read_schema(schema), read_renamed(schema.with_name("renamed.yaml")))
