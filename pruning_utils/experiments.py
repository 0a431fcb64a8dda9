"""One pruning experiment end to end: attach branches, prune through a schedule, fold, measure."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .branches import attach_branches
from .folding import fold
from .metrics import count_macs, count_parameters
from .pruning import PruneConfig, prune
from .schedules import Stage
from .train import evaluate, metric_name


@torch.inference_mode()
def fold_error(model: nn.Module, folded: nn.Module, loader) -> float:
    """Relative maximum difference between ``folded`` and the alpha = 0 ``model`` on one batch (eval mode)."""
    model.eval()
    folded.eval()
    x, _ = next(iter(loader))
    reference = model(x)
    return ((folded(x) - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


@dataclass
class PruningResult:
    """The branched model at alpha = 0, its folded network, the per-epoch history and summary metrics."""

    model: nn.Module
    folded: nn.Module
    history: list[dict]
    metrics: dict
    checkpoint_dir: Path | None = None


def prune_and_fold(baseline: nn.Module, keep_ratio, loaders, schedule: list[Stage], config: PruneConfig, *,
                   task: str, input_shape: tuple[int, ...], include=None, exclude=None, init: str = "l1",
                   teacher: nn.Module | None = None, checkpoint_dir: str | Path | None = None, resume=True,
                   progress: bool = True) -> PruningResult:
    """Prune a copy of ``baseline`` at ``keep_ratio`` through ``schedule`` and fold it.

    ``loaders``: (train, validation, test). Metrics: validation loss and metric at the end, the
    folded network's test loss and metric, its parameters and MACs, the fold's relative maximum
    difference, epochs and training seconds.
    """
    train_loader, val_loader, test_loader = loaders
    model = attach_branches(copy.deepcopy(baseline), keep_ratio, include=include, exclude=exclude, init=init)
    history = prune(model, train_loader, val_loader, schedule, config, task=task, teacher=teacher,
                    checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)
    folded = fold(model).eval()
    name = metric_name(task)
    test = evaluate(folded, test_loader, task)
    trained = [h for h in history if h.get("phase") != "bn_recalibrated"]
    metrics = {"val_loss": history[-1]["val_loss"], f"val_{name}": history[-1][f"val_{name}"],
               "test_loss": test["loss"], f"test_{name}": test[name],
               "params": count_parameters(folded), "macs": count_macs(folded, input_shape),
               "fold_relative_max_difference": fold_error(model, folded, val_loader),
               "epochs": len(trained), "train_seconds": sum(h["seconds"] for h in trained)}
    return PruningResult(model, folded, history, metrics, Path(checkpoint_dir) if checkpoint_dir else None)
