"""The pruning loop: train a branched model through an alpha schedule down to alpha = 0.

Stages train at a fixed alpha (or with alpha ramped every step, for all units at once or staggered, the
deepest or the first unit first: ``Recipe.alpha_order``). The learning rate resets at every
alpha drop (``lr_schedule="plateau"`` or ``"constant"``) or follows one schedule over the whole run
(``"onecycle"``, ``"cosine"``). After the last stage, optional restarts at alpha = 0 with the
learning rate x10 each time keep the best weights; with ``restart_patience`` a restart runs only
while training at alpha = 0 is stuck (the seeds: "when training is stuck in a local minimum"). A
checkpoint is written after every stage; a run resumes from the latest one (or any stage) with alpha
restored from it. Under ``torchrun`` the loop trains with DistributedDataParallel.
"""
from __future__ import annotations

import copy
import itertools
import re
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import show_progress
from ..engine.checkpoints import load_checkpoint, load_model_state, save_checkpoint
from ..engine.distributed import shard, unwrap, wrap
from ..engine.speed import PLAIN, Speed
from ..engine.tasks import Task, get_task
from ..engine.train import (
    NonFiniteLossError,
    check_resume,
    evaluate,
    make_optimizer,
    make_scheduler,
    restore_training_state,
    steps_per_batch,
    train_epoch,
    training_state,
)
from .branches import branched_units, freeze_original, get_alpha, set_alpha
from .recipe import Recipe
from .schedules import Stage, total_epochs

STAGE_FILE = re.compile(r"stage_(\d+)\.pt$")
RAMP_CHECKS = 8  # validations per epoch while alpha moves (on the first RAMP_CHECK_BATCHES validation batches)
RAMP_CHECK_BATCHES = 8


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


def make_loss(config: Recipe, teacher: nn.Module | None):
    """``loss_fn(model, x, y) -> (loss, output)`` for ``config.loss`` (resolved: see :meth:`Recipe.for_task`)."""
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


def _plan(schedule: list[Stage], config: Recipe) -> list[tuple[Stage, float]]:
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
class PruningFailedError(RuntimeError):
    """The run ended without one trained epoch at alpha = 0 (every stage that reaches it was rolled back)."""


def _run_settings(recipe: Recipe, schedule: list[Stage], task: Task, model: nn.Module, loss_fn=None) -> dict:
    """What determines a pruning run's stage checkpoints, so that a resume with other settings is refused."""
    settings = {"recipe": recipe.settings(), "schedule": [stage.as_dict() for stage in schedule], "task": task.name,
                "branches": {name: unit.kept for name, unit in branched_units(model).items()}}
    return settings if loss_fn is None else {**settings, "loss_fn": repr(loss_fn)}


