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
from .branches import attach_branches, set_alpha
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
                   progress: bool = True, speed: Speed = PLAIN, loss_fn=None) -> PruningResult:
    """Prune a copy of ``baseline`` at ``keep_ratio`` with ``recipe`` (default: the best one measured) and fold it.

    The alpha schedule is the recipe's over ``epochs``, or ``schedule`` when given. ``loaders``: (train, validation,
    test). ``include``, ``exclude``, ``shared_selection``: which units get branches (see
    :func:`~pruning_utils.attach_branches`). The distillation teacher is a frozen copy of ``teacher`` (default: the
    baseline). ``speed``: see :class:`~pruning_utils.engine.speed.Speed`; ``loss_fn``: in place of the recipe's
    loss (see :func:`~pruning_utils.method.pruning.prune`). Metrics: see :func:`summarize`.
    """
    recipe = (recipe or Recipe()).for_task(task)
    train_loader, val_loader, _ = loaders
    model = attach_branches(copy.deepcopy(baseline), keep_ratio, include=include, exclude=exclude, init=recipe.init,
                            shared_selection=shared_selection, branch_kind=recipe.branch_kind)
    history = prune(model, train_loader, val_loader, schedule, recipe, epochs=epochs, task=task,
                    teacher=teacher if teacher is not None else baseline, checkpoint_dir=checkpoint_dir,
                    resume=resume, progress=progress, speed=speed, loss_fn=loss_fn)
    folded = fold(model).eval()
    return PruningResult(model, folded, history, summarize(model, folded, history, loaders, task, input_shape),
                         Path(checkpoint_dir) if checkpoint_dir else None)


def load_pruned(baseline: nn.Module, keep_ratio, checkpoint_dir: str | Path, loaders, *, task: str | Task,
                input_shape: tuple[int, ...], include=None, exclude=None, shared_selection: bool = True,
                init: str = Recipe().init, branch_kind: str = Recipe().branch_kind) -> PruningResult:
    """The result of an earlier pruning run, from the last stage checkpoint it wrote to ``checkpoint_dir``.

    ``keep_ratio``, ``include``, ``exclude``, ``shared_selection`` and ``branch_kind`` must be those of the run (a
    mismatch is reported with the layers that do not fit); the run must have reached alpha = 0 for the fold.
    """
    found = stage_checkpoints(checkpoint_dir)
    if not found:
        raise FileNotFoundError(f"no stage checkpoints (stage_NN.pt) in {checkpoint_dir}: run the pruning notebook "
                                f"first, or leave the folder parameter at None to prune here")
    shell = attach_branches(copy.deepcopy(baseline), keep_ratio, include=include, exclude=exclude, init=init,
                            shared_selection=shared_selection, branch_kind=branch_kind)
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


@torch.inference_mode()
def outputs_at_alpha(model: nn.Module, inputs: torch.Tensor, alpha: float) -> torch.Tensor:
    """The branched ``model``'s outputs for ``inputs`` at ``alpha`` (eval mode; alpha is left at that value)."""
    set_alpha(model, alpha)
    model.eval()
    return model(inputs.to(next(model.parameters()).device)).cpu()


@torch.inference_mode()
def stage_outputs(result: PruningResult, inputs: torch.Tensor, intermediate: int = 3) -> dict[str, torch.Tensor]:
    """Outputs for ``inputs`` along a pruning run, for a figure: up to ``intermediate`` stage checkpoints with
    0 < alpha < 1 (at their alpha, spread over the run), the model at alpha 0, and the folded network."""
    stages = []
    if result.checkpoint_dir is not None:
        for index in stage_checkpoints(result.checkpoint_dir):
            alpha = next(h["alpha"] for h in reversed(result.history) if h["stage"] == index)
            if 0 < alpha < 1:
                stages.append((alpha, index))
    spread = {round(i * (len(stages) - 1) / max(intermediate - 1, 1)) for i in range(intermediate)}
    keep = sorted(spread) if stages else []
    rows = {}
    for i in keep:
        alpha, index = stages[i]
        rows[f"alpha {alpha:.2f}"] = outputs_at_alpha(load_stage(result.model, result.checkpoint_dir, index), inputs,
                                                      alpha)
    rows["alpha 0 (pruned)"] = outputs_at_alpha(result.model, inputs, 0.0)
    rows["folded"] = result.folded.eval()(inputs.to(next(result.folded.parameters()).device)).cpu()
    return rows
