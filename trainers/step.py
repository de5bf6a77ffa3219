"""The optimisation step of the one training loop: autocast forward, backward, gradient accumulation,
clipping, AdamW (fused on GPU), the learning-rate schedule and an optional EMA of the weights.

Nothing here reads a value back to the host: the loss comes back as a device tensor that the loop
sums, so a step never waits for the GPU (`bench/train_step.py` compares it with a bare loop).
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn

from trainers.config import OptimConfig
from trainers.evaluate import autocast_for


def compile_for_training(module: nn.Module, setting: bool | str) -> nn.Module:
    """What the step runs: `module` compiled as `model.compile` asks (true: inductor), or `module` itself.
    The compiled module shares the parameters, so the optimizer, the EMA and checkpoints keep using the
    plain module (its state-dict keys have no `_orig_mod.` prefix)."""
    if not setting:
        return module
    return torch.compile(module, backend="inductor" if setting is True else setting)


def make_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases, norms, the logit scale and
    other parameters with fewer than 2 dimensions."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": optim.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.lr, fused=device.type == "cuda")


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """EMA of the trainable weights, kept in a frozen copy of the module (so tasks can build the
    evaluated model from it exactly as from the live module). Updated with one foreach lerp per step."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        live = dict(module.named_parameters())
        names = [n for n, p in live.items() if p.requires_grad]
        averaged = dict(self.module.named_parameters())
        self.sources = [live[n] for n in names]
        self.targets = [averaged[n] for n in names]
        self.live_buffers = list(module.buffers())
        self.buffers = list(self.module.buffers())

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.targets, [p.detach() for p in self.sources], 1.0 - self.decay)

    @torch.no_grad()
    def current(self) -> nn.Module:
        """The averaged module, with the live buffers (BatchNorm statistics follow the live model)."""
        for target, source in zip(self.buffers, self.live_buffers):
            target.copy_(source)
        return self.module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{i}": t for i, t in enumerate(self.targets)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, target in enumerate(self.targets):
            target.copy_(state[f"{i}"])


class Stepper:
    """Runs training steps on `train_module` (forward(images, targets) -> scalar loss), through its DDP
    wrapper `runner` when there is one. A step is one batch; the optimizer steps every
    `accumulation_steps` batches, skipping DDP's gradient all-reduce on the others."""

    def __init__(self, train_module: nn.Module, runner: nn.Module, optim: OptimConfig, precision: str,
                 device: torch.device, total_batches: int):
        self.module, self.runner, self.optim = train_module, runner, optim
        self.device, self.precision = device, precision
        self.optimizer = make_optimizer(train_module, optim, device)
        self.scheduler = cosine_with_warmup(self.optimizer, optim.warmup_steps,
                                            max(1, total_batches // optim.accumulation_steps))
        self.average = WeightAverage(train_module, optim.ema_decay) if optim.ema_decay else None
        self.trainable = [p for p in train_module.parameters() if p.requires_grad]
        self.batches = 0  # a host counter: which batches end an accumulation window

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One batch; returns its loss as a detached device tensor (no host sync)."""
        accumulate = self.optim.accumulation_steps
        self.batches += 1
        last = self.batches % accumulate == 0
        no_sync = getattr(self.runner, "no_sync", None)
        with no_sync() if (no_sync and not last) else contextlib.nullcontext():
            with autocast_for(self.device, self.precision):
                loss = self.runner(images, targets)
            (loss / accumulate if accumulate > 1 else loss).backward()
        if last:
            if self.optim.grad_clip:
                nn.utils.clip_grad_norm_(self.trainable, self.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.average is not None:
                self.average.update()
        return loss.detach()

    def evaluated_module(self) -> nn.Module:
        """What is evaluated and saved: the EMA when on, else the live module."""
        return self.average.current() if self.average is not None else self.module

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "batches": torch.tensor(self.batches)}
        if self.average is not None:
            state["ema"] = self.average.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches = int(state.get("batches", 0))
        if self.average is not None and "ema" in state:
            self.average.load_state_dict(state["ema"])
