"""Any torch.fx-traceable model read as a graph of units, and where each unit's expansion can fold.

A unit is a linear operator (Conv2d, ConvTranspose2d, Linear; groups == 1) and the run of channel-wise post-ops
after it, as in a chain (BatchNorm, activations, pooling, ...; also ``F.relu``, ``torch.relu``, ``x.relu()``). At
alpha = 0 a branched unit outputs E z: z the branch's k channels, E its learned expansion k -> C over channels.
E can be multiplied into the linear operators downstream when every path from the unit's output to them passes
only operations T with T(E z) = E T(z):

* identity, dropout (eval mode), and flatten / view / reshape right before a Linear (as in a chain);
* per-channel linear spatial maps: average pooling, zero padding, nearest or bilinear upsampling;
* concatenation along the channel axis: cat([E z, y]) = blockdiag(E, I) cat([z, y]), so E folds into the slice
  of the consumer's input channels that the unit fills (offset o): W'[:, o:o+k] = W[:, o:o+C] E.

Each consumer gets one block-diagonal expansion over its input channels (identity where no branched unit feeds
it) and is folded as in a chain (:func:`~pruning_utils.method.folding.fold_into`). Max pooling, activations,
normalisation and additions with a tensor that E does not expand (residuals) do not commute with a general E: a
unit whose output reaches one of them, a grouped convolution, or the model's output is left alone, and
:func:`branch_plan` says why. A stateless module called at several places (torchvision's BasicBlock calls
``self.relu`` twice) is fine; a stateful one called twice is refused.

A unit whose learned E cannot pass can still be pruned by a *selection*: E fixed to the 0/1 matrix S of k kept
channels (:class:`~pruning_utils.method.branches.ChannelSelection`), so the unit at alpha = 0 outputs its k kept
filters' channels and zeros elsewhere. S commutes with more than a general E: with every channel-wise map f that
keeps zero at zero, f(S z) = S f(z) (ReLU and most activations, max and average pooling, dropout, upsampling), and
with a sum of tensors that S expands alike: S z1 + S z2 = S (z1 + z2). So the units whose outputs a residual
addition couples (every tensor added together, through such maps, and the stream's consumers) share one kept
subset, ranked by the sum of their filters' L1 norms, and the stream folds exactly: each consumer keeps the input
channels of that subset. A stream that reaches a map with f(0) != 0 (a BatchNorm or a sigmoid after an addition),
a concatenation, a grouped convolution or the model's output keeps its full width, and the plan says why.

Attaching rewrites the traced graph: the unit's node calls its
:class:`~pruning_utils.method.branches.BranchedUnit`, the nodes of its post-ops are removed. Folding replaces
each BranchedUnit by its branch (narrow layer and post-ops, an ``nn.Sequential``) and narrows the consumers.
:func:`graph_nodes` / :func:`graph_from_nodes` write and rebuild the graph as plain data (no pickled code), for
:func:`~pruning_utils.method.folding.save_plain`.
"""
from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.node import _get_qualified_name

from .branches import (
    DEFAULT,
    LINEAR_TYPES,
    POST_OP_TYPES,
    RESHAPE_METHODS,
    UnsupportedModelError,
    filter_l1_norms,
    has_state,
    kept_widths,
    make_branched_unit,
    out_channels,
    post_op_misfit,
    select_units,
    shape_nodes,
)

ADDITIONS = {operator.add, operator.iadd, torch.add}
CONCATENATIONS = {torch.cat, torch.concat}
FUNCTIONAL_RELUS = {F.relu, torch.relu}
COMMUTING_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                     nn.ZeroPad2d, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
COMMUTING_FUNCTIONS = {torch.flatten, torch.reshape, F.dropout, F.avg_pool2d, F.adaptive_avg_pool2d}
FLATTENS = {torch.flatten, torch.reshape, "flatten", "view", "reshape"}
# channel-wise maps with f(0) = 0: they commute with a selection of channels (not with a general E)
ZERO_KEEPING_MODULES = (nn.ReLU, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish, nn.Mish,
                        nn.MaxPool2d, nn.AdaptiveMaxPool2d)
