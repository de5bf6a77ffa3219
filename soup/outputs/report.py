"""The soup report: one row per method, the selection score (held-out) apart from the results.

Held-out accuracy is what best, greedy, greedy_ensemble, WiSE-FT's α, the learned soups and
Tip-Adapter's α/β were chosen on: it is shown (and logged) as a selection score, never beside the
results on test and the shift sets. The same wide rows feed the terminal and the MLflow table.
"""
from __future__ import annotations

from dataclasses import dataclass

from soup.outputs.comparison import TEST, TRIAL
from soup.outputs.outcome import SoupOutcome

HELDOUT = "heldout"
SELECTION = "selection"  # the metric-name segment and table group of held-out scores
SELECTION_GROUP = "selection"  # over the held-out column
RESULTS_GROUP = "results"  # over test, the shift sets and their metrics


def metric_name(method: str, set_name: str, metric: str = "top1") -> str:
    """'greedy', 'test' -> 'greedy/test/top1'; held-out scores are 'greedy/selection/heldout/top1'."""
    return f"{method}/{SELECTION}/{set_name}/{metric}" if set_name == HELDOUT else f"{method}/{set_name}/{metric}"


def legacy_metric_name(method: str, set_name: str, metric: str = "top1") -> str:
    """The name held-out scores had before they were labelled as selection (logged too, for one release)."""
    return f"{method}/{set_name}/{metric}"


@dataclass(frozen=True)
class Column:
    group: str  # SELECTION_GROUP, RESULTS_GROUP or "" (what the row is: cost, size)
    name: str  # the terminal's header
    key: str  # the MLflow table's column
    kind: str  # how the terminal writes it: pct, ece, p, cost, size


def columns_of(outcome: SoupOutcome) -> list[Column]:
    sets = list(dict.fromkeys(row["set"] for row in outcome.table))
    cols = [Column(SELECTION_GROUP, s, f"{SELECTION}: {s} top-1 %", "pct") for s in sets if s == HELDOUT]
    cols += [Column(RESULTS_GROUP, s, f"{s} top-1 %", "pct") for s in sets if s != HELDOUT]
    cols += [Column(RESULTS_GROUP, "test F1", "test macro-F1 %", "pct"), Column(RESULTS_GROUP, "test ECE", "test ECE", "ece"),
             Column(RESULTS_GROUP, "McNemar p", "test McNemar p", "p"), Column("", "cost", "cost ×", "cost"),
             Column("", "size", "size", "size")]
    return cols


def wide_rows(outcome: SoupOutcome) -> list[dict]:
    """One row per method and training-free baseline (not per trial): top-1 (%) on every set, then
    test macro-F1 (%), ECE and McNemar p against the best single model, inference cost and soup size;
    percents rounded to 0.01, ECE and p to 4 significant digits."""
    cells = {(r["method"], r["set"]): r for r in outcome.table}
    shown = [m for m in dict.fromkeys(r["method"] for r in outcome.table) if not m.startswith(TRIAL)]
    rows = []
    for name in shown:
        test, any_cell = cells.get((name, TEST), {}), next(r for r in outcome.table if r["method"] == name)
        values = {"test macro-F1 %": _pct(test.get("macro_f1")), "test ECE": _sig(test.get("ece")),
                  "test McNemar p": _sig(test.get("mcnemar_p")), "cost ×": any_cell["cost"],
                  "size": any_cell["ingredients"]}
        row = {"method": name}
        for col in columns_of(outcome):
            row[col.key] = values[col.key] if col.key in values else _pct(cells.get((name, col.name), {}).get("top1"))
        rows.append(row)
    return rows


def format_table(outcome: SoupOutcome) -> str:
    """The wide rows for a terminal: a line naming the groups (selection | results), the column
    names, then one line per method; every column as wide as its name, groups apart by '|'."""
    cols, rows = columns_of(outcome), wide_rows(outcome)
    first = max([len("method"), *(len(r["method"]) for r in rows)]) + 2
    widths = [max(len(c.name), 6 if c.kind == "pct" else 4) + 2 for c in cols]
    for group in dict.fromkeys(c.group for c in cols):  # a group's label fits over its columns
        at = [i for i, c in enumerate(cols) if c.group == group]
        widths[at[-1]] += max(0, len(group) + 2 - sum(widths[i] for i in at))
    spans = {}
    for col, width in zip(cols, widths):
        spans[col.group] = spans.get(col.group, 0) + width
    lines = [f"{'':<{first}}" + " |".join(f"{group:^{span}}" for group, span in spans.items()),
             _line("method", first, cols, widths, [c.name for c in cols])]
    lines += [_line(r["method"], first, cols, widths, [_cell(r[c.key], c.kind) for c in cols]) for r in rows]
    if outcome.skipped:
        lines.append("left out: " + "; ".join(f"{k} ({v})" for k, v in outcome.skipped.items()))
    return "\n".join(line.rstrip() for line in lines)


def _line(head: str, first: int, cols: list[Column], widths: list[int], cells: list[str]) -> str:
    out = f"{head:<{first}}"
    for i, (col, width, text) in enumerate(zip(cols, widths, cells)):
        out += (" |" if i and col.group != cols[i - 1].group else "") + f"{text:>{width}}"
    return out


def format_spread(outcome: SoupOutcome) -> str:
    """The greedy soup over random orders (greedy_repeats): mean ± std [min, max] top-1 per set."""
    greedy = next((r for r in outcome.results if r.name == "greedy" and "repeats" in r.tables), None)
    if greedy is None:
        return ""
    sets = [k.removeprefix("repeats/").removesuffix("/top1_mean") for k in greedy.metrics
            if k.startswith("repeats/") and k.endswith("/top1_mean")]
    parts = []
    for name in sets:
        m = {s: greedy.metrics[f"repeats/{name}/top1_{s}"] for s in ("mean", "std", "min", "max")}
        label = f"{name} ({SELECTION})" if name == HELDOUT else name
        parts.append(f"{label} {100 * m['mean']:.1f} ± {100 * m['std']:.1f}% [{100 * m['min']:.1f}, {100 * m['max']:.1f}]")
    return f"greedy soup over {len(greedy.tables['repeats'])} random orders: " + "; ".join(parts)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def _sig(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def _cell(value, kind: str) -> str:
    if value is None:
        return ""
    return {"pct": f"{value:.1f}%", "ece": f"{value:.3f}", "p": f"{value:.3g}", "cost": f"{value}×",
            "size": f"{value}"}[kind]
