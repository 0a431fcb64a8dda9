"""Notebook 05's folding demonstrations: a pruned model (loaded or freshly pruned), its widths before and after
the fold, and what the fold changed (parameters, MACs, the outputs' relative maximum difference)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..config import resolve_path
from ..engine.sizes import count_macs, count_parameters
from ..method import schedules
from ..method.budget import layer_widths
from ..method.pipeline import PruningResult, fold_error, load_pruned, prune_and_fold
from ..method.recipe import Recipe


def pruned(baseline: nn.Module, keep_ratio, loaders, *, pruned_dir: str | Path | None = None, epochs: int, task: str,
           input_shape: tuple[int, ...], recipe: Recipe | None = None, include=None,
           progress: bool = True) -> PruningResult:
    """The run an earlier notebook wrote to ``pruned_dir`` (its stage checkpoints; ``keep_ratio`` and ``include``
    must be that run's), or, without it, a fresh short prune of ``baseline``: alpha ramps linearly over half of
    ``epochs``, then the rest at alpha 0."""
    if pruned_dir:
        return load_pruned(baseline, keep_ratio, resolve_path(pruned_dir), loaders, task=task, input_shape=input_shape,
                           include=include)
    ramp = schedules.ramp("linear", max(1, epochs // 2), max(1, epochs - epochs // 2))
    return prune_and_fold(baseline, keep_ratio, loaders, recipe=recipe, schedule=ramp, task=task,
                          input_shape=input_shape, include=include, progress=progress)


def width_table(before: nn.Module, after: nn.Module) -> list[dict]:
    """One row per layer: its output channels ``before`` and ``after`` the fold."""
    return [{"layer": name, "before": b, "after": a}
            for (name, b), (_, a) in zip(layer_widths(before), layer_widths(after))]


def fold_summary(baseline: nn.Module, result: PruningResult, folded: nn.Module, loader,
                 input_shape: tuple[int, ...]) -> dict:
    """Parameters and MACs of ``baseline`` and of ``folded`` (the fold of ``result.model``), and the relative
    maximum difference of their outputs on one batch of ``loader``."""
    return {"params": count_parameters(baseline), "params_folded": count_parameters(folded),
            "macs": count_macs(baseline, input_shape), "macs_folded": count_macs(folded, input_shape),
            "max_relative_difference": fold_error(result.model, folded, loader)}