ZERO_KEEPING_FUNCTIONS = {F.max_pool2d, F.adaptive_max_pool2d}
# what a saved graph may call (graph_from_nodes refuses anything else)
SAVED_FUNCTIONS = {_get_qualified_name(f): f for f in (
    *ADDITIONS, *CONCATENATIONS, *FUNCTIONAL_RELUS, *COMMUTING_FUNCTIONS, operator.mul, operator.getitem,
    F.max_pool2d, F.interpolate, getattr)}
SAVED_METHODS = RESHAPE_METHODS | {"size", "dim", "relu", "add", "mean"}
SAVED_ATTRIBUTES = {"shape", "ndim"}


@dataclass
class Slice:
    """Where a unit's expansion folds: ``consumer``'s input channels offset..offset+C of ``total``."""

    consumer: str
    offset: int
    total: int


@dataclass
class GraphUnit:
    """A unit of a traced model: its module ``name``, graph ``node``, C ``channels`` and where its E folds."""

    name: str
    node: str
    channels: int
    post_ops: list[str] = field(default_factory=list)  # graph node names
    slices: list[Slice] = field(default_factory=list)
    reason: str | None = None  # why it cannot get a learned E; None when it can
    narrowable: bool = True  # False: the unit itself cannot be narrowed (grouped, or a post-op that does not fit)


@dataclass
class Group:
    """Units pruned by one shared selection (:mod:`~pruning_utils.method.graph`): the ``members`` whose outputs the
    ``additions`` couple (one member and no addition: a unit that only a selection can pass) and where the stream
    they form folds (the ``slices`` of its consumers)."""

    members: list[str]
    channels: int
    additions: list[str] = field(default_factory=list)
    slices: list[Slice] = field(default_factory=list)
    reason: str | None = None  # why the stream cannot fold; None when it can


class _Blocked(Exception):
    """A path from a unit's output meets something E does not commute with (the message says what)."""


