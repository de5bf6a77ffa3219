"""What a user does, nothing mocked: the demo sweep submitted to a Ray head with `ray job submit`, the
soup redone with `python -m soup.greedy`, results read back only through the MLflow REST API, the
soup run looked at in the MLflow UI in a real (headless) Chromium, then a corrupted checkpoint.

One sweep serves every test of the module (they run in file order; the last one corrupts a checkpoint).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soup.inputs.records import KIND_SOUP, KIND_SWEEP, KIND_TRIAL, TAG_MANIFEST, TAG_PARENT, TAG_STORAGE
from trainers.tracking import TAG_CHECKPOINT
from soup.outputs.report import metric_name
from sweep.tracking import TAG_STATUS
from tests.acceptance.demo import CHROMIUM_FLAGS, EPOCHS, EXPERIMENT, TRIALS, runs_of
from tests.acceptance.services import ROOT, artifact, attach, metrics, params, rest, tags

pytestmark = pytest.mark.slow
METHODS = ("zeroshot", "best", "uniform", "greedy")
SETS = ("heldout", "test", "shift/sketch")


def soup_greedy(server: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soup.greedy", "--experiment", EXPERIMENT, "--tracking-uri", server,
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)


def soup_run_named(server: str, output: str) -> dict:
    run_id = re.search(r"soup run (\w+) logged in experiment", output).group(1)
    return rest(server, "runs/get", run_id=run_id)["run"]


def test_submitted_sweep_succeeds_on_the_head(demo):
    assert demo.job_status == "SUCCEEDED", demo.job_logs[-6000:]
    assert "greedy" in demo.job_logs and f"python -m soup.greedy --experiment {EXPERIMENT}" in demo.job_logs
    # attached to the head (its 4 logical CPUs) instead of starting a cluster of its own: Ray says so in
    # the log file the sweep names first, not on the console
    log_file = Path(re.search(r"Ray's and the workers' output: (\S+)", demo.job_logs).group(1))
    assert log_file == demo.storage / f"{EXPERIMENT}-soupsweep" / "console.log"
    ray_output = log_file.read_text()
    assert "Connecting to existing Ray cluster" in ray_output and "'CPU': 4.0" in ray_output


def test_console_is_a_few_lines_per_trial_then_the_table(demo):
    lines = demo.job_logs.splitlines()
    table = lines.index(next(line for line in lines if line.startswith("method ")))
    trial_lines = [line for line in lines[:table] if line.startswith("trial ")]
    assert 2 * TRIALS <= len(trial_lines) <= 3 * TRIALS, "\n".join(lines[:table])  # started, ended, offered
    assert len(lines[:table]) <= 5 * TRIALS + 5, "\n".join(lines[:table])
    assert len(lines) - table <= 25, "\n".join(lines[table:])  # the table, the UI link, the soup command
    noise = ("run snapshot was found", "PreemptionWatcher", "worker processes have been started", "TrainingReport")
    assert not [line for line in lines if any(n in line for n in noise)]


def test_sweep_and_trial_runs_through_the_rest_api(demo):
    (sweep,) = runs_of(demo.server, KIND_SWEEP)
    assert sweep["info"]["status"] == "FINISHED"
    assert tags(sweep)[TAG_STORAGE] == str(demo.storage) and tags(sweep)[TAG_MANIFEST].startswith(str(demo.storage))
    assert metrics(sweep)["trials_finished"] == TRIALS and metrics(sweep)["trials_failed"] == 0
    trials = runs_of(demo.server, KIND_TRIAL)
    assert len(trials) == TRIALS
    for trial in trials:
        assert trial["info"]["status"] == "FINISHED" and tags(trial)[TAG_STATUS] == "finished"
        assert tags(trial)[TAG_PARENT] == sweep["info"]["run_id"]
        assert params(trial)["optim.epochs"] == str(EPOCHS) and float(params(trial)["optim.lr"]) > 0
        assert Path(tags(trial)[TAG_CHECKPOINT]).is_relative_to(demo.storage)
        history = rest(demo.server, "metrics/get-history", run_id=trial["info"]["run_id"], metric_key="val/top1")
        assert sorted(m["step"] for m in history["metrics"]) == list(range(1, EPOCHS + 1))
        assert all(0 <= m["value"] <= 1 for m in history["metrics"])
    best = max(metrics(t)["val/top1"] for t in trials)
    assert metrics(sweep)["best/val/top1"] == pytest.approx(best)


def test_soup_greedy_against_the_server(demo):
    before = runs_of(demo.server, KIND_SOUP)
    assert len(before) == 1  # the sweep's own soup stage
    done = soup_greedy(demo.server)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "greedy" in done.stdout and "left out" not in done.stdout
    run = soup_run_named(demo.server, done.stdout)
    assert len(runs_of(demo.server, KIND_SOUP)) == 2
    (sweep,) = runs_of(demo.server, KIND_SWEEP)
    assert run["info"]["status"] == "FINISHED" and tags(run)[TAG_PARENT] == sweep["info"]["run_id"]
    assert params(run)["ingredients"] == str(TRIALS) and params(run)["left_out"] == "0"


def test_soup_run_metrics_table_and_artifacts(demo):
    run = max(runs_of(demo.server, KIND_SOUP), key=lambda r: int(r["info"]["start_time"]))
    values = metrics(run)
    table = json.loads(artifact(demo.server, run, "comparison.json"))
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    cells = {(r["method"], r["set"]): r for r in rows}
    for method in METHODS:
        for split in SETS:
            cell = cells[(method, split)]
            assert 0 < cell["top1"] <= 1
            assert values[metric_name(method, split)] == pytest.approx(cell["top1"])  # metric == table cell
    assert values["greedy/selection/heldout/top1"] == values["greedy/heldout/top1"]  # the old name, one release
    wide = json.loads(artifact(demo.server, run, "comparison_wide.json"))
    greedy = dict(zip(wide["columns"], next(row for row in wide["data"] if row[0] == "greedy")))
    assert greedy["selection: heldout top-1 %"] == round(100 * cells[("greedy", "heldout")]["top1"], 2)
    assert greedy["test top-1 %"] == round(100 * cells[("greedy", "test")]["top1"], 2)
    per_class = json.loads(artifact(demo.server, run, "per_class.json"))
    assert {"method", "set", "class", "precision", "recall", "support"} <= set(per_class["columns"])
    listed = rest(demo.server, "artifacts/list", run_id=run["info"]["run_id"], path="soups/greedy")
    names = {Path(f["path"]).name: f for f in listed["files"]}
    assert names["model.safetensors"]["file_size"] > 10_000 and "meta.json" in names
    meta = json.loads(artifact(demo.server, run, "soups/greedy/meta.json"))
    assert meta["soup_run_id"] == run["info"]["run_id"]
    assert meta["metrics"]["test"]["top1"] == pytest.approx(cells[("greedy", "test")]["top1"])
    assert "selection/heldout" in meta["metrics"] and set(meta["member_runs"]) == set(meta["members"])
    trial_runs = {t["info"]["run_id"]: t for t in runs_of(demo.server, KIND_TRIAL)}
    for member in meta["member_runs"].values():
        assert member["config"]["optim"]["lr"] == pytest.approx(float(params(trial_runs[member["mlflow_run_id"]])["optim.lr"]))
    assert json.loads(artifact(demo.server, run, "left_out.json")) == {}
    assert artifact(demo.server, run, "comparison.parquet")[:4] == b"PAR1"


def test_mlflow_ui_shows_the_soup_run(demo, tmp_path, output_dir, record_property):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)"
    run = max(runs_of(demo.server, KIND_SOUP), key=lambda r: int(r["info"]["start_time"]))
    shot = tmp_path / "mlflow-ui-soup-run.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            # The UI keeps polling, so "networkidle" never comes: wait for texts of the run instead.
            page.goto(f"{demo.server}/#/experiments/{run['info']['experiment_id']}/runs/{run['info']['run_id']}")
            page.get_by_text(run["info"]["run_name"]).first.wait_for(timeout=60_000)
            search = page.get_by_placeholder("Search metrics")
            search.fill("/test/top1")  # the comparison's test column
            page.get_by_text("greedy/test/top1", exact=True).first.wait_for(timeout=60_000)
            search.evaluate("box => box.scrollIntoView({block: 'start'})")  # the metrics table in view
            page.screenshot(path=str(shot))
            rows = page.get_by_role("row")
            cells = [rows.nth(i).inner_text().split("\n") for i in range(rows.count())]
        finally:
            browser.close()
    record_property("screenshot", str(attach(shot, output_dir)))
    assert shot.stat().st_size > 10_000
    shown = {cell[0].strip(): cell[1].strip() for cell in cells if len(cell) >= 2}  # metric -> value shown
    values = metrics(run)
    for method in METHODS:
        name = f"{method}/test/top1"
        assert float(shown[name]) == pytest.approx(values[name], abs=1e-3), (name, shown)


def test_corrupted_checkpoint_is_left_out_and_named(demo):
    """Last in the module: it damages one trial's checkpoint, then redoes the soup."""
    trials = sorted(runs_of(demo.server, KIND_TRIAL), key=lambda r: r["info"]["run_id"])
    victim = tags(trials[0])
    weights = Path(victim[TAG_CHECKPOINT]) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:64] = b"\xff" * 64  # the safetensors header (its length and JSON) is garbage now
    weights.write_bytes(bytes(data))
    done = soup_greedy(demo.server)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trial_id = victim["soupsweep.trial_id"]
    assert re.search(rf"left out: .*{trial_id} \(unreadable checkpoint", done.stdout), done.stdout[-3000:]
    run = soup_run_named(demo.server, done.stdout)
    left_out = json.loads(artifact(demo.server, run, "left_out.json"))
    assert list(left_out) == [trial_id] and str(weights.parent) in left_out[trial_id]
    assert params(run)["ingredients"] == str(TRIALS - 1) and params(run)["left_out"] == "1"
    assert trial_id not in params(run).get("uniform.members", "") and params(run)["uniform.members"]
