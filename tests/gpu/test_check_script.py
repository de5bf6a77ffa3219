"""The plumbing of bench/gpu_check.sh, on a CPU (not marked `gpu`): user mistakes are refused before anything
is made, a rehearsed part writes its report and numbers, and the numbers are read from what the code prints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soup.outputs.report import format_table
from soup.outputs.outcome import SoupOutcome

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def check(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("args, says", [(["tests", "benchmarks"], "unknown part 'benchmarks'"),
                                        (["--cpu"], "unknown part '--cpu'")])
def test_an_unknown_part_is_one_line_and_exit_2_before_anything_is_made(args, says, tmp_path):
    done = check(*args, out=tmp_path / "out")
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_gpu_check_refuses_and_names_the_rehearsal(tmp_path):
    done = check("tests", out=tmp_path / "out")
    assert done.returncode == 2 and "--cpu-rehearsal" in done.stderr and not (tmp_path / "out").exists()


def test_a_folder_holding_a_report_is_left_alone(tmp_path):
    (tmp_path / "gpu_check.txt").write_text("an earlier run's report")
    done = check("--cpu-rehearsal", "tests", out=tmp_path)
    assert done.returncode == 2 and "already holds" in done.stderr
    assert (tmp_path / "gpu_check.txt").read_text() == "an earlier run's report"


def test_the_rehearsed_tests_part_writes_the_report_and_its_numbers(tmp_path):
    done = check("--cpu-rehearsal", "tests", out=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "cpu-rehearsal" and report["machine"]["torch"] == torch.__version__
    tests = report["parts"]["tests"]
    assert tests["status"] == "passed" and tests["numbers"]["skipped"] >= 9 and "failed" not in tests["numbers"]
    text = (tmp_path / "gpu_check.txt").read_text()
    assert "open_clip" in text and "needs a CUDA GPU" in text and "=== tests: passed" in text


def test_every_gpu_test_lives_in_tests_gpu():
    """gpu_check.sh runs `pytest -m gpu tests/gpu`: a test marked elsewhere would never run on the GPU."""
    elsewhere = [str(p) for p in (ROOT / "tests").rglob("*.py")
                 if "gpu" not in p.relative_to(ROOT / "tests").parts[:1] and "mark.gpu" in p.read_text()]
    assert elsewhere == []


def test_the_sweep_table_is_read_as_soup_report_prints_it():
    cells = [("best", "heldout", 0.875), ("best", "test", 0.5), ("greedy_soup_long", "heldout", 1.0),
             ("greedy_soup_long", "test", 0.25)]
    rows = [{"method": m, "set": s, "top1": t, "macro_f1": 0.5, "ece": 0.1, "mcnemar_p": None, "cost": 1,
             "ingredients": 1} for m, s, t in cells]
    printed = "INFO something\n\n" + format_table(SoupOutcome([], [], {}, table=rows)) + "\n\nMLflow experiment"
    assert gpu_check.soup_table(printed) == {"best": {"heldout": 87.5, "test": 50.0},
                                             "greedy_soup_long": {"heldout": 100.0, "test": 25.0}}


def test_pytest_and_benchmark_lines_are_read():
    assert gpu_check.pytest_counts("...\n2 failed, 5 passed, 3 skipped in 9.61s\n") == {
        "failed": 2, "passed": 5, "skipped": 3}
    printed = ("ViT-B-32, batch 256, 1000 classes, NVIDIA H100, precision auto, compile True, ema None, torch 2.11\n"
               "loop       steps/s (median of 3 rounds)    images/s\n"
               "ours                              27.10        6938\n"
               "bare                              28.00        7168\nratio ours/bare: 0.968\n")
    assert gpu_check.train_step_numbers(printed) == [
        {"compile": "True", "ours_images_s": 6938.0, "bare_images_s": 7168.0, "ratio": 0.968}]
    pipeline = ("training   images/s  x ceiling  CPU cores busy\n"
                "  tensors on device (ceiling)          3160.7       1.00             1.0\n"
                "evaluation images/s  x model only\n"
                "  ours: a pass over the cache                 12333.3          1.03\n")
    assert gpu_check.input_pipeline_numbers(pipeline) == {
        "tensors on device (ceiling)": {"images_s": 3160.7, "ratio": 1.0, "cpu_cores_busy": 1.0},
        "ours: a pass over the cache": {"images_s": 12333.3, "ratio": 1.03}}
    assert gpu_check.soup_memory_numbers('{"ingredients": 2, "peak_mb": 70.0}\nsoup stage, preset cpu\n') == [
        {"ingredients": 2, "peak_mb": 70.0}]
