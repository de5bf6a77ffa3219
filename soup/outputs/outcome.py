"""What the soup stage hands to the report, and where the methods' sealed logits are opened: the
comparison, α curves and spreads on test and shift are computed here, after every choice was made."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from soup.methods.context import MethodResult
from soup.methods.greedy import spread
from soup.scoring.evaluation import Scored, accuracy
from soup.scoring.sealed import HELDOUT, SEALED_LONG, SEALED_WIDE, Sealed, unseal


@dataclass
class SoupOutcome:
    results: list[MethodResult]
    scored: list[Scored]
    skipped: dict[str, str]  # trial id -> why it is not an ingredient
    table: list[dict] = field(default_factory=list)  # one row per method (or trial) and set
    per_class: list[dict] = field(default_factory=list)  # precision and recall per method, set and class
    classes: list[str] = field(default_factory=list)


def opened(result: MethodResult, evaluator) -> MethodResult:
    """The result with its logits on every set, and its sealed table rows turned into top-1 per set."""
    tables = {key: _open_rows(rows, evaluator) for key, rows in result.tables.items()}
    metrics = dict(result.metrics)
    repeats = tables.get("repeats")
    if repeats and any(SEALED_WIDE in row for row in result.tables["repeats"]):
        sets = [n for n in result.tables["repeats"][0][SEALED_WIDE] if n != HELDOUT]
        metrics.update(spread(repeats, sets))
    logits = unseal(result.logits) if isinstance(result.logits, Sealed) else result.logits
    return replace(result, logits=logits, tables=tables, metrics=metrics)


def _open_rows(rows: list[dict], evaluator) -> list[dict]:
    out = []
    for row in rows:
        if SEALED_LONG in row:
            plain = {k: v for k, v in row.items() if k != SEALED_LONG}
            out += [{**plain, "set": name, "top1": accuracy(values, evaluator.labels(name))}
                    for name, values in unseal(row[SEALED_LONG]).items()]
        elif SEALED_WIDE in row:
            plain = {k: v for k, v in row.items() if k != SEALED_WIDE}
            out.append({**plain, **{f"{name}/top1": accuracy(values, evaluator.labels(name))
                                    for name, values in unseal(row[SEALED_WIDE]).items() if name != HELDOUT}})
        else:
            out.append(row)
    return out
