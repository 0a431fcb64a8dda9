"""Parallel branches (METHOD.md): read a model as a chain of units and put a small branch beside each.

A unit is one linear operator (Conv2d, ConvTranspose2d, Linear) plus the channel-wise post-ops
after it. :func:`attach_branches` replaces each chosen unit by a :class:`BranchedUnit` computing
``alpha * unit(x) + (1 - alpha) * E(branch(x))``; the post-ops' old places hold ``nn.Identity``.
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
import torch.fx
from torch import nn

from . import fused
from .recipe import BRANCH_KINDS, INITS, Recipe

DEFAULT = Recipe()  # the defaults of the best recipe measured (init: the L1 warm start)

LINEAR_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
POST_OP_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardtanh,
    nn.Mish, nn.Softplus,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.Identity,
)
RESHAPE_TYPES = (nn.Flatten,)
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape}
RESHAPE_METHODS = {"flatten", "view", "reshape", "contiguous"}
SHAPE_QUERIES = {"size", "dim"}
POOLING_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
ONE_D_TYPES = (nn.BatchNorm1d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.Dropout1d)
# post-ops that fail at forward after a unit of these layer types, and why
MISFIT_POST_OPS = (
    ((nn.Linear,), POOLING_TYPES + (nn.Upsample, nn.BatchNorm2d),
     "pools, resizes or normalises across a Linear's output features, so a branch with fewer features would not "
     "match its expansion"),
    ((nn.Conv2d, nn.ConvTranspose2d), ONE_D_TYPES,
     "is a 1-d operation and does not apply to a convolution's N x C x H x W output"),
)


class UnsupportedModelError(ValueError):
    """The model is not a chain of units this module can branch and fold; the message names the place."""


class NotAChainError(UnsupportedModelError):
    """The forward is not a single chain of torch.nn layers (branch-and-merge, functional operations):
    :func:`attach_branches` then reads it as a graph (:mod:`pruning_utils.method.graph`)."""


# --------------------------------------------------------------------------------------------
# Reading a model as a chain of units
# --------------------------------------------------------------------------------------------
@dataclass
class Unit:
    """A linear operator (module name ``name``) and the names of the channel-wise post-ops after it."""

    name: str
    post_ops: list[str] = field(default_factory=list)
    next_linear: str | None = None
    between: list[str] = field(default_factory=list)  # reshapes standing between this unit and next_linear


def _is_shape_query(node: torch.fx.Node) -> bool:
    return (node.op == "call_method" and node.target in SHAPE_QUERIES) or (
        node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim"))


def shape_nodes(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """Shape queries and the arithmetic on their results (``x.shape[0]``, ``x.size(1) * x.size(2)``): no data."""
    shapes: set[torch.fx.Node] = set()
    for node in graph.nodes:
        derived = node.op in ("call_function", "call_method") and bool(node.all_input_nodes) and all(
            a in shapes for a in node.all_input_nodes)
        if _is_shape_query(node) or derived:
            shapes.add(node)
    return shapes


def _step_kind(node: torch.fx.Node, root: nn.Module) -> tuple[str, str]:
    """('linear' | 'post' | 'reshape', name) for one node of the traced forward, or raise."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        if isinstance(module, LINEAR_TYPES):
            return "linear", node.target
        if isinstance(module, POST_OP_TYPES):
            return "post", node.target
        if isinstance(module, RESHAPE_TYPES):
            return "reshape", node.target
        raise UnsupportedModelError(
            f"layer {node.target!r} ({type(module).__name__}) is not supported: units are Conv2d, ConvTranspose2d "
            f"or Linear followed by channel-wise post-ops ({', '.join(t.__name__ for t in POST_OP_TYPES[:4])}, "
            f"activations, pooling, dropout, upsampling). Exclude the units around it or replace the layer.")
    if (node.op == "call_function" and node.target in RESHAPE_FUNCTIONS) or (
            node.op == "call_method" and node.target in RESHAPE_METHODS):
        return "reshape", node.name
    if node.op == "get_attr":
        raise UnsupportedModelError(
            f"the forward reads the tensor {node.target!r} directly; only chains of torch.nn layers are supported")
    what = getattr(node.target, "__name__", str(node.target))
    raise NotAChainError(
        f"operation {what!r} (graph node {node.name!r}) is not supported in a prunable chain: use torch.nn "
        f"modules (e.g. nn.ReLU instead of F.relu) and no branch-and-merge (additions, concatenations)")