# --------------------------------------------------------------------------------------------
# Reading the graph
# --------------------------------------------------------------------------------------------
def trace_graph(model: nn.Module) -> torch.fx.GraphModule:
    """``model`` traced by torch.fx; a stateful module called at more than one place is refused."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as err:
        raise UnsupportedModelError(f"could not trace {type(model).__name__} with torch.fx ({err})") from err
    calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    for name, count in calls.items():
        module = traced.get_submodule(name)
        if count > 1 and has_state(module):
            raise UnsupportedModelError(
                f"module {name!r} ({type(module).__name__}) holds parameters or buffers and is called at {count} "
                f"places in the forward; give each place its own module")
    return traced


def _module(root: nn.Module, node: torch.fx.Node) -> nn.Module | None:
    return root.get_submodule(node.target) if node.op == "call_module" else None


def _is_functional_relu(node: torch.fx.Node) -> bool:
    relu = (node.op == "call_function" and node.target in FUNCTIONAL_RELUS) or (
        node.op == "call_method" and node.target == "relu")
    return relu and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}


def _post_module(root: nn.Module, node: torch.fx.Node) -> nn.Module:
    """The post-op module a node calls (a functional ReLU becomes ``nn.ReLU``)."""
    module = _module(root, node)
    return nn.ReLU() if module is None else module


def _is_post_op(root: nn.Module, node: torch.fx.Node) -> bool:
    return isinstance(_module(root, node), POST_OP_TYPES) or _is_functional_relu(node)


def _is_flatten(root: nn.Module, node: torch.fx.Node) -> bool:
    return isinstance(_module(root, node), nn.Flatten) or (
        node.op in ("call_function", "call_method") and node.target in FLATTENS)


def _commutes(root: nn.Module, node: torch.fx.Node) -> bool:
    """Whether ``node`` commutes with any map over channels (E)."""
    module = _module(root, node)
    if isinstance(module, nn.Upsample):
        return module.mode in ("nearest", "bilinear")
    if module is not None:
        return isinstance(module, COMMUTING_MODULES)
    return (node.op == "call_function" and node.target in COMMUTING_FUNCTIONS) or (
        node.op == "call_method" and node.target in RESHAPE_METHODS)


def _keeps_selection(root: nn.Module, node: torch.fx.Node) -> bool:
    """Whether ``node`` commutes with a selection of channels (a channel-wise map with f(0) = 0)."""
    return _commutes(root, node) or isinstance(_module(root, node), ZERO_KEEPING_MODULES) or _is_functional_relu(
        node) or (node.op == "call_function" and node.target in ZERO_KEEPING_FUNCTIONS)


def _is_addition(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target in ADDITIONS


def _is_channel_cat(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target not in CONCATENATIONS:
        return False
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0) == 1


def _channels(root: nn.Module, node: torch.fx.Node) -> int | None:
    """Channels of the tensor ``node`` computes, where the graph tells them; else None."""
    module = _module(root, node)
    if isinstance(module, LINEAR_TYPES):
        return out_channels(module)
    if _is_channel_cat(node):
        parts = [_channels(root, part) for part in node.args[0]]
        return None if None in parts else sum(parts)
    keeps = _is_post_op(root, node) or _commutes(root, node) or _is_addition(node)
    if not keeps or _is_flatten(root, node) or not node.all_input_nodes:
        return None
    return _channels(root, node.all_input_nodes[0])


def _describe(root: nn.Module, node: torch.fx.Node) -> str:
    module = _module(root, node)
    if module is not None:
        return f"{node.target!r} ({type(module).__name__}, graph node {node.name!r})"
    return f"graph node {node.name!r} ({getattr(node.target, '__name__', node.target)})"


def _consumer_slice(node: torch.fx.Node, layer: nn.Module, offset: int, total: int, flat: bool) -> Slice:
    if getattr(layer, "groups", 1) != 1:
        raise _Blocked(f"it feeds the grouped convolution {node.target!r} (groups={layer.groups}), which E cannot "
                       f"be multiplied into")
    inputs = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    if (flat and not isinstance(layer, nn.Linear)) or (inputs % total if flat else inputs != total):
        raise _Blocked(f"its {total} channels do not match the {inputs} inputs of {node.target!r}")
    return Slice(node.target, offset, total)


def _follow(root: nn.Module, node: torch.fx.Node, shapes: set, *, offset: int, total: int,
            flat: bool) -> list[Slice]:
    """The slices of linear consumers that the unit's channels (offset..., of ``total``) at ``node`` reach."""
    slices = []
    for user in node.users:
        if user in shapes:
            continue
        module = _module(root, user)
        if user.op == "output":
            raise _Blocked("its output is the model's output (its width is fixed by the task)")
        if isinstance(module, LINEAR_TYPES):
            slices.append(_consumer_slice(user, module, offset, total, flat))
        elif _is_channel_cat(user) and not flat:
            parts = list(user.args[0])
            sizes = [_channels(root, part) for part in parts]
            if None in sizes:
                raise _Blocked(f"the concatenation {user.name!r} joins a tensor whose channels the graph does not tell")
            for i, part in enumerate(parts):
                if part is node:
                    slices += _follow(root, user, shapes, offset=offset + sum(sizes[:i]), total=sum(sizes), flat=False)
        elif _commutes(root, user):
            slices += _follow(root, user, shapes, offset=offset, total=total, flat=flat or _is_flatten(root, user))
        elif _is_addition(user):
            raise _Blocked(f"its output enters the addition {user.name!r} with a tensor that E does not expand "
                           f"(branch-and-merge, e.g. a residual)")
        else:
            raise _Blocked(f"{_describe(root, user)} stands between it and the next linear layer and does not "
                           f"commute with a map over channels")
    return slices


def _post_op_nodes(root: nn.Module, node: torch.fx.Node) -> list[torch.fx.Node]:
    """The run of channel-wise post-ops after a linear node, each the only user of the one before."""
    post, end = [], node
    while len(end.users) == 1:
        (user,) = end.users
        if not _is_post_op(root, user) or user.args[0] is not end:
            break
        post.append(user)
        end = user
    return post


