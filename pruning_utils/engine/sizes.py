"""Model size and cost: parameters, multiply-accumulates (counted by torch.utils.flop_counter), widths."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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


def subnormal_mask(tensor: torch.Tensor) -> torch.Tensor:
    """Where ``tensor`` holds subnormal numbers (nonzero, below its dtype's smallest normal); none if not floating."""
    if not tensor.is_floating_point():
        return torch.zeros_like(tensor, dtype=torch.bool)
    return (tensor != 0) & (tensor.abs() < torch.finfo(tensor.dtype).tiny)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
