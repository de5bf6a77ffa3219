"""Fine-tuning methods as small task objects on the one training loop (`method.name` picks one).

A task defines the loss, the trainable parameters and the model to save; see tasks/base.py.
"""
from __future__ import annotations

from trainers.tasks.base import Start, Task
from trainers.tasks.carft import Carft
from trainers.tasks.classify import FineTune, LinearProbe, fit_linear_probe
from trainers.tasks.flyp import Flyp

TASKS: dict[str, type[Task]] = {"ft": FineTune, "flyp": Flyp, "carft": Carft, "lp": LinearProbe}


def make_task(start: Start) -> Task:
    name = start.cfg.method.name
    if name not in TASKS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(TASKS)}")
    return TASKS[name](start)


__all__ = ["TASKS", "Start", "Task", "fit_linear_probe", "make_task"]