def _unit(root: nn.Module, node: torch.fx.Node, shapes: set) -> GraphUnit:
    layer = root.get_submodule(node.target)
    post = _post_op_nodes(root, node)
    unit = GraphUnit(node.target, node.name, out_channels(layer), [p.name for p in post])
    misfit = post_op_misfit(node.target, layer, {p.target if p.op == "call_module" else p.name:
                                                 _post_module(root, p) for p in post})
    if getattr(layer, "groups", 1) != 1:
        misfit = f"it is a grouped convolution (groups={layer.groups})"
    if misfit:
        unit.reason, unit.narrowable = misfit, False
        return unit
    try:
        unit.slices = _follow(root, post[-1] if post else node, shapes, offset=0, total=unit.channels, flat=False)
        if not unit.slices:
            raise _Blocked("its output reaches no linear layer")
    except _Blocked as why:
        unit.reason, unit.slices = str(why), []
    return unit


def graph_units(traced: torch.fx.GraphModule) -> list[GraphUnit]:
    """Every unit of a traced model in forward order, those that cannot get a learned E with their reason."""
    shapes = shape_nodes(traced.graph)
    return [_unit(traced, node, shapes) for node in traced.graph.nodes
            if isinstance(_module(traced, node), LINEAR_TYPES)]


def selection_groups(traced: torch.fx.GraphModule, units: list[GraphUnit]) -> list[Group]:
    """The shared selections of the units that cannot get a learned E, in forward order of their first member."""
    shapes = shape_nodes(traced.graph)
    nodes = {node.name: node for node in traced.graph.nodes}
    # the node whose value each unit outputs: its last post-op, else its layer
    ends = {nodes[unit.post_ops[-1] if unit.post_ops else unit.node]: unit for unit in units}
    groups, grouped = [], set()
    for unit in units:
        if unit.reason is not None and unit.name not in grouped:
            group = _stream_group(traced, unit, ends, shapes)
            grouped.update(group.members)
            groups.append(group)
    return groups


def _stream_group(root: nn.Module, start: GraphUnit, ends: dict, shapes: set) -> Group:
    """The units coupled with ``start`` through additions, and the stream's consumers (or why it cannot fold)."""
    group = Group([], start.channels)
    sources, seen = [next(n for n, u in ends.items() if u is start)], set()
    streams = []  # (node, offset, total, flat): a tensor whose channels offset.. of total are the stream's
    try:
        while sources or streams:
            if sources:  # a tensor that is the stream: who produced it
                node = sources.pop()
                if node not in seen:
                    seen.add(node)
                    streams.append((node, 0, group.channels, False))
                    _stream_source(root, node, ends, shapes, group, sources)
                continue
            node, offset, total, flat = streams.pop()  # a tensor holding the stream: who reads it
            for user in node.users:
                if user not in shapes and (user, offset, total, flat) not in seen:
                    seen.add((user, offset, total, flat))
                    _stream_user(root, node, user, shapes, group, sources, streams, offset=offset, total=total,
                                 flat=flat)
    except _Blocked as why:
        group.reason, group.slices = str(why), []
    group.members = [u.name for u in ends.values() if u.name in group.members]  # forward order
    return group


def _stream_user(root: nn.Module, node: torch.fx.Node, user: torch.fx.Node, shapes: set, group: Group,
                 sources: list, streams: list, *, offset: int, total: int, flat: bool) -> None:
    """Follow the stream (channels offset.. of total at ``node``) into ``user``."""
    module = _module(root, user)
    if user.op == "output":
        raise _Blocked("its channels reach the model's output (its width is fixed by the task)")
    if isinstance(module, LINEAR_TYPES):
        group.slices.append(_consumer_slice(user, module, offset, total, flat))
    elif _is_addition(user):
        if flat or total != group.channels:
            raise _Blocked(f"the addition {user.name!r} takes the stream inside a concatenation or after a flatten")
        sources.append(user)
    elif _is_channel_cat(user) and not flat:
        parts = list(user.args[0])
        sizes = [_channels(root, part) for part in parts]
        if None in sizes:
            raise _Blocked(f"the concatenation {user.name!r} joins a tensor whose channels the graph does not tell")
        streams.extend((user, offset + sum(sizes[:i]), sum(sizes), False) for i, part in enumerate(parts)
                       if part is node)
    elif _keeps_selection(root, user):
        streams.append((user, offset, total, flat or _is_flatten(root, user)))
    else:
        raise _Blocked(f"{_describe(root, user)} reads the stream and does not keep zero channels at zero "
                       f"(a selection of channels cannot pass it)")


