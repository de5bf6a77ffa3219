"""Cluster profiles: what a sweep config needs to change to run on one kind of cluster.

A profile is `clusters/profiles/<name>.yaml` in the repository: config sections holding only the
keys that depend on the cluster (`resources.*`, `search.max_concurrent_trials`, `storage_path`,
`mlflow.tracking_uri`, `soup.device`). `python -m sweep.run --cluster NAME` applies it between
the config file and the `--set` overrides.

A string value may name environment variables as `${NAME}`: the bucket of a cloud cluster is not
known to the repository, so its nodes export it (the cluster definitions in clusters/ do) and the
profile reads it wherever the sweep driver runs.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from sweep.config import SweepConfig
from trainers.config import apply_overrides, flatten, validate
from trainers.config_files import read_config_file
from trainers.errors import UserError

# The project is installed editable (or run from an unpacked working dir under `ray job submit`),
# so the repository's clusters/ folder sits next to this package.
PROFILES_DIR = Path(__file__).resolve().parents[1] / "clusters" / "profiles"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def list_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of the profiles in `directory` (file names without .yaml), sorted."""
    if not directory.is_dir():
        raise UserError(f"--cluster: no cluster profiles at {directory}; profiles ship in the repository's "
                        "clusters/profiles/, so run from a clone installed with `pip install -e .` "
                        "(or submit that clone with `ray job submit --working-dir <clone>`)")
    return sorted(path.stem for path in directory.glob("*.yaml"))


def load_profile(name: str, directory: Path = PROFILES_DIR, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The overrides of profile `name` as dotted keys, `${VAR}`s filled in from the environment.
    Keys in `skip` (given again with --set) are left out, so their variables need not be set."""
    names = list_profiles(directory)
    if name not in names:
        raise UserError(f"--cluster: unknown cluster profile {name!r}; valid names: {', '.join(names) or 'none'} "
                        f"(files in {directory})")
    path = directory / f"{name}.yaml"
    tree = read_config_file(str(path), flag=f"--cluster {name}")
    skipped = set(skip)
    overrides = {key: _fill(value, key, name) for key, value in flatten(tree).items() if key not in skipped}
    validate(SweepConfig, apply_overrides({}, overrides), source=f"cluster profile {path}")  # its own mistakes, named as such
    return overrides


def _fill(value: Any, key: str, profile: str) -> Any:
    if not isinstance(value, str):
        return value

    def variable(match: re.Match) -> str:
        if match[1] not in os.environ:
            raise UserError(f"cluster profile {profile}: {key} uses ${{{match[1]}}}, which is not set here; "
                            "the nodes of the clusters in clusters/ export it (see clusters/README.md), "
                            f"elsewhere export it or override the key: --set {key}=...")
        return os.environ[match[1]]

    return _VARIABLE.sub(variable, value)
