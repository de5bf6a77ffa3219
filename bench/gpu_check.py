"""The Python half of bench/gpu_check.sh: checks before anything runs, the machine and versions, and the
headline numbers of each part read from what it printed, gathered into gpu_check.json.

    python bench/gpu_check.py preflight gpu|cpu-rehearsal       # exit 2 with one line if the machine cannot
    python bench/gpu_check.py versions JSON MODE                # print them; start JSON
    python bench/gpu_check.py record JSON PART STATUS SECONDS LOG   # add a part's outcome and numbers
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

NEEDED = ["torch", "torchvision", "open_clip", "ray", "mlflow", "optuna", "pyarrow", "safetensors", "pytest"]
PYSITE_HINT = ("carry the packages the GPU machine lacks: bash ../shared/device/make-wheels.sh, then "
               "tar -xJf .pysite/site.tar.xz -C .pysite && export PYTHONPATH=$PWD/.pysite/site:$PWD "
               "(see the header of bench/gpu_check.sh)")


def preflight(mode: str) -> int:
    """One line on stderr and exit 2 when a package is missing or, for the GPU check, torch sees no GPU."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        print(f"gpu_check.sh: python cannot import {', '.join(missing)}: {PYSITE_HINT}", file=sys.stderr)
        return 2
    import torch

    if mode == "gpu" and not torch.cuda.is_available():
        print("gpu_check.sh: torch sees no CUDA GPU here: run it on a GPU machine, or rehearse it on this one "
              "with bash bench/gpu_check.sh --cpu-rehearsal", file=sys.stderr)
        return 2
    return 0


def machine() -> dict:
    import open_clip
    import optuna
    import ray
    import mlflow
    import torch
    import torchvision

    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "torchvision": torchvision.__version__,
            "open_clip": open_clip.__version__, "ray": ray.__version__, "mlflow": mlflow.__version__,
            "optuna": optuna.__version__, "cpu_cores": __import__("os").cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    info["driver"], info["gpu_memory"] = nvidia_smi()
    return info


def nvidia_smi() -> tuple[str | None, str | None]:
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None, None
    driver, memory = (part.strip() for part in line.split(","))
    return driver, memory


def versions(path: str, mode: str) -> int:
    info = machine()
    for key, value in info.items():
        print(f"{key:<12} {value}")
    Path(path).write_text(json.dumps({"mode": mode, "machine": info, "parts": {}}, indent=1))
    return 0


def pytest_counts(text: str) -> dict:
    """'3 passed, 1 skipped in 9.6s' (the last summary line) -> {'passed': 3, 'skipped': 1}."""
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    if not summary:
        return {}
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary[-1])}


def soup_table(text: str) -> dict:
    """The sweep's printed comparison (soup.outputs.report.format_table): method -> set -> top-1 (%).
    Every column is right-aligned under its name, so a cell ends where its column's name ends."""
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith("method") and "McNemar p" in line), None)
    if head is None:
        return {}
    names = re.split(r"\s{2,}|\s*\|\s*", lines[head].strip())[1:]
    sets = names[:names.index("test F1")]  # the top-1 columns: held-out (selection), test, the shift sets
    ends, at = [], 0
    for name in sets:
        at = lines[head].index(name, at) + len(name)
        ends.append(at)
    table = {}
    for line in lines[head + 1:]:
        if not line.strip() or line.startswith("left out"):
            break
        cells = [line[start:end].replace("|", "").strip() for start, end in zip([len(line.split()[0])] + ends, ends)]
        table[line.split()[0]] = {name: float(c.rstrip("%")) for name, c in zip(sets, cells) if c}
    return table


def train_step_numbers(text: str) -> list[dict]:
    """One entry per run printed by bench/train_step.py: ours and bare images/s and their ratio."""
    runs = []
    for block in text.split("ratio ours/bare: ")[:-1]:
        rates = dict(re.findall(r"^(ours|bare)\s+[\d.]+\s+(\d+)$", block, re.M))
        compiled = re.findall(r"compile (\S+),", block)
        runs.append({"compile": compiled[-1] if compiled else None,
                     **{f"{k}_images_s": float(v) for k, v in rates.items()}})
    for run, ratio in zip(runs, re.findall(r"ratio ours/bare: ([\d.]+)", text)):
        run["ratio"] = float(ratio)
    return runs


def input_pipeline_numbers(text: str) -> dict:
    """Each printed row of bench/input_pipeline.py: name -> images/s, its ratio (and CPU cores busy)."""
    rows = {}
    for name, numbers in re.findall(r"^  (\S.*?\S)\s{2,}([\d.]+(?:\s+[\d.]+){1,2})$", text, re.M):
        values = [float(v) for v in numbers.split()]
        rows[name] = dict(zip(("images_s", "ratio", "cpu_cores_busy"), values))
    return rows


def soup_memory_numbers(text: str) -> list[dict]:
    """The JSON line bench/soup_memory.py prints per ingredient count."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and line.endswith("}")]


NUMBERS = {"tests": pytest_counts, "sweep": soup_table, "train_step": train_step_numbers,
           "input_pipeline": input_pipeline_numbers, "soup_memory": soup_memory_numbers}


def record(path: str, part: str, status: str, seconds: str, log: str) -> int:
    report = json.loads(Path(path).read_text())
    text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
    report["parts"][part] = {"status": status, "seconds": int(seconds), "numbers": NUMBERS[part](text)}
    Path(path).write_text(json.dumps(report, indent=1))
    return 0


def main(argv: list[str]) -> int:
    command, *args = argv
    return {"preflight": preflight, "versions": versions, "record": record}[command](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