def _stream_source(root: nn.Module, node: torch.fx.Node, ends: dict, shapes: set, group: Group,
                   sources: list) -> None:
    """Add the unit that produced ``node`` to ``group``, or queue the tensors an addition or a map took."""
    unit = ends.get(node)
    inputs = [a for a in node.all_input_nodes if a not in shapes]
    if unit is not None:
        if unit.channels != group.channels:
            raise _Blocked(f"unit {unit.name!r} adds {unit.channels} channels to a stream of {group.channels}")
        if not unit.narrowable:
            raise _Blocked(f"unit {unit.name!r} in the stream cannot be narrowed: {unit.reason}")
        if unit.name not in group.members:
            group.members.append(unit.name)
    elif _is_addition(node):
        group.additions.append(node.name)
        sources.extend(inputs)
    elif _keeps_selection(root, node) and len(inputs) == 1 and not _is_flatten(root, node):
        sources.append(inputs[0])
    else:
        raise _Blocked(f"{_describe(root, node)} is added into the stream and is not a unit's output")


# --------------------------------------------------------------------------------------------
# Plan and attach
# --------------------------------------------------------------------------------------------
@dataclass
class _Choice:
    """What attaching does: {unit: k} for learned E, {group index: k} for the shared selections."""

    learned: dict[str, int]
    selections: dict[int, int]


def _choose(traced: nn.Module, units: list[GraphUnit], groups: list[Group], spec, *, include, exclude,
            channel_multiple: int, exact: bool) -> _Choice:
    """The selected units that can fold and their widths; a unit named in ``spec`` that cannot is refused."""
    foldable = {u.name for u in units if u.reason is None} | {m for g in groups if g.reason is None for m in g.members}
    if isinstance(spec, Mapping):
        for unit in units:
            if unit.name in spec and unit.name not in foldable:
                group = next((g for g in groups if unit.name in g.members), None)
                why = unit.reason + (f"; nor a shared selection: {group.reason}" if group else "")
                raise UnsupportedModelError(f"unit {unit.name!r} (graph node {unit.node!r}) cannot get a branch: {why}")
    selected = select_units(units, include, exclude)
    learned = kept_widths(traced, units, [u for u in selected if u.reason is None], spec, channel_multiple,
                          exact=exact)
    selections = {}
    for index, group in enumerate(groups):
        members = [u for u in selected if u.name in group.members]
        if group.reason or len(members) < len(group.members):
            continue
        widths = set(kept_widths(traced, units, members, spec, channel_multiple, exact=exact).values())
        if len(widths) > 1:
            raise ValueError(f"units {group.members} share one selection of channels (coupled by "
                             f"{group.additions}): give them one width, not {sorted(widths)}")
        if widths:
            selections[index] = widths.pop()
    return _Choice(learned, selections)


def _read(model: nn.Module, shared_selection: bool) -> tuple[torch.fx.GraphModule, list[GraphUnit], list[Group]]:
    traced = trace_graph(model)
    units = graph_units(traced)
    return traced, units, selection_groups(traced, units) if shared_selection else []


