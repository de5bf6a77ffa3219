"""The training path on CUDA: a bf16-autocast step with fused AdamW learns, a checkpoint written on the GPU
loads on a CPU with the same logits, torch.compile with inductor compiles the step once, and NCCL DDP keeps
every GPU's weights equal."""
from __future__ import annotations

import shutil
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch._dynamo.utils import counters

from tests.gpu import NEEDS_CUDA
from tests.trainers.test_tasks import tree
from trainers.augment import soft_targets
from trainers.base import write_base_checkpoint
from trainers.checkpoint import load_checkpoint, load_train_state
from trainers.config import TrainConfig
from trainers.data.cache import load_eval_set
from trainers.evaluate import autocast_for, predict
from trainers.loop import RunContext, fit
from trainers.model import build_classifier
from trainers.step import Stepper, compile_for_training
from trainers.tasks import Start, make_task

pytestmark = [pytest.mark.gpu, NEEDS_CUDA]
CPU = torch.device("cpu")


def gpu_stepper(cfg: TrainConfig, device: torch.device, compile_setting=False) -> Stepper:
    """The loop's Stepper on the `ft` task's module, on `device`, as trainers.loop.fit builds it."""
    torch.manual_seed(0)
    task = make_task(Start(cfg, build_classifier(cfg.model, 4), ["a", "b", "c", "d"], lambda: {}))
    task.module.to(device)
    task.train_mode(task.module)
    runner = compile_for_training(task.module, compile_setting)
    return Stepper(task.module, runner, cfg.optim, cfg.precision, device, total_batches=100)


def train_batch(path: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cached = load_eval_set(path, 32, device)
    return cached.images[:64].float().div_(255), soft_targets(cached.labels[:64], 4, 0.0)


def test_a_bf16_autocast_step_with_fused_adamw_learns(cuda, demo_data, pretrained_file):
    cfg = TrainConfig.model_validate({"model": {"pretrained": pretrained_file},
                                      "optim": {"lr": 1e-3, "warmup_steps": 0}})
    stepper = gpu_stepper(cfg, cuda)
    assert stepper.optimizer.defaults["fused"] is True
    with autocast_for(cuda, cfg.precision):  # precision "auto": bf16 where the GPU has it
        assert torch.ones(2, 2, device=cuda).matmul(torch.ones(2, 2, device=cuda)).dtype == torch.bfloat16
    images, targets = train_batch(demo_data["train"], cuda)
    losses = torch.stack([stepper.step(images, targets) for _ in range(30)]).cpu()
    assert losses.isfinite().all() and losses[-5:].mean() < 0.8 * losses[:5].mean(), losses
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in stepper.module.parameters())


def test_a_checkpoint_written_on_the_gpu_loads_on_the_cpu_with_the_same_logits(exact_fp32, demo_data,
                                                                               pretrained_file, tmp_path):
    cuda = exact_fp32
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, name="ft")).with_overrides(
        {"optim.epochs": 1})
    write_base_checkpoint(cfg, tmp_path / "base", cuda)  # the zero-shot head computed on the GPU too
    result = fit(cfg, RunContext(base_dir=str(tmp_path / "base"), device=cuda, trial_id="gpu", report=lambda m, d: (
        d and shutil.copytree(d, tmp_path / "ckpt", dirs_exist_ok=True))))
    assert next(result.model.parameters()).device.type == "cuda"
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in checkpoint.state_dict.values())
    assert load_train_state(tmp_path / "ckpt") is not None  # the fused optimizer's state, read weights-only
    on_cpu = build_classifier(cfg.model, 4)
    on_cpu.load_state_dict(checkpoint.state_dict)  # strict: the same keys as eager CPU training saves
    images = load_eval_set(demo_data["val"], on_cpu.image_size, CPU).images  # the same pixels on both
    gpu_logits = predict(result.model, images.to(cuda), cuda, "fp32").cpu()
    cpu_logits = predict(on_cpu, images, CPU, "fp32")
    assert torch.allclose(gpu_logits, cpu_logits, atol=1e-3, rtol=1e-3), (gpu_logits - cpu_logits).abs().max()


def test_torch_compile_with_inductor_compiles_the_step_once(cuda, demo_data, pretrained_file):
    cfg = TrainConfig.model_validate({"model": {"pretrained": pretrained_file, "compile": True},
                                      "optim": {"lr": 1e-3, "warmup_steps": 0}})
    torch._dynamo.reset()  # as in a fresh process: what earlier tests compiled does not count
    counters.clear()
    stepper = gpu_stepper(cfg, cuda, cfg.model.compile)
    images, targets = train_batch(demo_data["train"], cuda)
    with torch._dynamo.config.patch(error_on_recompile=True):
        losses = torch.stack([stepper.step(images, targets) for _ in range(12)]).cpu()
    seen = {name: dict(values) for name, values in counters.items()}
    assert seen.get("frames", {}).get("ok") == 1 and seen["stats"]["unique_graphs"] == 1, seen
    assert not seen.get("graph_break") and seen.get("inductor"), seen
    assert losses.isfinite().all() and losses[-3:].mean() < losses[:3].mean(), losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_rank(rank: int, world: int, port: int, backend: str, cfg: TrainConfig, base_dir: str, out: str) -> None:
    """One rank of a DDP run (a spawned process): the loop's own fit, each rank on its own GPU with NCCL
    (with gloo: on the CPU, which is how this helper itself is checked without GPUs)."""
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        device = torch.device("cuda", rank) if backend == "nccl" else CPU
        if device.type == "cuda":
            torch.cuda.set_device(device)
        result = fit(cfg, RunContext(base_dir=base_dir, device=device, trial_id="ddp"))
        state = {k: v.cpu() for k, v in result.model.state_dict().items()}
        torch.save({"state": state, "metrics": result.metrics}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_nccl_ddp_trains_every_gpu_to_the_same_weights(cuda, demo_data, pretrained_file, tmp_path):
    world = torch.cuda.device_count()
    if world < 2:
        pytest.skip(f"NCCL DDP needs at least 2 GPUs; this machine has {world}")
    assert dist.is_nccl_available()
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, name="ft")).with_overrides(
        {"optim.epochs": 1, "optim.batch_size": 16})
    write_base_checkpoint(cfg, tmp_path / "base", cuda)
    mp.spawn(ddp_rank, args=(world, free_port(), "nccl", cfg, str(tmp_path / "base"), str(tmp_path)), nprocs=world)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert all(r["metrics"] == ranks[0]["metrics"] for r in ranks)  # all-reduced: every rank reports the same
    for key, value in ranks[0]["state"].items():  # gradients averaged over ranks: the weights stay equal
        assert all(torch.allclose(r["state"][key], value, atol=1e-6) for r in ranks[1:]), key
