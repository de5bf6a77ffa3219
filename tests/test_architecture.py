"""The import direction trainers <- soup <- sweep, and inside soup/ inputs <- scoring <- methods <-
outputs <- the command modules; no import cycles (lazy imports inside functions included); no ray in
trainers/ or in soup's core; soup methods never open sealed (test and shift) logits."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"trainers": {"trainers"}, "soup": {"trainers", "soup"}, "sweep": {"trainers", "soup", "sweep"}}
PROJECT = set(ALLOWED)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_arrows(package):
    wrong = [f"{path.relative_to(ROOT)} imports {name}" for path in package_files(package)
             for name in imported_modules(path)
             if name.split(".")[0] in PROJECT and name.split(".")[0] not in ALLOWED[package]]
    assert not wrong, wrong


# soup/'s stages, lowest first: a sub-package imports only its own and lower ones; soup/*.py (the
# command, the pipeline, make_soups) may import them all (docs/architecture.md).
SOUP_LAYERS = ["inputs", "scoring", "methods", "outputs"]


def soup_layer(module: str) -> int:
    """The layer of a soup module: its sub-package's index, or len(SOUP_LAYERS) for soup/*.py."""
    parts = module.split(".")
    return SOUP_LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in SOUP_LAYERS else len(SOUP_LAYERS)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_soup_stages_import_downward_only():
    wrong = [f"{module_name(p)} imports {name}" for p in package_files("soup") for name in imported_modules(p)
             if name.split(".")[0] == "soup" and soup_layer(name) > soup_layer(module_name(p))]
    assert not wrong, wrong


def test_the_method_registry_is_a_leaf_and_methods_never_unseal():
    assert not [n for n in imported_modules(ROOT / "soup/methods/spec.py") if n.split(".")[0] == "soup"]
    opened = [str(p.relative_to(ROOT)) for p in (ROOT / "soup").rglob("*.py")
              if "unseal" in p.read_text() and p.parent.name not in ("outputs", "scoring") and p.name != "make.py"]
    assert not opened, opened  # only the report (and the module defining it) reads test and shift logits


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PROJECT for p in package_files(package)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_modules(path):
            while imported and imported not in modules:  # `from a.b import c` imports a.b
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n))), None)


# Known and left to trainers/data's owners: store.read_split imports cache lazily (a function-level import).
KNOWN_EDGES = {("trainers.data.store", "trainers.data.cache")}


def test_no_import_cycles():
    graph = import_graph()
    for source, target in KNOWN_EDGES:
        graph[source].discard(target)
    assert find_cycle(graph) is None, find_cycle(graph)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# docs/architecture.md: soup/ may use ray only for the optional parallel evaluation of ingredients, imported
# inside a function so that the soup stage runs, and is tested, without it.
OPTIONAL_RAY = {"soup/scoring/parallel.py"}


@pytest.mark.parametrize("package", ["trainers", "soup"])
def test_no_ray_in_the_library_and_the_soup(package):
    offenders = [str(p.relative_to(ROOT)) for p in package_files(package)
                 if any(n.split(".")[0] == "ray" for n in imported_modules(p))
                 and str(p.relative_to(ROOT)) not in OPTIONAL_RAY]
    assert not offenders, offenders


@pytest.mark.parametrize("path", sorted(OPTIONAL_RAY))
def test_optional_ray_is_imported_only_inside_functions(path):
    tree = ast.parse((ROOT / path).read_text())
    top_level = {alias.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in node.names} | {node.module.split(".")[0] for node in tree.body
                                             if isinstance(node, ast.ImportFrom) and node.module}
    assert "ray" not in top_level
    assert "ray" in {n.split(".")[0] for n in imported_modules(ROOT / path)}  # the exemption is still needed


def test_the_checker_sees_real_imports():
    # Guard against a checker that passes because it reads nothing.
    assert "ray" in {n.split(".")[0] for n in imported_modules(ROOT / "sweep" / "trial.py")}
    assert "trainers.errors" in imported_modules(ROOT / "soup" / "make.py")


def test_a_trials_own_process_imports_no_driver_or_worker_modules():
    # A trial's process and its Train controller unpickle sweep.trial before the trial starts: whatever
    # it imports delays every trial (docs/benchmarks.md, "The cut measured").
    import subprocess
    import sys

    heavy = ["mlflow", "optuna", "open_clip", "torchvision", "transformers", "sweep.config", "sweep.worker"]
    probe = f"import sys, sweep.trial; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    control = subprocess.run([sys.executable, "-c", probe.replace("sweep.trial", "sweep.worker")], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    assert "open_clip" in control.stdout  # the probe sees imports