def branch_plan(model: nn.Module, keep_ratio: float | Mapping[str, float] | None = None, include=None,
                exclude=None, *, widths: Mapping[str, int] | None = None, channel_multiple: int = 1,
                shared_selection: bool = True) -> list[dict]:
    """Per unit of ``model``, what :func:`~pruning_utils.attach_branches` with these arguments would do.

    Each entry: ``name``, ``node`` (graph node), ``channels`` C, ``kept`` k (C when left alone), ``kind``
    (``"learned E"``, ``"shared selection"`` or ``"left alone"``), ``group`` (the units sharing its selection)
    and ``reason``. The graph reading applies to chains as well, where attach_branches raises instead of leaving a
    unit alone (e.g. a post-op that does not fit its layer).
    """
    if (keep_ratio is None) == (widths is None):
        raise ValueError("give either keep_ratio or widths")
    traced, units, groups = _read(model, shared_selection)
    choice = _choose(model, units, groups, widths if widths is not None else keep_ratio, include=include,
                     exclude=exclude, channel_multiple=channel_multiple, exact=widths is not None)
    return [_plan_entry(unit, choice, groups, shared_selection) for unit in units]


def _consumers(slices: list[Slice]) -> str:
    return ", ".join(dict.fromkeys(repr(s.consumer) for s in slices))


def _plan_entry(unit: GraphUnit, choice: _Choice, groups: list[Group], shared_selection: bool) -> dict:
    index, group = next(((i, g) for i, g in enumerate(groups) if unit.name in g.members), (None, None))
    entry = {"name": unit.name, "node": unit.node, "channels": unit.channels, "kept": unit.channels,
             "kind": "left alone", "group": group.members if group else [], "reason": unit.reason}
    if unit.name in choice.learned:
        entry.update(kept=choice.learned[unit.name], kind="learned E", reason=f"E folds into {_consumers(unit.slices)}")
    elif index in choice.selections:
        why = (f"one kept subset for {group.members}, coupled by the additions {group.additions}" if group.additions
               else f"{unit.reason}; a selection of its filters passes")
        entry.update(kept=choice.selections[index], kind="shared selection",
                     reason=f"{why}; folds into {_consumers(group.slices)}")
    elif unit.reason is None or (group and group.reason is None):
        entry["reason"] = "not selected (include, exclude or the keep_ratio / widths dict)"
    elif group and "model's output" not in unit.reason:
        entry["reason"] = f"{unit.reason}; nor a shared selection: {group.reason}"
    elif not shared_selection:
        entry["reason"] = f"{unit.reason} (shared_selection=False)"
    return entry


def attach_graph_branches(model: nn.Module, spec, *, include=None, exclude=None, init: str = DEFAULT.init,
                          channel_multiple: int = 1, exact: bool = False,
                          shared_selection: bool = True,
                          branch_kind: str = DEFAULT.branch_kind) -> torch.fx.GraphModule:
    """:func:`~pruning_utils.attach_branches` for a model that is not a chain: a GraphModule over its layers."""
    traced, units, groups = _read(model, shared_selection)
    if all(u.reason for u in units) and all(g.reason for g in groups):
        raise UnsupportedModelError(f"no unit of {type(model).__name__} can get a branch: " + "; ".join(
            f"{u.name!r}: {u.reason}" for u in units))
    choice = _choose(traced, units, groups, spec, include=include, exclude=exclude,
                     channel_multiple=channel_multiple, exact=exact)
    if not choice.learned and not choice.selections:
        raise ValueError("no unit selected: check include, exclude and keep_ratio")
    nodes = {node.name: node for node in traced.graph.nodes}
    by_name = {unit.name: unit for unit in units}
    for unit in units:
        if unit.name in choice.learned:
            _branch(traced, nodes, unit, choice.learned[unit.name], init, unit.slices, kind=branch_kind)
    for index, k in choice.selections.items():
        group = groups[index]
        kept = group_selection(traced, group.members, k)
        for i, name in enumerate(group.members):  # E folds once: the first member carries the stream's slices
            _branch(traced, nodes, by_name[name], k, init, group.slices if i == 0 else [], selection=kept,
                    kind=branch_kind)
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced


def group_selection(model: nn.Module, members: list[str], k: int) -> torch.Tensor:
    """The k channels (sorted indices) with the largest L1 norm of their filters summed over ``members``."""
    norms = sum(filter_l1_norms(model.get_submodule(name)) for name in members)
    return norms.topk(k).indices.sort().values


