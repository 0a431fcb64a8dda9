"""The pruning methods the seeds compare against (METHOD.md, Comparisons), at a given parameter budget.

* :func:`magnitude_prune`: iterative global magnitude pruning with ``torch.nn.utils.prune`` (unstructured
  zeros), each round removing about ``rate`` of the remaining weights, then retraining by fine-tuning
  (constant small learning rate) or learning-rate rewinding (the training schedule replayed each round).
* :func:`torch_pruning_l1`: structured filter pruning with the Torch-Pruning library (L1 magnitude
  importance), the same kept widths as the parallel branches, then fine-tuning.
* :func:`autopruner_search` and :func:`remove_channels`: AutoPruner (Luo & Wu) channel-score layers after
  every unit, trained with ``L_cls + mu * lambda * sum_l (mean(v_l) - r)^2``, then physical removal.
* :func:`reinitialise`: the same architecture trained from scratch.

Every function works on a copy; the model passed in is not changed.
"""
from __future__ import annotations

import copy
import functools
import itertools
import math

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune
from tqdm.auto import tqdm

from ..config import show_progress
from ..engine.models import init_weights
from ..engine.sizes import count_parameters
from ..engine.tasks import get_task
from ..engine.train import make_optimizer, make_scheduler, train_epoch
from ..method.branches import LINEAR_TYPES, out_channels, prunable_units
from ..method.budget import pruned_and_folded
from ..method.graph import branch_plan

RETRAINING = ("finetune", "rewind")


# --------------------------------------------------------------------------------------------
# Unstructured: iterative global magnitude pruning
# --------------------------------------------------------------------------------------------
def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "weight") of every Conv2d, ConvTranspose2d and Linear layer: what magnitude pruning may zero."""
    return [(m, "weight") for m in model.modules() if isinstance(m, LINEAR_TYPES)]


def nonzero_parameters(model: nn.Module) -> int:
    """Parameters left by unstructured pruning: the non-zero weights of the linear operators (masked or
    made permanent), plus every other parameter (biases, BatchNorm)."""
    weights = {id(getattr(m, "weight_orig", m.weight)) for m, _ in prunable_weights(model)}
    others = sum(p.numel() for p in model.parameters() if id(p) not in weights)
    return others + sum(int(getattr(m, n).count_nonzero()) for m, n in prunable_weights(model))


def magnitude_rounds(model: nn.Module, target_params: int, rate: float = 0.2) -> list[int]:
    """How many weights stay after each round: geometric steps of at most ``rate`` down to ``target_params``."""
    if not 0 < rate < 1:
        raise ValueError(f"the pruning rate per round must be in (0, 1), got {rate}")
    weights = sum(getattr(m, n).numel() for m, n in prunable_weights(model))
    fixed = count_parameters(model) - weights
    target = target_params - fixed
    if not 0 < target <= weights:
        raise ValueError(f"a budget of {target_params:,} parameters cannot be reached by zeroing weights: the model "
                         f"has {fixed:,} biases and BatchNorm parameters and {weights:,} weights")
    density = target / weights
    rounds = max(1, math.ceil(math.log(density) / math.log(1 - rate) - 1e-9))
    return [round(weights * density ** ((i + 1) / rounds)) for i in range(rounds)]


def _batches(loader, steps: int):
    """``steps`` batches from ``loader``, passing over it as often as needed."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), steps)


def magnitude_prune(model: nn.Module, train_loader, target_params: int, epochs: int, *, lr: float = 0.01,
                    retraining: str = "finetune", finetune_lr: float | None = None, rate: float = 0.2,
                    weight_decay: float = 5e-4, task: str = "classification", progress: bool = True) -> nn.Module:
    """Iterative global magnitude pruning of a copy of ``model`` down to ``target_params`` non-zero parameters.

    Each round zeroes the smallest-magnitude weights over all layers together (``global_unstructured``), then
    retrains for an equal share of ``epochs`` (counted in batches): ``"finetune"`` at the constant
    ``finetune_lr`` (default ``lr / 10``), ``"rewind"`` with a one-cycle schedule peaking at ``lr`` each round
    (learning-rate rewinding, Renda et al. 2020). Returns the pruned copy with its zeros made permanent.
    """
    if retraining not in RETRAINING:
        raise ValueError(f"retraining must be one of {RETRAINING}, got {retraining!r}")
    pruned = copy.deepcopy(model)
    keeps = magnitude_rounds(pruned, target_params, rate)
    weights = prunable_weights(pruned)
    total_steps = epochs * len(train_loader) if epochs else 0
    loss_fn = get_task(task).supervised_loss()
    remaining = sum(getattr(m, n).numel() for m, n in weights)
    for index, keep in enumerate(tqdm(keeps, desc="magnitude rounds", disable=not show_progress(progress))):
        torch_prune.global_unstructured(weights, pruning_method=torch_prune.L1Unstructured, amount=remaining - keep)
        remaining = keep
        steps = total_steps // len(keeps) + (index < total_steps % len(keeps))
        if steps == 0:
            continue
        params = [p for p in pruned.parameters() if p.requires_grad]
        if retraining == "finetune":
            opt = make_optimizer("sgd", params, finetune_lr or lr / 10, weight_decay=weight_decay)
            sched = None
        else:
            opt = make_optimizer("sgd", params, lr, weight_decay=weight_decay)
            sched = make_scheduler("onecycle", opt, 1, steps)
        train_epoch(pruned, _batches(train_loader, steps), opt, loss_fn, sched, progress=progress,
                    description=f"round {index + 1}")
    for module, name in weights:
        torch_prune.remove(module, name)
    return pruned


