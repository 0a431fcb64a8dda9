"""The pruning loop: train a branched model through an alpha schedule down to alpha = 0.

Stages train at a fixed alpha (or with alpha ramped every step, for all units at once or staggered, the
deepest or the first unit first: ``PruneConfig.alpha_order``). The learning rate resets at every
alpha drop (``lr_schedule="plateau"`` or ``"constant"``) or follows one schedule over the whole run
(``"onecycle"``, ``"cosine"``). After the last stage, optional restarts at alpha = 0 with the
learning rate x10 each time keep the best weights; with ``restart_patience`` a restart runs only
while training at alpha = 0 is stuck (the seeds: "when training is stuck in a local minimum"). A
checkpoint is written after every stage; a run resumes from the latest one (or any stage) with alpha
restored from it. Under ``torchrun`` the loop trains with DistributedDataParallel.
"""
from __future__ import annotations

import copy
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import show_progress
from ..engine.checkpoints import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from ..engine.distributed import shard, unwrap, wrap
from ..engine.speed import PLAIN, Speed
from ..engine.tasks import check_task, metric_name
from ..engine.train import NonFiniteLossError, evaluate, make_optimizer, make_scheduler, steps_per_batch, train_epoch
from .branches import branched_units, freeze_original, get_alpha, set_alpha
from .schedules import Stage, total_epochs

LOSSES = ("ce", "logits_mse", "kd", "ce+kd", "reconstruction")
TEACHER_LOSSES = ("logits_mse", "kd", "ce+kd")
LR_SCHEDULES = ("plateau", "constant", "onecycle", "cosine")
ALPHA_ORDERS = ("together", "deep_first", "shallow_first")
STAGE_FILE = re.compile(r"stage_(\d+)\.pt$")