def _branch(traced: torch.fx.GraphModule, nodes: dict, unit: GraphUnit, k: int, init: str, slices: list[Slice], *,
            selection: torch.Tensor | None = None, kind: str = DEFAULT.branch_kind) -> None:
    """Make ``unit``'s node call its BranchedUnit, which takes over the post-ops' nodes."""
    node, post = nodes[unit.node], [nodes[name] for name in unit.post_ops]
    branched = make_branched_unit(traced.get_submodule(unit.name), [_post_module(traced, p) for p in post], k, init,
                                  selection=selection, kind=kind)
    branched.slices = slices
    traced.add_submodule(unit.name, branched)
    for p in reversed(post):
        p.replace_all_uses_with(node)
        traced.graph.erase_node(p)


# --------------------------------------------------------------------------------------------
# A graph as plain data (save_plain): nodes, their targets by name, their arguments
# --------------------------------------------------------------------------------------------
def _encode(arg):
    if isinstance(arg, torch.fx.Node):
        return {"node": arg.name}
    if isinstance(arg, (tuple, list)):
        return {"tuple" if isinstance(arg, tuple) else "list": [_encode(a) for a in arg]}
    if isinstance(arg, slice):
        return {"slice": [_encode(arg.start), _encode(arg.stop), _encode(arg.step)]}
    if arg is None or isinstance(arg, (bool, int, float, str)):
        return arg
    raise UnsupportedModelError(f"cannot save the graph argument {arg!r} ({type(arg).__name__})")


def _decode(arg, env: dict):
    if not isinstance(arg, dict):
        return arg
    (kind, value), = arg.items()
    if kind == "node":
        return env[value]
    items = [_decode(a, env) for a in value]
    return {"tuple": tuple, "list": list, "slice": lambda v: slice(*v)}[kind](items)


def _target_name(node: torch.fx.Node) -> str:
    if node.op == "call_function":
        name = _get_qualified_name(node.target)
        if SAVED_FUNCTIONS.get(name) is not node.target:
            raise UnsupportedModelError(f"graph node {node.name!r} calls {name}, which save_plain does not write")
        return name
    if node.op == "call_method" and node.target not in SAVED_METHODS:
        raise UnsupportedModelError(f"graph node {node.name!r} calls the method {node.target!r}, which save_plain "
                                    f"does not write")
    if node.op == "get_attr":
        raise UnsupportedModelError(f"graph node {node.name!r} reads the tensor {node.target!r}; save_plain writes "
                                    f"only graphs of modules and functions")
    return node.target


def graph_nodes(graph: torch.fx.Graph) -> list[dict]:
    """The nodes of ``graph`` as plain data (lists, dicts, numbers, strings)."""
    return [{"name": n.name, "op": n.op, "target": _target_name(n), "args": _encode(tuple(n.args)),
             "kwargs": {k: _encode(v) for k, v in n.kwargs.items()}} for n in graph.nodes]


def graph_from_nodes(records: list[dict]) -> torch.fx.Graph:
    """The graph :func:`graph_nodes` wrote; only the functions and methods it writes are accepted."""
    graph, env = torch.fx.Graph(), {}
    for record in records:
        op, target = record["op"], record["target"]
        args = _decode(record["args"], env)
        if op == "call_function":
            if target not in SAVED_FUNCTIONS or (target == "getattr" and args[1] not in SAVED_ATTRIBUTES):
                raise ValueError(f"the saved graph calls {target!r} {args[1:]!r}, which load_plain does not allow")
            target = SAVED_FUNCTIONS[target]
        elif op == "call_method" and target not in SAVED_METHODS:
            raise ValueError(f"the saved graph calls the method {target!r}, which load_plain does not allow")
        elif op not in ("placeholder", "output", "call_module", "call_method"):
            raise ValueError(f"the saved graph has a node of kind {op!r}, which load_plain does not allow")
        kwargs = {k: _decode(v, env) for k, v in record["kwargs"].items()}
        env[record["name"]] = graph.create_node(op, target, args, kwargs, name=record["name"])
    graph.lint()
    return graph
