"""Folding ("multiplication", METHOD.md): turn a model at alpha = 0 into a plain, physically smaller network.

Each expansion E (k -> C over channels) stands right before the next linear layer, with only
reshapes in between, so it is multiplied into that layer's weight:

* Conv2d W [out, C, kh, kw]:           W'[o, j] = sum_c W[o, c] E[c, j]
* ConvTranspose2d W [C, out, kh, kw]:  W'[j, o] = sum_c E[c, j] W[c, o]
* Linear after Flatten of [C, H, W]:   W viewed as [out, C, H*W], folded over C, viewed back.

In a model that is not a chain (:mod:`pruning_utils.method.graph`), a consumer may take several units' channels
(a concatenation): it is folded with one block-diagonal expansion over all its input channels.
"""
from __future__ import annotations

import copy
import inspect
from collections import OrderedDict, defaultdict
from pathlib import Path

import torch
import torch.fx
from torch.fx.experimental import optimization as fx_optimization
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..engine.checkpoints import load_checkpoint, load_model_state, save_checkpoint
from ..engine.sizes import subnormal_mask
from .branches import (BranchedUnit, NotAChainError, ProjectedLayer, UnsupportedModelError, branched_units,
                       trace_chain)
from .graph import graph_from_nodes, graph_nodes


