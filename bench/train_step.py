"""Steps/s of the training loop's step (trainers.step.Stepper on a task's module) against a bare loop.

Both train the same architecture (random weights) on the same batch, already on the device, in one
process: the bare loop is what a user would write (autocast forward, cross-entropy, backward, fused
AdamW step); ours adds what the recipe adds (the task module, soft targets, gradient clipping, the
learning-rate schedule, optionally EMA and accumulation). Rounds alternate between the two so that
a busy machine slows both alike; the medians are compared.

    python bench/train_step.py                                   # CPU, the tiny model
    python bench/train_step.py --model ViT-B-32 --batch 256      # a GPU (bf16 autocast, fused AdamW)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import sync  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.evaluate import autocast_for  # noqa: E402
from trainers.model import build_classifier  # noqa: E402
from trainers.step import Stepper, compile_for_training  # noqa: E402
from trainers.tasks import Start, make_task  # noqa: E402


def timed(step, steps: int, device: torch.device) -> float:
    """Steps per second over `steps` steps (one sync at the end, as a training loop has)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - start)


def ours(cfg: TrainConfig, classes: int, device: torch.device, images, targets):
    classifier = build_classifier(cfg.model, classes)
    task = make_task(Start(cfg, classifier, [str(i) for i in range(classes)], lambda: {}))
    task.module.to(device)
    runner = compile_for_training(task.module, cfg.model.compile)
    stepper = Stepper(task.module, runner, cfg.optim, cfg.precision, device, total_batches=10**6)
    task.train_mode(task.module)
    return lambda: stepper.step(images, targets)


def bare(cfg: TrainConfig, classes: int, device: torch.device, images, labels):
    model = build_classifier(cfg.model, classes).to(device).train()
    runner = compile_for_training(model, cfg.model.compile)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                  fused=device.type == "cuda")

    def step():
        with autocast_for(device, cfg.precision):
            logits = runner(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="soupsweep-tiny-vit")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                        help="torch.compile both loops (model.compile: inductor when no backend is named)")
    parser.add_argument("--ema", type=float, default=None, help="also keep an EMA with this decay (ours only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = TrainConfig.model_validate({"model": {"name": args.model, "compile": args.compile},
                                      "optim": {"ema_decay": args.ema, "warmup_steps": 0}})
    torch.manual_seed(0)
    size = build_classifier(cfg.model, 2).image_size
    images = torch.rand(args.batch, 3, size, size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    targets = F.one_hot(labels, args.classes).float()
    steps = {"ours": ours(cfg, args.classes, device, images, targets), "bare": bare(cfg, args.classes, device, images, labels)}
    for step in steps.values():
        timed(step, args.warmup, device)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(timed(step, args.steps, device))
    median = {name: statistics.median(values) for name, values in rates.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model}, batch {args.batch}, {args.classes} classes, {name}, precision {cfg.precision}, "
          f"compile {args.compile}, ema {args.ema}, torch {torch.__version__}")
    print(f"{'loop':<6}{'steps/s (median of ' + str(args.rounds) + ' rounds)':>34}{'images/s':>12}")
    for name in steps:
        print(f"{name:<6}{median[name]:>34.2f}{median[name] * args.batch:>12.0f}")
    print(f"ratio ours/bare: {median['ours'] / median['bare']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
