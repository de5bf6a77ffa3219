"""Input pipeline benchmark: does our store + loader keep the accelerator busy?

In one run: generate realistic JPEGs (about 500×375, about 80 KB, an ImageFolder tree), build a store from them
(`trainers.data.build`), then measure, with one model (random weights, bf16 autocast on GPUs):

- training images/s of the same step (AdamW, soft-target cross-entropy, mixup/cutmix) fed by
  (a) tensors already on the device: the ceiling, (b) our loader (shards -> batched decode -> crop, flip,
  RandAugment on the device), (c) PIL + torch DataLoader(N workers) on the source JPEGs;
- evaluation images/s: (a) model only on tensors on the device, (b) our evaluation cache (decode and
  centre-crop once, then passes at model speed; the first pass is reported apart), (c) PIL + DataLoader;
- CPU cores busy during each training run: CPU seconds of this process and its children / wall seconds.

    python bench/input_pipeline.py                                   # H100 settings: 10,000 images, ViT-B-32
    python bench/input_pipeline.py --images 512 --model soupsweep-tiny-vit --size 32 --store-size 64 \
        --batch 32 --warmup 3 --steps 10 --eval-images 512 --workers 2 --threads 1   # a CPU smoke run
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import cpu_seconds, sync  # noqa: E402
from trainers.augment import mix, soft_targets  # noqa: E402
from trainers.config import AugConfig, ModelConfig  # noqa: E402
from trainers.data.build import BuildOptions, build_store  # noqa: E402
from trainers.data.cache import load_eval_set  # noqa: E402
from trainers.data.loader import TrainLoader  # noqa: E402
from trainers.evaluate import autocast_for  # noqa: E402
from trainers.model import build_classifier  # noqa: E402

CLASSES = 10


def synthetic_jpeg(seed: int, width: int = 500, height: int = 375) -> bytes:
    """A photo-like JPEG (smooth colour field, texture, noise, a few shapes) of about 80 KB at 500×375."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    mid = Image.fromarray((rng.random((94, 125, 3)) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(low, np.float32) * 0.7 + np.asarray(mid, np.float32) * 0.3 + rng.normal(0, 14, (height, width, 3))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 50)), int(rng.integers(0, height - 50))
        box = (x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150)))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_images(root: Path, count: int, threads: int) -> list[Path]:
    paths = [root / f"class{i % CLASSES}" / f"img{i:06d}.jpg" for i in range(count)]
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda ip: ip[1].write_bytes(synthetic_jpeg(ip[0])), enumerate(paths)))
    return paths