@torch.no_grad()
def fold_into(layer: nn.Module, expansion: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` whose input takes the k channels that ``expansion`` [C, k] maps to its C inputs."""
    channels, k = expansion.shape
    weight = layer.weight.detach()
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise UnsupportedModelError(f"cannot fold into a grouped convolution (groups={layer.groups})")
        new = nn.Conv2d(k, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation, 1,
                        layer.bias is not None, layer.padding_mode)
        folded = torch.einsum("ochw,ck->okhw", weight, expansion)
    elif isinstance(layer, nn.ConvTranspose2d):
        if layer.groups != 1:
            raise UnsupportedModelError(f"cannot fold into a grouped convolution (groups={layer.groups})")
        new = nn.ConvTranspose2d(k, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                 layer.output_padding, 1, layer.bias is not None, layer.dilation, layer.padding_mode)
        folded = torch.einsum("cohw,ck->kohw", weight, expansion)
    elif isinstance(layer, nn.Linear):
        if layer.in_features % channels:
            raise UnsupportedModelError(f"Linear with {layer.in_features} inputs cannot follow {channels} channels")
        spatial = layer.in_features // channels
        new = nn.Linear(k * spatial, layer.out_features, layer.bias is not None)
        folded = torch.einsum("ocs,ck->oks", weight.view(layer.out_features, channels, spatial), expansion)
        folded = folded.reshape(layer.out_features, k * spatial)
    else:
        raise UnsupportedModelError(f"cannot fold into {type(layer).__name__}")
    new = new.to(device=weight.device, dtype=weight.dtype)
    new.weight.copy_(folded.contiguous())
    if layer.bias is not None:
        new.bias.copy_(layer.bias)
    new.train(layer.training)
    return new


def _linear_at(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """The linear layer at ``name``; for a branched unit, its branch's first layer."""
    module = model.get_submodule(name)
    if isinstance(module, BranchedUnit):
        return f"{name}.branch.0", module.branch[0]
    return name, module


def _plain(module: nn.Module) -> nn.Module:
    """Copy of a tree of (subclassed) ``nn.Sequential`` containers as plain ``nn.Sequential``."""
    if isinstance(module, nn.Sequential):
        return nn.Sequential(OrderedDict((name, _plain(child)) for name, child in module.named_children()))
    return module


def _only_sequential_containers(module: nn.Module) -> bool:
    return all(isinstance(m, nn.Sequential) or not list(m.children()) for m in module.modules())


def _as_flat_chain(model: nn.Module) -> nn.Sequential:
    """The model's forward chain as one flat ``nn.Sequential`` (functional reshapes become nn.Flatten)."""
    layers = OrderedDict()
    for kind, name in trace_chain(model):
        key = name.replace(".", "_")
        layers[key] = nn.Flatten() if kind == "reshape" and not _is_module(model, name) else model.get_submodule(name)
    return nn.Sequential(layers)


def _is_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


@torch.no_grad()
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fuse every BatchNorm that directly follows a Conv2d, ConvTranspose2d or Linear into it (eval mode).

    A chain is changed in place; a model that is not one comes back as a new ``torch.fx.GraphModule`` (torch.fx's
    ``fuse``: Conv2d and Linear layers whose output feeds only the BatchNorm)."""
    model.eval()
    try:
        steps = trace_chain(model)
    except NotAChainError:
        return fx_optimization.fuse(model)
    for (kind, name), (_, next_name) in zip(steps, steps[1:]):
        layer = model.get_submodule(name) if kind == "linear" else None
        norm = model.get_submodule(next_name) if _is_module(model, next_name) else None
        if layer is None or not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        if isinstance(layer, nn.Linear):
            fused = fuse_linear_bn_eval(layer, norm)
        else:
            fused = fuse_conv_bn_eval(layer, norm, transpose=isinstance(layer, nn.ConvTranspose2d))
        model.set_submodule(name, fused)
        model.set_submodule(next_name, nn.Identity())
    return model


def _fuse_graph_batchnorm(folded: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fuse BatchNorms into their layers inside each folded branch (a chain) and in the graph (torch.fx's fuse)."""
    for node in folded.graph.nodes:
        if node.op == "call_module" and isinstance(folded.get_submodule(node.target), nn.Sequential):
            fuse_batchnorm(folded.get_submodule(node.target))
    return fx_optimization.fuse(folded.eval(), inplace=True, no_trace=True)


@torch.no_grad()
def flush_denormals(model: nn.Module) -> int:
    """Set subnormal floating-point parameters and buffers to zero; return how many were flushed."""
    flushed = 0
    for tensor in (*model.parameters(), *model.buffers()):
        mask = subnormal_mask(tensor)
        flushed += int(mask.sum())
        tensor.masked_fill_(mask, 0)
    return flushed


@torch.no_grad()
def fold(model: nn.Module, fuse_bn: bool = False, flush_subnormals: bool = True) -> nn.Module:
    """A new plain network equal to ``model`` at alpha = 0, with every pruned unit k channels wide.

    The result holds only standard torch.nn layers: nested ``nn.Sequential`` mirroring the model's own containers
    when these are all Sequential, else one flat ``nn.Sequential`` in forward order; for a model read as a graph,
    its ``torch.fx.GraphModule`` with each branched unit replaced by its branch (an ``nn.Sequential``: narrow layer
    and post-ops) and the consumers narrowed. ``model`` is left unchanged. ``fuse_bn`` fuses BatchNorm into the
    preceding layer (still exact, eval mode; in a graph, where that layer's output feeds only the BatchNorm);
    ``flush_subnormals`` zeroes subnormal weights, which can slow CPU kernels.
    """
    units = branched_units(model)
    if not units:
        raise ValueError("the model has no branches to fold: call attach_branches and prune it to alpha = 0 first")
    nonzero = {name: u.alpha_value for name, u in units.items() if u.alpha_value != 0.0}
    if nonzero:
        raise ValueError(f"fold needs alpha = 0 in every unit; these are not: {nonzero}. Finish the schedule "
                         f"or call set_alpha(model, 0.0) (the original path is then dropped)")
    folded = copy.deepcopy(model)
    for unit in branched_units(folded).values():
        if isinstance(unit.branch[0], ProjectedLayer):  # the seeds' branch: its k filters are P·W
            unit.branch[0] = unit.branch[0].as_layer()
    if any(unit.slices is not None for unit in units.values()):
        folded = _fold_graph(folded)
        if fuse_bn:
            folded = _fuse_graph_batchnorm(folded)
    else:
        folded = _fold_chain(folded)
        if fuse_bn:
            fuse_batchnorm(folded)
    if flush_subnormals:
        flush_denormals(folded)
    return folded


def _fold_chain(folded: nn.Module) -> nn.Module:
    units = branched_units(folded)
    for name, unit in units.items():
        if unit.successor is None:
            raise UnsupportedModelError(f"unit {name!r} has no successor layer to fold its expansion into")
        target_name, target = _linear_at(folded, unit.successor)
        folded.set_submodule(target_name, fold_into(target, unit.expansion()))
    for name, unit in units.items():
        folded.set_submodule(name, unit.branch[0])
        for place, op in zip(unit.placeholders, list(unit.branch)[1:]):
            folded.set_submodule(place, op)
    return _plain(folded) if _only_sequential_containers(folded) else _as_flat_chain(folded)


def _fold_graph(folded: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Narrow each consumer by the expansions that feed it, then replace each branched unit by its branch."""
    units = branched_units(folded)
    feeds = defaultdict(list)
    for unit in units.values():
        for piece in unit.slices:
            feeds[piece.consumer].append((piece, unit))
    for consumer, parts in feeds.items():
        target_name, target = _linear_at(folded, consumer)
        folded.set_submodule(target_name, fold_into(target, _block_expansion(parts)))
    for name, unit in units.items():
        folded.set_submodule(name, _plain(unit.branch))
    folded.delete_all_unused_submodules()
    return folded


def _block_expansion(parts: list) -> torch.Tensor:
    """[total, k_total]: each unit's E at its slice of the consumer's input channels, identity elsewhere."""
    first = parts[0][1].expansion()
    eye = torch.eye(parts[0][0].total, dtype=first.dtype, device=first.device)
    columns, at = [], 0
    for piece, unit in sorted(parts, key=lambda part: part[0].offset):
        expansion = unit.expansion()
        block = eye.new_zeros(piece.total, expansion.shape[1])
        block[piece.offset:piece.offset + expansion.shape[0]] = expansion
        columns += [eye[:, at:piece.offset], block]
        at = piece.offset + expansion.shape[0]
    return torch.cat([*columns, eye[:, at:]], 1)


# --------------------------------------------------------------------------------------------
# Saving a plain network without pickled code: an architecture description plus a state_dict
# --------------------------------------------------------------------------------------------
def _constructor_args(module: nn.Module) -> dict:
    args = {}
    for name, param in inspect.signature(type(module).__init__).parameters.items():
        if name in ("self", "device", "dtype") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(module, name):
            continue
        value = getattr(module, name)
        if isinstance(value, (nn.Parameter, torch.Tensor)) or (name == "bias" and value is None):
            value = value is not None
        if isinstance(value, tuple):
            value = list(value)
        if value is None or isinstance(value, (bool, int, float, str, list)):
            args[name] = value
    return args


def describe(model: nn.Module) -> dict:
    """A JSON-able description of a tree of nn.Sequential containers and standard torch.nn layers, or of a
    ``torch.fx.GraphModule`` over such modules (its graph as data: see :func:`~.graph.graph_nodes`)."""
    if isinstance(model, torch.fx.GraphModule):
        targets = dict.fromkeys(n.target for n in model.graph.nodes if n.op == "call_module")
        return {"type": "GraphModule", "modules": [[t, describe(model.get_submodule(t))] for t in targets],
                "nodes": graph_nodes(model.graph)}
    if isinstance(model, nn.Sequential):
        return {"type": "Sequential", "children": [[n, describe(c)] for n, c in model.named_children()]}
    if type(model).__module__.split(".")[:2] != ["torch", "nn"] or list(model.children()):
        raise UnsupportedModelError(f"{type(model).__name__} is not a standard torch.nn layer; fold the model first")
    return {"type": type(model).__name__, "args": _constructor_args(model)}


def build(description: dict) -> nn.Module:
    """The module a :func:`describe` description stands for (fresh weights)."""
    kind = description["type"]
    if kind == "GraphModule":
        modules = {name: build(child) for name, child in description["modules"]}
        return torch.fx.GraphModule(modules, graph_from_nodes(description["nodes"]))
    if kind == "Sequential":
        return nn.Sequential(OrderedDict((name, build(child)) for name, child in description["children"]))
    layer_type = getattr(nn, kind, None)
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise ValueError(f"unknown layer type {kind!r} in the architecture description")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in description["args"].items()}
    return layer_type(**args)


def save_plain(model: nn.Module, path: str | Path) -> Path:
    """Save a plain (folded) network as an architecture description and a state_dict (no pickled code).

    A folded graph model is written as its modules' descriptions and its graph's nodes, whose functions are
    named (and, on loading, looked up in a fixed list): no template model is needed to load it."""
    return save_checkpoint(path, architecture=describe(model), state_dict=model.state_dict())


def load_plain(path: str | Path, map_location="cpu") -> nn.Module:
    """Rebuild a network saved by :func:`save_plain`; the state_dict is checked against the description."""
    saved = load_checkpoint(path, map_location=map_location,
                            hint="load_plain reads only a file written by save_plain (a folded network)")
    if "architecture" not in saved:
        raise ValueError(f"{path} is not a plain-network file written by save_plain (no architecture description)")
    model = build(saved["architecture"])
    load_model_state(model, saved["state_dict"], source=f"plain network {path}")
    return model.to(map_location).eval()
