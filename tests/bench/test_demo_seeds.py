"""bench/demo_seeds.py without running a sweep: the spread over seeds is computed from soup runs that
the test records in real MLflow (sqlite) with the soup stage's own writer, and mistakes stop the script
with one line before anything is made."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainers.tracking import artifact_location
from soup.outputs.outcome import SoupOutcome
from soup.outputs.soup_run import log_tables, soup_run

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import demo_seeds  # noqa: E402

SKETCH = "shift/sketch"


def row(method: str, set_name: str, top1: float, macro_f1: float | None = None) -> dict:
    """A comparison row as soup.outputs.comparison.comparison_table makes it."""
    return {"method": method, "set": set_name, "top1": top1, "macro_f1": top1 if macro_f1 is None else macro_f1,
            "ece": 0.05, "cost": 1, "ingredients": 1, "mcnemar_b": None, "mcnemar_c": None, "mcnemar_p": None}


def seed_table(greedy_test: float, with_uniform: bool = True, shifts: tuple[str, ...] = (SKETCH,)) -> list[dict]:
    """One seed's comparison: held-out (selection), test, the shift sets and their average, methods,
    a baseline and a single trial."""
    sets = {"heldout": 0.99, "test": greedy_test, **{s: greedy_test - 0.1 for s in shifts},
            "shift/avg": greedy_test - 0.1}
    methods = {"greedy": 0.0, "baseline:zeroshot": -0.05, "trial:t1": -0.02,
               **({"uniform": -0.01} if with_uniform else {})}
    return [row(m, s, v + offset) for m, offset in methods.items() for s, v in sets.items()]


def record_soup_run(directory: Path, table: list[dict]) -> str:
    """A finished soup run holding `table`, written as the soup stage writes it; its tracking URI."""
    directory.mkdir()
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("demo", artifact_location=artifact_location(uri))
    with soup_run(client, experiment, None) as run_id:
        log_tables(client, run_id, SoupOutcome([], [], {}, table=table))
    return uri


def cell(rows: list[dict], method: str, set_name: str, metric: str = "top1") -> dict:
    (found,) = [r for r in rows if (r["method"], r["set"], r["metric"]) == (method, set_name, metric)]
    return found


def test_the_spread_over_seeds_comes_from_the_recorded_soup_runs(tmp_path):
    tables = [demo_seeds.read_comparison(record_soup_run(tmp_path / f"seed-{i}", seed_table(v)))
              for i, v in enumerate([0.89, 0.90, 0.91])]
    rows = demo_seeds.spread_rows(tables)
    greedy = cell(rows, "greedy", "test")
    assert greedy["n"] == 3 and greedy["mean"] == pytest.approx(0.90) and greedy["std"] == pytest.approx(0.01)
    assert (greedy["min"], greedy["max"]) == (0.89, 0.91)
    assert cell(rows, "baseline:zeroshot", SKETCH, "macro_f1")["mean"] == pytest.approx(0.75)
    assert {r["set"] for r in rows} == {"test", SKETCH}  # no selection score; shift/avg is the one shift set
    assert {r["method"] for r in rows} == {"greedy", "uniform", "baseline:zeroshot"}  # no single trials
    table = demo_seeds.format_spread_table(rows, 3).splitlines()
    assert table[0].split() == ["method", "test", "top-1", "shift/sketch", "top-1", "test", "F1", "shift/sketch", "F1"]
    test, sketch = ["90.0", "±", "1.0", "[89.0–91.0]"], ["80.0", "±", "1.0", "[79.0–81.0]"]
    assert table[1].split() == ["greedy", *test, *sketch, *test, *sketch]


def test_a_method_a_seed_lacks_is_counted_and_several_shift_sets_keep_their_average(tmp_path):
    shifts = (SKETCH, "shift/inverted")
    tables = [seed_table(0.9, with_uniform=False, shifts=shifts), seed_table(0.8, shifts=shifts)]
    rows = demo_seeds.spread_rows(tables)
    assert cell(rows, "uniform", "test")["n"] == 1 and cell(rows, "uniform", "test")["std"] == 0.0
    assert [s for s in dict.fromkeys(r["set"] for r in rows)] == ["test", SKETCH, "shift/inverted", "shift/avg"]
    lines = demo_seeds.format_spread_table(rows, 2).splitlines()
    uniform_line = next(line for line in lines if line.startswith("uniform"))
    assert "79.0 ± 0.0 [79.0–79.0] (n=1)" in uniform_line


def test_a_store_without_a_finished_soup_run_is_named(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("empty")
    with pytest.raises(RuntimeError, match="no finished soup run recorded in"):
        demo_seeds.read_comparison(uri)


@pytest.mark.parametrize("args, says", [
    (["--seeds", "0"], "--seeds 0: give a number of seeds >= 1"),
    (["--seed-list", "1", "-2"], "--seed-list 1 -2: give distinct integers >= 0"),
    (["--seed-list", "3", "3"], "--seed-list 3 3: give distinct integers >= 0"),
    (["--seeds", "2"], "not a new or empty directory"),
])
def test_mistakes_are_one_line_and_exit_2_before_anything_is_made(args, says, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("the user's")  # a non-empty --work: refused, untouched
    assert demo_seeds.main(["--work", str(work), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err
    assert [p.name for p in work.iterdir()] == ["mine.txt"]


def test_each_method_is_compared_with_the_best_model_seed_by_seed():
    seeds = [[row("best", "test", 0.90), row("best", SKETCH, 0.70), row("uniform", "test", 0.88),
              row("uniform", SKETCH, 0.75), row("trial:t1", "test", 0.5), row("trial:t1", SKETCH, 0.5)],
             [row("best", "test", 0.80), row("best", SKETCH, 0.60), row("uniform", "test", 0.81),
              row("uniform", SKETCH, 0.62), row("trial:t1", "test", 0.5), row("trial:t1", SKETCH, 0.5)]]
    lines = demo_seeds.paired_against_best(seeds).splitlines()
    assert len(lines) == 1 and lines[0].startswith("uniform")  # neither best itself nor the single trials
    assert "test -2.0 +1.0 (ahead 1/2)" in lines[0] and f"{SKETCH} +5.0 +2.0 (ahead 2/2)" in lines[0]


def test_report_prints_and_rewrites_the_table_from_the_kept_rows(tmp_path, capsys):
    assert demo_seeds.main(["--work", str(tmp_path), "--report"]) == 2  # nothing kept there yet
    assert "comparisons.json does not exist" in capsys.readouterr().err
    runs = [{"seed": s, "seconds": 61.0, "rows": seed_table(v)} for s, v in ((0, 0.89), (3, 0.91))]
    (tmp_path / "comparisons.json").write_text(json.dumps(runs))
    (tmp_path / "table.txt").write_text("a table in an older format\n")
    assert demo_seeds.main(["--work", str(tmp_path), "--report"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("The demo (`python -m sweep.run --seed N`) over seeds 0 3:")
    assert "seed 3 1 min 1 s" in printed and (tmp_path / "table.txt").read_text() == printed
