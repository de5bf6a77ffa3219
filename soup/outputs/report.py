"""The soup report for the terminal: methods as rows, evaluation sets as columns."""
from __future__ import annotations

from soup.outputs.comparison import TRIAL
from soup.outputs.outcome import SoupOutcome


def metric_name(method: str, set_name: str, metric: str = "top1") -> str:
    """'greedy', 'test' -> 'greedy/test/top1': how each comparison cell is logged."""
    return f"{method}/{set_name}/{metric}"


def format_table(outcome: SoupOutcome) -> str:
    """Top-1 (%) on every set, then macro-F1 and ECE on test, McNemar p against the best single
    model on test, inference cost and soup size: one line per method and training-free baseline."""
    sets = list(dict.fromkeys(row["set"] for row in outcome.table))
    cells = {(r["method"], r["set"]): r for r in outcome.table}
    shown = [m for m in dict.fromkeys(r["method"] for r in outcome.table) if not m.startswith(TRIAL)]
    width = max([12, *(len(name) + 2 for name in shown)])
    lines = [f"{'method':<{width}}" + "".join(f"{s:>14}" for s in sets)
             + f"{'test F1':>9}{'test ECE':>9}{'McNemar p':>11}{'cost':>6}{'size':>6}"]
    for name in shown:
        row = "".join(f"{100 * cells[(name, s)]['top1']:>13.1f}%" if (name, s) in cells else f"{'':>14}"
                      for s in sets)
        test = cells.get((name, "test"), {})
        any_cell = next(cells[(name, s)] for s in sets if (name, s) in cells)
        p = test.get("mcnemar_p")
        lines.append(f"{name:<{width}}{row}{100 * test.get('macro_f1', 0):>8.1f}%{test.get('ece', 0):>9.3f}"
                     f"{'' if p is None else f'{p:.3g}':>11}{any_cell['cost']:>5}×{any_cell['ingredients']:>6}")
    if outcome.skipped:
        lines.append("left out: " + "; ".join(f"{k} ({v})" for k, v in outcome.skipped.items()))
    return "\n".join(lines)
