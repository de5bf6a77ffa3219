"""The soup run in MLflow: comparison, traces, curves, plots, soup weights, and the registered model."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import contextlib
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from soup.outputs.comparison import BASELINE
from soup.outputs.figures import id_vs_shift, wiseft_curve
from soup.methods.options import SoupOptions
from soup.inputs.records import KIND_SOUP, TAG_PARENT
from trainers.tracking import TAG_KIND
from soup.outputs.report import HELDOUT, SELECTION, legacy_metric_name, metric_name, wide_rows
from soup.outputs.outcome import SoupOutcome
from trainers.checkpoint import META
from trainers.config import param_text
from trainers.errors import UserError
from trainers.owner import this_process
from trainers.tracking import TAG_OWNER, end_killed_runs

SOUP_RUN_PREFIX = "soup"
CELL_METRICS = ("top1", "macro_f1", "ece")
STAGE_SECONDS = "stage_seconds"  # the stage's time, measured from just before the run is created to its last write


@contextlib.contextmanager
def soup_run(client: MlflowClient, experiment_id: str, parent_run_id: str | None) -> Iterator[str]:
    """The soup run (a child of the sweep run, when there is one), open while the stage works, so
    that its duration is the stage's; it ends FINISHED, or FAILED when the stage raised."""
    end_killed_runs(client, experiment_id, KIND_SOUP)
    tags = {TAG_KIND: KIND_SOUP, TAG_OWNER: this_process(), **({TAG_PARENT: parent_run_id} if parent_run_id else {})}
    started = time.time()
    run = client.create_run(experiment_id, run_name=f"{SOUP_RUN_PREFIX}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
    try:
        yield run.info.run_id
        client.log_metric(run.info.run_id, STAGE_SECONDS, time.time() - started)
    except UserError:  # a mistake found before anything was made: leave no run behind
        client.delete_run(run.info.run_id)
        raise
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def log_soup_run(client: MlflowClient, run_id: str, outcome: SoupOutcome, options: SoupOptions,
                 params: dict[str, str]) -> None:
    """Everything the stage made, into its open soup run."""
    log_values(client, run_id, outcome, options, params)
    log_tables(client, run_id, outcome)
    log_figures(client, run_id, outcome)
    log_soups(client, run_id, outcome, options)


def log_values(client: MlflowClient, run_id: str, outcome: SoupOutcome, options: SoupOptions,
               params: dict[str, str]) -> None:
    now = int(time.time() * 1000)
    names = {r.name for r in outcome.results}
    names |= {r["method"] for r in outcome.table if r["method"].startswith(BASELINE)}
    metrics = [Metric(metric_name(r["method"], r["set"], m), r[m], now, 0)
               for r in outcome.table if r["method"] in names for m in CELL_METRICS]
    metrics += [Metric(legacy_metric_name(r["method"], r["set"], m), r[m], now, 0)  # old names, one release
                for r in outcome.table if r["method"] in names and r["set"] == HELDOUT for m in CELL_METRICS]
    metrics += [Metric(metric_name(r["method"], r["set"], "mcnemar_p"), r["mcnemar_p"], now, 0)
                for r in outcome.table if r["mcnemar_p"] is not None and r["method"] in names]
    for result in outcome.results:
        metrics += [Metric(f"{result.name}/{k}", v, now, 0) for k, v in result.metrics.items()]
        for row in result.trace:
            metrics += [Metric(f"{result.name}/{key}", row[value], now, row["step"])
                        for key, value in (("heldout_after_step", "soup_heldout"), ("heldout_loss", "heldout_loss"))
                        if value in row]
    chosen = {k: v for k, v in options.model_dump(mode="json").items() if k != "methods"}
    values = {"methods": ",".join(options.methods), **chosen, **params,
              "ingredients": len(outcome.scored), "left_out": len(outcome.skipped)}
    values.update({f"{r.name}.members": ",".join(r.members) for r in outcome.results if r.members})
    params = [Param(k, param_text(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in values.items()]
    client.log_batch(run_id, metrics=metrics, params=params)  # MLflow splits it into batches it takes


def log_tables(client: MlflowClient, run_id: str, outcome: SoupOutcome) -> None:
    client.log_table(run_id, columns(outcome.table), "comparison.json")
    client.log_table(run_id, columns(wide_rows(outcome)), "comparison_wide.json")
    for result in outcome.results:
        if result.trace:
            client.log_table(run_id, columns(result.trace), f"{result.name}_trace.json")
        for key, rows in result.tables.items():
            if rows:
                client.log_table(run_id, columns(rows), f"{result.name}_{key}.json")
    client.log_dict(run_id, outcome.skipped, "left_out.json")
    if outcome.per_class:  # an MLflow table the UI previews (Parquet it cannot)
        client.log_table(run_id, columns(outcome.per_class), "per_class.json")
    with tempfile.TemporaryDirectory(prefix="soupsweep-report-") as tmp:  # for analysis outside MLflow
        if outcome.table:
            pq.write_table(pa.Table.from_pylist(outcome.table), Path(tmp) / "comparison.parquet")
            client.log_artifact(run_id, str(Path(tmp) / "comparison.parquet"))


def log_figures(client: MlflowClient, run_id: str, outcome: SoupOutcome) -> None:
    curves = [row for r in outcome.results for row in r.tables.get("curve", [])]
    scatter = id_vs_shift(outcome.table, curves)
    if scatter is not None:
        client.log_figure(run_id, scatter, "figures/id_vs_shift.png")
    if curves:
        client.log_figure(run_id, wiseft_curve(curves), "figures/wiseft_curve.png")


def log_soups(client: MlflowClient, run_id: str, outcome: SoupOutcome, options: SoupOptions) -> None:
    """soups/<method>/ (model.safetensors + meta.json naming the ingredient runs), then the
    registered model. The soups were written as they were made; meta.json learns the run id now."""
    made = [r for r in outcome.results if r.weights is not None]
    for result in made:
        meta_file = result.weights / META
        meta = {**json.loads(meta_file.read_text()), "soup_run_id": run_id, **soup_record(outcome, result.name)}
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True))
        client.log_artifacts(run_id, str(result.weights), f"soups/{result.weights.name}")
    chosen = next((r for r in made if r.name == options.register_method), None)
    if options.export_open_clip:  # before registering: a failed export leaves no model version of a failed run
        from soup.outputs.open_clip_export import export_open_clip

        export_open_clip(chosen.weights, options.export_open_clip)
    if options.register_as:
        from soup.outputs.mlflow_model import register_soup  # late: defining its PythonModel makes MLflow warn

        register_soup(client, run_id, chosen.weights, options.register_as)


def soup_record(outcome: SoupOutcome, method: str) -> dict:
    """What a soup's meta.json says of itself: its metrics per set (held-out under `selection`: what
    it was chosen on), and each member's MLflow run and training config (the base config above is
    the sweep's, which no member trained with exactly)."""
    rows = [r for r in outcome.table if r["method"] == method]
    metrics = {(f"{SELECTION}/{r['set']}" if r["set"] == HELDOUT else r["set"]): {m: r[m] for m in CELL_METRICS}
               for r in rows}
    members = next(r.members for r in outcome.results if r.name == method)
    by_id = {s.trial_id: s.ingredient for s in outcome.scored}
    return {"metrics": metrics, "member_runs": {m: {"mlflow_run_id": by_id[m].mlflow_run_id, "config": by_id[m].config}
                                                for m in members if m in by_id}}


def columns(rows: list[dict]) -> dict[str, list]:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {key: [row.get(key) for row in rows] for key in keys}
