"""One pruning experiment end to end: attach branches, prune through a schedule, fold, measure."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from .branches import attach_branches
from .folding import fold
from .metrics import count_macs, count_parameters
from .pruning import PruneConfig, load_stage, prune, stage_checkpoints
from .schedules import Stage, ramp, stages, step_values
from .train import PLAIN, Speed, evaluate, load_checkpoint, metric_name


@torch.inference_mode()
def fold_error(model: nn.Module, folded: nn.Module, loader) -> float:
    """Relative maximum difference between ``folded`` and the alpha = 0 ``model`` on one batch (eval mode)."""
    model.eval()
    folded.eval()
    x, _ = next(iter(loader))
    reference = model(x)
    return ((folded(x) - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


@dataclass(frozen=True)
class Recipe:
    """One way to run the parallel-branch method on a classifier: every factor of notebook 08's ablation study.

    The defaults are the study's winner (``figures/08_method_ablations_cifar10_w0.25.json``): L1 warm start, alpha
    ramped linearly over a quarter of the epochs, then alpha = 0, one-cycle SGD, and distillation from the alpha = 1
    path (the baseline) instead of cross-entropy (+2.3 validation points over cross-entropy, two seeds).
    """

    init: str = "l1"  # branch initialisation: "he" or "l1" (the original's filters of largest L1 norm)
    schedule: str = "linear"  # "linear" / "cosine" ramp of alpha per step, or "stages" (the seeds: constant alpha)
    ramp_epochs: int = 2  # ramps: epochs of the ramp; the rest of the main epochs train at alpha = 0
    stage_delta: float = 0.25  # stages: alpha drops by this per stage (0.25: 0.75, 0.5, 0.25, 0)
    loss: str = "kd"  # "ce", "logits_mse", "kd", "ce+kd" (teacher: the alpha = 1 path, i.e. the baseline)
    kd_temperature: float = 4.0
    kd_weight: float = 0.5  # weight of distillation in "ce+kd"
    freeze_original: bool = False  # keep the pretrained layers that the branches replace fixed
    lr_schedule: str = "onecycle"  # one schedule over the run, or "plateau": reset at every stage (the seeds)
    restarts: int = 0  # alpha = 0 restarts with the learning rate x10, taken from the epoch budget
    restart_epochs: int = 2
    bn_recalibration_batches: int = 0  # re-estimate BatchNorm statistics at alpha = 0 on this many batches
    alpha_order: str = "together"  # "deep_first" / "shallow_first": units leave their original path in turn
    alpha_stagger: float = 0.5

    def schedule_for(self, epochs: int) -> list[Stage]:
        """The alpha schedule that, with the restarts, takes exactly ``epochs`` epochs."""
        main = epochs - self.restarts * self.restart_epochs
        if self.schedule == "stages":
            values = step_values(self.stage_delta)
            if main < len(values) or main % len(values):
                raise ValueError(f"a stage schedule with delta {self.stage_delta} has {len(values)} stages: "
                                 f"{main} main epochs do not split evenly over them; change epochs or stage_delta")
            return stages(values, main // len(values))
        if not 0 < self.ramp_epochs < main:
            raise ValueError(f"ramp_epochs must leave at least one alpha = 0 epoch of the {main} main epochs, "
                             f"got {self.ramp_epochs}")
        return ramp(self.schedule, self.ramp_epochs, main - self.ramp_epochs)

    def prune_config(self, lr: float, weight_decay: float) -> PruneConfig:
        """The pruning loop's settings for this recipe (restarts keep the best alpha = 0 weights)."""
        names = {f.name for f in fields(PruneConfig)}
        options = {k: v for k, v in asdict(self).items() if k in names}
        return PruneConfig(lr=lr, weight_decay=weight_decay, **options)

    def check(self, epochs: int) -> None:
        """Raise ValueError, before any training, when this recipe cannot run in ``epochs``."""
        if self.init not in ("he", "l1"):
            raise ValueError(f"init must be 'he' or 'l1', got {self.init!r}")
        if self.schedule not in ("linear", "cosine", "stages"):
            raise ValueError(f"schedule must be 'linear', 'cosine' or 'stages', got {self.schedule!r}")
        self.schedule_for(epochs)
        self.prune_config(0.01, 0.0).validate("classification")


