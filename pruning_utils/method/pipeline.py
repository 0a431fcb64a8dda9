"""One pruning experiment end to end: attach branches, prune through a schedule, fold, measure."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..engine.checkpoints import load_checkpoint
from ..engine.sizes import count_macs, count_parameters
from ..engine.speed import PLAIN, Speed
from ..engine.tasks import Task, get_task
from ..engine.train import evaluate
from .branches import attach_branches
from .folding import fold
from .pruning import load_stage, prune, stage_checkpoints
from .recipe import Recipe
from .schedules import Stage


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


def prune_and_fold(baseline: nn.Module, keep_ratio, loaders, *, recipe: Recipe | None = None,
                   epochs: int | None = None, schedule: list[Stage] | None = None, task: str | Task,
                   input_shape: tuple[int, ...], include=None, exclude=None, shared_selection: bool = True,
                   teacher: nn.Module | None = None, checkpoint_dir: str | Path | None = None, resume=True,
                   progress: bool = True, speed: Speed = PLAIN) -> PruningResult:
    """Prune a copy of ``baseline`` at ``keep_ratio`` with ``recipe`` (default: the best one measured) and fold it.

    The alpha schedule is the recipe's over ``epochs``, or ``schedule`` when given. ``loaders``: (train, validation,
    test). ``include``, ``exclude``, ``shared_selection``: which units get branches (see
    :func:`~pruning_utils.attach_branches`). The distillation teacher is a frozen copy of ``teacher`` (default: the
    baseline). ``speed``: see
    :class:`~pruning_utils.engine.speed.Speed`. Metrics: see :func:`summarize`.
    """
    recipe = (recipe or Recipe()).for_task(task)
    train_loader, val_loader, _ = loaders
    model = attach_branches(copy.deepcopy(baseline), keep_ratio, include=include, exclude=exclude, init=recipe.init,
                            shared_selection=shared_selection)
    history = prune(model, train_loader, val_loader, schedule, recipe, epochs=epochs, task=task,
                    teacher=teacher if teacher is not None else baseline, checkpoint_dir=checkpoint_dir,
                    resume=resume, progress=progress, speed=speed)
    folded = fold(model).eval()
    return PruningResult(model, folded, history, summarize(model, folded, history, loaders, task, input_shape),
                         Path(checkpoint_dir) if checkpoint_dir else None)


def load_pruned(baseline: nn.Module, keep_ratio, checkpoint_dir: str | Path, loaders, *, task: str | Task,
                input_shape: tuple[int, ...], include=None, exclude=None, shared_selection: bool = True,
                init: str = Recipe().init) -> PruningResult:
    """The result of an earlier pruning run, from the last stage checkpoint it wrote to ``checkpoint_dir``.

    ``keep_ratio``, ``include``, ``exclude`` and ``shared_selection`` must be those of the run (a mismatch is reported with the layers
    that do not fit); the run must have reached alpha = 0 for the fold.
    """
    found = stage_checkpoints(checkpoint_dir)
    if not found:
        raise FileNotFoundError(f"no stage checkpoints (stage_NN.pt) in {checkpoint_dir}: run the pruning notebook "
                                f"first, or leave the folder parameter at None to prune here")
    shell = attach_branches(copy.deepcopy(baseline), keep_ratio, include=include, exclude=exclude, init=init,
                            shared_selection=shared_selection)
    model = load_stage(shell, checkpoint_dir, max(found))
    history = load_checkpoint(found[max(found)])["history"]
    folded = fold(model).eval()
    return PruningResult(model, folded, history, summarize(model, folded, history, loaders, task, input_shape),
                         Path(checkpoint_dir))


def summarize(model: nn.Module, folded: nn.Module, history: list[dict], loaders, task: str | Task,
              input_shape: tuple[int, ...]) -> dict:
    """Validation loss and metric of the alpha = 0 ``model``, the ``folded`` network's test loss and metric, its
    parameters and MACs, the fold's relative maximum difference, epochs and training seconds."""
    _, val_loader, test_loader = loaders
    name = get_task(task).metric
    val, test = evaluate(model, val_loader, task), evaluate(folded, test_loader, task)
    trained = [h for h in history if h.get("phase") != "bn_recalibrated"]
    return {"val_loss": val["loss"], f"val_{name}": val[name], "test_loss": test["loss"], f"test_{name}": test[name],
            "params": count_parameters(folded), "macs": count_macs(folded, input_shape),
            "fold_relative_max_difference": fold_error(model, folded, val_loader),
            "epochs": len(trained), "train_seconds": sum(h["seconds"] for h in trained)}
