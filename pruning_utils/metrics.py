"""Model size and cost: parameters, multiply-accumulates (counted by torch.utils.flop_counter), widths."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .branches import LINEAR_TYPES, attach_branches, out_channels, set_alpha
from .folding import fold
from .models import count_parameters


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on a single input of ``input_shape`` (C, H, W), eval mode.

    Counted by ``torch.utils.flop_counter`` (FLOPs / 2) on the operations the forward really runs,
    so a branched model at alpha = 0 counts only its branches.
    """
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def layer_widths(model: nn.Module) -> list[tuple[str, int]]:
    """(name, output channels) of every Conv2d, ConvTranspose2d and Linear layer, in registration order."""
    return [(name, out_channels(m)) for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)]


def pruned_and_folded(model: nn.Module, keep_ratio, **attach_options) -> nn.Module:
    """The folded network of a copy of ``model`` pruned at ``keep_ratio`` (branch weights as initialised)."""
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
    """The uniform keep ratio whose folded model keeps about ``fraction`` of the parameters (bisection)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    total = count_parameters(model)
    low, high = 0.01, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        got = count_parameters(pruned_and_folded(model, mid, **attach_options)) / total
        if abs(got - fraction) <= tolerance:
            return round(mid, 4)
        low, high = (mid, high) if got < fraction else (low, mid)
    return round((low + high) / 2, 4)


def training_step_seconds(model: nn.Module, loader, steps: int = 20, warmup: int = 3, lr: float = 0.01) -> float:
    """Median wall time of one SGD training step (forward, cross-entropy or MSE, backward, update).

    Runs on a copy so ``model`` is not changed. Used to compare a branched model's cost with the original's.
    """
    import statistics
    import time

    from .train import make_optimizer

    work = copy.deepcopy(model).train()
    optimizer = make_optimizer("sgd", [p for p in work.parameters() if p.requires_grad], lr)
    times = []
    batches = iter(loader)
    for i in range(warmup + steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        start = time.perf_counter()
        out = work(x)
        loss = (torch.nn.functional.cross_entropy(out, y) if y.dtype == torch.long
                else torch.nn.functional.mse_loss(out, y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if out.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