@dataclass
class PruneConfig:
    """Settings of :func:`prune`. ``lr_schedule``: 'plateau' (the seeds: reset per stage, ReduceLROnPlateau
    inside), 'constant' (reset per stage), 'onecycle' or 'cosine' (one schedule over all stages)."""

    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "onecycle"
    plateau_patience: int = 2
    plateau_factor: float = 0.1
    stage_patience: int | None = None  # end a stage early after this many epochs without a better val loss
    loss: str = "ce"
    kd_temperature: float = 4.0
    kd_weight: float = 0.5  # weight of distillation in 'ce+kd'
    freeze_original: bool = False
    restarts: int = 0  # extra alpha = 0 stages, each with the initial lr x restart_factor more
    restart_factor: float = 10.0
    restart_epochs: int | None = None  # epochs of each restart (default: the last stage's)
    restart_patience: int | None = None  # restart only when stuck: no better val metric at alpha 0 in this many epochs
    keep_best: bool = False  # end with the best alpha = 0 weights by validation metric (implied by restarts)
    bn_recalibration_batches: int = 0  # re-estimate BatchNorm statistics at the end on this many batches
    alpha_order: str = "together"  # ramps: all units at once, or staggered from the deepest or the first unit
    alpha_stagger: float = 0.5  # staggered ramps: fraction of the ramp between the first and the last unit's start

    def validate(self, task: str) -> None:
        check_task(task)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if (task == "reconstruction") != (self.loss == "reconstruction"):
            raise ValueError(f"loss {self.loss!r} does not fit task {task!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.restarts < 0 or self.bn_recalibration_batches < 0:
            raise ValueError("restarts and bn_recalibration_batches must be non-negative")
        if self.alpha_order not in ALPHA_ORDERS:
            raise ValueError(f"alpha_order must be one of {ALPHA_ORDERS}, got {self.alpha_order!r}")
        if not 0 <= self.alpha_stagger < 1:
            raise ValueError(f"alpha_stagger must be in [0, 1), got {self.alpha_stagger}")
        if self.restart_patience is not None and self.restart_patience < 1:
            raise ValueError(f"restart_patience must be at least 1 or None, got {self.restart_patience}")


# --------------------------------------------------------------------------------------------
# Losses, teachers and BatchNorm statistics
# --------------------------------------------------------------------------------------------
def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` running its alpha = 1 path: the pretrained network, in eval mode.

    A copy, not the model's own alpha = 1 path: while the model trains at alpha < 1, the original
    path's BatchNorm statistics drift towards the mixed activations, and a teacher read from them
    drifts too (measured: distillation from the live path diverged within ten steps).
    """
    teacher = copy.deepcopy(model)
    if branched_units(teacher):
        set_alpha(teacher, 1.0)
    return teacher.eval().requires_grad_(False)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's knowledge distillation: T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
    return F.kl_div(F.log_softmax(student / temperature, 1), F.softmax(teacher / temperature, 1),
                    reduction="batchmean") * temperature ** 2


def make_loss(config: PruneConfig, teacher: nn.Module | None):
    """``loss_fn(model, x, y) -> (loss, output)`` for ``config.loss``."""
    def loss_fn(model, x, y):
        out = model(x)
        if config.loss == "ce":
            return F.cross_entropy(out, y), out
        if config.loss == "reconstruction":
            return F.mse_loss(out, y), out
        with torch.no_grad():
            target = teacher(x)
        if config.loss == "logits_mse":
            return F.mse_loss(out, target), out
        kd = distillation_loss(out, target, config.kd_temperature)
        if config.loss == "kd":
            return kd, out
        return (1 - config.kd_weight) * F.cross_entropy(out, y) + config.kd_weight * kd, out
    return loss_fn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, batches: int = 50) -> int:
    """Re-estimate BatchNorm running statistics from ``batches`` training batches at the current alpha.

    Statistics are averaged over the batches (momentum None). BatchNorms the forward does not reach
    (the original path at alpha = 0) keep theirs. Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(copy.deepcopy(m.state_dict()), m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    used = 0
    for x, _ in loader:
        if used >= batches:
            break
        model(x)
        used += 1
    for m, (state, momentum) in zip(norms, saved):
        m.momentum = momentum
        if int(m.num_batches_tracked) == 0:
            m.load_state_dict(state)
    model.train(was_training)
    return used


def is_stuck(history: list[dict], metric: str, patience: int) -> bool:
    """Whether training at alpha = 0 is stuck: its last ``patience`` epochs did not beat the best ``metric``
    of the alpha = 0 epochs before them (True while there are too few alpha = 0 epochs to tell)."""
    at_zero = [h[metric] for h in history if h["alpha"] == 0.0 and h.get("phase") != "bn_recalibrated"]
    if len(at_zero) <= patience:
        return True
    return max(at_zero[-patience:]) <= max(at_zero[:-patience])


# --------------------------------------------------------------------------------------------
# Checkpoints of stages
# --------------------------------------------------------------------------------------------
def stage_checkpoints(folder: str | Path) -> dict[int, Path]:
    """The stage checkpoints in ``folder`` by stage index."""
    folder = Path(folder)
    found = {}
    for path in folder.glob("stage_*.pt") if folder.is_dir() else []:
        match = STAGE_FILE.search(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _plan(schedule: list[Stage], config: PruneConfig) -> list[tuple[Stage, float]]:
    """The stages to run with their initial learning rates: the schedule, then the restarts."""
    if not schedule:
        raise ValueError("the schedule has no stages")
    if schedule[-1].end != 0.0:
        raise ValueError(f"a schedule must end at alpha = 0, this one ends at {schedule[-1].end}")
    plan = [(stage, config.lr) for stage in schedule]
    epochs = config.restart_epochs or schedule[-1].epochs
    plan += [(Stage(0.0, 0.0, epochs), config.lr * config.restart_factor ** (i + 1)) for i in range(config.restarts)]
    return plan


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def prune(model: nn.Module, train_loader, val_loader, schedule: list[Stage], config: PruneConfig | None = None, *,
          task: str = "classification", teacher: nn.Module | None = None, checkpoint_dir: str | Path | None = None,
          resume: bool | int = True, max_stages: int | None = None, progress: bool = True,
          speed: Speed = PLAIN) -> list[dict]:
    """Train ``model`` (with branches attached) through ``schedule``; return the per-epoch history.

    ``teacher`` serves the distillation losses; ``None`` uses :func:`frozen_teacher` of the model
    as it is when pruning starts (saved in the stage checkpoints, so a resumed run has the same).
    ``checkpoint_dir``: a checkpoint ``stage_NN.pt`` after every stage. ``resume``: True resumes
    from the latest stage checkpoint there, an int from that stage's, False starts afresh.
    ``max_stages`` stops after that many stages in this call (a later call resumes). ``speed``: memory format,
    bf16 autocast and torch.compile of the loops (:class:`~pruning_utils.engine.speed.Speed`). Under ``torchrun``
    it trains with DistributedDataParallel (:mod:`pruning_utils.engine.distributed`); alpha follows the same steps on
    every rank.
    """
    config = config or PruneConfig()
    config.validate(task)
    if not branched_units(model):
        raise ValueError("the model has no branches: call attach_branches(model, keep_ratio) first")
    plan = _plan(schedule, config)
    freeze_original(model, config.freeze_original)
    params = [p for p in model.parameters() if p.requires_grad]
    global_lr = config.lr_schedule in ("onecycle", "cosine")
    main_epochs = total_epochs(schedule)
    opt = make_optimizer(config.optimizer, params, config.lr, config.momentum, config.weight_decay)
    sched = make_scheduler(config.lr_schedule, opt, main_epochs, len(train_loader)) if global_lr else None
    own_teacher = teacher is None and config.loss in TEACHER_LOSSES
    if own_teacher:
        teacher = frozen_teacher(unwrap(model))
    loss_fn = make_loss(config, teacher)
    history: list[dict] = []
    best: dict = {"metric": None, "state": None}
    first = 0

    if checkpoint_dir is not None and resume is not False:
        found = stage_checkpoints(checkpoint_dir)
        if isinstance(resume, int) and not isinstance(resume, bool):
            if resume not in found:
                raise FileNotFoundError(f"no checkpoint of stage {resume} in {checkpoint_dir}; found stages {list(found)}")
            found = {resume: found[resume]}
        if found:
            index, path = max(found.items())
            state = load_checkpoint(path, map_location=next(model.parameters()).device)
            load_model_state(model, state["model"], source=f"stage checkpoint {path}")
            history = [h for h in state["history"] if h["stage"] <= index]
            best = state["best"]
            if own_teacher:
                load_model_state(teacher, state["teacher"], source=f"teacher in {path}")
            if global_lr and state.get("optimizer"):
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
            if hasattr(train_loader, "load_state_dict"):
                train_loader.load_state_dict(state["loader"])
            set_rng_state(state["rng"])
            first = index + 1

    net, shards = wrap(speed.prepare(model)), shard(train_loader)  # DDP when several processes run
    done, improving = 0, False
    for index in range(first, len(plan)):
        if max_stages is not None and done >= max_stages:
            break
        stage, stage_lr = plan[index]
        restart = index >= len(schedule)
        if restart and config.restart_patience and not is_stuck(history, f"val_{metric_name(task)}",
                                                                config.restart_patience):
            improving = True  # still improving at alpha = 0: no restart needed
            break
        if restart or not global_lr:
            opt = make_optimizer(config.optimizer, params, stage_lr, config.momentum, config.weight_decay)
            stage_sched = make_scheduler("plateau", opt, stage.epochs, len(train_loader), config.plateau_patience,
                                         config.plateau_factor) if (restart or config.lr_schedule == "plateau") else None
        else:
            stage_sched = sched
        history += _run_stage(net, stage, index, restart, opt, stage_sched, loss_fn, shards, val_loader,
                              task, config, best, progress, len(history), speed)
        done += 1
        if checkpoint_dir is not None:
            save_checkpoint(Path(checkpoint_dir) / f"stage_{index:02d}.pt", model=unwrap(model).state_dict(),
                            alpha=get_alpha(model), history=history, best=best, stage=stage.as_dict(),
                            optimizer=opt.state_dict() if global_lr else {},
                            scheduler=sched.state_dict() if global_lr else {},
                            loader=train_loader.state_dict() if hasattr(train_loader, "state_dict") else {},
                            rng=rng_state(), config=asdict(config),
                            teacher=teacher.state_dict() if own_teacher else {})
    finished = first + done >= len(plan) or improving
    if finished and (config.keep_best or config.restarts) and best["state"] is not None:
        load_model_state(model, best["state"], source="best alpha = 0 weights")
    if finished and config.bn_recalibration_batches:
        recalibrate_batchnorm(model, train_loader, config.bn_recalibration_batches)
        val = evaluate(model, val_loader, task)
        history.append({**history[-1], "phase": "bn_recalibrated",
                        **{f"val_{k}": v for k, v in val.items()}, "seconds": 0.0})
    return history


def unit_alphas(stage: Stage, fraction: float, units: list[str], config: PruneConfig) -> float | dict[str, float]:
    """Alpha after ``fraction`` of a ramp stage: one value for all ``units`` (in model order), or, with a staggered
    ``config.alpha_order``, one per unit, each ramping over ``1 - alpha_stagger`` of the stage, the deepest (or the
    first) unit starting at once and the last to start at ``alpha_stagger``."""
    if config.alpha_order == "together" or len(units) < 2:
        return stage.alpha_at(fraction)
    ordered = units[::-1] if config.alpha_order == "deep_first" else units
    window = 1 - config.alpha_stagger
    return {name: stage.alpha_at((fraction - config.alpha_stagger * rank / (len(units) - 1)) / window)
            for rank, name in enumerate(ordered)}


def _run_stage(model, stage: Stage, index: int, restart: bool, opt, sched, loss_fn, train_loader, val_loader,
               task: str, config: PruneConfig, best: dict, progress: bool, epochs_before: int,
               speed: Speed = PLAIN) -> list[dict]:
    """Train one stage; update ``best`` (the best alpha = 0 weights) in place; return its history."""
    metric = f"val_{metric_name(task)}"
    steps = stage.epochs * len(train_loader)
    step = 0
    units = list(branched_units(model))
    set_alpha(model, stage.start)

    def move_alpha():
        nonlocal step
        if stage.shape != "constant":
            set_alpha(model, unit_alphas(stage, step / steps, units, config))
        step += 1

    records: list[dict] = []
    stage_best = {"loss": float("inf"), "state": copy.deepcopy(unwrap(model).state_dict())}
    stale = 0
    phase = "restart" if restart else "stage"
    bar = tqdm(range(stage.epochs), desc=f"{phase} {index} (alpha {stage.start:g}->{stage.end:g})",
               disable=not show_progress(progress), leave=False)
    for _ in bar:
        start = time.perf_counter()
        try:
            train = train_epoch(model, train_loader, opt, loss_fn, sched if steps_per_batch(sched) else None,
                                before_step=move_alpha, progress=progress, speed=speed,
                                description=f"epoch {epochs_before + len(records) + 1}")
        except NonFiniteLossError as err:
            warnings.warn(f"{err}; stage {index} stopped and rolled back to its best weights "
                          f"(val loss {stage_best['loss']:.4g}). Lower the learning rate to avoid this.")
            load_model_state(model, stage_best["state"], source="the stage's best weights")
            if records:
                records[-1]["stopped"] = "non-finite loss"
            break
        if stage.shape != "constant" and step >= steps:
            set_alpha(model, stage.end)
        val = evaluate(model, val_loader, task, speed)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val["loss"])
        alpha = get_alpha(model)
        record = {"epoch": epochs_before + len(records) + 1, "stage": index, "phase": phase,
                  "alpha": alpha if isinstance(alpha, float) else sum(alpha.values()) / len(alpha),
                  "lr": opt.param_groups[0]["lr"], "train_loss": train["loss"],
                  **{f"val_{k}": v for k, v in val.items()}, "seconds": time.perf_counter() - start}
        records.append(record)
        bar.set_postfix(alpha=f"{record['alpha']:.3f}", **{metric: f"{record[metric]:.3f}"})
        if val["loss"] < stage_best["loss"]:
            stage_best = {"loss": val["loss"], "state": copy.deepcopy(unwrap(model).state_dict())}
            stale = 0
        else:
            stale += 1
        if record["alpha"] == 0.0 and (best["metric"] is None or record[metric] > best["metric"]):
            best.update(metric=record[metric], state=copy.deepcopy(unwrap(model).state_dict()))
        if config.stage_patience is not None and stale >= config.stage_patience:
            break
    return records


def load_stage(model: nn.Module, checkpoint_dir: str | Path, stage: int) -> nn.Module:
    """A copy of the branched ``model`` with the weights and alpha saved after ``stage`` in ``checkpoint_dir``."""
    found = stage_checkpoints(checkpoint_dir)
    if stage not in found:
        raise FileNotFoundError(f"no checkpoint of stage {stage} in {checkpoint_dir}; found stages {list(found)}")
    copy_ = copy.deepcopy(model)
    state = load_checkpoint(found[stage], map_location=next(model.parameters()).device)
    load_model_state(copy_, state["model"], source=f"stage checkpoint {found[stage]}")
    return copy_
