"""The import direction trainers <- soup <- sweep, and no ray in trainers/ or in soup's core."""
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


# DESIGN.md: soup/ may use ray only for the optional parallel evaluation of ingredients, imported
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
    assert "trainers.config" in imported_modules(ROOT / "soup" / "make.py")
