"""Config trees from YAML: the --config file and the --set KEY=VALUE overrides, read the same way by
every command (python -m trainers.run, python -m sweep.run), with one-line messages for mistakes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from trainers.errors import UserError


def read_config_file(path: str, flag: str = "--config") -> dict[str, Any]:
    """The YAML mapping in `path`; a UserError saying what is wrong (missing, bad syntax, not a mapping)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{flag}: {path} does not exist")
    try:
        tree = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{flag}: {path} is not valid YAML ({yaml_problem(err)}); fix its syntax") from None
    if not isinstance(tree, dict):
        raise UserError(f"{flag}: {path} must hold a YAML mapping of config sections")
    return tree


def parse_sets(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE overrides (VALUE parsed as YAML) as {dotted key: value}."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: use KEY=VALUE, e.g. --set optim.lr=1e-5")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({yaml_problem(err)}); quote text "
                            "that holds YAML syntax, e.g. --set 'mlflow.experiment=\"a: b\"'") from None
    return overrides


def yaml_problem(err: yaml.YAMLError) -> str:
    """What the YAML parser found and where, in one line."""
    problem = getattr(err, "problem", None) or type(err).__name__
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as flat dotted keys; an entry of a DOTTED_KEY_MAPS map is one key, whatever its value
    (a search-space domain stays {"loguniform": [...]}), so that `apply_overrides` nests it back."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and prefix.removesuffix(".") not in DOTTED_KEY_MAPS:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


# Maps whose keys are the user's and may hold dots: search.space's keys are dotted training keys
# ({"optim.lr": domain}), class and shift-set names may be "st.bernard" or "imagenet-v2.1". In
# `--set search.space.optim.lr=...`, and in the flat MLflow params read back (`from_params`), all after
# the map's name is one key ("optim.lr" inside search.space), not sections ("optim", then "lr").
DOTTED_KEY_MAPS = ("search.space", "model.class_names", "model.class_descriptions", "data.shift")


def split_key(dotted: str) -> tuple[list[str], str]:
    """A dotted --set key as (its parent sections, the key set in the last one)."""
    for prefix in DOTTED_KEY_MAPS:
        if dotted.startswith(prefix + "."):
            return prefix.split("."), dotted[len(prefix) + 1:]
    *parents, leaf = dotted.split(".")
    return parents, leaf


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); unknown keys are caught later by validation."""
    tree = json.loads(json.dumps(tree))
    for dotted, value in overrides.items():
        node = tree
        parents, leaf = split_key(dotted)
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"config: cannot set '{dotted}': '{part}' is not a section")
            node = child
        node[leaf] = value
    return tree