def trace_chain(model: nn.Module) -> list[tuple[str, str]]:
    """The forward of ``model`` as an ordered list of (kind, name); raise if it is not a single chain."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:
        raise UnsupportedModelError(
            f"could not trace {type(model).__name__} with torch.fx ({err}); its forward must be a plain chain of layers"
        ) from err
    steps: list[tuple[str, str]] = []
    previous = None
    shapes = shape_nodes(graph)
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise NotAChainError("the model takes more than one input; only single-input chains are supported")
            previous = node
            continue
        if node in shapes:
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise NotAChainError("the model's output is not the last layer's output (not a chain)")
            break
        data_inputs = [a for a in node.all_input_nodes if a not in shapes]
        if data_inputs != [previous]:
            raise NotAChainError(
                f"graph node {node.name!r} (target {node.target!r}) does not take exactly the previous layer's output: "
                f"branch-and-merge structures (residuals, concatenations) are not supported")
        users = [u for u in previous.users if u not in shapes]
        if len(users) > 1:
            raise NotAChainError(
                f"the output of {previous.name!r} feeds {len(users)} layers ({', '.join(u.name for u in users)}): "
                f"branch-and-merge structures are not supported")
        steps.append(_step_kind(node, model))
        previous = node
    return steps


def has_state(module: nn.Module) -> bool:
    """Whether ``module`` holds parameters or buffers (calling it at two places would share them)."""
    return next(iter((*module.parameters(), *module.buffers())), None) is not None


def find_units(model: nn.Module) -> list[Unit]:
    """All units of ``model`` in forward order; each knows the linear operator that consumes its output."""
    units: list[Unit] = []
    seen: set[str] = set()
    current: Unit | None = None
    for kind, name in trace_chain(model):
        if kind in ("linear", "post") and name in seen:
            stateful = has_state(model.get_submodule(name))  # a stateless one: the graph reading takes it
            raise (UnsupportedModelError if stateful else NotAChainError)(
                f"module {name!r} is called at more than one place in the forward; give each place its own module")
        seen.add(name)
        if kind == "linear":
            if units:
                units[-1].next_linear = name
            current = Unit(name)
            units.append(current)
        elif kind == "post" and current is not None and not current.between:
            current.post_ops.append(name)
        elif kind == "post" and current is not None:
            current.between.append(name)
        elif kind == "reshape" and current is not None:
            current.between.append(name)
    return units


def prunable_units(model: nn.Module) -> list[Unit]:
    """Units that can get a branch: every unit but the last (whose width is fixed by the task)."""
    return find_units(model)[:-1]


# --------------------------------------------------------------------------------------------
# The branched unit
# --------------------------------------------------------------------------------------------
class ChannelSelection(nn.Module):
    """E fixed to the 0/1 matrix of kept channels: the k channels of z go to ``index`` of C, zeros elsewhere.

    It has no parameters; every unit a residual addition couples shares one (see
    :mod:`pruning_utils.method.graph`)."""

    def __init__(self, index: torch.Tensor, channels: int):
        super().__init__()
        self.register_buffer("index", index.clone())
        self.channels = channels

    @property
    def in_channels(self) -> int:
        return self.index.numel()

    def matrix(self) -> torch.Tensor:
        """The [C, k] 0/1 matrix: column j is 1 at row ``index[j]``."""
        selection = torch.zeros(self.channels, self.in_channels, device=self.index.device)
        selection[self.index, torch.arange(self.in_channels, device=self.index.device)] = 1.0
        return selection

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(z.shape[0], self.channels, *z.shape[2:]).index_copy(1, self.index, z)

    def extra_repr(self) -> str:
        return f"{self.in_channels} of {self.channels} channels"


class ProjectedLayer(nn.Module):
    """The seeds' branch layer: a 1x1 projection P (C -> k, no bias) of the unit's own layer's output, ``P(W x)``.

    ``layer`` is the very module of the unit's original path (its weights are shared and trained by both paths).
    :meth:`as_layer` composes the two into one plain layer with the k filters P·W (and bias P·b), which is what the
    fold keeps.
    """

    def __init__(self, layer: nn.Module, projection: nn.Module):
        super().__init__()
        self.layer = layer
        self.projection = projection

    @property
    def out_channels(self) -> int:
        return out_channels(self.projection)

    def _matrix(self) -> torch.Tensor:
        """P as a [k, C] matrix."""
        return self.projection.weight.reshape(self.projection.weight.shape[0], -1)

    @property
    def weight(self) -> torch.Tensor:
        """The composed filters P·W, in the layer's weight layout."""
        if isinstance(self.layer, nn.ConvTranspose2d):  # [C_in, C, kh, kw]
            return torch.einsum("kc,ichw->ikhw", self._matrix(), self.layer.weight)
        return torch.einsum("kc,c...->k...", self._matrix(), self.layer.weight)

    @property
    def bias(self) -> torch.Tensor | None:
        """P·b, or None where the layer has no bias."""
        return None if self.layer.bias is None else self._matrix() @ self.layer.bias

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """P applied to the layer's output ``y``."""
        return self.projection(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer(x))

    @torch.no_grad()
    def as_layer(self) -> nn.Module:
        """One plain layer of the layer's kind and geometry with the k filters P·W."""
        narrow = _narrow_copy(self.layer, self.out_channels)
        narrow.weight.copy_(self.weight)
        if narrow.bias is not None:
            narrow.bias.copy_(self.bias)
        return narrow.train(self.training)


