"""The soup report for the terminal: methods as rows, evaluation sets as columns."""
from __future__ import annotations

from soup.stage import SoupOutcome


def metric_name(method: str, set_name: str, metric: str = "top1") -> str:
    """'greedy', 'test' -> 'greedy/test/top1': how each comparison cell is logged."""
    return f"{method}/{set_name}/{metric}"


def format_table(outcome: SoupOutcome) -> str:
    """Top-1 (%) on every set, then macro-F1 and ECE on test, McNemar p against the best single
    model on test, inference cost and soup size."""
    sets = list(dict.fromkeys(row["set"] for row in outcome.table))
    cells = {(r["method"], r["set"]): r for r in outcome.table}
    width = max([12, *(len(r.name) + 2 for r in outcome.results)])
    lines = [f"{'method':<{width}}" + "".join(f"{s:>14}" for s in sets)
             + f"{'test F1':>9}{'test ECE':>9}{'McNemar p':>11}{'cost':>6}{'size':>6}"]
    for result in outcome.results:
        row = "".join(f"{100 * cells[(result.name, s)]['top1']:>13.1f}%" for s in sets)
        test = cells.get((result.name, "test"), {})
        p = test.get("mcnemar_p")
        lines.append(f"{result.name:<{width}}{row}{100 * test.get('macro_f1', 0):>8.1f}%{test.get('ece', 0):>9.3f}"
                     f"{'' if p is None else f'{p:.3g}':>11}{result.cost:>5}×{len(result.members):>6}")
    if outcome.skipped:
        lines.append("left out: " + "; ".join(f"{k} ({v})" for k, v in outcome.skipped.items()))
    return "\n".join(lines)
