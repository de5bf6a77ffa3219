"""The demo sweep in the MLflow UI, in a real headless Chromium: the link the sweep prints opens the
experiment on its runs (not MLflow's GenAI overview), the soup run shows the wide comparison and the
per-class report as tables, and its duration covers the soup stage. Screenshots of the experiment, a
trial run and the soup run are kept in the suite's output directory."""
from __future__ import annotations

import re
import shutil
from contextlib import contextmanager

import pytest

from soup.inputs.records import KIND_SOUP, KIND_SWEEP, KIND_TRIAL
from soup.outputs.soup_run import STAGE_SECONDS
from trainers.tracking import MODEL_TRAINING
from tests.acceptance.demo import CHROMIUM_FLAGS, EXPERIMENT, runs_of
from tests.acceptance.services import attach, metrics, rest

pytestmark = pytest.mark.slow
WAIT_MS = 90_000  # the UI keeps polling ("networkidle" never comes): wait for texts instead


@contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def shoot(page, name: str, tmp_path, output_dir, record_property) -> None:
    shot = tmp_path / f"mlflow-ui-{name}.png"
    page.screenshot(path=str(shot))
    record_property(f"screenshot-{name}", str(attach(shot, output_dir)))
    assert shot.stat().st_size > 10_000


def visit(page, url: str) -> None:
    """A full load: a hash change alone leaves the UI showing the artifact it had selected."""
    page.goto("about:blank")
    page.goto(url)


def run_page(demo, run: dict, tab: str = "") -> str:
    info = run["info"]
    return f"{demo.server}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}{tab}?workflowType=machine_learning"


def test_the_printed_link_opens_the_experiment_on_its_runs(demo, tmp_path, output_dir, record_property):
    experiment = rest(demo.server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    assert {t["key"]: t["value"] for t in experiment.get("tags", [])}.items() >= MODEL_TRAINING.items()
    link = re.search(r"http://\S+workflowType=machine_learning", demo.job_logs).group(0)
    assert link.startswith(f"{demo.server}/#/experiments/{experiment['experiment_id']}/runs")
    (sweep,) = runs_of(demo.server, KIND_SWEEP)
    with browser_page() as page:
        visit(page, link)
        page.get_by_text(sweep["info"]["run_name"], exact=True).first.wait_for(timeout=WAIT_MS)  # the runs table
        page.get_by_text("Run Name", exact=True).first.wait_for(timeout=WAIT_MS)
        assert page.get_by_text("Token Usage").count() == 0  # not the GenAI overview
        shoot(page, "experiment", tmp_path, output_dir, record_property)
        trial = runs_of(demo.server, KIND_TRIAL)[0]
        visit(page, run_page(demo, trial))
        page.get_by_text(trial["info"]["run_name"]).first.wait_for(timeout=WAIT_MS)
        page.get_by_text("optim.lr").first.wait_for(timeout=WAIT_MS)
        shoot(page, "trial", tmp_path, output_dir, record_property)


def test_the_soup_run_shows_its_tables_and_lasts_the_stage(demo, tmp_path, output_dir, record_property):
    (run,) = runs_of(demo.server, KIND_SOUP)  # the sweep's own soup stage
    duration_ms = int(run["info"]["end_time"]) - int(run["info"]["start_time"])
    assert duration_ms >= 1000 * metrics(run)[STAGE_SECONDS] - 1
    with browser_page() as page:
        visit(page, run_page(demo, run))
        page.get_by_text(run["info"]["run_name"]).first.wait_for(timeout=WAIT_MS)
        shoot(page, "soup-run", tmp_path, output_dir, record_property)
        visit(page, run_page(demo, run, "/artifacts/comparison_wide.json"))
        page.get_by_text("selection: heldout top-1 %").first.wait_for(timeout=WAIT_MS)  # a column header
        page.get_by_role("cell", name="greedy", exact=True).first.wait_for(timeout=WAIT_MS)
        shoot(page, "soup-comparison", tmp_path, output_dir, record_property)
        visit(page, run_page(demo, run, "/artifacts/per_class.json"))
        page.locator("text=precision >> visible=true").first.wait_for(timeout=WAIT_MS)  # a column header
        page.locator("text=shift/sketch >> visible=true").first.wait_for(timeout=WAIT_MS)  # a row
        assert page.get_by_text("Select a file to preview").count() == 0
        shoot(page, "soup-per-class", tmp_path, output_dir, record_property)
