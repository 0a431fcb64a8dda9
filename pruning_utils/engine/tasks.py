"""The two tasks, as objects that know their loss, their metric and how to score a batch.

:data:`CLASSIFICATION`: cross-entropy, accuracy in %; :data:`RECONSTRUCTION`: the per-element mean squared error with
pixels on the [0, 1] scale, PSNR in dB. Functions that take ``task`` accept a :class:`Task` or its name
(:func:`get_task`), so nothing else branches on a task's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on the [0, 1] pixel scale."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@dataclass(frozen=True)
class Task:
    """What a model is trained for: its loss, its headline metric, and the pruning losses that fit it."""

    name: str
    metric: str  # key of the headline metric in evaluation results ("acc", "psnr")
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    pruning_losses: tuple[str, ...]  # losses of the pruning loop that apply (the first is this task's default)
    higher_is_better: bool = True

    @property
    def default_pruning_loss(self) -> str:
        return self.pruning_losses[0]

    def batch_score(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Summed per-sample score of a batch for the metric (correct predictions), or None where the metric
        derives from the loss alone."""
        return (output.argmax(1) == target).sum() if self.metric == "acc" else None

    def metric_value(self, mean_loss: float, score_sum: float, count: int) -> float:
        """The headline metric of a whole evaluation from its mean loss and summed batch scores."""
        return 100.0 * score_sum / max(count, 1) if self.metric == "acc" else psnr(mean_loss)

    def supervised_loss(self):
        """``loss_fn(model, x, y) -> (loss, output)`` for the task's own loss."""
        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
            output = model(x)
            return self.loss(output, y), output
        return loss_fn


CLASSIFICATION = Task("classification", "acc", F.cross_entropy, ("kd", "ce", "logits_mse", "ce+kd"))
RECONSTRUCTION = Task("reconstruction", "psnr", F.mse_loss, ("reconstruction",))
TASKS = {task.name: task for task in (CLASSIFICATION, RECONSTRUCTION)}


def get_task(task: str | Task) -> Task:
    """The :class:`Task` named ``task`` (or ``task`` itself), or a ValueError listing the known ones."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]
    except (KeyError, TypeError):
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}") from None