def prune(model: nn.Module, train_loader, val_loader, schedule: list[Stage] | None = None,
          config: Recipe | None = None, *, epochs: int | None = None, task: str | Task = "classification",
          teacher: nn.Module | None = None, checkpoint_dir: str | Path | None = None, resume: bool | int = True,
          max_stages: int | None = None, progress: bool = True, speed: Speed = PLAIN, loss_fn=None,
          ramp_checks: int = RAMP_CHECKS) -> list[dict]:
    """Train ``model`` (with branches attached) through an alpha schedule; return the per-epoch history.

    ``config``: the :class:`~pruning_utils.method.recipe.Recipe` (default: the best one measured); ``schedule``: the
    stages, or None for the recipe's schedule over ``epochs``. ``teacher`` serves the distillation losses: a frozen
    copy of it runs (eval mode, no gradients; the model passed is never changed); ``None`` uses
    :func:`frozen_teacher` of the model as it is when pruning starts (saved in the stage checkpoints, so a resumed
    run has the same). ``checkpoint_dir``: a checkpoint ``stage_NN.pt`` after every stage, with the run's settings.
    ``resume``: True resumes from the latest stage checkpoint there, an int from that stage's, False starts afresh;
    a checkpoint written with other settings raises :class:`~pruning_utils.engine.train.ResumeMismatchError`.
    ``max_stages`` stops after that many stages in this call (a later call resumes). ``speed``: memory format,
    bf16 autocast and torch.compile of the loops (:class:`~pruning_utils.engine.speed.Speed`). Under ``torchrun``
    it trains with DistributedDataParallel (:mod:`pruning_utils.engine.distributed`); alpha follows the same steps
    on every rank. ``loss_fn(model, x, y) -> (loss, output)`` replaces the recipe's loss (its ``repr`` goes into
    the checkpoints' settings: give it one that names its settings, e.g. a dataclass). Each epoch's record has
    ``train_loss`` (and ``train_acc`` for classification: of the outputs the training steps computed); an epoch in
    which alpha moves also has ``checks``, ``ramp_checks`` validations spread over it, each with the fractional
    epoch, alpha and the validation loss and metric on the first :data:`RAMP_CHECK_BATCHES` batches (0: none; they
    do not change the training). Raises :class:`PruningFailedError` when the run ends with no epoch trained at
    alpha = 0.
    """
    task = get_task(task)
    recipe = (config or Recipe()).for_task(task)
    if schedule is None:
        if epochs is None:
            raise ValueError("give the schedule, or the epochs for the recipe's schedule (epochs=...)")
        schedule = recipe.schedule_for(epochs)
    if not branched_units(model):
        raise ValueError("the model has no branches: call attach_branches(model, keep_ratio) first")
    plan = _plan(schedule, recipe)
    freeze_original(model, recipe.freeze_original)
    params = [p for p in model.parameters() if p.requires_grad]
    global_lr = recipe.lr_schedule in ("onecycle", "cosine")
    opt = make_optimizer(recipe.optimizer, params, recipe.lr, recipe.momentum, recipe.weight_decay)
    sched = make_scheduler(recipe.lr_schedule, opt, total_epochs(schedule), len(train_loader)) if global_lr else None
    own_teacher = teacher is None and recipe.needs_teacher()
    if recipe.needs_teacher():
        teacher = frozen_teacher(unwrap(model) if own_teacher else teacher)
    settings = _run_settings(recipe, schedule, task, unwrap(model), loss_fn)
    loss_fn = loss_fn or make_loss(recipe, teacher)
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
            check_resume(state.get("settings"), settings, path)
            history = [h for h in restore_training_state(
                state, model=model, optimizer=opt if global_lr else None, scheduler=sched, loader=train_loader,
                source=f"stage checkpoint {path}") if h["stage"] <= index]
            best = state["best"]
            if own_teacher:
                load_model_state(teacher, state["teacher"], source=f"teacher in {path}")
            first = index + 1

    net, shards = wrap(speed.prepare(model)), shard(train_loader)  # DDP when several processes run
    metric = f"val_{task.metric}"
    done, improving = 0, False
    for index in range(first, len(plan)):
        if max_stages is not None and done >= max_stages:
            break
        stage, stage_lr = plan[index]
        restart = index >= len(schedule)
        if restart and recipe.restart_patience and not is_stuck(history, metric, recipe.restart_patience):
            improving = True  # still improving at alpha = 0: no restart needed
            break
        if restart or not global_lr:
            opt = make_optimizer(recipe.optimizer, params, stage_lr, recipe.momentum, recipe.weight_decay)
            stage_sched = make_scheduler("plateau", opt, stage.epochs, len(train_loader), recipe.plateau_patience,
                                         recipe.plateau_factor) if (restart or recipe.lr_schedule == "plateau") else None
        else:
            stage_sched = sched
        history += _run_stage(net, stage, index=index, restart=restart, optimizer=opt, scheduler=stage_sched,
                              loss_fn=loss_fn, loaders=(shards, val_loader), task=task, recipe=recipe, best=best,
                              progress=progress, epochs_before=len(history), speed=speed, ramp_checks=ramp_checks)
        done += 1
        if checkpoint_dir is not None:
            save_checkpoint(Path(checkpoint_dir) / f"stage_{index:02d}.pt", alpha=get_alpha(model), best=best,
                            stage=stage.as_dict(), teacher=teacher.state_dict() if own_teacher else {},
                            **training_state(model=model, optimizer=opt if global_lr else None,
                                             scheduler=sched if global_lr else None, loader=train_loader,
                                             history=history, settings=settings))
    finished = first + done >= len(plan) or improving
    if finished and not any(h["alpha"] == 0.0 for h in history):
        raise PruningFailedError("no epoch at alpha = 0 was trained: every stage that reaches it stopped on a "
                                 "non-finite loss and was rolled back (see the warnings). Lower the learning rate "
                                 f"(it was {recipe.lr:g}) and start afresh")
    if finished and (recipe.keep_best or recipe.restarts) and best["state"] is not None:
        load_model_state(model, best["state"], source="best alpha = 0 weights")
    if finished and recipe.bn_recalibration_batches:
        recalibrate_batchnorm(model, train_loader, recipe.bn_recalibration_batches)
        val = evaluate(model, val_loader, task)
        history.append({**history[-1], "phase": "bn_recalibrated",
                        **{f"val_{k}": v for k, v in val.items()}, "seconds": 0.0})
    return history


