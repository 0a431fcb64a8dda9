"""Budgets: the keep ratio whose folded network keeps a given share of the parameters."""
from __future__ import annotations

import copy

from torch import nn

from ..engine.sizes import count_macs, count_parameters
from .branches import LINEAR_TYPES, attach_branches, out_channels, set_alpha
from .folding import fold


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