class Trainer:
    """One training step, the same for every input pipeline."""

    def __init__(self, model, device: torch.device, aug: AugConfig):
        self.model, self.device, self.aug = model.to(device).train(), device, aug
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        self.gen = torch.Generator().manual_seed(0)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        images, targets = mix(images, soft_targets(labels, CLASSES, 0.1), self.aug, self.gen)
        with autocast_for(self.device, "auto"):
            logits = self.model(images)
        loss = torch.sum(-targets * F.log_softmax(logits.float(), -1), -1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def timed_training(trainer: Trainer, batches, warmup: int, steps: int) -> tuple[float, float]:
    """(images/s, CPU cores busy) over `steps` steps after `warmup` steps."""
    for _ in range(warmup):
        trainer.step(*next(batches))
    sync(trainer.device)
    cpu, start, count = cpu_seconds(), time.perf_counter(), 0
    for _ in range(steps):
        images, labels = next(batches)
        trainer.step(images, labels)
        count += len(labels)
    sync(trainer.device)
    wall = time.perf_counter() - start
    busy = (cpu_seconds() - cpu) / wall
    batches.close()  # ends a DataLoader's workers and our loader's thread
    return count / wall, busy


def device_batches(size: int, batch: int, device: torch.device):
    """The ceiling: uint8 images already on the device, made float as the model takes them."""
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    while True:
        yield images.float().div_(255), labels


def loader_batches(loader: TrainLoader):
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def pil_loader(root: Path, size: int, batch: int, workers: int, train: bool, aug: AugConfig):
    from torchvision import datasets, transforms as T

    steps = ([T.RandomResizedCrop(size, scale=(aug.min_scale, 1.0)), T.RandomHorizontalFlip()]
             + ([T.RandAugment(aug.randaug_n, aug.randaug_m)] if aug.randaug_n else []) if train
             else [T.Resize(size), T.CenterCrop(size)])
    dataset = datasets.ImageFolder(str(root), T.Compose([*steps, T.ToTensor()]))
    return torch.utils.data.DataLoader(dataset, batch, shuffle=train, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(),
                                       drop_last=train, persistent_workers=False)


def pil_batches(loader, device: torch.device):
    while True:
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


@torch.no_grad()
def timed_eval(model, device: torch.device, batches, count: int) -> float:
    """Images/s of evaluating `count` images from `batches` (uint8 or float, on any device)."""
    model.eval()
    sync(device)
    start, seen = time.perf_counter(), 0
    with autocast_for(device, "auto"):
        for images, _ in batches:
            images = images.to(device, non_blocking=True)
            model(images.float().div_(255) if images.dtype == torch.uint8 else images)
            seen += len(images)
            if seen >= count:
                break
    sync(device)
    return seen / (time.perf_counter() - start)


def measure_training(args, model, device, store: Path, src: Path, aug: AugConfig) -> dict[str, tuple[float, float]]:
    trainer = Trainer(model, device, aug)
    timed_training(trainer, device_batches(args.size, args.batch, device), 3 * args.warmup, 1)  # first-call costs
    runs = {"tensors on device (ceiling)": lambda: device_batches(args.size, args.batch, device),
            "ours (store + loader)": lambda: loader_batches(
                TrainLoader(str(store / "train"), aug, args.size, args.batch, 0, device)),
            f"PIL + DataLoader({args.workers} workers)": lambda: pil_batches(
                pil_loader(src, args.size, args.batch, args.workers, True, aug), device)}
    return {name: timed_training(trainer, make(), args.warmup, args.steps) for name, make in runs.items()}


def cached_batches(images: torch.Tensor, batch: int):
    """Passes over device-resident images, again and again."""
    while True:
        yield from ((images[i:i + batch], None) for i in range(0, len(images), batch))


def measure_eval(args, model, device, store: Path, src: Path) -> dict[str, float]:
    """Model only and a pass over our cache see the same number of images of the same shape."""
    sync(device)
    start = time.perf_counter()
    cached = load_eval_set(str(store / "train"), args.size, device)
    sync(device)
    build = len(cached) / (time.perf_counter() - start)
    count = min(args.eval_images, len(cached))
    ceiling = torch.randint(0, 256, (count, 3, args.size, args.size), dtype=torch.uint8, device=device)
    timed_eval(model, device, cached_batches(ceiling, args.batch), 4 * args.batch)  # first-call costs
    results = {"model only (tensors on device)": timed_eval(model, device, cached_batches(ceiling, args.batch), count),
               "ours: a pass over the cache": timed_eval(model, device, cached_batches(cached.images[:count], args.batch),
                                                         count),
               "ours: decode + centre-crop into the cache": build}
    loader = pil_loader(src, args.size, args.batch, args.workers, False, AugConfig())
    results[f"PIL + DataLoader({args.workers} workers)"] = timed_eval(model, device, loader, count)
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000, help="JPEGs to generate (default 10000)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random weights")
    parser.add_argument("--size", type=int, default=224, help="model input side (224 for ViT-B-32)")
    parser.add_argument("--store-size", type=int, default=256, help="short side kept in the store")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per pipeline")
    parser.add_argument("--eval-images", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=16, help="DataLoader workers of the PIL baseline")
    parser.add_argument("--randaug", type=int, default=2, help="RandAugment ops per image (magnitude 9)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice); on a "
                        "small shared CPU 1 avoids threads spinning at barriers while others hold the cores")
    parser.add_argument("--dir", help="working directory (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.dir or tempfile.mkdtemp(prefix="soupsweep-bench-"))
    src, store = work / "jpegs", work / "store"
    start = time.perf_counter()
    paths = write_images(src, args.images, os.cpu_count() or 1)
    mean_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1e3
    print(f"generated {len(paths)} JPEGs of 500x375, {mean_kb:.0f} KB on average, in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    build_store(str(src), str(store), BuildOptions(size=args.store_size, carve=0.01), overwrite=True)  # its own store
    print(f"built the store ({args.store_size} px short side) in {time.perf_counter() - start:.0f} s")
    aug = AugConfig(min_scale=0.35, hflip=True, randaug_n=args.randaug, randaug_m=9, mixup_alpha=0.2,
                    cutmix_alpha=1.0)
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(name=args.model), CLASSES).to(device)
    print(f"\n{args.model}, device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"batch {args.batch}, {args.size} px, {os.cpu_count()} CPU cores; augmentation: random resized crop "
          f"(0.35-1), flip, RandAugment({args.randaug}, 9), mixup 0.2 / cutmix 1.0")
    train = measure_training(args, model, device, store, src, aug)
    ceiling = next(iter(train.values()))[0]
    print(f"\ntraining {'images/s':>10} {'x ceiling':>10} {'CPU cores busy':>15}")
    for name, (rate, busy) in train.items():
        print(f"  {name:<34} {rate:>8.1f} {rate / ceiling:>10.2f} {busy:>15.1f}")
    evaluation = measure_eval(args, model, device, store, src)
    ceiling = next(iter(evaluation.values()))
    print(f"\nevaluation {'images/s':>8} {'x model only':>13}")
    for name, rate in evaluation.items():
        print(f"  {name:<42} {rate:>8.1f} {rate / ceiling:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
