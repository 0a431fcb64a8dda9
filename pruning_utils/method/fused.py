"""One convolution for a unit and its branch, in the mixed phase of pruning (0 < alpha < 1).

The unit's layer W and the branch's layer W_b read the same input, so one convolution with the filters [W; W_b]
computes both outputs. A BatchNorm works channel by channel, so one over the C + k channels (the two modules'
parameters and running statistics concatenated, the updated statistics written back) computes both as well, and
so does a stateless channel-wise module (ReLU, pooling). Only the number of kernel calls changes: outputs,
gradients and running statistics are those of the two paths run apart (``tests/test_branches.py`` checks it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STATELESS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardswish,
             nn.MaxPool2d, nn.AvgPool2d, nn.Identity)


def _geometry(conv: nn.Conv2d) -> tuple:
    return conv.in_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, \
        conv.padding_mode, conv.bias is None


def _pair_fits(op: nn.Module, narrow: nn.Module) -> bool:
    if type(op) is nn.BatchNorm2d:
        return type(narrow) is nn.BatchNorm2d and op.affine and narrow.affine and op.track_running_stats and \
            narrow.track_running_stats and op.momentum is not None and \
            (op.eps, op.momentum) == (narrow.eps, narrow.momentum)
    return type(op) is type(narrow) and isinstance(op, STATELESS) and repr(op) == repr(narrow)


def can_fuse(original: nn.Sequential, branch: nn.Sequential) -> bool:
    """Whether the two paths are a Conv2d of one geometry followed by BatchNorms and stateless ops pair by pair."""
    layer, narrow = original[0], branch[0]
    if type(layer) is not nn.Conv2d or type(narrow) is not nn.Conv2d or layer.padding_mode != "zeros":
        return False
    if _geometry(layer) != _geometry(narrow) or len(original) != len(branch):
        return False
    return all(_pair_fits(op, narrow_op) for op, narrow_op in zip(list(original)[1:], list(branch)[1:]))


def modes_agree(original: nn.Sequential, branch: nn.Sequential) -> bool:
    """Whether each BatchNorm pair is in one mode (a frozen original's BatchNorms stay in eval mode)."""
    return all(op.training == narrow.training for op, narrow in zip(original, branch))


def both_paths(original: nn.Sequential, branch: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(original(x), branch(x))`` by one convolution and one pass of each post-op (see :func:`can_fuse`)."""
    layer, narrow = original[0], branch[0]
    bias = None if layer.bias is None else torch.cat([layer.bias, narrow.bias])
    y = F.conv2d(x, torch.cat([layer.weight, narrow.weight]), bias, layer.stride, layer.padding, layer.dilation)
    for op, narrow_op in zip(list(original)[1:], list(branch)[1:]):
        y = _batch_norm(op, narrow_op, y) if isinstance(op, nn.BatchNorm2d) else op(y)
    return y[:, :layer.out_channels], y[:, layer.out_channels:]


def _batch_norm(op: nn.BatchNorm2d, narrow: nn.BatchNorm2d, y: torch.Tensor) -> torch.Tensor:
    mean = torch.cat([op.running_mean, narrow.running_mean])
    var = torch.cat([op.running_var, narrow.running_var])
    out = F.batch_norm(y, mean, var, torch.cat([op.weight, narrow.weight]), torch.cat([op.bias, narrow.bias]),
                       op.training, op.momentum, op.eps)
    if op.training:  # F.batch_norm updated the concatenated statistics: write them back
        with torch.no_grad():
            channels = op.num_features
            op.running_mean.copy_(mean[:channels])
            narrow.running_mean.copy_(mean[channels:])
            op.running_var.copy_(var[:channels])
            narrow.running_var.copy_(var[channels:])
            op.num_batches_tracked.add_(1)
            narrow.num_batches_tracked.add_(1)
    return out
