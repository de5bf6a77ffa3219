"""Memory and time of the soup stage, measured side by side in one run (results: docs/benchmarks.md).

    python bench/soup_memory.py                  # CPU: 2, 8 and 32 tiny ingredients
    python bench/soup_memory.py --preset h100    # GPU: 16 ViT-B/32-size ingredients, 10,000 held-out images

Each ingredient count runs in a fresh child process. The child writes a base checkpoint and
ingredients (the base plus small random deltas: memory and time do not depend on how the weights
were trained), puts random evaluation sets on the device, builds the evaluator, and only then starts
measuring: the peak of its resident memory (VmHWM, reset through /proc/self/clear_refs) during the
whole soup stage (every method, both learned soups included, and the comparison tables), over the
resident memory just before it, printed as a multiple of one checkpoint's size; beside it, what one
held-out forward/backward pass needs over the same baseline (activations and a gradient, which do
not depend on the number of ingredients).

It also times, in the same process, one checkpoint load, one held-out pass, and the greedy soup's
steps, and prints their ratio: a greedy step should cost one load plus one held-out pass. On a GPU
the `greedy soup` column is the GPU time of the whole greedy walk.

"tiny" is the shipped tiny model (32 px, 2 layers) widened to 512 so that one checkpoint (~25 MB)
stands out of the interpreter's own noise; the shipped width-64 model's 0.5 MB would not.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import PeakMemory, sync  # noqa: E402
from soup.methods.context import SoupContext  # noqa: E402
from soup.scoring.evaluation import Evaluator  # noqa: E402
from soup.methods.greedy import greedy_select  # noqa: E402
from soup.inputs.manifest import FINISHED, Ingredient  # noqa: E402
from soup.methods.learned import heldout_gradient  # noqa: E402
from soup.methods.spec import METHODS  # noqa: E402
from soup.methods.options import SoupOptions  # noqa: E402
from soup.inputs.base import Base  # noqa: E402
from soup.scoring.splits import EvalSet, SplitKind  # noqa: E402
from soup.make import make_soups  # noqa: E402
from trainers.device import resolve_device  # noqa: E402
from soup.inputs.tensorfile import read_tensors  # noqa: E402
from trainers.checkpoint import WEIGHTS, save_checkpoint  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.model import build_classifier, state_checksum  # noqa: E402

WIDE_TINY = {"embed_dim": 128, "vision_cfg": {"image_size": 32, "layers": 2, "width": 512, "head_width": 64,
                                              "patch_size": 8},
             "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
# glibc serves large allocations from its heap once it has freed a few, and keeps that memory: the
# resident size then follows what glibc kept, not what is alive, and wanders by a checkpoint or two
# between identical runs. A fixed mmap threshold returns every freed tensor to the system, so the
# peak measures live memory (allocation gets slower: compare the timings as ratios only).
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
PRESETS = {  # batch: images per forward pass (the activations' share of memory: host memory on a CPU)
    "cpu": {"model": "tiny", "counts": [2, 8, 32], "heldout": 256, "other": 128, "classes": 10, "device": "cpu",
            "batch": 16},
    "h100": {"model": "ViT-B-32", "counts": [16], "heldout": 10_000, "other": 2_000, "classes": 1000,
             "device": "cuda", "batch": 256},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--counts", type=int, nargs="+", help="ingredient counts (default: the preset's)")
    for key in ("heldout", "other", "device"):
        parser.add_argument(f"--{key}", type=str if key == "device" else int, help=f"override the preset's {key}")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    preset = {**PRESETS[args.preset], **{k: v for k in ("heldout", "other", "device")
                                         if (v := getattr(args, k)) is not None}}
    if args.child:
        print(json.dumps(measure(preset, args.child)))
        return 0
    rows = []
    for count in args.counts or preset["counts"]:
        overrides = [a for k in ("heldout", "other", "device") if getattr(args, k) is not None
                     for a in (f"--{k}", str(getattr(args, k)))]
        done = subprocess.run([sys.executable, __file__, "--preset", args.preset, *overrides, "--child", str(count)],
                              capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)  # as each child ends: the 32-ingredient run takes minutes
    print(table(rows, args.preset))
    return 0


def table(rows: list[dict], preset: str) -> str:
    head = (f"{'ingredients':>11} {'checkpoint':>11} {'baseline':>9} {'fwd+bwd pass':>13} {'stage peak over baseline':>25} "
            f"{'greedy step / (load + held-out pass)':>37} {'greedy soup':>12} {'whole stage':>12}")
    lines = [f"soup stage, preset {preset}, device {rows[0]['device']}, held-out {rows[0]['heldout']} images, "
             f"{' '.join(f'{k}={v}' for k, v in CHILD_ENV.items())}", head]
    for r in rows:
        lines.append(f"{r['ingredients']:>11} {r['checkpoint_mb']:>8.1f} MB {r['baseline_mb']:>6.0f} MB "
                     f"{r['one_pass_mb']:>10.1f} MB "
                     f"{r['peak_over_baseline_mb']:>9.1f} MB = {r['peak_ratio']:>4.2f} ckpt "
                     f"{r['step_s']:>12.3f} s / ({r['load_s']:.3f} + {r['heldout_s']:.3f}) s = {r['step_ratio']:>4.2f}"
                     f"{r['greedy_s']:>11.2f} s{r['stage_s']:>11.1f} s")
    if "gpu_peak_mb" in rows[0]:
        lines += [f"GPU memory peak ({r['ingredients']} ingredients): {r['gpu_peak_mb']:.0f} MB" for r in rows]
    return "\n".join(lines)


def measure(preset: dict, count: int) -> dict:
    device = resolve_device(preset["device"])
    with tempfile.TemporaryDirectory(prefix="soup-bench-") as tmp:
        tmp = Path(tmp)
        base, ingredients = write_inputs(tmp, preset, count)
        evaluator = Evaluator(build_classifier(base.config.model, preset["classes"]), eval_sets(preset, device),
                              device, "auto", batch_size=preset["batch"])
        options = SoupOptions(methods=list(METHODS), learned_steps=3, device=str(device))
        one_pass = working_set(evaluator, read_tensors(base.file))
        with PeakMemory() as memory:
            start = time.perf_counter()
            outcome = make_soups(ingredients, base, options, tmp / "work", evaluator)
            stage_s = _synced(device, start)
        ckpt = (Path(ingredients[0].checkpoint) / WEIGHTS).stat().st_size
        result = {"ingredients": count, "device": str(device), "heldout": preset["heldout"],
                  "checkpoint_mb": ckpt / 2**20, "baseline_mb": memory.baseline / 2**20,
                  "peak_over_baseline_mb": memory.over / 2**20, "peak_ratio": memory.over / ckpt, "stage_s": stage_s,
                  "one_pass_mb": one_pass / 2**20}
        result.update(greedy_timings(outcome.scored, evaluator, device))
        if device.type == "cuda":
            result["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return result


def working_set(evaluator: Evaluator, state: dict) -> int:
    """Bytes one held-out forward/backward pass needs beyond the baseline (the learned soups' pass,
    the largest of the stage): activations and one gradient, whatever the number of ingredients.
    Measured after a warm-up, whose first-call allocations then belong to the baseline."""
    evaluator.logits(state)
    temperature = torch.zeros((), requires_grad=True)
    heldout_gradient(evaluator, temperature)
    _free_grads(evaluator)
    gc.collect()
    with PeakMemory() as memory:
        heldout_gradient(evaluator, temperature)
        _free_grads(evaluator)
    return memory.over


def _free_grads(evaluator: Evaluator) -> None:
    for p in evaluator.model.parameters():
        p.grad = None


def write_inputs(tmp: Path, preset: dict, count: int) -> tuple[Base, list[Ingredient]]:
    """A random base and `count` ingredients at small random distances from it, as checkpoints."""
    name = preset["model"]
    if name == "tiny":
        (tmp / "wide-tiny.json").write_text(json.dumps(WIDE_TINY))
        name = str(tmp / "wide-tiny.json")
    cfg = TrainConfig.model_validate({"model": {"name": name}, "optim": {"epochs": 1}})
    classes = [f"class{i}" for i in range(preset["classes"])]
    state = build_classifier(cfg.model, len(classes)).state_dict()
    checksum = state_checksum(state)
    meta = {"config": cfg.model_dump(mode="json"), "classes": classes, "base_checksum": checksum, "epoch": 1}
    save_checkpoint(tmp / "base", state, {**meta, "trial_id": "base"})
    ingredients = []
    gen = torch.Generator().manual_seed(0)
    for i in range(count):
        moved = {k: v + 1e-3 * v.std().nan_to_num(1.0) * torch.randn(v.shape, generator=gen)
                 if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
        save_checkpoint(tmp / f"ingredient{i}", moved, {**meta, "trial_id": f"ingredient{i}"})
        ingredients.append(Ingredient(f"ingredient{i}", FINISHED, str(tmp / f"ingredient{i}"), checksum))
        del moved
    base = Base(cfg, classes, tmp / "base" / WEIGHTS, checksum)
    return base, ingredients


def eval_sets(preset: dict, device: torch.device) -> list[EvalSet]:
    size = 224 if preset["model"] != "tiny" else 32
    gen = torch.Generator().manual_seed(1)

    def random_set(name: str, kind: SplitKind, n: int) -> EvalSet:
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
        return EvalSet(name, kind, images.to(device), torch.randint(0, preset["classes"], (n,), generator=gen).to(device))

    return [random_set("heldout", SplitKind.HELDOUT, preset["heldout"]), random_set("test", SplitKind.TEST, preset["other"]),
            random_set("shift/a", SplitKind.SHIFT, preset["other"]), random_set("shift/b", SplitKind.SHIFT, preset["other"])]


def greedy_timings(scored, evaluator: Evaluator, device: torch.device) -> dict:
    """One load, one held-out pass, and a greedy soup's steps, timed in the same process."""
    files = [s.weights for s in scored]
    start = time.perf_counter()
    for f in files[:4]:
        state = read_tensors(f)
    load_s = (time.perf_counter() - start) / min(4, len(files))
    evaluator.heldout_top1(state, soup=False)  # warm-up
    start = time.perf_counter()
    evaluator.heldout_top1(state, soup=False)
    heldout_s = _synced(device, start)
    del state
    ranked = sorted(scored, key=lambda s: s.heldout_top1, reverse=True)
    start = time.perf_counter()
    greedy_select(ranked, SoupContext(evaluator, SoupOptions()))
    greedy_s = _synced(device, start)
    step_s = greedy_s / max(1, len(ranked) - 1)  # step 0 is one load only; every later step, a load and a pass
    return {"load_s": load_s, "heldout_s": heldout_s, "greedy_s": greedy_s, "step_s": step_s,
            "step_ratio": step_s / (load_s + heldout_s)}


def _synced(device: torch.device, start: float) -> float:
    sync(device)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