# --------------------------------------------------------------------------------------------
# Structured: Torch-Pruning's L1 filter pruning
# --------------------------------------------------------------------------------------------
def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """The linear operators of the units the parallel branches would prune, by name."""
    return {unit.name: model.get_submodule(unit.name) for unit in prunable_units(model)}


def _last_layer(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, LINEAR_TYPES)][-1]


def torch_pruning_l1(model: nn.Module, keep_ratio, input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of ``model`` filter-pruned by Torch-Pruning's ``MagnitudePruner`` with L1 importance.

    Every layer the parallel branches prune (:func:`~pruning_utils.branch_plan`: learned E and shared selections)
    keeps ``max(1, floor(keep_ratio * C))`` channels (``keep_ratio``: one ratio, or one per unit as
    :func:`attach_branches` takes them), as :func:`attach_branches` does, so the result has exactly the
    widths (and parameters) of the folded parallel-branch network; Torch-Pruning prunes the channels a residual
    addition couples as one group, ranked by its group importance. The layers the branches leave alone are ignored.
    """
    pruned = copy.deepcopy(model).cpu()
    plan = branch_plan(pruned, keep_ratio)
    # Torch-Pruning keeps int(C * (1 - ratio)) channels: half a channel more than k guards that truncation
    ratios = {pruned.get_submodule(e["name"]): max(0.0, 1 - (e["kept"] + 0.5) / e["channels"])
              for e in plan if e["kind"] != "left alone"}
    ignored = [pruned.get_submodule(e["name"]) for e in plan if e["kind"] == "left alone"]
    pruner = tp.pruner.MagnitudePruner(pruned, torch.randn(1, *input_shape), tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio_dict=ratios, ignored_layers=ignored)
    pruner.step()
    return pruned.to(next(model.parameters()).device)


def remove_channels(model: nn.Module, keep: dict[str, torch.Tensor], input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of ``model`` with only the channels ``keep[name]`` (indices) of each named layer, physically
    removed with Torch-Pruning's dependency graph (the next layer's inputs and BatchNorms follow)."""
    pruned = copy.deepcopy(model).cpu()
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=torch.randn(1, *input_shape))
    for name, kept in keep.items():
        layer = pruned.get_submodule(name)
        drop = sorted(set(range(out_channels(layer))) - set(kept.tolist()))
        if not kept.numel():
            raise ValueError(f"layer {name!r} would keep no channel; keep at least one")
        if drop:
            function = tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels
            graph.get_pruning_group(layer, function, idxs=drop).prune()
    return pruned.to(next(model.parameters()).device)


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with fresh weights (the models' own initialisation) and reset BatchNorm statistics."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    init_weights(fresh)
    for module in fresh.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return fresh


# --------------------------------------------------------------------------------------------
# AutoPruner
# --------------------------------------------------------------------------------------------
class ChannelScore(nn.Module):
    """AutoPruner's layer: pooled activations -> fully connected -> sigmoid(scale * .), averaged over the batch.

    The channel scores ``v`` (C values in (0, 1)) multiply the activations; ``scale`` grows during the
    search so that ``v`` becomes binary. The last batch's scores stay in ``self.scores``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)
        self.register_buffer("scale", torch.tensor(1.0))
        self.scores: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
        self.scores = torch.sigmoid(self.scale * self.fc(pooled)).mean(0)
        return x * self.scores.view(1, -1, *([1] * (x.dim() - 2)))


def attach_scores(model: nn.Module) -> dict[str, ChannelScore]:
    """Put a :class:`ChannelScore` after every prunable unit of ``model`` (in place); return them by unit name.

    The score layer follows the unit's last channel-wise post-op (e.g. its ReLU), so it scales the unit's output.
    """
    scores = {}
    for unit in prunable_units(model):
        place = unit.post_ops[-1] if unit.post_ops else unit.name
        layer = model.get_submodule(unit.name)
        scores[unit.name] = ChannelScore(out_channels(layer)).to(layer.weight.device)
        model.set_submodule(place, nn.Sequential(model.get_submodule(place), scores[unit.name]))
    return scores


def detach_scores(model: nn.Module) -> None:
    """Undo :func:`attach_scores` in place: each wrapped module takes its old place again."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[1], ChannelScore):
            model.set_submodule(name, module[0])


def autopruner_lambda(epoch: int, every: int, start: float = 1.0, cap: float = 1e7) -> float:
    """lambda at ``epoch`` (0-based): ``start``, times 10 every ``every`` epochs, at most ``cap`` (meeting note 004)."""
    return min(cap, start * 10.0 ** min(epoch // max(1, every), 300))


def autopruner_search(model: nn.Module, train_loader, keep_ratio: float, epochs: int, *, lr: float = 0.01,
                      mu: float = 1.0, lambda_every: int = 20, max_scale: float = 100.0, weight_decay: float = 5e-4,
                      score_batches: int = 20, progress: bool = True) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Train a copy of ``model`` with channel-score layers for ``epochs``; return it (score layers removed,
    weights as trained) and each unit's mean scores.

    Loss: cross-entropy + ``mu * lambda * sum_l (mean(v_l) - keep_ratio)^2``, lambda x10 every
    ``lambda_every`` epochs; the sigmoid's scale rises linearly from 1 to ``max_scale`` over the search.
    The scores returned are averaged over ``score_batches`` training batches in eval mode at the end.
    """
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}")
    search = copy.deepcopy(model)
    scores = attach_scores(search)
    opt = make_optimizer("sgd", search.parameters(), lr, weight_decay=weight_decay)
    sched = make_scheduler("onecycle", opt, max(epochs, 1), len(train_loader))
    total_steps, step, epoch = max(1, epochs * len(train_loader)), 0, 0

    def before_step():
        nonlocal step
        for layer in scores.values():
            layer.scale.fill_(1 + (max_scale - 1) * step / total_steps)
        step += 1

    def loss_fn(net, x, y):
        out = net(x)
        sparsity = sum((layer.scores.mean() - keep_ratio) ** 2 for layer in scores.values())
        return F.cross_entropy(out, y) + mu * autopruner_lambda(epoch, lambda_every) * sparsity, out

    for epoch in tqdm(range(epochs), desc="AutoPruner search", disable=not show_progress(progress)):
        train_epoch(search, train_loader, opt, loss_fn, sched, before_step=before_step, progress=progress,
                    description=f"search epoch {epoch + 1}")
    search.eval()
    sums = {name: 0.0 for name in scores}
    with torch.no_grad():
        for x, _ in _batches(train_loader, score_batches):
            search(x)
            for name, layer in scores.items():
                sums[name] = sums[name] + layer.scores
    detach_scores(search)
    return search.train(), {name: (total / score_batches).cpu() for name, total in sums.items()}


def widths_for_budget(model: nn.Module, counts: dict[str, int], target_params: int) -> dict[str, int]:
    """Per-unit widths proportional to ``counts`` (at least 1, at most C), scaled so that the pruned model
    has about ``target_params`` parameters (bisection on the common factor, each distinct widths folded once)."""
    layers = _layers(model)

    def widths(factor: float) -> dict[str, int]:
        return {name: min(out_channels(layers[name]), max(1, round(factor * n))) for name, n in counts.items()}

    @functools.cache
    def folded_params(kept: tuple[tuple[str, int], ...]) -> int:
        return count_parameters(pruned_and_folded(model, widths=dict(kept)))

    def params(factor: float) -> int:
        return folded_params(tuple(widths(factor).items()))  # the bisection meets few distinct widths

    low, high = 0.0, max(out_channels(layers[n]) / max(1, c) for n, c in counts.items())
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if params(middle) < target_params else (low, middle)
    best = min((low, high), key=lambda f: abs(params(f) - target_params))
    return widths(best)


def autopruner_selection(model: nn.Module, scores: dict[str, torch.Tensor], target_params: int) -> dict:
    """The channels to keep: AutoPruner's own choice (scores above 0.5, at least one per layer) gives each
    layer's relative width; the widths are scaled to the parameter budget and filled with the top scores."""
    found = {name: max(1, int((v > 0.5).sum())) for name, v in scores.items()}
    widths = widths_for_budget(model, found, target_params)
    keep = {name: torch.sort(torch.topk(scores[name], k).indices).values for name, k in widths.items()}
    return {"selected_above_half": found, "widths": widths, "keep": keep}