class BranchedUnit(nn.Module):
    """``alpha * original(x) + (1 - alpha) * expand(branch(x))``.

    ``alpha`` is a buffer (saved in state_dicts) that weighs the blend; a Python copy of it decides, without a
    device sync, which paths run: at alpha = 1 only the original, at alpha = 0 only the branch. In between, a
    convolution unit and its branch run as one convolution (:mod:`~pruning_utils.method.fused`) where they can;
    ``fuse_paths = False`` runs them apart. A branch of the "projection" kind (:class:`ProjectedLayer`) shares the
    unit's layer, which then runs once for both paths.
    """

    def __init__(self, original: nn.Sequential, branch: nn.Sequential, expand: nn.Module):
        super().__init__()
        self.original = original
        self.branch = branch
        self.expand = expand
        self.register_buffer("alpha", torch.ones(()))
        self.alpha_value = 1.0
        self.original_frozen = False
        self.placeholders: list[str] = []  # where the post-ops stood (now nn.Identity), set by attach_branches
        self.successor: str | None = None  # the linear layer that consumes this unit's output
        self.slices: list | None = None  # in a graph model: where E folds (graph.Slice), set by graph.attach
        self.fuse_paths = fused.can_fuse(original, branch)
        self.register_load_state_dict_post_hook(BranchedUnit._sync_alpha)

    @staticmethod
    def _sync_alpha(module: "BranchedUnit", _incompatible) -> None:
        module.alpha_value = float(module.alpha)

    @property
    def kept(self) -> int:
        """Channels the branch keeps (k)."""
        return self.expand.in_features if isinstance(self.expand, nn.Linear) else self.expand.in_channels

    def expansion(self) -> torch.Tensor:
        """E as a [C, k] matrix."""
        if isinstance(self.expand, ChannelSelection):
            return self.expand.matrix().to(next(self.branch.parameters()).dtype)
        weight = self.expand.weight.detach()
        return weight.reshape(weight.shape[0], weight.shape[1])

    def set_alpha(self, alpha: float) -> None:
        self.alpha.fill_(alpha)
        self.alpha_value = float(alpha)

    def pruned(self, x: torch.Tensor) -> torch.Tensor:
        """The branch path alone: expand(branch(x))."""
        return self.expand(self.branch(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha_value
        if a == 1.0:
            return self.original(x)
        if a == 0.0:
            return self.pruned(x)
        if isinstance(self.branch[0], ProjectedLayer):
            y = self.original[0](x)
            original, narrow = _after_layer(self.original, y), _after_layer(self.branch, self.branch[0].project(y))
            branched = self.expand(narrow)
        elif self.fuse_paths and fused.modes_agree(self.original, self.branch):
            original, narrow = fused.both_paths(self.original, self.branch, x)
            branched = self.expand(narrow)
        else:
            original, branched = self.original(x), self.pruned(x)
        # the blend weighs by the buffer: torch.compile keeps one graph for every alpha
        return torch.lerp(branched, original, self.alpha.to(original.dtype))

    def train(self, mode: bool = True) -> "BranchedUnit":
        super().train(mode)
        if self.original_frozen:
            self.original.eval()
        return self

    def extra_repr(self) -> str:
        return f"alpha={self.alpha_value:g}, kept={self.kept}"


def _after_layer(path: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
    """The post-ops of ``path`` (all but its first module) applied to ``y``."""
    for op in list(path)[1:]:
        y = op(y)
    return y


def branched_units(model: nn.Module) -> dict[str, BranchedUnit]:
    """The model's branched units by module name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BranchedUnit)}


def kept_channels(channels: int, ratio: float, multiple: int = 1) -> int:
    """k = max(1, floor(ratio * channels)), rounded to ``multiple`` (at most ``channels``) when it is above 1."""
    k = max(1, math.floor(ratio * channels + 1e-9))
    if multiple > 1:
        k = min(channels, max(multiple, multiple * round(k / multiple)))
    return k


def out_channels(layer: nn.Module) -> int:
    """Output channels of a Conv2d or ConvTranspose2d, output features of a Linear."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _narrow_copy(layer: nn.Module, k: int) -> nn.Module:
    """A fresh layer of the same kind and geometry as ``layer`` with ``k`` output channels."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, k, bias=bias, **factory)
    if layer.groups != 1:
        raise UnsupportedModelError(f"grouped convolutions (groups={layer.groups}) cannot get a branch")
    if isinstance(layer, nn.ConvTranspose2d):
        return nn.ConvTranspose2d(layer.in_channels, k, layer.kernel_size, layer.stride, layer.padding,
                                  layer.output_padding, 1, bias, layer.dilation, layer.padding_mode, **factory)
    return nn.Conv2d(layer.in_channels, k, layer.kernel_size, layer.stride, layer.padding, layer.dilation, 1,
                     bias, layer.padding_mode, **factory)


def _narrow_post_op(op: nn.Module, k: int) -> nn.Module:
    if isinstance(op, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(op)(k, op.eps, op.momentum, op.affine, op.track_running_stats,
                        device=op.running_mean.device if op.running_mean is not None else None)
    return copy.deepcopy(op)


def filter_l1_norms(layer: nn.Module) -> torch.Tensor:
    """L1 norm of each output channel's weights (ConvTranspose2d stores them on axis 1)."""
    weight = layer.weight.detach()
    if isinstance(layer, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    return weight.abs().flatten(1).sum(1)


@torch.no_grad()
def _copy_selected(layer: nn.Module, post_ops: list[nn.Module], narrow: nn.Module, narrow_ops: list[nn.Module],
                   keep: torch.Tensor) -> None:
    """Copy the channels ``keep`` of ``layer`` (and of its BatchNorms) into the narrow branch (for a
    :class:`ProjectedLayer`, whose filters are P·W, the BatchNorms alone)."""
    if not isinstance(narrow, ProjectedLayer):
        narrow.weight.copy_(layer.weight[:, keep] if isinstance(layer, nn.ConvTranspose2d) else layer.weight[keep])
        if layer.bias is not None:
            narrow.bias.copy_(layer.bias[keep])
    for op, new in zip(post_ops, narrow_ops):
        if isinstance(op, (nn.BatchNorm1d, nn.BatchNorm2d)):
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(op, name) is not None:
                    getattr(new, name).copy_(getattr(op, name)[keep])
            if op.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(op.num_batches_tracked)


def _one_by_one(layer: nn.Module, in_channels: int, out: int) -> nn.Module:
    """A bias-free 1x1 map over channels of the kind that fits after ``layer``: Linear or Conv2d."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    return (nn.Linear(in_channels, out, bias=False, **factory) if isinstance(layer, nn.Linear)
            else nn.Conv2d(in_channels, out, 1, bias=False, **factory))


def make_branched_unit(layer: nn.Module, post_ops: list[nn.Module], k: int, init: str = DEFAULT.init, *,
                       selection: torch.Tensor | None = None, kind: str = DEFAULT.branch_kind) -> BranchedUnit:
    """Build the :class:`BranchedUnit` for ``layer`` and its ``post_ops``, keeping ``k`` channels.

    ``init="he"``: He-normal branch weights (report 4), default expansion. ``init="l1"``: the k
    output channels of ``layer`` with the largest L1 norm are copied and the expansion is their
    selection matrix, so the branch starts as a filter-pruned copy of the unit. ``selection`` (sorted channel
    indices, k of them): the branch is those filters and E stays fixed to their selection
    (:class:`ChannelSelection`), whatever ``init``. ``kind="conv"``: the branch's layer has k filters of its own;
    ``"projection"``: it is a :class:`ProjectedLayer` on the unit's own layer (the seeds' form), whose P starts as
    the transposed selection (``"l1"`` or ``selection``: the same branch as ``"conv"`` at the start) or He-normal.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if kind not in BRANCH_KINDS:
        raise ValueError(f"kind must be one of {BRANCH_KINDS}, got {kind!r}")
    channels = out_channels(layer)
    narrow_ops = [_narrow_post_op(op, k) for op in post_ops]
    keep = selection if selection is not None or init == "he" else filter_l1_norms(layer).topk(k).indices.sort().values
    if kind == "projection":
        narrow = ProjectedLayer(layer, _one_by_one(layer, channels, k))
        _init_projection(narrow.projection, keep, channels)
    else:
        narrow = _narrow_copy(layer, k)
        if keep is None:
            _he_init(narrow)
    if keep is not None:
        _copy_selected(layer, post_ops, narrow, narrow_ops, keep)
    if selection is not None:
        expand = ChannelSelection(selection, channels)
    else:
        expand = _one_by_one(layer, k, channels)
        if keep is not None:
            with torch.no_grad():
                expand.weight.copy_(ChannelSelection(keep, channels).matrix().view_as(expand.weight))
    return BranchedUnit(nn.Sequential(layer, *post_ops), nn.Sequential(narrow, *narrow_ops), expand)


@torch.no_grad()
def _he_init(layer: nn.Module) -> None:
    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    if layer.bias is not None:
        layer.bias.zero_()


@torch.no_grad()
def _init_projection(projection: nn.Module, keep: torch.Tensor | None, channels: int) -> None:
    """P as the transposed selection of ``keep`` (P·W is then the kept filters), or He-normal for None."""
    if keep is None:
        _he_init(projection)
    else:
        projection.weight.copy_(ChannelSelection(keep, channels).matrix().T.reshape_as(projection.weight))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def select_units(units: list[Unit], include, exclude) -> list[Unit]:
    def check(prefixes, label):
        prefixes = [prefixes] if isinstance(prefixes, str) else list(prefixes or [])
        for prefix in prefixes:
            if not any(u.name == prefix or u.name.startswith(prefix.rstrip(".") + ".") for u in units):
                raise ValueError(f"{label} prefix {prefix!r} matches no prunable unit; units are: "
                                 f"{[u.name for u in units]}")
        return prefixes

    def matches(name, prefixes):
        return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)

    include, exclude = check(include, "include"), check(exclude, "exclude")
    return [u for u in units if (not include or matches(u.name, include)) and not matches(u.name, exclude)]


def check_keep_ratio(value, where: str = "") -> float:
    """``value`` as a float if it is a real number in (0, 1] (Python, numpy or a 0-d tensor), else raise.

    ``where`` goes into the message after "keep ratio", e.g. ``"for 'features.0'"``.
    """
    scalar = value.item() if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 else value
    if isinstance(scalar, (bool, np.bool_)) or not isinstance(scalar, numbers.Real) or not 0 < scalar <= 1:
        raise ValueError(f"keep ratio{' ' + where if where else ''} must be in (0, 1], a real number; got {value!r}")
    return float(scalar)


def post_op_misfit(layer_name: str, layer: nn.Module, post_ops: Mapping[str, nn.Module]) -> str | None:
    """Why one of ``post_ops`` ({name: module}) cannot follow ``layer`` in a branch, or None."""
    misfits, reason = next((ops, why) for kinds, ops, why in MISFIT_POST_OPS if isinstance(layer, kinds))
    for name, op in post_ops.items():
        if isinstance(op, misfits):
            return (f"{name!r} ({type(op).__name__}) after unit {layer_name!r} ({type(layer).__name__}) {reason}; "
                    f"remove or replace it, or exclude the unit {layer_name!r}")
    return None


def _check_post_ops(model: nn.Module, unit: Unit) -> None:
    misfit = post_op_misfit(unit.name, model.get_submodule(unit.name),
                            {name: model.get_submodule(name) for name in unit.post_ops})
    if misfit:
        raise UnsupportedModelError(misfit)


def attach_branches(model: nn.Module, keep_ratio: float | Mapping[str, float] | None = None, include=None,
                    exclude=None, init: str = DEFAULT.init, channel_multiple: int = 1, *,
                    widths: Mapping[str, int] | None = None, shared_selection: bool = True,
                    branch_kind: str = DEFAULT.branch_kind) -> nn.Module:
    """Put a parallel branch beside every unit of ``model`` but the last; return ``model`` (changed in place).

    A model that is not a chain (residual additions, concatenations, functional operations) is read as a graph
    (:func:`pruning_utils.method.graph.branch_plan` tells which units get a branch and why the others do not):
    the result is then a new ``torch.fx.GraphModule`` over the model's own layers; use it, not ``model``. There,
    with ``shared_selection``, the units whose outputs a residual addition couples share one fixed selection of kept
    filters (and so does a unit that only a selection can pass); without it they keep their full width.

    ``keep_ratio``: one ratio r in (0, 1] for all units, or a dict {unit name: r} naming exactly
    the units to branch. A unit keeps k = max(1, floor(r * C)) of its C channels (rounded to
    ``channel_multiple`` if above 1). Or ``widths``: {unit name: k} naming the units and their kept channels
    exactly (1 <= k <= C). ``include`` / ``exclude``: module-name prefixes (e.g. ``["encoder"]``). ``init``:
    ``"he"`` or ``"l1"``; ``branch_kind``: ``"conv"`` or ``"projection"`` (see :func:`make_branched_unit`). All
    branches start at alpha = 1, where the model computes exactly what it did before.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if (keep_ratio is None) == (widths is None):
        raise ValueError("give either keep_ratio or widths")
    if branched_units(model):
        raise ValueError("the model already has branches; fold it or start from the unbranched model")
    try:
        units = prunable_units(model)
    except NotAChainError:
        from .graph import attach_graph_branches

        return attach_graph_branches(model, widths if widths is not None else keep_ratio, include=include,
                                     exclude=exclude, init=init, channel_multiple=channel_multiple,
                                     exact=widths is not None, shared_selection=shared_selection,
                                     branch_kind=branch_kind)
    if not units:
        raise UnsupportedModelError("the model has fewer than two linear layers: nothing can be pruned")
    chosen = select_units(units, include, exclude)
    kept = kept_widths(model, units, chosen, widths if widths is not None else keep_ratio, channel_multiple,
                        exact=widths is not None)
    if not kept:
        raise ValueError("no unit selected: check include, exclude and keep_ratio")
    for unit in chosen:
        if unit.name not in kept:
            continue
        bad = [n for n in unit.between if n in dict(model.named_modules()) and
               not isinstance(model.get_submodule(n), (nn.Flatten, nn.Identity, nn.Dropout))]
        if bad:
            raise UnsupportedModelError(f"{bad[0]!r} stands between unit {unit.name!r} and the next linear layer "
                                        f"after a reshape; the expansion could not be folded into that layer")
        _check_post_ops(model, unit)
        layer = model.get_submodule(unit.name)
        post_ops = [model.get_submodule(n) for n in unit.post_ops]
        branched = make_branched_unit(layer, post_ops, kept[unit.name], init, kind=branch_kind)
        branched.placeholders, branched.successor = list(unit.post_ops), unit.next_linear
        model.set_submodule(unit.name, branched)
        for name in unit.post_ops:
            model.set_submodule(name, nn.Identity())
    return model


def kept_widths(model: nn.Module, units: list[Unit], chosen: list[Unit], spec, channel_multiple: int, *,
                 exact: bool) -> dict[str, int]:
    """{unit name: k} of the chosen units from a ratio, a {name: ratio} dict, or (``exact``) a {name: k} dict."""
    channels = {u.name: out_channels(model.get_submodule(u.name)) for u in chosen}
    if not isinstance(spec, Mapping):
        ratio = check_keep_ratio(spec)
        return {name: kept_channels(c, ratio, channel_multiple) for name, c in channels.items()}
    names = {u.name for u in units}
    unknown = sorted(set(spec) - names)
    if unknown:
        what = "widths" if exact else "keep_ratio"
        raise ValueError(f"{what} names {unknown}, which are not prunable units; units are {sorted(names)}")
    if not exact:
        return {name: kept_channels(c, check_keep_ratio(spec[name], f"for {name!r}"), channel_multiple)
                for name, c in channels.items() if name in spec}
    kept = {}
    for name, c in channels.items():
        if name in spec:
            k = spec[name]
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= c:
                raise ValueError(f"the width of {name!r} must be an integer in [1, {c}], got {k!r}")
            kept[name] = int(k)
    return kept


def _check_alpha(alpha, where: str = "") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha{where} must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def set_alpha(model: nn.Module, alpha: float | Mapping[str, float]) -> None:
    """Set alpha of every branched unit (a float), or per unit (a dict {unit name: alpha})."""
    units = branched_units(model)
    if not units:
        raise ValueError("the model has no branches: call attach_branches(model, keep_ratio) first")
    if isinstance(alpha, Mapping):
        unknown = sorted(set(alpha) - set(units))
        if unknown:
            raise ValueError(f"alpha names {unknown}, which are not branched units; they are {sorted(units)}")
        values = {name: _check_alpha(a, f" for {name!r}") for name, a in alpha.items()}
    else:
        value = _check_alpha(alpha)
        values = dict.fromkeys(units, value)
    for name, value in values.items():
        units[name].set_alpha(value)


def get_alpha(model: nn.Module) -> float | dict[str, float]:
    """The common alpha of all branched units, or a dict {unit name: alpha} when they differ."""
    units = branched_units(model)
    if not units:
        raise ValueError("the model has no branches: call attach_branches(model, keep_ratio) first")
    values = {name: unit.alpha_value for name, unit in units.items()}
    distinct = set(values.values())
    return distinct.pop() if len(distinct) == 1 else values


def freeze_original(model: nn.Module, frozen: bool = True) -> None:
    """Freeze (or unfreeze) the pretrained layers that the branches replace; frozen BatchNorms stay in eval mode."""
    for unit in branched_units(model).values():
        unit.original_frozen = frozen
        unit.original.requires_grad_(not frozen)
        unit.train(unit.training)