def _mean_alpha(model: nn.Module) -> float:
    alpha = get_alpha(model)
    return alpha if isinstance(alpha, float) else sum(alpha.values()) / len(alpha)


def unit_alphas(stage: Stage, fraction: float, units: list[str], config: Recipe) -> float | dict[str, float]:
    """Alpha after ``fraction`` of a ramp stage: one value for all ``units`` (in model order), or, with a staggered
    ``config.alpha_order``, one per unit, each ramping over ``1 - alpha_stagger`` of the stage, the deepest (or the
    first) unit starting at once and the last to start at ``alpha_stagger``."""
    if config.alpha_order == "together" or len(units) < 2:
        return stage.alpha_at(fraction)
    ordered = units[::-1] if config.alpha_order == "deep_first" else units
    window = 1 - config.alpha_stagger
    return {name: stage.alpha_at((fraction - config.alpha_stagger * rank / (len(units) - 1)) / window)
            for rank, name in enumerate(ordered)}


def _run_stage(model, stage: Stage, *, index: int, restart: bool, optimizer, scheduler, loss_fn, loaders,
               task: Task, recipe: Recipe, best: dict, progress: bool, epochs_before: int,
               speed: Speed = PLAIN, ramp_checks: int = RAMP_CHECKS) -> list[dict]:
    """Train one stage; update ``best`` (the best alpha = 0 weights) in place; return its history.
    ``loaders``: (train, validation)."""
    train_loader, val_loader = loaders
    metric = f"val_{task.metric}"
    per_epoch = len(train_loader)
    steps = stage.epochs * per_epoch
    step = 0
    units = list(branched_units(model))
    set_alpha(model, stage.start)
    check_every = max(1, per_epoch // ramp_checks) if ramp_checks and stage.shape != "constant" else None
    checks: list[dict] = []
    check_batches = list(itertools.islice(val_loader, RAMP_CHECK_BATCHES)) if check_every else []

    def move_alpha():
        nonlocal step
        if stage.shape != "constant":
            set_alpha(model, unit_alphas(stage, step / steps, units, recipe))
        if check_every and step % check_every == 0:
            checks.append({"epoch": epochs_before + step / per_epoch, "alpha": _mean_alpha(model),
                           **{f"val_{k}": v for k, v in evaluate(model, check_batches, task, speed).items()}})
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
            train = train_epoch(model, train_loader, optimizer, loss_fn, scheduler if steps_per_batch(scheduler) else None,
                                before_step=move_alpha, progress=progress, speed=speed, task=task,
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
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val["loss"])
        record = {"epoch": epochs_before + len(records) + 1, "stage": index, "phase": phase,
                  "alpha": _mean_alpha(model), "lr": optimizer.param_groups[0]["lr"],
                  **{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()},
                  "seconds": time.perf_counter() - start}
        if checks:
            record["checks"], checks[:] = list(checks), []
        records.append(record)
        bar.set_postfix(alpha=f"{record['alpha']:.3f}", **{metric: f"{record[metric]:.3f}"})
        if val["loss"] < stage_best["loss"]:
            stage_best = {"loss": val["loss"], "state": copy.deepcopy(unwrap(model).state_dict())}
            stale = 0
        else:
            stale += 1
        if record["alpha"] == 0.0 and (best["metric"] is None or record[metric] > best["metric"]):
            best.update(metric=record[metric], state=copy.deepcopy(unwrap(model).state_dict()))
        if recipe.stage_patience is not None and stale >= recipe.stage_patience:
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
