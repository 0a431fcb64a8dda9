"""The two tasks: classification (cross-entropy, accuracy) and reconstruction (MSE, PSNR)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("classification", "reconstruction")


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def metric_name(task: str) -> str:
    """The headline metric: accuracy (%) for classification, PSNR (dB, pixels in [0, 1]) for reconstruction."""
    check_task(task)
    return "acc" if task == "classification" else "psnr"


def task_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, or the per-element mean squared error with pixels on the [0, 1] scale."""
    return F.cross_entropy(output, target) if task == "classification" else F.mse_loss(output, target)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on the [0, 1] pixel scale."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def supervised_loss(task: str):
    """``loss_fn(model, x, y) -> (loss, output)`` for the task's own loss."""
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        output = model(x)
        return task_loss(task, output, y), output
    return loss_fn
