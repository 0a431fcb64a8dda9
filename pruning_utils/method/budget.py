"""Budgets: the keep ratio whose folded network keeps a given share of the parameters, uniform or allocated per
unit by one global criterion."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..engine.sizes import count_macs, count_parameters
from .branches import LINEAR_TYPES, attach_branches, filter_l1_norms, kept_channels, out_channels, set_alpha
from .folding import fold
from .graph import branch_plan


def layer_widths(model: nn.Module) -> list[tuple[str, int]]:
    """(name, output channels) of every Conv2d, ConvTranspose2d and Linear layer, in registration order."""
    return [(name, out_channels(m)) for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)]


def pruned_and_folded(model: nn.Module, keep_ratio=None, **attach_options) -> nn.Module:
    """The folded network of a copy of ``model`` pruned at ``keep_ratio`` or with ``widths=`` (see
    :func:`~pruning_utils.attach_branches`; branch weights as initialised)."""
    pruned = attach_branches(copy.deepcopy(model), keep_ratio, **attach_options)
    set_alpha(pruned, 0.0)
    return fold(pruned)


def folded_size(model: nn.Module, keep_ratio: float, input_shape: tuple[int, ...], **attach_options) -> dict:
    """Parameters and MACs of ``model`` before and after pruning at ``keep_ratio`` and folding.

    Works on a copy; ``model`` is not changed. ``attach_options`` go to :func:`attach_branches`.
    """
    small = pruned_and_folded(model, keep_ratio, **attach_options)
    before, after = count_parameters(model), count_parameters(small)
    macs_before, macs_after = count_macs(model, input_shape), count_macs(small, input_shape)
    return {"keep_ratio": keep_ratio, "params": before, "params_folded": after, "param_fraction": after / before,
            "macs": macs_before, "macs_folded": macs_after, "mac_fraction": macs_after / macs_before}


def keep_ratio_for_fraction(model: nn.Module, fraction: float, tolerance: float = 0.005, **attach_options) -> float:
    """The uniform keep ratio whose folded model keeps about ``fraction`` of the parameters (bisection).

    Widths are integers, so the fraction moves in steps: where no ratio lands within ``tolerance``, the ratio on
    the side of the step that comes closer."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    total = count_parameters(model)

    def kept_fraction(ratio: float) -> float:
        return count_parameters(pruned_and_folded(model, ratio, **attach_options)) / total

    low, high = 0.01, 1.0
    while True:  # on ratios of 4 decimals, so that the ratio returned is the one measured
        mid = round((low + high) / 2, 4)
        if mid in (low, high):
            return min((low, high), key=lambda ratio: abs(kept_fraction(ratio) - fraction))
        got = kept_fraction(mid)
        if abs(got - fraction) <= tolerance:
            return mid
        low, high = (mid, high) if got < fraction else (low, mid)


def global_keep_ratios(model: nn.Module, fraction: float, *, min_ratio: float = 0.1, channel_multiple: int = 1,
                       shared_selection: bool = True) -> dict[str, float]:
    """Keep ratios per unit ({unit name: k / C}) from one global L1 criterion, for a budget of ``fraction`` of the
    parameters (of the folded network).

    Each unit's filters are scored by their L1 norm over the unit's mean (so that layers of other scales compare;
    the members of a shared selection summed), and one threshold across all units keeps the filters scored above
    it: the lowest threshold whose folded network keeps at most ``fraction`` of the parameters (bisection). Every
    unit keeps at least ``min_ratio`` of its channels and one channel (as Torch-Pruning's ``max_pruning_ratio``
    bounds its global pruning), rounded to ``channel_multiple``. The ratios go wherever a keep ratio does
    (``attach_branches``, ``prune_and_fold``, ``branch_plan``, the comparison's rivals)."""
    if not 0 < fraction < 1 or not 0 <= min_ratio < 1:
        raise ValueError(f"fraction must be in (0, 1) and min_ratio in [0, 1), got {fraction} and {min_ratio}")
    scores = {}  # a unit, or the first member of a shared selection: (normalised scores, channels)
    for entry in branch_plan(model, 1.0, shared_selection=shared_selection):
        members = entry["group"] if entry["kind"] == "shared selection" else [entry["name"]]
        if entry["kind"] != "left alone" and members[0] not in scores:
            norms = sum(filter_l1_norms(model.get_submodule(name)) for name in members)
            scores[members[0]] = (norms / norms.mean().clamp_min(1e-12), entry["channels"])
    thresholds = torch.cat([score for score, _ in scores.values()]).sort().values

    def ratios(threshold: float) -> dict[str, float]:
        kept = {name: max(1, math.ceil(min_ratio * c - 1e-9), int((score >= threshold).sum()))
                for name, (score, c) in scores.items()}
        return {name: kept_channels(c, kept[name] / c, channel_multiple) / c for name, (_, c) in scores.items()}

    def fits(index: int) -> bool:
        folded = pruned_and_folded(model, ratios(float(thresholds[index])), shared_selection=shared_selection)
        return count_parameters(folded) <= fraction * count_parameters(model)

    low, high = 0, len(thresholds) - 1  # the first index whose threshold fits (the last keeps one channel a unit)
    if not fits(high):
        raise ValueError(f"a budget of {fraction} of the parameters is below the smallest network min_ratio="
                         f"{min_ratio} allows (one channel per unit at least); lower min_ratio or raise the budget")
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return ratios(float(thresholds[low]))
