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


@pytest.mark.parametrize("package", ["trainers", "soup"])
def test_no_ray_in_the_library_and_the_soup(package):
    offenders = [str(p.relative_to(ROOT)) for p in package_files(package)
                 if any(n.split(".")[0] == "ray" for n in imported_modules(p))]
    assert not offenders, offenders


def test_the_checker_sees_real_imports():
    # Guard against a checker that passes because it reads nothing.
    assert "ray" in {n.split(".")[0] for n in imported_modules(ROOT / "sweep" / "trial.py")}
    assert "trainers.config" in imported_modules(ROOT / "soup" / "stage.py")