@dataclass
class PruningResult:
    """The branched model at alpha = 0, its folded network, the per-epoch history and summary metrics."""

    model: nn.Module
    folded: nn.Module
    history: list[dict]
    metrics: dict
    checkpoint_dir: Path | None = None


def prune_and_fold(baseline: nn.Module, keep_ratio, loaders, schedule: list[Stage], config: PruneConfig, *,
                   task: str, input_shape: tuple[int, ...], include=None, exclude=None, init: str = "l1",
                   teacher: nn.Module | None = None, checkpoint_dir: str | Path | None = None, resume=True,
                   progress: bool = True, speed: Speed = PLAIN) -> PruningResult:
    """Prune a copy of ``baseline`` at ``keep_ratio`` through ``schedule`` and fold it.

    ``loaders``: (train, validation, test). ``speed``: see :class:`~pruning_utils.train.Speed`. Metrics: see
    :func:`summarize`.
    """
    train_loader, val_loader, _ = loaders
    model = attach_branches(copy.deepcopy(baseline), keep_ratio, include=include, exclude=exclude, init=init)
    history = prune(model, train_loader, val_loader, schedule, config, task=task, teacher=teacher,
                    checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, speed=speed)
    folded = fold(model).eval()
    return PruningResult(model, folded, history, summarize(model, folded, history, loaders, task, input_shape),
                         Path(checkpoint_dir) if checkpoint_dir else None)


def load_pruned(baseline: nn.Module, keep_ratio, checkpoint_dir: str | Path, loaders, *, task: str,
                input_shape: tuple[int, ...], include=None, exclude=None, init: str = "l1") -> PruningResult:
    """The result of an earlier pruning run, from the last stage checkpoint it wrote to ``checkpoint_dir``.

    ``keep_ratio``, ``include`` and ``exclude`` must be those of the run (a mismatch is reported with the layers
    that do not fit); the run must have reached alpha = 0 for the fold.
    """
    found = stage_checkpoints(checkpoint_dir)
    if not found:
        raise FileNotFoundError(f"no stage checkpoints (stage_NN.pt) in {checkpoint_dir}: run the pruning notebook "
                                f"first, or leave the folder parameter at None to prune here")
    shell = attach_branches(copy.deepcopy(baseline), keep_ratio, include=include, exclude=exclude, init=init)
    model = load_stage(shell, checkpoint_dir, max(found))
    history = load_checkpoint(found[max(found)])["history"]
    folded = fold(model).eval()
    return PruningResult(model, folded, history, summarize(model, folded, history, loaders, task, input_shape),
                         Path(checkpoint_dir))


def summarize(model: nn.Module, folded: nn.Module, history: list[dict], loaders, task: str,
              input_shape: tuple[int, ...]) -> dict:
    """Validation loss and metric of the alpha = 0 ``model``, the ``folded`` network's test loss and metric, its
    parameters and MACs, the fold's relative maximum difference, epochs and training seconds."""
    _, val_loader, test_loader = loaders
    name = metric_name(task)
    val, test = evaluate(model, val_loader, task), evaluate(folded, test_loader, task)
    trained = [h for h in history if h.get("phase") != "bn_recalibrated"]
    return {"val_loss": val["loss"], f"val_{name}": val[name], "test_loss": test["loss"], f"test_{name}": test[name],
            "params": count_parameters(folded), "macs": count_macs(folded, input_shape),
            "fold_relative_max_difference": fold_error(model, folded, val_loader),
            "epochs": len(trained), "train_seconds": sum(h["seconds"] for h in trained)}
