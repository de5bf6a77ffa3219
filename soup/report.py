"""The soup report: a text table for the terminal and the soup run in MLflow."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from soup.records import KIND_SOUP, TAG_KIND, TAG_PARENT
from soup.stage import SoupOutcome
from trainers.checkpoint import save_checkpoint

SOUP_RUN_PREFIX = "soup"


def metric_name(method: str, set_name: str) -> str:
    """'greedy', 'test' -> 'greedy/test/top1': how each comparison cell is logged."""
    return f"{method}/{set_name}/top1"


def format_table(outcome: SoupOutcome) -> str:
    """Methods as rows, evaluation sets as columns, top-1 in percent, with inference cost."""
    sets = list(dict.fromkeys(row["set"] for row in outcome.table))
    cells = {(r["method"], r["set"]): r for r in outcome.table}
    lines = [f"{'method':<12}" + "".join(f"{s:>14}" for s in sets) + f"{'cost':>6}{'size':>6}"]
    for result in outcome.results:
        row = "".join(f"{100 * cells[(result.name, s)]['top1']:>13.1f}%" for s in sets)
        lines.append(f"{result.name:<12}{row}{result.cost:>5}×{len(result.members):>6}")
    if outcome.skipped:
        lines.append("left out: " + "; ".join(f"{k} ({v})" for k, v in outcome.skipped.items()))
    return "\n".join(lines)


def log_soup_run(client: MlflowClient, experiment_id: str, sweep_run_id: str, outcome: SoupOutcome,
                 params: dict[str, str]) -> str:
    """One MLflow run (a child of the sweep run) with the comparison, the greedy trace and the soups."""
    run = client.create_run(experiment_id, run_name=f"{SOUP_RUN_PREFIX}-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={TAG_KIND: KIND_SOUP, TAG_PARENT: sweep_run_id})
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, outcome, params)
        _log_artifacts(client, run_id, outcome)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _log_values(client: MlflowClient, run_id: str, outcome: SoupOutcome, params: dict[str, str]) -> None:
    now = int(time.time() * 1000)
    method_names = {r.name for r in outcome.results}
    metrics = [Metric(metric_name(r["method"], r["set"]), r["top1"], now, 0)
               for r in outcome.table if r["method"] in method_names]
    for result in outcome.results:
        metrics += [Metric(f"{result.name}/heldout_after_step", row["soup_heldout"], now, row["step"])
                    for row in result.trace]
    all_params = {**params, "ingredients": len(outcome.scored), "left_out": len(outcome.skipped)}
    all_params.update({f"{r.name}.members": ",".join(r.members)[:6000] for r in outcome.results if r.members})
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in all_params.items()])


def _log_artifacts(client: MlflowClient, run_id: str, outcome: SoupOutcome) -> None:
    client.log_table(run_id, _columns(outcome.table), "comparison.json")
    for result in outcome.results:
        if result.trace:
            client.log_table(run_id, _columns(result.trace), f"{result.name}_trace.json")
    client.log_dict(run_id, outcome.skipped, "left_out.json")
    with tempfile.TemporaryDirectory(prefix="soupsweep-report-") as tmp:
        pq.write_table(pa.Table.from_pylist(outcome.table), Path(tmp) / "comparison.parquet")
        client.log_artifact(run_id, str(Path(tmp) / "comparison.parquet"))
        for result in outcome.results:
            if result.state is not None:
                meta = {"method": result.name, "members": result.members, "soup_run_id": run_id,
                        "lineage": {s.trial_id: s.ingredient.mlflow_run_id for s in outcome.scored
                                    if s.trial_id in result.members}}
                save_checkpoint(Path(tmp) / "soups" / result.name, result.state, meta)
        if (Path(tmp) / "soups").exists():
            client.log_artifacts(run_id, str(Path(tmp) / "soups"), "soups")


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
